#!/usr/bin/env bash
# `promtool check metrics` on a live /metrics scrape of a real server.
#
#   scripts/check-metrics.sh            # fails on any promtool finding
#   scripts/check-metrics.sh --report   # prints the findings, exits 0 (while /metrics is being cleaned up)
#
# Starts the server on a free loopback port with a fresh SQLite file, sends a little traffic of
# every kind the metrics label (a read, a 404 route, a made-up method, a failed login, a sign-up,
# an order and its payment, a coupon issue), scrapes /metrics and runs promtool's linter on it
# (HELP texts, naming, units, counters ending in _total). Also checks that a made-up method
# does not become a label value of its own (audit H3).
#
# Needs promtool (Debian: prometheus). CHECK_METRICS_SKIP_BUILD=1 uses the existing binary in
# ${CARGO_TARGET_DIR:-target}/debug. Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPORT=0
[[ "${1:-}" == --report ]] && REPORT=1
command -v promtool >/dev/null || { echo "check-metrics: promtool is not installed (apt-get install prometheus)" >&2; exit 1; }
START=$(date +%s)
log() { printf '[metrics %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ecommerce"
if [[ "${CHECK_METRICS_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
[[ -x "$BIN" ]] || { echo "check-metrics: no server binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d -t ecommerce-metrics.XXXXXX)
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ADMIN_EMAIL=metrics-admin@example.com
ADMIN_PASSWORD=metrics-admin-password-1
ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="sqlite://$WORK/m.db" ECOMMERCE_EVENTS_FILE="$WORK/events.jsonl" \
  ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
  ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 NO_COLOR=1 RUST_LOG=warn \
  "$BIN" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 300); do
  BASE=$(sed -n 's/^ecommerce listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/server.out")
  [[ -n "$BASE" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited during start-up" >&2; tail -n 20 "$WORK/server.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$BASE" ]] || { echo "server did not print its address within 30 s" >&2; exit 1; }

# Traffic; answers do not matter here, only that every kind of label gets a value.
j() { curl -s -o /dev/null --max-time 10 -H 'Content-Type: application/json' "$@" || true; }
jv() { curl -s --max-time 10 -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1" 2>/dev/null || true; }
j "$BASE/health"
j "$BASE/api/v1/products"
j "$BASE/no/such/route"
j -X MADEUPMETHOD "$BASE/api/v1/products"
j -X POST "$BASE/api/v1/auth/token" -d '{"email":"nobody@example.com","password":"wrong-password"}'
ADMIN=$(jv -X POST "$BASE/api/v1/auth/token" -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | field access_token)
j -X POST -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/admin/products" -d '{"name":"Coat","price":1000,"stock":5}'
j -X POST -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/admin/products" -d '{"name":"Bag","price":1000000,"stock":5}'
j -X POST -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/admin/coupons" \
  -d '{"name":"C","discount_type":"FIXED","discount_value":100,"total_quantity":1,"valid_for_seconds":60}'
USER_ID=$(jv -X POST "$BASE/api/v1/users" -d '{"email":"m@example.com","password":"metrics-user-pass","name":"M"}' | field id)
TOKEN=$(jv -X POST "$BASE/api/v1/auth/token" -d '{"email":"m@example.com","password":"metrics-user-pass"}' | field access_token)
if [[ -n "$USER_ID" && -n "$TOKEN" ]]; then
  AUTH="Authorization: Bearer $TOKEN"
  j -X POST -H "$AUTH" -H 'Idempotency-Key: m1' "$BASE/api/v1/users/$USER_ID/balance/charges" -d '{"amount":10000}'
  j -X POST -H "$AUTH" "$BASE/api/v1/users/$USER_ID/coupons" -d '{"coupon_id":1}'
  ORDER=$(jv -X POST -H "$AUTH" "$BASE/api/v1/users/$USER_ID/orders" -d '{"items":[{"product_id":1,"quantity":1}]}' | field id)
  [[ -n "$ORDER" ]] && j -X POST -H "$AUTH" "$BASE/api/v1/orders/$ORDER/payment"
  ORDER=$(jv -X POST -H "$AUTH" "$BASE/api/v1/users/$USER_ID/orders" -d '{"items":[{"product_id":2,"quantity":1}]}' | field id)
  [[ -n "$ORDER" ]] && j -X POST -H "$AUTH" "$BASE/api/v1/orders/$ORDER/payment"   # INSUFFICIENT_BALANCE: a failure reason label
fi

curl -sf --max-time 10 "$BASE/metrics" >"$WORK/metrics.txt"
log "scraped $(wc -l <"$WORK/metrics.txt") lines from $BASE/metrics"

FINDINGS=0
if ! promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.txt" 2>&1; then
  FINDINGS=1
fi
if grep -q 'MADEUPMETHOD' "$WORK/metrics.txt"; then
  echo 'a made-up HTTP method became a label value (method="MADEUPMETHOD"): label values must be bounded' >>"$WORK/promtool.txt"
  FINDINGS=1
fi
if [[ $FINDINGS == 0 ]]; then
  log "ok: promtool check metrics is clean"
  exit 0
fi
sed 's/^/  /' "$WORK/promtool.txt" >&2
if [[ $REPORT == 1 ]]; then
  log "findings above reported only (--report)"
  exit 0
fi
log "FAILED"
exit 1
