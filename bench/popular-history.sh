#!/usr/bin/env bash
# Best sellers against order history. `/products/popular` sums the hourly sales table, never the
# order lines, so its latency must not grow with the number of paid order lines. This measures it
# with the cache OFF (every request runs the query) on PostgreSQL, first with 1,000 paid order
# lines, then with 1,000,000, over the same 100 products and the same 3-day window. What the query
# reads is bounded by the (product, hour) rows of the window (at most products × 72), which the
# script prints beside the number of order lines.
#
#   bench/popular-history.sh [--lines-small N] [--lines-large N] [--seconds S]
#
# Loopback only; bounded; the database and the server are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=1000
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
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$PG/postgres" -qc "create database $DB"

export DATABASE_URL=$PG/$DB ECOMMERCE_ADDR=127.0.0.1:0 ECOMMERCE_POPULAR_CACHE_SECONDS=0 RUST_LOG=warn \
  ECOMMERCE_ADMIN_EMAIL=admin@bench.test ECOMMERCE_ADMIN_PASSWORD=bench-admin-password \
  ECOMMERCE_EVENTS_FILE="$OUT/events.jsonl"
target/release/ecommerce > "$OUT/server.out" 2> "$OUT/server.err" &
PID=$!
for _ in $(seq 1 300); do grep -q "listening on" "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^ecommerce listening on //p' "$OUT/server.out")
[ -n "$URL" ] || { echo "server did not start" >&2; cat "$OUT/server.err" >&2; exit 1; }

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
       from buyer, (select (extract(epoch from now()) * 1000)::bigint - (g % 259200) * 1000 as t
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
  target/release/loadgen run popular --target "$URL" --no-setup --concurrency 16 --duration "$SECONDS_EACH" \
    --label "$label" --out "$OUT" | tee -a "$OUT/summary.txt"
}

add_lines "$SMALL"
measure "lines-$SMALL"
add_lines "$((LARGE - SMALL))"
measure "lines-$LARGE"
echo "results: $OUT"
