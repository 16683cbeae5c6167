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
# Signing key of unsubscribe links: yours if set, else one random key per checkout, made
# once into var/secret_key (never a published value: automail refuses known demo keys).
if [ -z "${AUTOMAIL_SECRET_KEY:-}" ]; then
    if [ ! -s "$_root/var/secret_key" ]; then
        mkdir -p "$_root/var"
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$_root/var/secret_key")
    fi
    AUTOMAIL_SECRET_KEY=$(cat "$_root/var/secret_key")
    export AUTOMAIL_SECRET_KEY
fi
unset _root
