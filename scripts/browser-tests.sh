#!/usr/bin/env bash
# Browser tests of the operator console (tests/browser/): builds the server binary, makes sure
# Debian's Chromium and the pinned playwright-core are installed, then runs every spec with
# Node's own test runner. Each spec file starts its own server on 127.0.0.1:0 with a fresh SQLite
# file and stops it afterwards.
#
#   scripts/browser-tests.sh                 # all specs (honours CARGO_TARGET_DIR)
#   SCREENSHOTS=1 scripts/browser-tests.sh   # also refresh docs/console/*.png
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  echo "installing Debian's chromium (needs root)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! command -v node >/dev/null 2>&1; then
  echo "node (20 or newer) is needed for the browser tests" >&2
  exit 1
fi

# The specs find the binary under $CARGO_TARGET_DIR (or target/), or take $ECOMMERCE_BIN.
cargo build -p ecommerce

cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
exec node --test --test-timeout=180000 specs/
