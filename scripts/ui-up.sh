#!/usr/bin/env bash
# The Airflow UI quick start: api-server + scheduler (LocalExecutor) + dag-processor with
# Airflow's metadata on the local PostgreSQL (scripts/postgres-up.sh), so backfills and
# the scheduler can write at the same time (SQLite's "database is locked" is gone), on
# the mail store `make demo` filled (var/automail.db). Logs in var/ui/logs/.
#   bash scripts/ui-up.sh          start;  source var/ui/env.sh  to use `airflow …` on it
#   bash scripts/ui-up.sh stop     stop
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AUTOMAIL_EXECUTOR=local
export AUTOMAIL_CLUSTER_DIR=${AUTOMAIL_CLUSTER_DIR:-$ROOT/var/ui}
export AUTOMAIL_METADATA_DB=${AUTOMAIL_METADATA_DB:-airflow_ui}
export AUTOMAIL_STORE_DB=${AUTOMAIL_STORE_DB:-$ROOT/var/automail.db}
exec bash "$ROOT/scripts/cluster-up.sh" "$@"
