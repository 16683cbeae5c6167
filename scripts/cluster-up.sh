#!/usr/bin/env bash
# The production profile on one machine: Airflow's metadata on PostgreSQL and either
#   celery (default): Redis broker + api-server + scheduler + dag-processor + N Celery
#                     workers, each with its own hostname (several machines, simulated);
#   local:            api-server + scheduler (LocalExecutor) + dag-processor — the
#                     Airflow UI quick start (survives backfills, unlike SQLite).
# Every process logs to $AUTOMAIL_CLUSTER_DIR/logs/<name>.log (default var/cluster).
#
#   scripts/cluster-up.sh            start (idempotent: running parts are left alone)
#   scripts/cluster-up.sh stop       stop every process it started (TERM, then KILL)
#   scripts/cluster-up.sh status     what runs
#   scripts/cluster-up.sh worker N   (re)start Celery worker N only
#   scripts/cluster-up.sh stop-worker N
#   source var/cluster/env.sh        then `airflow …` / `automail …` talk to this profile
#
# Knobs (environment): AUTOMAIL_EXECUTOR=celery|local, AUTOMAIL_WORKERS (2),
# AUTOMAIL_WORKER_CONCURRENCY (4), AUTOMAIL_CLUSTER_DIR, AUTOMAIL_METADATA_DB
# (airflow_cluster), AUTOMAIL_STORE_DB (automail_cluster; a path with a / means a SQLite
# store file, as scripts/ui-up.sh uses), AUTOMAIL_API_PORT (8080),
# AUTOMAIL_REDIS_PORT (6380), AUTOMAIL_SMTP_PORT (8025), AUTOMAIL_SMTP_POOL_SLOTS (4).
# AIRFLOW__{SCHEDULER,DAG_PROCESSOR,WORKERS}__* set by the caller are passed through.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(mkdir -p "${AUTOMAIL_CLUSTER_DIR:-$ROOT/var/cluster}" && cd "${AUTOMAIL_CLUSTER_DIR:-$ROOT/var/cluster}" && pwd)
EXECUTOR=${AUTOMAIL_EXECUTOR:-celery}
WORKERS=${AUTOMAIL_WORKERS:-2}
PG="automail:automail@127.0.0.1:5432"
META_DB=${AUTOMAIL_METADATA_DB:-airflow_cluster}
STORE_DB=${AUTOMAIL_STORE_DB:-automail_cluster}
API_PORT=${AUTOMAIL_API_PORT:-8080}
REDIS_PORT=${AUTOMAIL_REDIS_PORT:-6380}
SMTP_PORT=${AUTOMAIL_SMTP_PORT:-8025}
LOGS=$DIR/logs
PIDS=$DIR/pids
mkdir -p "$LOGS" "$PIDS" "$DIR/airflow"

# --- the environment every component shares (written to $DIR/env.sh) ----------------
write_env() {
  local secret
  [ -s "$DIR/secret" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(64))' >"$DIR/secret"
  chmod 600 "$DIR/secret"
  secret=$(cat "$DIR/secret")
  {
    echo "# written by scripts/cluster-up.sh ($EXECUTOR profile); source it to use this Airflow"
    exp() { printf 'export %s=%q\n' "$1" "$2"; }  # the profile's value
    dflt() { printf 'export %s=%q\n' "$1" "${!1:-$2}"; }  # a tuning default; the caller's wins
    exp PATH "$ROOT/.venv/bin:$PATH"
    exp PYTHONPATH "$ROOT/include:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
    exp AUTOMAIL_HOME "$ROOT"
    exp AIRFLOW_HOME "$DIR/airflow"
    exp AIRFLOW__CORE__DAGS_FOLDER "$ROOT/dags"
    exp AIRFLOW__CORE__PLUGINS_FOLDER "$ROOT/plugins"
    exp AIRFLOW__CORE__LOAD_EXAMPLES False
    exp AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION True
    dflt AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY 60
    # Task instances report which machine ran them; local workers name themselves.
    exp AIRFLOW__CORE__HOSTNAME_CALLABLE automail.worker_host.hostname
    # Airflow derives its async engine from this URL (asyncpg, a pinned dependency).
    exp AIRFLOW__DATABASE__SQL_ALCHEMY_CONN "postgresql+psycopg2://$PG/$META_DB"
    exp AIRFLOW__API__PORT "$API_PORT"
    exp AIRFLOW__API__HOST 127.0.0.1
    exp AIRFLOW__API__BASE_URL "http://127.0.0.1:$API_PORT"
    # One secret for every component: workers' task tokens are checked by the api-server.
    exp AIRFLOW__API__SECRET_KEY "$secret"
    exp AIRFLOW__API_AUTH__JWT_SECRET "$secret"
    exp AIRFLOW__LOGGING__BASE_LOG_FOLDER "$LOGS/tasks"
    if [ "$EXECUTOR" = celery ]; then
      exp AIRFLOW__CORE__EXECUTOR CeleryExecutor
      exp AIRFLOW__CELERY__BROKER_URL "redis://127.0.0.1:$REDIS_PORT/0"
      exp AIRFLOW__CELERY__RESULT_BACKEND "db+postgresql+psycopg2://$PG/$META_DB"
      dflt AIRFLOW__CELERY__WORKER_CONCURRENCY "${AUTOMAIL_WORKER_CONCURRENCY:-4}"
    else
      exp AIRFLOW__CORE__EXECUTOR LocalExecutor
    fi
    exp AUTOMAIL_SECRET_KEY "$secret"
    if [[ $STORE_DB == */* ]]; then  # a file path: the embedded SQLite store (UI quick start)
      exp AIRFLOW_CONN_AUTOMAIL_DB "{\"conn_type\": \"sqlite\", \"host\": \"$STORE_DB\"}"
    else
      exp AIRFLOW_CONN_AUTOMAIL_DB "{\"conn_type\": \"postgres\", \"host\": \"127.0.0.1\", \"port\": 5432, \"login\": \"automail\", \"password\": \"automail\", \"schema\": \"$STORE_DB\"}"
    fi
    exp AIRFLOW_CONN_AUTOMAIL_SMTP "{\"conn_type\": \"smtp\", \"host\": \"127.0.0.1\", \"port\": $SMTP_PORT, \"extra\": {\"disable_ssl\": true, \"disable_tls\": true, \"from_email\": \"noreply@automail.local\"}}"
    # Tuning a caller asked for (tests: fast heartbeats), passed through as given.
    env | grep -E '^AIRFLOW__(SCHEDULER|DAG_PROCESSOR|WORKERS|CELERY_BROKER_TRANSPORT_OPTIONS)__' \
      | while IFS='=' read -r k _; do dflt "$k" ""; done || true
  } >"$DIR/env.sh"
}

running() { [ -s "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

launch() {  # launch NAME CMD…: own session (process group), log in var/, pid file
  local name=$1; shift
  if running "$name"; then echo "  $name: already running (pid $(cat "$PIDS/$name.pid"))"; return; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  echo "  $name: pid $! (log $LOGS/$name.log)"
}

stop_one() {
  local name=$1 pid
  [ -s "$PIDS/$name.pid" ] || return 0
  pid=$(cat "$PIDS/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "  $name: stopped"
  fi
  rm -f "$PIDS/$name.pid"
}

ensure_db() {
  PGPASSWORD=automail psql -qtA -h 127.0.0.1 -U automail -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname='$1'" | grep -q 1 \
    || PGPASSWORD=automail psql -q -h 127.0.0.1 -U automail -d postgres -c "CREATE DATABASE \"$1\""
}

start_worker() {
  local n=$1
  # Distinct hostname and log-server port per worker: they stand for separate machines.
  launch "worker$n" env AUTOMAIL_WORKER_HOSTNAME="worker$n" \
    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((8793 + n)) \
    airflow celery worker --celery-hostname "worker$n@%h"
}

wait_api() {
  for _ in $(seq 1 240); do
    python3 - "$API_PORT" <<'PY' && return 0
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/monitor/health", timeout=2)
except Exception:
    sys.exit(1)
PY
    running api-server || { tail -30 "$LOGS/api-server.log" >&2; return 1; }
    sleep 0.5
  done
  echo "api-server did not answer; see $LOGS/api-server.log" >&2
  return 1
}

start() {
  write_env
  # shellcheck disable=SC1091
  source "$DIR/env.sh"
  echo "cluster ($EXECUTOR): home $DIR"
  if ! command -v psql >/dev/null || ! PGPASSWORD=automail pg_isready -q -h 127.0.0.1; then
    [ "$(id -u)" = 0 ] && bash "$ROOT/scripts/postgres-up.sh" >/dev/null
  fi
  ensure_db "$META_DB"
  [[ $STORE_DB == */* ]] || ensure_db "$STORE_DB"
  if [ "$EXECUTOR" = celery ]; then
    command -v redis-server >/dev/null || bash "$ROOT/scripts/services-up.sh"
    launch redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR" \
      --save "" --appendonly no
  fi
  airflow db migrate >>"$LOGS/migrate.log" 2>&1 || { tail -30 "$LOGS/migrate.log" >&2; exit 1; }
  automail db upgrade >>"$LOGS/migrate.log" 2>&1
  airflow pools set automail_smtp "${AUTOMAIL_SMTP_POOL_SLOTS:-4}" \
    "Automail SMTP connections" >>"$LOGS/migrate.log" 2>&1
  launch api-server airflow api-server --port "$API_PORT" --host 127.0.0.1
  launch scheduler airflow scheduler
  launch dag-processor airflow dag-processor
  if [ "$EXECUTOR" = celery ]; then
    for n in $(seq 1 "$WORKERS"); do start_worker "$n"; done
  fi
  wait_api
  echo "cluster up: UI http://127.0.0.1:$API_PORT  (source $DIR/env.sh to use it)"
  echo "login: admin / password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
}

stop() {
  for pid in "$PIDS"/*.pid; do
    [ -e "$pid" ] || continue
    case $(basename "$pid" .pid) in worker*) stop_one "$(basename "$pid" .pid)" ;; esac
  done
  for name in scheduler dag-processor api-server redis; do stop_one "$name"; done
}

status() {
  for pid in "$PIDS"/*.pid; do
    [ -e "$pid" ] || continue
    name=$(basename "$pid" .pid)
    if running "$name"; then echo "$name running (pid $(cat "$pid"))"; else echo "$name dead"; fi
  done
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  worker)
    # shellcheck disable=SC1091
    source "$DIR/env.sh"
    stop_one "worker${2:?worker number}"
    start_worker "$2"
    ;;
  stop-worker) stop_one "worker${2:?worker number}" ;;
  *) echo "usage: $0 [start|stop|status|worker N|stop-worker N]" >&2; exit 2 ;;
esac
