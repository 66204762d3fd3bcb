#!/usr/bin/env bash
# The typed TypeScript client (clients/typescript) in CI:
#   1. its tools and its one runtime dependency, pinned by package-lock.json (`npm ci`);
#   2. the generated types (src/schema.ts) are exactly what openapi-typescript makes of the
#      committed docs/openapi.json: after an API change, run `npm run generate` there and commit;
#   3. it compiles under `strict`, and its tests (Node's test runner) pass against a real server:
#      the debug binary on 127.0.0.1:0 with a fresh SQLite file, started by the tests.
#
# TS_CLIENT_SKIP_BUILD=1 uses the existing binary in ${CARGO_TARGET_DIR:-target}/debug.
# Usage: scripts/ts-client-tests.sh            (needs node >= 20 and npm)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLIENT=$ROOT/clients/typescript
log() { printf '[ts-client] %s\n' "$*" >&2; }

command -v node >/dev/null || { echo "ts-client-tests: node is not installed" >&2; exit 1; }
. "$ROOT/scripts/lib/tools.sh"
npm_tool_dir "$CLIENT"

log "generated types against docs/openapi.json"
if ! (cd "$CLIENT" && npx --no-install openapi-typescript ../../docs/openapi.json --output src/schema.ts --check >&2); then
  echo "ts-client-tests: clients/typescript/src/schema.ts is not what docs/openapi.json generates;" \
    "run (cd clients/typescript && npm run generate) and commit it" >&2
  exit 1
fi

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ecommerce"
if [[ "${TS_CLIENT_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
[[ -x "$BIN" ]] || { echo "ts-client-tests: no server binary at $BIN" >&2; exit 1; }

log "tsc (strict) and the tests against a real server"
(cd "$CLIENT" && ECOMMERCE_BIN="$BIN" npm test --silent)
log "ok"
