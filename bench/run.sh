#!/usr/bin/env bash
# One benchmark run: build release, measure the baselines (pgbench on the payment's SQL, a bare
# axum endpoint) and every loadgen scenario against 1 instance on SQLite and 3 instances on one
# fresh PostgreSQL database, then write docs/bench-results.json, the tables of
# docs/BENCHMARKS.md and the SVG charts. Servers, bare server and databases are torn down on
# exit, also on failure or Ctrl-C.
#
#   bench/run.sh                 # defaults, about 5 minutes on 2 cores after a first release build
#   bench/run.sh --quick         # smoke sizes (2 s reads, 2,000 writes, 2,000-request rush)
#   bench/run.sh --help
set -euo pipefail

usage() {
  cat <<'EOF'
bench/run.sh [options]
  --modes LIST          sqlite1,pg3 (default both): 1 instance on SQLite, 3 instances on PostgreSQL
  --scenarios LIST      browse,popular,charge,checkout,pay,mixed,coupon-rush (the default), and
                        product-drop, draw-entries (only when named)
  --concurrency N       loadgen connections (default 64)
  --read-seconds S      measured seconds of browse, popular and the bare baseline (default 5)
  --mixed-seconds S     measured seconds of mixed (default 5)
  --writes N            steps of charge, checkout and pay (default 6000)
  --rush N              coupon-rush requests = distinct users (default 3000; sign-ups run at ~30 users/s here)
  --rush-coupons Q      coupon quantity of the rush (default rush / 10)
  --drop N              product-drop buyers = distinct users, each holding one pending order (default 3000)
  --drop-units U        units of the dropped product (default 500)
  --drop-presses P      pay presses per buyer at most, retrying after 409 OUT_OF_STOCK (default 3)
  --draw N              draw-entries entrants = distinct users (default 3000); the draw of
                        --draw-units winners is then timed
  --draw-units U        units (winners) of the draw (default 1000)
  --catalog-cache-ms MS ECOMMERCE_CATALOG_CACHE_MS of the servers (default: server default, 1000;
                        0 turns the catalog cache and the sold-out gate off)
  --users N             users of charge/checkout/pay/mixed (default 200)
  --products N          products per scenario (default 100)
  --warmup N            unmeasured steps before read scenarios (default 500)
  --pgbench-seconds S   pgbench duration (default 10)
  --pgbench-clients N   pgbench clients (default 64)
  --pool N              ECOMMERCE_DB_MAX_CONNECTIONS per instance (default: server default)
  --pg-url URL          PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
  --quick               smoke sizes: 2 s reads and mixed, 2000 writes, 2000-request rush for 200
  --no-build            use the binaries already in target/release
  --no-docs             leave docs/ alone (results stay in the run folder)
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MODES=sqlite1,pg3
SCENARIOS=browse,popular,charge,checkout,pay,mixed,coupon-rush
CONCURRENCY=64
READ_SECONDS=5
MIXED_SECONDS=5
WRITES=6000
RUSH=3000
RUSH_COUPONS=
DROP_BUYERS=3000
DROP_UNITS=500
DROP_PRESSES=3
DRAW_ENTRANTS=3000
DRAW_UNITS=1000
CATALOG_CACHE_MS=
USERS=200
PRODUCTS=100
WARMUP=500
PGBENCH_SECONDS=10
PGBENCH_CLIENTS=64
POOL=
PG_URL=postgres://postgres@127.0.0.1:5432
BUILD=1
DOCS=1
ARGS="$*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --modes) MODES=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --read-seconds) READ_SECONDS=$2; shift 2 ;;
    --mixed-seconds) MIXED_SECONDS=$2; shift 2 ;;
    --writes) WRITES=$2; shift 2 ;;
    --rush) RUSH=$2; shift 2 ;;
    --rush-coupons) RUSH_COUPONS=$2; shift 2 ;;
    --drop) DROP_BUYERS=$2; shift 2 ;;
    --drop-units) DROP_UNITS=$2; shift 2 ;;
    --drop-presses) DROP_PRESSES=$2; shift 2 ;;
    --draw) DRAW_ENTRANTS=$2; shift 2 ;;
    --draw-units) DRAW_UNITS=$2; shift 2 ;;
    --catalog-cache-ms) CATALOG_CACHE_MS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --products) PRODUCTS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --pgbench-seconds) PGBENCH_SECONDS=$2; shift 2 ;;
    --pgbench-clients) PGBENCH_CLIENTS=$2; shift 2 ;;
    --pool) POOL=$2; shift 2 ;;
    --pg-url) PG_URL=${2%/}; shift 2 ;;
    --quick) READ_SECONDS=2; MIXED_SECONDS=2; WRITES=2000; RUSH=2000; WARMUP=200; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-docs) DOCS=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done
RUSH_COUPONS=${RUSH_COUPONS:-$((RUSH / 10))}

RUN_ID=$(date -u +%Y%m%d-%H%M%S)-$$
OUT="$ROOT/target/bench/$RUN_ID"
mkdir -p "$OUT"
DB_PREFIX="ecommerce_bench_${RUN_ID//-/_}"
ADMIN_EMAIL=admin@loadgen.test
ADMIN_PASSWORD="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD

# Cargo's own target directory when one is set, as cargo itself builds there.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET_DIR/release/ecommerce"
LOADGEN="$TARGET_DIR/release/loadgen"
PIDS=()
DATABASES=()
FAILED=0
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

psql_admin() { psql "$PG_URL/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }

stop_pids() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  local status=$?
  stop_pids
  local db
  for db in "${DATABASES[@]}"; do
    psql_admin -c "drop database if exists $db with (force)" >/dev/null 2>&1 || log "could not drop $db"
  done
  rm -f "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for the one stdout line a server prints once it listens; echoes its base URL.
wait_listening() {
  local pid=$1 file=$2 line
  for _ in $(seq 1 600); do
    line=$(grep -m1 -o 'listening on http://[0-9.:]*' "$file" 2>/dev/null || true)
    if [[ -n $line ]]; then echo "${line#listening on }"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited before listening; see ${file%.out}.err"; return 1; }
    sleep 0.1
  done
  log "process $pid did not listen within 60 s"; return 1
}

# start_instances <count> <database url> <name>: sets TARGETS (comma-separated base URLs).
start_instances() {
  local count=$1 url=$2 name=$3 i pid
  local pids=() files=()
  for i in $(seq 1 "$count"); do
    local base="$OUT/$name-$i"
    env ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="$url" ECOMMERCE_JWT_SECRET="$JWT_SECRET" ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 \
      ECOMMERCE_EVENTS_FILE="$base.events.jsonl" ${POOL:+ECOMMERCE_DB_MAX_CONNECTIONS=$POOL} \
      ${CATALOG_CACHE_MS:+ECOMMERCE_CATALOG_CACHE_MS=$CATALOG_CACHE_MS} \
      "$SERVER" >"$base.out" 2>"$base.err" &
    pid=$!
    PIDS+=("$pid"); pids+=("$pid"); files+=("$base.out")
  done
  TARGETS=
  for i in "${!pids[@]}"; do
    TARGETS+="${TARGETS:+,}$(wait_listening "${pids[$i]}" "${files[$i]}")"
  done
  log "$name: $count instance(s) at $TARGETS"
}

# scenario <label> <targets> <database url> <scenario> [loadgen options...]
scenario() {
  local label=$1 targets=$2 url=$3 name=$4; shift 4
  log "$label: $name"
  local status=0
  "$LOADGEN" run "$name" --label "$label" --target "$targets" --concurrency "$CONCURRENCY" \
    --database-url "$url" --user-cache "$OUT/users-$label.cache" --out "$OUT" "$@" \
    >>"$OUT/rows.md" 2>"$OUT/$label-$name.log" || status=$?
  tail -n 20 "$OUT/$label-$name.log" | grep -E '^\S.*req/s|\[FAILED\]' >&2 || true
  if [[ $status -ne 0 ]]; then
    FAILED=1
    log "$label $name: exit $status (see $OUT/$label-$name.log)"
  fi
}

has() { [[ ",$SCENARIOS," == *",$1,"* ]]; }
BARE_DONE=0

# The bare axum baseline, serving the bytes of a real /products/popular answer of <base>.
bare_baseline() {
  local base=$1
  curl -fsS "$base/api/v1/products/popular?days=3&limit=5" >"$OUT/popular-body.raw" || { FAILED=1; return; }
  "$LOADGEN" bare-server --body-file "$OUT/popular-body.raw" --exit-after 600 >"$OUT/bare.out" 2>"$OUT/bare.err" &
  local pid=$!
  PIDS+=("$pid")
  local url
  url=$(wait_listening "$pid" "$OUT/bare.out") || { FAILED=1; return; }
  log "bare: popular against $url"
  "$LOADGEN" run popular --label bare --no-setup --target "$url" --concurrency "$CONCURRENCY" \
    --duration "$READ_SECONDS" --warmup "$WARMUP" --out "$OUT" >>"$OUT/rows.md" 2>"$OUT/bare-popular.log" || FAILED=1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  BARE_DONE=1
}

run_scenarios() {
  local label=$1 targets=$2 url=$3
  local first=${targets%%,*}
  has browse && scenario "$label" "$targets" "$url" browse --duration "$READ_SECONDS" --warmup "$WARMUP" --products "$PRODUCTS"
  if has popular; then
    scenario "$label" "$targets" "$url" popular --duration "$READ_SECONDS" --warmup "$WARMUP"
    # Right after the server's own popular run, so both see the same machine.
    [[ $BARE_DONE -eq 0 ]] && bare_baseline "$first"
  fi
  has charge && scenario "$label" "$targets" "$url" charge --requests "$WRITES" --users "$USERS"
  has checkout && scenario "$label" "$targets" "$url" checkout --requests "$WRITES" --users "$USERS" --products "$PRODUCTS"
  has pay && scenario "$label" "$targets" "$url" pay --requests "$WRITES" --users "$USERS" --products "$PRODUCTS"
  has mixed && scenario "$label" "$targets" "$url" mixed --duration "$MIXED_SECONDS" --warmup "$WARMUP" --users "$USERS" --products "$PRODUCTS"
  has coupon-rush && scenario "$label" "$targets" "$url" coupon-rush --requests "$RUSH" --coupon-total "$RUSH_COUPONS" --setup-concurrency 16
  has product-drop && scenario "$label" "$targets" "$url" product-drop --requests "$DROP_BUYERS" --coupon-total "$DROP_UNITS" \
    --presses "$DROP_PRESSES" --setup-concurrency 16
  has draw-entries && scenario "$label" "$targets" "$url" draw-entries --requests "$DRAW_ENTRANTS" --coupon-total "$DRAW_UNITS" \
    --draw --setup-concurrency 16
  return 0
}

started=$(date +%s)
log "run $RUN_ID, results in $OUT"

if [[ $BUILD -eq 1 ]]; then
  log "building release binaries"
  cargo build --release -p ecommerce -p ecommerce-loadgen
fi
[[ -x $SERVER && -x $LOADGEN ]] || { log "missing $SERVER or $LOADGEN"; exit 1; }

# 1. pgbench on the payment's own SQL, before any server holds connections.
PGB_DB="${DB_PREFIX}_pgbench"
DATABASES+=("$PGB_DB")
psql_admin -c "create database $PGB_DB"
for migration in crates/store/migrations/postgres/*.sql; do
  psql "$PG_URL/$PGB_DB" -qX -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
# Enough pending orders for three times the quiet-machine rate (3.5k/s), one per payment.
PGB_ORDERS=$((PGBENCH_SECONDS * 10500 + 10000))
psql "$PG_URL/$PGB_DB" -qX -v ON_ERROR_STOP=1 -v accounts="$USERS" -v products="$PRODUCTS" -v orders="$PGB_ORDERS" \
  -f bench/pgbench-setup.sql >/dev/null
log "pgbench: payment SQL, $PGBENCH_CLIENTS clients, $PGBENCH_SECONDS s"
PGB_CMD="pgbench -n -M prepared -c $PGBENCH_CLIENTS -j 2 -T $PGBENCH_SECONDS -f bench/pgbench-payment.sql"
{ echo "# command: $PGB_CMD"; $PGB_CMD "$PG_URL/$PGB_DB" 2>&1; } >"$OUT/pgbench.txt" || FAILED=1
grep -E '^tps|latency average|failed' "$OUT/pgbench.txt" >&2 || true
# The charge's own SQL on the same database, balances back at 0 so that no charge hits the limit.
psql "$PG_URL/$PGB_DB" -qX -v ON_ERROR_STOP=1 -c "create sequence bench_key_seq" -c "update account set balance = 0" -c "vacuum analyze account" >/dev/null
log "pgbench: charge SQL, $PGBENCH_CLIENTS clients, $PGBENCH_SECONDS s"
PGB_CHARGE_CMD="pgbench -n -M prepared -c $PGBENCH_CLIENTS -j 2 -T $PGBENCH_SECONDS -D accounts=$USERS -f bench/pgbench-charge.sql"
{ echo "# command: $PGB_CHARGE_CMD"; $PGB_CHARGE_CMD "$PG_URL/$PGB_DB" 2>&1; } >"$OUT/pgbench-charge.txt" || FAILED=1
grep -E '^tps|latency average|failed' "$OUT/pgbench-charge.txt" >&2 || true
psql_admin -c "drop database $PGB_DB with (force)" >/dev/null

# 2. One instance on SQLite.
if [[ ",$MODES," == *",sqlite1,"* ]]; then
  SQLITE_URL="sqlite://$OUT/sqlite-1.db"
  start_instances 1 "$SQLITE_URL" sqlite-1
  run_scenarios sqlite-1 "$TARGETS" "$SQLITE_URL"
  stop_pids
fi

# 3. Three instances on one fresh PostgreSQL database.
if [[ ",$MODES," == *",pg3,"* ]]; then
  PG_DB="${DB_PREFIX}_pg3"
  DATABASES+=("$PG_DB")
  psql_admin -c "create database $PG_DB"
  start_instances 3 "$PG_URL/$PG_DB" pg-3
  run_scenarios pg-3 "$TARGETS" "$PG_URL/$PG_DB"
  stop_pids
fi

# 4. Tables, JSON and charts.
elapsed=$(( $(date +%s) - started ))
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || REV+=" (with uncommitted changes)"
REPORT=(--results "$OUT" --pgbench "$OUT/pgbench.txt" --pgbench-charge "$OUT/pgbench-charge.txt"
  --meta "machine=$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GB"
  --meta "postgres=$(psql_admin -c 'show server_version' 2>/dev/null || echo unknown)"
  --meta "commit=$REV"
  --meta "command=bench/run.sh $ARGS"
  --meta "sizes=reads ${READ_SECONDS} s, mixed ${MIXED_SECONDS} s, writes $WRITES, rush $RUSH for $RUSH_COUPONS coupons, $USERS users, $PRODUCTS products, $CONCURRENCY connections, warm-up $WARMUP${CATALOG_CACHE_MS:+, catalog cache $CATALOG_CACHE_MS ms}"
  --meta "duration=${elapsed} s including build and set-up"
  --meta "raw results=target/bench/$RUN_ID/")
if [[ $DOCS -eq 1 ]]; then
  REPORT+=(--json docs/bench-results.json --markdown docs/BENCHMARKS.md --svg-dir docs)
else
  REPORT+=(--json "$OUT/bench-results.json" --svg-dir "$OUT")
fi
"$LOADGEN" report "${REPORT[@]}" || FAILED=1
log "done in ${elapsed} s; rows:"
cat "$OUT/rows.md" >&2
if [[ $FAILED -ne 0 ]]; then
  log "some step or check FAILED (see the logs in $OUT)"
  exit 1
fi
