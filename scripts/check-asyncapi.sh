#!/usr/bin/env bash
# The event contract (docs/asyncapi.json) against the official AsyncAPI 3.0 schema and against
# real events written by a real server.
#
# 1. Installs the pinned validator tooling (scripts/asyncapi-check: @asyncapi/specs, ajv) with
#    `npm ci` when it is missing or its lockfile changed.
# 2. Validates the document: the official AsyncAPI 3.0.0 JSON Schema, every local $ref, and every
#    message example against its own payload and header schemas.
# 3. Builds and starts the server on a free loopback port with a fresh SQLite file and the file
#    sink, then, through the HTTP API: two products, a user with a charged balance and a RATE
#    coupon; an order paid with the coupon, an order paid without one, and a refund of the first.
# 4. Waits (bounded) until the relay has written the three events, then validates every line of
#    the events file against the document's payload schemas and the rules it states (times,
#    amounts, totals), and checks that the events are exactly those of the API's orders.
# 5. The server serves this document at GET /api-docs/asyncapi.json.
#
# Exits non-zero on any mismatch. CHECK_ASYNCAPI_SKIP_BUILD=1 uses the existing binary in
# ${CARGO_TARGET_DIR:-target}/debug. Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/scripts/asyncapi-check
DOC=$ROOT/docs/asyncapi.json
START=$(date +%s)
log() { printf '[asyncapi %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }

# --- 1. tooling ----------------------------------------------------------------------------------
command -v node >/dev/null || { echo "check-asyncapi: node is not installed" >&2; exit 1; }
. "$ROOT/scripts/lib/tools.sh"
npm_tool_dir "$TOOLS"

# --- 2. the document -----------------------------------------------------------------------------
log "validating docs/asyncapi.json"
node "$TOOLS/validate.mjs" "$DOC" >/dev/null

# --- 3. a real server ----------------------------------------------------------------------------
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ecommerce"
if [[ "${CHECK_ASYNCAPI_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
[[ -x "$BIN" ]] || { echo "check-asyncapi: no server binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d -t ecommerce-asyncapi.XXXXXX)
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 ]]; then
    [[ -f "$WORK/events.jsonl" ]] && { echo "--- events file ---" >&2; cat "$WORK/events.jsonl" >&2; }
    [[ -f "$WORK/server.err" ]] && { echo "--- last server log lines ---" >&2; tail -n 20 "$WORK/server.err" >&2; }
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ADMIN_EMAIL=asyncapi-admin@example.com
ADMIN_PASSWORD=asyncapi-admin-password-1
EVENTS=$WORK/events.jsonl
ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="sqlite://$WORK/a.db" ECOMMERCE_EVENTS_FILE="$EVENTS" \
  ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
  ECOMMERCE_RELAY_INTERVAL_MS=50 ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 \
  NO_COLOR=1 RUST_LOG=warn \
  "$BIN" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 300); do  # up to 30 s for migrations and the admin's Argon2 hash
  BASE=$(sed -n 's/^ecommerce listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/server.out")
  [[ -n "$BASE" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited during start-up" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$BASE" ]] || { echo "server did not print its address within 30 s" >&2; exit 1; }
log "server $BASE"

# call METHOD PATH TOKEN [BODY] [extra curl args]: prints the body; fails on a non-2xx answer.
call() {
  local method=$1 path=$2 token=$3 body=${4:-} out status
  shift 4 || shift $#
  out=$(curl -sS --max-time 10 -X "$method" -H 'Content-Type: application/json' \
    ${token:+-H "Authorization: Bearer $token"} ${body:+-d "$body"} -w '\n%{http_code}' "$@" "$BASE$path")
  status=${out##*$'\n'}
  if [[ "$status" != 2* ]]; then
    echo "check-asyncapi: $method $path answered $status: ${out%$'\n'*}" >&2
    return 1
  fi
  printf '%s' "${out%$'\n'*}"
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

ADMIN=$(call POST /api/v1/auth/token "" "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | field access_token)
COAT=$(call POST /api/v1/admin/products "$ADMIN" '{"name":"Wool coat","price":39000,"stock":10}' | field id)
SCARF=$(call POST /api/v1/admin/products "$ADMIN" '{"name":"Silk scarf","price":12000,"stock":10}' | field id)
COUPON=$(call POST /api/v1/admin/coupons "$ADMIN" \
  '{"name":"Ten off","discount_type":"RATE","discount_value":10,"total_quantity":5,"valid_for_seconds":3600}' | field id)
USER_ID=$(call POST /api/v1/users "" '{"email":"buyer@example.com","password":"buyer-password-1","name":"Buyer"}' | field id)
TOKEN=$(call POST /api/v1/auth/token "" '{"email":"buyer@example.com","password":"buyer-password-1"}' | field access_token)
call POST "/api/v1/users/$USER_ID/balance/charges" "$TOKEN" '{"amount":500000}' -H 'Idempotency-Key: asyncapi-charge-1' >/dev/null
USER_COUPON=$(call POST "/api/v1/users/$USER_ID/coupons" "$TOKEN" "{\"coupon_id\":$COUPON}" | field id)

FIRST=$(call POST "/api/v1/users/$USER_ID/orders" "$TOKEN" \
  "{\"items\":[{\"product_id\":$COAT,\"quantity\":1},{\"product_id\":$SCARF,\"quantity\":2}]}" | field id)
call POST "/api/v1/orders/$FIRST/payment" "$TOKEN" "{\"user_coupon_id\":$USER_COUPON}" >"$WORK/first-paid.json"
SECOND=$(call POST "/api/v1/users/$USER_ID/orders" "$TOKEN" "{\"items\":[{\"product_id\":$SCARF,\"quantity\":1}]}" | field id)
call POST "/api/v1/orders/$SECOND/payment" "$TOKEN" "" >"$WORK/second-paid.json"
call POST "/api/v1/orders/$FIRST/refund" "$TOKEN" "" >"$WORK/first-refunded.json"
log "orders $FIRST (paid with coupon $USER_COUPON, refunded) and $SECOND (paid) made"

# --- 4. the events it wrote ----------------------------------------------------------------------
# The relay runs every 50 ms here; no step function is reachable from outside the process, so
# poll the file, bounded.
for _ in $(seq 1 200); do
  [[ -f "$EVENTS" && $(wc -l <"$EVENTS") -ge 3 ]] && break
  sleep 0.1
done
[[ -f "$EVENTS" ]] || { echo "check-asyncapi: no events file after 20 s" >&2; exit 1; }

log "validating $(wc -l <"$EVENTS") events against docs/asyncapi.json"
node "$TOOLS/validate.mjs" "$DOC" "$EVENTS" >"$WORK/summary.json"

python3 - "$EVENTS" "$WORK" "$USER_ID" "$FIRST" "$SECOND" "$USER_COUPON" <<'PY'
import json, sys
events_file, work, user_id, first, second, user_coupon = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
events = [json.loads(line) for line in open(events_file)]
problems = []
kinds = [(e["type"], e["data"]["order_id"]) for e in events]
# Commit order per order: the first order's paid event before its refund.
if sorted(kinds) != sorted([("order.paid", first), ("order.paid", second), ("order.refunded", first)]):
    problems.append(f"events are {kinds}, expected paid {first}, paid {second}, refunded {first}")
elif kinds.index(("order.paid", first)) > kinds.index(("order.refunded", first)):
    problems.append("the refund of the first order came before its payment")
if len({e["id"] for e in events}) != len(events):
    problems.append("two events share an id")
answers = {("order.paid", first): "first-paid", ("order.paid", second): "second-paid",
           ("order.refunded", first): "first-refunded"}
for event in events:
    key = (event["type"], event["data"]["order_id"])
    if key not in answers:
        continue
    order = json.load(open(f"{work}/{answers[key]}.json"))
    data = event["data"]
    expected = {
        "order_id": order["id"], "user_id": user_id,
        "items": [{"product_id": l["product_id"], "quantity": l["quantity"], "unit_price": l["unit_price"],
                   "amount": l["amount"]} for l in order["items"]],
        "total_amount": order["total_amount"], "discount_amount": order["discount_amount"],
        "user_coupon_id": order["user_coupon_id"],
    }
    if event["type"] == "order.paid":
        expected |= {"paid_amount": order["paid_amount"], "paid_at": order["paid_at"]}
    else:
        expected |= {"refunded_amount": order["paid_amount"]}
        expected["refunded_at"] = data.get("refunded_at")  # the API's order has no refund time
    if data != expected:
        problems.append(f"{key}: event data {data} differs from the API's order {expected}")
if not any(e["data"]["user_coupon_id"] == user_coupon for e in events if e["type"] == "order.paid"):
    problems.append("no paid event carries the user coupon")
for p in problems:
    print(f"FAIL {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# --- 5. the document the server serves -----------------------------------------------------------
served=$(curl -s --max-time 10 -o "$WORK/served.json" -w '%{http_code}' "$BASE/api-docs/asyncapi.json")
[[ "$served" == 200 ]] || { echo "check-asyncapi: GET /api-docs/asyncapi.json answered $served" >&2; exit 1; }
python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
  "$WORK/served.json" "$DOC" || { echo "check-asyncapi: GET /api-docs/asyncapi.json differs from docs/asyncapi.json" >&2; exit 1; }
log "GET /api-docs/asyncapi.json is docs/asyncapi.json"

log "ok: $(cat "$WORK/summary.json")"
