#!/usr/bin/env bash
# The quick start: a fresh store and Airflow home under var/, a loopback SMTP sink, demo
# shop data, then the mail lifecycle in the order the seed's operators follow:
# switch creation on -> mails pile up as pending (sending paused) -> reviewers prune ->
# sending on -> newsletters and step mails -> the next send run -> report.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

DEMO=var/demo
LOGS=$DEMO/logs
SINK=$DEMO/sink
rm -rf var/airflow var/automail.db* var/import "$DEMO"
mkdir -p "$LOGS" "$SINK"

step() { printf '\n== %s\n' "$*"; }
quiet() {  # run a noisy command, keep its output in a log, show the log if it fails
  local log="$LOGS/$1.log"; shift
  if ! "$@" >"$log" 2>&1; then
    echo "demo: '$*' failed; its output ($log):" >&2
    tail -40 "$log" >&2
    exit 1
  fi
}
has() { automail "$@" --help >/dev/null 2>&1; }
dag_exists() { [ -f "dags/$1.py" ]; }
hour() { date -u -d "$1" +%Y-%m-%dT%H:00:00+00:00; }

step "Airflow metadata DB (SQLite) and the mail store (SQLite, via connection automail_db)"
quiet airflow-db airflow db migrate
automail db upgrade

step "Local SMTP server on 127.0.0.1:$AUTOMAIL_SMTP_PORT, saving every message to $SINK/"
python -m automail.smtp_sink --port "$AUTOMAIL_SMTP_PORT" --dir "$SINK" >"$LOGS/smtp-sink.log" 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "smtp sink on" "$LOGS/smtp-sink.log" && break; sleep 0.2; done

step "Demo shop data: each shop's export dropped in var/import/<shop>/<kind>/ and imported"
automail seed-demo
automail import files   # kitchen's orders are a CP932 Next Engine-style export
if has templates; then automail templates install-defaults; fi

step "1. Switch creation on: every transactional kind for every shop (sending stays paused)"
automail kinds enable --shop all --kind all | tail -3
quiet create-dag airflow dags test automail_create_transactional "$(hour '1 hour ago')"
automail report --sink "$SINK"
echo "-> nothing sent while sending is paused: $(ls "$SINK" | wc -l) messages at the SMTP server"

if has mails; then
  step "2. Reviewers prune the pending queue (delete two pending mails, recorded)"
  ids=$(automail mails search --status unsent --kind follow_up --per-page 2 --json \
        | python -c 'import json, sys; print(" ".join(str(json.loads(l)["id"]) for l in sys.stdin))')
  # shellcheck disable=SC2086
  automail mails delete $ids --actor demo-reviewer
fi

if dag_exists automail_send; then
  step "3. Ops unpause sending: one send run to the local SMTP server"
  quiet send-dag airflow dags test automail_send "$(hour 'now')"
  automail report --sink "$SINK"
fi

if dag_exists automail_send && has bounces; then
  step "3b. Bounces: a DSN to a mail's signed return path is applied, forged ones are not"
  python scripts/demo-bounces.py "$SINK" "$DEMO/bounces"
  automail bounces ingest --dir "$DEMO/bounces" >"$LOGS/bounces-ingest.log"
  automail bounces list --limit 3
fi

if dag_exists automail_campaigns && has campaigns; then
  step "4. A newsletter and a step sequence"
  bash scripts/demo-campaigns.sh "$LOGS"
fi

if dag_exists automail_send && has steps; then
  step "5. The next send run sends the step mails (created at their due minute)"
  quiet send-dag-2 airflow dags test automail_send "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
fi

step "Summary"
automail report --sink "$SINK"
echo "Captured messages: $SINK/  (open any .eml; logs in $LOGS/)"
echo "Browse it all in the Airflow UI: see README, 'airflow standalone'."
