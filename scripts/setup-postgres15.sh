#!/usr/bin/env bash
# Installs PostgreSQL 15 (Debian bookworm) plus pgvector built from the source
# package of Debian's next release, then starts a throwaway test cluster on
# 127.0.0.1 and writes its DSN to $VECFMT_PG15_DSN_FILE (printed on stdout;
# everything else goes to stderr). Run as root. Safe to re-run.
set -euo pipefail

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PGVECTOR_SUITE=${PGVECTOR_SUITE:-trixie}
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
packages=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev)
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

# --- pgvector from the next Debian release's source package -----------------
# Prints "URI SIGNED_BY" of the machine's own Debian mirror for its suite.
debian_mirror() {
  local suite f
  # shellcheck disable=SC1091
  suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (uris != "" && enabled != "no" && types ~ /(^| )deb( |$)/ &&
            (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1], signed; found = 1; exit }
        uris = ""; suites = ""; types = ""; signed = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"     { $1 = ""; types = $0 }
      tolower($1) == "uris:"      { $1 = ""; uris = $0 }
      tolower($1) == "suites:"    { $1 = ""; suites = $0 }
      tolower($1) == "signed-by:" { signed = $2 }
      tolower($1) == "enabled:"   { enabled = tolower($2) }
      END { if (!found) flush() }
    ' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' |
    awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
}

if [ -f "$("$PG_BIN/pg_config" --pkglibdir)/vector.so" ] &&
   [ -f "$("$PG_BIN/pg_config" --sharedir)/extension/vector.control" ]; then
  log "pgvector already installed"
else
  read -r uri signed_by < <(debian_mirror | head -n1) || true
  [ -n "${uri:-}" ] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
  case "${signed_by:-}" in /*) [ -f "$signed_by" ] || signed_by= ;; *) signed_by= ;; esac
  signed_by=${signed_by:-/usr/share/keyrings/debian-archive-keyring.gpg}
  tmp=$(mktemp -d /tmp/vecfmt-pgvector.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/src"
  echo "deb-src [signed-by=$signed_by] $uri $PGVECTOR_SUITE main" >"$tmp/sources.list"
  apt_private=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
               -o APT::Sandbox::User=root)
  log "fetching pgvector source from $uri $PGVECTOR_SUITE"
  apt-get "${apt_private[@]}" update >&2
  (cd "$tmp/src" && apt-get "${apt_private[@]}" source pgvector >&2)
  srcdir=$(find "$tmp/src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  # Debian's no-native patch comments out "OPTFLAGS = -march=native";
  # override it anyway should a later revision drop that patch.
  make_args=(PG_CONFIG="$PG_BIN/pg_config" with_llvm=no)
  if grep -Eq '^[[:space:]]*OPTFLAGS[[:space:]]*[:?]?=.*-march=native' "$srcdir/Makefile"; then
    log "Makefile uses -march=native: building with OPTFLAGS=''"
    make_args+=(OPTFLAGS=)
  fi
  make -C "$srcdir" -j"$(nproc)" "${make_args[@]}" >&2
  make -C "$srcdir" "${make_args[@]}" install >&2
fi

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
