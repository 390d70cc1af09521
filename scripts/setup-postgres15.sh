#!/usr/bin/env bash
# Installs PostgreSQL 15 (Debian bookworm) plus pgvector built here from Debian
# trixie's source package (scripts/build-pgvector.sh), then starts a throwaway test cluster on
# 127.0.0.1 and writes its DSN to $VECFMT_PG15_DSN_FILE (printed on stdout;
# everything else goes to stderr). Run as root. Safe to re-run.
set -euo pipefail

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
BASE=${VECFMT_PG15_DIR:-/tmp/vecfmt-pg15}
PORT=${VECFMT_PG15_PORT:-54315}
DSN_FILE=${VECFMT_PG15_DSN_FILE:-/tmp/vecfmt-pg15.dsn}
ROLE=vecfmt
PASSWORD=s3cret-pw
DB=vecfmt
DATA=$BASE/data

log() { echo "setup-postgres15: $*" >&2; }
as_pg() { (cd / && runuser -u postgres -- "$@"); }

[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }

# --- packages ---------------------------------------------------------------
packages=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  # Only our own cluster is wanted: stop the package from creating "main".
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/vecfmt.conf
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

# --- pgvector, built here from Debian trixie's source package (0.8.0-1) ------------
PGVECTOR_DEB_VERSION=${PGVECTOR_DEB_VERSION:-0.8.0-1}
PGVECTOR_DSC_SHA256=${PGVECTOR_DSC_SHA256:-a71780bf7ab9901094a3d9869c489b6e2bcb858a8c14a5fa52d159933e016308}
bash "$(dirname "$0")/build-pgvector.sh" "$PG_BIN/pg_config" "$PGVECTOR_DEB_VERSION" "$PGVECTOR_DSC_SHA256" >&2

# --- throwaway cluster --------------------------------------------------------
mkdir -p "$BASE"
chown postgres:postgres "$BASE"
if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initdb $DATA"
  as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
    --auth-local=peer --auth-host=scram-sha-256 --no-sync >&2
  echo "include 'vecfmt.conf'" >>"$DATA/postgresql.conf"
fi
cat >"$DATA/vecfmt.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BASE'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
chown postgres:postgres "$DATA/vecfmt.conf"

if as_pg "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "cluster already running"
else
  log "starting cluster on 127.0.0.1:$PORT"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 start >&2; then
    tail -n 20 "$BASE/server.log" >&2 || true
    exit 1
  fi
fi

as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BASE" -p "$PORT" -d postgres >&2 <<SQL
SELECT 'CREATE ROLE $ROLE' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE')\gexec
ALTER ROLE $ROLE WITH LOGIN SUPERUSER PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE $DB OWNER $ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB')\gexec
SQL

dsn="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
version=$("$PG_BIN/psql" -X -At "$dsn" -c "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
[ -n "$version" ] || { log "pgvector is not available in the cluster"; exit 1; }
log "PostgreSQL $PG_MAJOR on 127.0.0.1:$PORT, pgvector $version"
echo "$dsn" >"$DSN_FILE"
echo "$dsn"
