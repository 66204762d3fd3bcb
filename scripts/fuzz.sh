#!/usr/bin/env bash
# API fuzzing from our own OpenAPI document.
#
# 1. Installs schemathesis (PyPI) into target/fuzz-venv when it is missing.
# 2. Builds the server and starts it on a free loopback port against a fresh SQLite file, with an
#    admin account, and seeds a few objects so that some generated ids exist.
# 3. Runs schemathesis against /api-docs/openapi.json with the admin's bearer token, so the
#    authenticated routes get past 401 and are exercised. Gating checks: no 5xx
#    (not_a_server_error), every response's status/content type/body/headers as documented
#    (content_type_conformance, response_schema_conformance, response_headers_conformance).
# 4. Replays a fixed list of malformed requests that schemathesis does not reliably produce
#    (broken JSON, wrong types, 64-bit overflow, missing or wrong Content-Type, an oversize body,
#    bad path ids, unknown routes and methods, bad tokens, deep nesting) and asserts each answer is
#    < 500, `application/problem+json` with a `code`, and the documented status and code.
#
# Exits non-zero on any failure; the server is killed and the temp dir removed on exit.
#
# Knobs (environment): FUZZ_MAX_EXAMPLES (default 100 per operation), FUZZ_SEED (default 1, so CI
# runs are reproducible; set FUZZ_SEED=random for a new seed), FUZZ_STRICT=1 additionally runs
# status_code_conformance, negative_data_rejection and positive_data_acceptance (these report
# gaps of the OpenAPI document: undocumented 415s, missing minimum/maximum bounds) and fails on them.
# FUZZ_SKIP_BUILD=1 uses the existing ${CARGO_TARGET_DIR:-target}/debug/ecommerce.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=target/fuzz-venv
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
SEED="${FUZZ_SEED:-1}"
START=$(date +%s)

log() { printf '[fuzz %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }

# --- schemathesis ------------------------------------------------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  mkdir -p target
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- server ------------------------------------------------------------------------------------
if [[ "${FUZZ_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/ecommerce

WORK=$(mktemp -d -t ecommerce-fuzz.XXXXXX)
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/server.err" ]]; then
    echo "--- last server log lines ---" >&2
    tail -n 30 "$WORK/server.err" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ADMIN_EMAIL=fuzz-admin@example.com
ADMIN_PASSWORD=fuzz-admin-password
ECOMMERCE_ADDR=127.0.0.1:0 ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 \
  DATABASE_URL="sqlite://$WORK/f.db" \
  ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
  ECOMMERCE_EVENTS_FILE="$WORK/events.jsonl" \
  RUST_LOG=warn \
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
log "server $BASE (pid $SERVER_PID)"

json() { curl -sS --max-time 10 -H 'Content-Type: application/json' "$@"; }
TOKEN=$(json -X POST "$BASE/api/v1/auth/token" \
  -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
AUTH="Authorization: Bearer $TOKEN"

# Seed: a user, products, a coupon, a charged balance, a pending and a paid order, so that small
# ids exist and the example/coverage phases reach more than 404s.
USER_ID=$(json -X POST "$BASE/api/v1/users" -d '{"email":"fuzz-user@example.com","password":"fuzz-user-password","name":"Fuzz"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for i in 1 2 3; do
  json -X POST -H "$AUTH" "$BASE/api/v1/admin/products" -d "{\"name\":\"Seed $i\",\"price\":$((i * 1000)),\"stock\":1000}" >/dev/null
done
json -X POST -H "$AUTH" "$BASE/api/v1/admin/coupons" \
  -d '{"name":"Seed","discount_type":"RATE","discount_value":10,"total_quantity":1000,"valid_for_seconds":86400}' >/dev/null
json -X POST -H "$AUTH" -H 'Idempotency-Key: seed-1' "$BASE/api/v1/users/$USER_ID/balance/charges" -d '{"amount":100000}' >/dev/null
json -X POST -H "$AUTH" "$BASE/api/v1/users/$USER_ID/orders" -d '{"items":[{"product_id":1,"quantity":1}]}' >/dev/null
PAID=$(json -X POST -H "$AUTH" "$BASE/api/v1/users/$USER_ID/orders" -d '{"items":[{"product_id":2,"quantity":2}]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
json -X POST -H "$AUTH" "$BASE/api/v1/orders/$PAID/payment" -d '{}' >/dev/null

# Ids that exist, offered to the generator for most path ids (the rest stay random), so that the
# cases reach the business logic instead of 404s: the seeded user, products, coupon and orders.
cat >"$WORK/schemathesis.toml" <<TOML
[dictionaries.user_ids]
values = [$USER_ID, 1]
[dictionaries.product_ids]
values = [1, 2, 3]
[dictionaries.coupon_ids]
values = [1]
[dictionaries.order_ids]
values = [$((PAID - 1)), $PAID]

[parameters]
"path.user_id" = { dictionary = "user_ids", probability = 0.7 }
"path.product_id" = { dictionary = "product_ids", probability = 0.7 }
"path.coupon_id" = { dictionary = "coupon_ids", probability = 0.7 }
"path.order_id" = { dictionary = "order_ids", probability = 0.7 }
TOML

# --- schemathesis ------------------------------------------------------------------------------
CHECKS=not_a_server_error,content_type_conformance,response_schema_conformance,response_headers_conformance
if [[ "${FUZZ_STRICT:-0}" == 1 ]]; then
  CHECKS=$CHECKS,status_code_conformance,negative_data_rejection,positive_data_acceptance
fi
SEED_ARGS=(--seed "$SEED")
[[ "$SEED" == random ]] && SEED_ARGS=()
log "schemathesis: checks $CHECKS, max $MAX_EXAMPLES examples per operation"
ST_RC=0
(cd "$WORK" && "$OLDPWD/$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/api-docs/openapi.json" \
  --header "$AUTH" \
  --exclude-path /api/v1/auth/logout \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  "${SEED_ARGS[@]}" \
  --workers 2 \
  --request-timeout 10 \
  --generation-database none \
  --warnings off \
  --no-color \
  --output-truncate true) || ST_RC=$?
kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAIL: the server died during fuzzing" >&2; exit 1; }

# --- problem+json post-check -------------------------------------------------------------------
# A fresh token: the run above must not have signed the admin out (logout is excluded from it, and
# a password change needs the admin's password), but the checks below should not depend on that.
TOKEN=$(json -X POST "$BASE/api/v1/auth/token" \
  -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
log "problem+json post-check"
PC_RC=0
BASE="$BASE" TOKEN="$TOKEN" USER_ID="$USER_ID" python3 - <<'PY' || PC_RC=$?
import http.client, json, os, sys, urllib.parse

base = urllib.parse.urlparse(os.environ["BASE"])
token = os.environ["TOKEN"]
uid = os.environ["USER_ID"]
AUTH = {"Authorization": f"Bearer {token}"}
JSON = {"Content-Type": "application/json"}
failures = []
count = 0

def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    if isinstance(body, str):
        body = body.encode()
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", data, resp.getheader("x-request-id")

def expect(name, method, path, status, code, body=None, headers=None):
    """status/code None = any 4xx problem."""
    global count
    count += 1
    try:
        got, ctype, data, rid = call(method, path, body, headers)
    except Exception as e:  # connection reset, timeout: a failure too
        failures.append(f"{name}: {method} {path}: no answer ({e!r})")
        return
    problems = []
    if got >= 500:
        problems.append(f"status {got}")
    if status is not None and got != status:
        problems.append(f"status {got}, expected {status}")
    if status is None and not 400 <= got < 500:
        problems.append(f"status {got}, expected a 4xx")
    if not ctype.startswith("application/problem+json"):
        problems.append(f"content-type {ctype!r}")
    try:
        doc = json.loads(data)
        missing = [k for k in ("type", "title", "status", "detail", "code") if k not in doc]
        if missing:
            problems.append(f"problem lacks {missing}")
        elif doc["status"] != got:
            problems.append(f"problem status {doc['status']} != HTTP {got}")
        elif code is not None and doc["code"] != code:
            problems.append(f"code {doc['code']}, expected {code}")
    except Exception:
        problems.append(f"body is not JSON: {data[:120]!r}")
    if not rid:
        problems.append("no X-Request-Id header")
    if problems:
        failures.append(f"{name}: {method} {path}: " + "; ".join(problems))

A = {**AUTH, **JSON}
IK = lambda k: {**A, "Idempotency-Key": k}
charges = f"/api/v1/users/{uid}/balance/charges"

# Malformed bodies
expect("malformed json", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", '{"email": "a@b.co", ', JSON)
expect("empty body", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", "", JSON)
expect("body is an array", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", "[]", JSON)
expect("body is null", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", "null", JSON)
expect("body is a string", "POST", "/api/v1/auth/token", 400, "VALIDATION_FAILED", '"x"', JSON)
expect("invalid utf-8", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", b'{"email": "\xff\xfe@b.co", "password": "12345678", "name": "x"}', JSON)
expect("wrong types", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", '{"email": 1, "password": true, "name": []}', JSON)
expect("missing field", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", '{"email": "x@y.co", "password": "12345678"}', JSON)
expect("deep nesting (40 KB)", "POST", "/api/v1/users", 400, "VALIDATION_FAILED", "[" * 20000 + "]" * 20000, JSON)
expect("trailing garbage", "POST", "/api/v1/auth/token", 400, "VALIDATION_FAILED", '{"email":"a@b.co","password":"12345678"} x', JSON)
expect("no content-type", "POST", "/api/v1/users", 415, "UNSUPPORTED_MEDIA_TYPE", '{"email":"n@b.co","password":"12345678","name":"n"}')
expect("text/plain", "POST", "/api/v1/auth/token", 415, "UNSUPPORTED_MEDIA_TYPE", '{"email":"n@b.co","password":"12345678"}', {"Content-Type": "text/plain"})
expect("form content-type", "PUT", f"/api/v1/users/{uid}/cart/items/1", 415, "UNSUPPORTED_MEDIA_TYPE", "quantity=1", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
big = '{"email":"big@b.co","password":"12345678","name":"' + "x" * (70 * 1024) + '"}'
expect("oversize body", "POST", "/api/v1/users", 413, "PAYLOAD_TOO_LARGE", big, JSON)
expect("oversize body, admin route", "POST", "/api/v1/admin/products", 413, "PAYLOAD_TOO_LARGE", '{"name":"' + "y" * (65 * 1024) + '","price":1,"stock":1}', A)
expect("unknown enum (status)", "PATCH", "/api/v1/admin/products/1", 400, "VALIDATION_FAILED", '{"status": "SOLD"}', A)
expect("unknown enum (discount_type)", "POST", "/api/v1/admin/coupons", 400, "VALIDATION_FAILED",
       '{"name":"c","discount_type":"PERCENT","discount_value":5,"total_quantity":5,"valid_for_seconds":60}', A)
expect("items and from_cart", "POST", f"/api/v1/users/{uid}/orders", 400, "VALIDATION_FAILED",
       '{"items":[{"product_id":1,"quantity":1}],"from_cart":true}', A)
expect("empty items", "POST", f"/api/v1/users/{uid}/orders", 400, "VALIDATION_FAILED", '{"items":[]}', A)

# Numbers
expect("amount beyond 64 bits", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": 99999999999999999999999}', IK("n1"))
expect("amount 1e30", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": 1e30}', IK("n2"))
expect("amount fraction", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": 1000.5}', IK("n3"))
expect("amount string", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": "5000"}', IK("n4"))
expect("amount negative", "POST", charges, 400, "INVALID_CHARGE_AMOUNT", '{"amount": -5000}', IK("n5"))
expect("amount i64::MIN", "POST", charges, 400, "INVALID_CHARGE_AMOUNT", '{"amount": -9223372036854775808}', IK("n6"))
expect("amount i64::MAX", "POST", charges, 400, "INVALID_CHARGE_AMOUNT", '{"amount": 9223372036854775807}', IK("n7"))
expect("no idempotency key", "POST", charges, 400, "IDEMPOTENCY_KEY_MISSING", '{"amount": 5000}', A)
expect("idempotency key with a space", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": 5000}', IK("a b"))
expect("idempotency key too long", "POST", charges, 400, "VALIDATION_FAILED", '{"amount": 5000}', IK("k" * 256))
expect("price i64::MAX", "POST", "/api/v1/admin/products", 400, "VALIDATION_FAILED", '{"name":"p","price":9223372036854775807,"stock":1}', A)
expect("quantity beyond 64 bits", "PUT", f"/api/v1/users/{uid}/cart/items/1", 400, "VALIDATION_FAILED", '{"quantity": 18446744073709551616}', A)
expect("restock overflow", "POST", "/api/v1/admin/products/1/restock", 400, "VALIDATION_FAILED", '{"quantity": 9223372036854775807}', A)
expect("coupon value overflow", "POST", "/api/v1/admin/coupons", 400, "VALIDATION_FAILED",
       '{"name":"c","discount_type":"FIXED","discount_value":9223372036854775807,"total_quantity":9223372036854775807,"valid_for_seconds":9223372036854775807}', A)

# Path ids and query parameters
for bad in ("abc", "0", "-1", "1.5", "99999999999999999999", "9223372036854775808", "%20", "1e3"):
    expect(f"product id {bad!r}", "GET", f"/api/v1/products/{bad}", 400, "VALIDATION_FAILED")
    expect(f"order id {bad!r}", "POST", f"/api/v1/orders/{bad}/payment", 400, "VALIDATION_FAILED", "{}", A)
    expect(f"coupon id {bad!r}", "GET", f"/api/v1/coupons/{bad}", 400, "VALIDATION_FAILED")
expect("admin user id 'abc'", "GET", "/api/v1/users/abc/balance", 400, "VALIDATION_FAILED", None, AUTH)
expect("cart product id 'x'", "PUT", f"/api/v1/users/{uid}/cart/items/x", 400, "VALIDATION_FAILED", '{"quantity":1}', A)
expect("unknown product", "GET", "/api/v1/products/9223372036854775807", 404, "PRODUCT_NOT_FOUND")
expect("unknown order", "GET", "/api/v1/orders/9223372036854775807", 404, "ORDER_NOT_FOUND", None, AUTH)
expect("unknown coupon", "GET", "/api/v1/coupons/9223372036854775807", 404, "COUPON_NOT_FOUND")
expect("unknown user (admin)", "GET", "/api/v1/users/9223372036854775807/balance", 404, "USER_NOT_FOUND", None, AUTH)
for q in ("limit=0", "limit=101", "limit=abc", "limit=-1", "after=abc", "after=99999999999999999999", "limit=1&limit=2"):
    expect(f"products ?{q}", "GET", f"/api/v1/products?{q}", 400, "VALIDATION_FAILED")
for q in ("days=0", "days=31", "limit=0", "limit=51", "days=x"):
    expect(f"popular ?{q}", "GET", f"/api/v1/products/popular?{q}", 400, "VALIDATION_FAILED")
expect("user coupons bad status", "GET", f"/api/v1/users/{uid}/coupons?status=LOST", 400, "VALIDATION_FAILED", None, AUTH)
expect("orders bad status", "GET", f"/api/v1/users/{uid}/orders?status=paid", 400, "VALIDATION_FAILED", None, AUTH)

# HTTP-level failures and auth
expect("no such route", "GET", "/api/v1/nope", 404, "NOT_FOUND")
expect("no such route, root", "GET", "/", 404, "NOT_FOUND")
expect("method not allowed", "DELETE", "/api/v1/products", 405, "METHOD_NOT_ALLOWED")
expect("method not allowed, health", "POST", "/health", 405, "METHOD_NOT_ALLOWED")
expect("no token", "GET", f"/api/v1/users/{uid}/balance", 401, "UNAUTHORIZED")
expect("garbage token", "GET", f"/api/v1/users/{uid}/balance", 401, "UNAUTHORIZED", None, {"Authorization": "Bearer x.y.z"})
expect("basic scheme", "GET", f"/api/v1/users/{uid}/balance", 401, "UNAUTHORIZED", None, {"Authorization": "Basic Zm9vOmJhcg=="})
expect("tampered token", "GET", f"/api/v1/users/{uid}/balance", 401, "UNAUTHORIZED", None, {"Authorization": f"Bearer {token[:-2]}xx"})
expect("no token, admin route", "POST", "/api/v1/admin/products", 401, "UNAUTHORIZED", '{"name":"p","price":1,"stock":1}', JSON)
expect("wrong credentials", "POST", "/api/v1/auth/token", 401, "INVALID_CREDENTIALS", '{"email":"nobody@example.com","password":"whatever1"}', JSON)

print(f"problem+json post-check: {count - len(failures)} passed, {len(failures)} failed")
for f in failures:
    print("  FAIL", f)
sys.exit(1 if failures else 0)
PY
kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAIL: the server died during the post-check" >&2; exit 1; }
if grep -q -i 'panicked' "$WORK/server.err"; then
  echo "FAIL: the server log shows a panic:" >&2
  grep -i -m 5 'panicked' "$WORK/server.err" >&2
  exit 1
fi

log "done: schemathesis exit $ST_RC, post-check exit $PC_RC"
if [[ $ST_RC -ne 0 || $PC_RC -ne 0 ]]; then
  echo "fuzz: FAILED" >&2
  exit 1
fi
echo "fuzz: OK"
