#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (the `chromium` package) when it is missing, for
# tests/test_report.py, which opens `vecfmt report`'s page in a real browser. Run as root, or as a user
# with sudo. Safe to re-run. Prints the browser's version on stdout; everything else goes to stderr.
set -euo pipefail

log() { echo "setup-chromium: $*" >&2; }

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    log "must run as root (or with sudo) to install chromium"
    exit 1
  fi
  log "installing chromium"
  "${as_root[@]}" apt-get update >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2
fi

# The browser must start headless here and render a page, not only be installed.
if ! timeout 60 chromium --headless=new --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>rendered</p>' \
    2>/dev/null | grep -q '<p>rendered</p>'; then
  log "chromium is installed but does not render a page headless"
  exit 1
fi
chromium --version 2>/dev/null
