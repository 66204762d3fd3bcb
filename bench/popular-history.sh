#!/usr/bin/env bash
# Best sellers against order history. `/products/popular` sums the hourly sales table, never the
# order lines, so its latency must not grow with the number of paid order lines. This measures it
# on PostgreSQL with 1,000, then 100,000, then 1,000,000 paid order lines over the same 100
# products and the same 3-day window, on two instances side by side: one with the cache off (every
# request runs the query) and one with the default 5-second cache (what users get). What the query
# reads is bounded by the (product, hour) rows of the window (at most products × 72), which the
# script prints beside the number of order lines.
#
#   bench/popular-history.sh [--lines-small N] [--lines-large N] [--seconds S]
#
# Loopback only; bounded; the database and the server are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=1000
MIDDLE=100000
LARGE=1000000
SECONDS_EACH=5
while [ $# -gt 0 ]; do
  case "$1" in
    --lines-small) SMALL=$2; shift 2 ;;
    --lines-large) LARGE=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=ecommerce_history_$$
OUT=target/bench/history-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
[ -x target/release/ecommerce ] && [ -x target/release/loadgen ] || cargo build --release -p ecommerce -p ecommerce-loadgen

PID=
cleanup() {
  # shellcheck disable=SC2086
  [ -n "$PID" ] && kill $PID 2>/dev/null && wait $PID 2>/dev/null
  psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$PG/postgres" -qc "create database $DB"

export DATABASE_URL=$PG/$DB ECOMMERCE_ADDR=127.0.0.1:0 RUST_LOG=warn \
  ECOMMERCE_ADMIN_EMAIL=admin@bench.test ECOMMERCE_ADMIN_PASSWORD=bench-admin-password
# One instance runs the query on every request (cache off), one serves it as users get it (the
# default 5-second cache).
ECOMMERCE_POPULAR_CACHE_SECONDS=0 ECOMMERCE_EVENTS_FILE="$OUT/events-0.jsonl" \
  target/release/ecommerce > "$OUT/uncached.out" 2> "$OUT/uncached.err" &
PID=$!
ECOMMERCE_POPULAR_CACHE_SECONDS=5 ECOMMERCE_EVENTS_FILE="$OUT/events-5.jsonl" \
  target/release/ecommerce > "$OUT/cached.out" 2> "$OUT/cached.err" &
PID="$PID $!"
url_of() {
  for _ in $(seq 1 300); do grep -q "listening on" "$OUT/$1.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^ecommerce listening on //p' "$OUT/$1.out"
}
UNCACHED=$(url_of uncached)
CACHED=$(url_of cached)
[ -n "$UNCACHED" ] && [ -n "$CACHED" ] || { echo "servers did not start" >&2; cat "$OUT"/*.err >&2; exit 1; }

psql "$DATABASE_URL" -q -c "insert into product (name, price, stock, status, created_at)
  select 'Item ' || g, 1000 * g, 1000000, 'ON_SALE', 0 from generate_series(1, 100) g"

# Adds paid one-line orders, paid at times spread over the last 72 hours, and rebuilds the hourly
# sales from them, as the payments would have left it.
add_lines() {
  psql "$DATABASE_URL" -q -v n="$1" <<'SQL'
with buyer as (select min(id) as id from account),
     paid as (
       insert into purchase_order (user_id, status, total_amount, paid_amount, created_at, expires_at, paid_at)
       select buyer.id, 'PAID', 1000, 1000, t, t + 900000, t
       from buyer, (select (extract(epoch from now()) * 1000)::bigint - ((g::bigint * 7919) % 259200) * 1000 as t
                    from generate_series(1, :n) g) s
       returning id, paid_at)
insert into order_line (order_id, line_no, product_id, name, unit_price, quantity, amount)
select paid.id, 0, p.id, p.name, p.price, 1 + paid.id % 3, p.price * (1 + paid.id % 3)
from paid join product p on p.id = (select min(id) from product) + paid.id % 100;
delete from product_sales_hourly;
insert into product_sales_hourly (hour, product_id, quantity)
select o.paid_at / 3600000, l.product_id, sum(l.quantity)
from order_line l join purchase_order o on o.id = l.order_id where o.status = 'PAID'
group by 1, 2;
analyze;
SQL
}

measure() {
  local label=$1
  local lines buckets
  lines=$(psql "$DATABASE_URL" -tAc "select count(*) from order_line")
  buckets=$(psql "$DATABASE_URL" -tAc "select count(*) from product_sales_hourly")
  echo "== $label: $lines paid order lines, $buckets (product, hour) sales rows" | tee -a "$OUT/summary.txt"
  for mode in uncached cached; do
    local url=$UNCACHED
    [ "$mode" = cached ] && url=$CACHED
    target/release/loadgen run popular --target "$url" --no-setup --concurrency 16 --duration "$SECONDS_EACH" \
      --label "$label-$mode" --out "$OUT" | grep '^|' | tee -a "$OUT/summary.txt"
  done
}

add_lines "$SMALL"
measure "lines-$SMALL"
add_lines "$((MIDDLE - SMALL))"
measure "lines-$MIDDLE"
add_lines "$((LARGE - MIDDLE))"
measure "lines-$LARGE"
echo "results: $OUT"
