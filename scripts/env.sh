# Environment for running Automail locally on the embedded defaults (SQLite + a loopback
# SMTP sink). Source it from the repo root:  source scripts/env.sh
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AUTOMAIL_HOME="$_root"
export PATH="$_root/.venv/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_root/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$_root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$_root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
export AUTOMAIL_SMTP_PORT="${AUTOMAIL_SMTP_PORT:-8025}"
# Credentials live in Airflow connections (F2); here they are env-var connections.
export AIRFLOW_CONN_AUTOMAIL_DB="{\"conn_type\": \"sqlite\", \"host\": \"$_root/var/automail.db\"}"
export AIRFLOW_CONN_AUTOMAIL_SMTP="{\"conn_type\": \"smtp\", \"host\": \"127.0.0.1\", \"port\": $AUTOMAIL_SMTP_PORT, \"extra\": {\"disable_ssl\": true, \"disable_tls\": true, \"from_email\": \"noreply@automail.local\"}}"
export AUTOMAIL_SECRET_KEY="${AUTOMAIL_SECRET_KEY:-demo-only-secret-change-me}"
unset _root
