#!/usr/bin/env bash
# Install (Debian package) and start a local PostgreSQL on loopback, with the role and
# databases the tests and benchmarks use. Idempotent; needs root (CI and dev machines are).
set -euo pipefail
PGUSER_NAME=${AUTOMAIL_PG_USER:-automail}
PGPASS=${AUTOMAIL_PG_PASSWORD:-automail}
DBS=${AUTOMAIL_PG_DBS:-"automail_test automail_bench"}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1" && break
  sleep 1
done
su postgres -c "psql -q -tAc \"SELECT 1 FROM pg_roles WHERE rolname='$PGUSER_NAME'\"" | grep -q 1 \
  || su postgres -c "psql -q -c \"CREATE ROLE $PGUSER_NAME LOGIN SUPERUSER PASSWORD '$PGPASS'\""
for db in $DBS; do
  su postgres -c "psql -q -tAc \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1 \
    || su postgres -c "createdb -O $PGUSER_NAME $db"
done
echo "postgresql $version up on 127.0.0.1:5432 (role $PGUSER_NAME; databases: $DBS)"
