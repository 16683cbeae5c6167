#!/usr/bin/env bash
# `make bench`: every benchmark, one JSON line per figure ({"name","value","unit",
# "baseline","ratio"}), on the local PostgreSQL. Full sizes are the issue targets'
# (1M orders/mails/customers, 30,000 sends); BENCH_QUICK=1 runs small sizes in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  ORDERS="10000 100000"; ROWS=100000; CUSTOMERS=100000; SENDS=3000; CLUSTER_SENDS=4000; BOUNCES=2000
  IMPORT="10000 100000"; LATENCY=20
else
  ORDERS="100000 1000000"; ROWS=1000000; CUSTOMERS=1000000; SENDS=30000; CLUSTER_SENDS=20000; BOUNCES=10000
  IMPORT="100000 1000000"; LATENCY=100
fi
run() { echo "# $*" >&2; "$@"; }
# shellcheck disable=SC2086
run $PY bench/create.py --orders $ORDERS
run $PY bench/render.py --mails 30000
run $PY bench/send.py --mails "$SENDS" --naive 300
run $PY bench/relay.py --mails "$SENDS"
run $PY bench/dkim_sign.py
run $PY bench/audience.py --customers "$CUSTOMERS"
run $PY bench/search.py --rows "$ROWS"
run $PY bench/bounce_accuracy.py
# Unseen real bounces: sisimai's public samples not in the shared corpus (a checkout of
# github.com/sisimai/p5-sisimai in SISIMAI_DIR; skipped without one).
if [ -n "${SISIMAI_DIR:-}" ]; then run $PY bench/bounce_unseen.py "$SISIMAI_DIR"; fi
run $PY bench/bounce_ingest.py --bounces "$BOUNCES"  # SQLite and PostgreSQL
run $PY bench/cluster.py --mails "$CLUSTER_SENDS"
# shellcheck disable=SC2086
run $PY bench/import.py --rows $IMPORT
run $PY bench/latency.py --orders "$LATENCY"  # starts its own api-server, scheduler, dag-processor
run $PY bench/tracking.py --hits 20000
