#!/usr/bin/env bash
# Builds the Weaviate server from source (the Go module proxy) for the tests and benchmarks:
#
#   scripts/setup-weaviate.sh [VERSION]        (default below; prints the binary's path on one line)
#
# `go install` of Weaviate's server command, with the binary and Go's module and build caches kept under
# ${VECFMT_CACHE:-~/.cache/vecfmt}/ (outside the work tree), so a second run costs nothing. Weaviate's
# module has no replace directives, so it builds from the proxy alone. A cold build (empty caches) took
# 8 minutes on two cores (475 s, downloads included); the binary is about 190 MB.
set -euo pipefail

VERSION=${1:-v1.38.11}
CACHE_ROOT=${VECFMT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vecfmt}
BIN_DIR=$CACHE_ROOT/weaviate/$VERSION
BIN=$BIN_DIR/weaviate-server

log() { echo "setup-weaviate: $*" >&2; }

if [ ! -x "$BIN" ]; then
  # Go's tarball install may not be on a non-login PATH (CI's): look where it puts itself too.
  command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || { log "needs Go 1.26 or later (Weaviate 1.38's go.mod) on PATH"; exit 1; }
  mkdir -p "$BIN_DIR"
  tmp=$(mktemp -d "$BIN_DIR/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  log "building weaviate-server $VERSION (cold: about 8 minutes on two cores)"
  start=$(date +%s)
  # Installed into a temp folder and renamed: an interrupted build leaves no half-written binary.
  if ! GOBIN=$tmp GOMODCACHE=$CACHE_ROOT/go/mod GOCACHE=$CACHE_ROOT/go/build GOFLAGS=-buildvcs=false \
       go install "github.com/weaviate/weaviate/cmd/weaviate-server@$VERSION" >"$tmp/build.log" 2>&1; then
    tail -n 30 "$tmp/build.log" >&2
    log "go install failed"
    exit 1
  fi
  mv -f "$tmp/weaviate-server" "$BIN"
  log "built in $(( $(date +%s) - start ))s"
fi
echo "weaviate-server $VERSION built from source: $BIN"
