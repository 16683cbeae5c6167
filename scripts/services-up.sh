#!/usr/bin/env bash
# Start what the tests need on this machine: PostgreSQL on loopback, Debian's Chromium
# for the browser test, Dovecot (the IMAP test starts its own, on loopback) and Redis
# (the Celery broker of scripts/cluster-up.sh, which starts its own on loopback).
# Needs root to install; without root, says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "services: not root; PostgreSQL/Chromium must already be installed and running" >&2
  exit 0
fi
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)  # IMAP bounce mailbox tests
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # cluster profile and test
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/postgres-up.sh
