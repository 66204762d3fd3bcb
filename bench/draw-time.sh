#!/usr/bin/env bash
# Times one draw on the release server: W winners among E entries, the entries written straight
# into the database (E sign-ups through the API would cost E / 30 seconds of Argon2 here), then
# the entry window closed and the server's own draw job left to draw it.
#
#   bench/draw-time.sh [--entries 20000] [--winners 1000] [--runs 3]
#
# The draw's `drawn_at` is the instant the job's round began (before it looked for due draws);
# the script polls `drawn_at` every 10 ms, so "seen drawn − drawn_at" bounds the draw
# transaction from above (plus one poll and one psql start, ~10–20 ms). Checks afterwards: W
# entries WON, each with one pending order of the draw, E − W LOST, none left ENTERED.
# One server on a fresh PostgreSQL database, torn down on exit.
set -euo pipefail

ENTRIES=20000
WINNERS=1000
RUNS=3
PG_URL=postgres://postgres@127.0.0.1:5432
while [[ $# -gt 0 ]]; do
  case "$1" in
    --entries) ENTRIES=$2; shift 2 ;;
    --winners) WINNERS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --pg-url) PG_URL=${2%/}; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SERVER="${CARGO_TARGET_DIR:-$ROOT/target}/release/ecommerce"
[[ -x $SERVER ]] || { echo "build first: cargo build --release -p ecommerce" >&2; exit 1; }
OUT=$(mktemp -d /tmp/draw-time.XXXXXX)
DB="ecommerce_drawtime_$$"
ADMIN_EMAIL=admin@loadgen.test
ADMIN_PASSWORD="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
PID=
cleanup() {
  local status=$?
  [[ -n $PID ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  psql "$PG_URL/postgres" -qAtX -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
sql() { psql "$PG_URL/$DB" -qAtX -v ON_ERROR_STOP=1 "$@"; }
now_ms() { date +%s%3N; }

psql "$PG_URL/postgres" -qAtX -v ON_ERROR_STOP=1 -c "create database $DB"
env ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="$PG_URL/$DB" \
  ECOMMERCE_JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
  ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 ECOMMERCE_EVENTS_FILE="$OUT/events.jsonl" \
  "$SERVER" >"$OUT/server.out" 2>"$OUT/server.err" &
PID=$!
BASE=
for _ in $(seq 1 600); do
  BASE=$(grep -m1 -o 'http://[0-9.:]*' "$OUT/server.out" 2>/dev/null || true)
  [[ -n $BASE ]] && break
  sleep 0.1
done
[[ -n $BASE ]] || { echo "the server did not start; see $OUT/server.err" >&2; exit 1; }

TOKEN=$(curl -fsS "$BASE/api/v1/auth/token" -H 'content-type: application/json' \
  -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
api() { curl -fsS "$BASE$1" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$2"; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# The entrants, once for every run.
sql -c "insert into account (email, password_hash, name, role, balance, created_at)
        select 'dt' || g || '@loadgen.test', 'not-a-hash', 'draw-time ' || g, 'USER', 0, 0
        from generate_series(1, $ENTRIES) g"

echo "draw of $WINNERS winners among $ENTRIES entries, $RUNS run(s), server $BASE"
for run in $(seq 1 "$RUNS"); do
  product=$(api /api/v1/admin/products "{\"name\":\"draw-time $run\",\"price\":1000,\"stock\":$WINNERS}" | sed 's/^{"id":\([0-9]*\).*/\1/')
  now=$(date +%s)
  draw=$(api /api/v1/admin/draws "{\"product_id\":$product,\"quantity\":$WINNERS,\"entry_starts_at\":\"$(iso $((now - 60)))\",
    \"entry_ends_at\":\"$(iso $((now + 3600)))\",\"payment_window_seconds\":600}" | sed 's/^{"id":\([0-9]*\).*/\1/')
  sql -c "insert into draw_entries (draw_id, user_id, status, entered_at)
          select $draw, id, 'ENTERED', $(now_ms) from account where email like 'dt%@loadgen.test'" \
      -c "update draws set entry_count = $ENTRIES where id = $draw" -c "vacuum analyze draw_entries"
  closed=$(now_ms)
  sql -c "update draws set entry_ends_at = $closed where id = $draw"
  drawn_at=
  for _ in $(seq 1 6000); do
    drawn_at=$(sql -c "select drawn_at from draws where id = $draw")
    [[ -n $drawn_at ]] && break
    sleep 0.01
  done
  seen=$(now_ms)
  [[ -n $drawn_at ]] || { echo "draw $draw not drawn within 60 s" >&2; exit 1; }
  read -r won lost entered orders < <(sql -F ' ' -c "select
      count(*) filter (where status = 'WON'), count(*) filter (where status = 'LOST'),
      count(*) filter (where status = 'ENTERED'),
      (select count(*) from purchase_order where draw_id = $draw and status = 'PENDING_PAYMENT')
      from draw_entries where draw_id = $draw")
  ok=ok
  [[ $won -eq $WINNERS && $lost -eq $((ENTRIES - WINNERS)) && $entered -eq 0 && $orders -eq $WINNERS ]] || ok=FAILED
  echo "run $run: draw $draw drawn in at most $((seen - drawn_at)) ms (round start to seen drawn; $((seen - closed)) ms after the window closed); WON $won, LOST $lost, ENTERED $entered, orders $orders: $ok"
  [[ $ok == ok ]] || exit 2
done
