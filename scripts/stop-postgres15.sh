#!/usr/bin/env bash
# Stops the throwaway cluster started by setup-postgres15.sh; --purge also
# deletes its data directory and DSN file.
set -euo pipefail
BASE=${VECFMT_PG15_DIR:-/tmp/vecfmt-pg15}
DSN_FILE=${VECFMT_PG15_DSN_FILE:-/tmp/vecfmt-pg15.dsn}
if [ -f "$BASE/data/postmaster.pid" ]; then
  (cd / && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$BASE/data" -m fast -w stop) || true
fi
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$BASE" "$DSN_FILE"
fi
