#!/usr/bin/env bash
# One benchmark run: build release, measure the baselines (pgbench on the payment's SQL, a bare
# axum endpoint) and every loadgen scenario against 1 instance on SQLite and 3 instances on one
# fresh PostgreSQL database, then write docs/bench-results.json, the tables of
# docs/BENCHMARKS.md and the SVG charts. Servers, bare server and databases are torn down on
# exit, also on failure or Ctrl-C.
#
#   bench/run.sh                 # defaults, about 5 minutes on 2 cores after a first release build
#   bench/run.sh --quick         # smoke sizes (2 s reads, 2,000 writes, 2,000-request rush)
#   bench/run.sh --modes pg3 --scenarios product-drop   # the issue's drop: 20,000 buyers, 1,000 units
#   bench/run.sh --modes pg3r    # replica scaling: browse on 3 instances reading 0, 1, 2 replicas
#   bench/run.sh --help
set -euo pipefail

usage() {
  cat <<'EOF'
bench/run.sh [options]
  --modes LIST          sqlite1,pg3 (default both): 1 instance on SQLite, 3 instances on PostgreSQL;
                        pg3r (only when named): replica scaling, see --replicas
  --scenarios LIST      browse,popular,charge,checkout,pay,mixed,coupon-rush (the default), and
                        product-drop, draw-entries (only when named)
  --concurrency N       loadgen connections (default 64)
  --read-seconds S      measured seconds of browse, popular and the bare baseline (default 5)
  --mixed-seconds S     measured seconds of mixed (default 5)
  --writes N            steps of charge, checkout and pay (default 6000)
  --rush N              coupon-rush requests = distinct users (default 3000; sign-ups run at ~30 users/s here)
  --rush-coupons Q      coupon quantity of the rush (default rush / 10)
  --drop N              product-drop buyers = distinct users, each holding one pending order (default 20000)
  --drop-units U        units of the dropped product (default 1000)
  --drop-presses P      pay presses per buyer at most, retrying after 409 OUT_OF_STOCK (default 3)
  --draw N              draw-entries entrants = distinct users (default 20000); the draw of
                        --draw-units winners is then timed
  --draw-units U        units (winners) of the draw (default 1000)
  --signup-users        product-drop and draw-entries users by sign-up and login through the API
                        (~30 users/s here) instead of written by SQL (loadgen --users-by-sql: the
                        accounts and their top-up in batches, tokens signed with the run's
                        ECOMMERCE_JWT_SECRET and checked against every instance first); the
                        pending orders of a drop are made through the API either way
  --replicas LIST       pg3r: read replicas behind the 3 instances, one browse run each, in this
                        order (default 0,1,2; e.g. 0,1,2,2,1,0 to see the drift). A private
                        primary with 2 streaming replicas (pg_basebackup -R) on loopback ports;
                        with 1 all instances read replica 1, with 2 instances 1 and 3 read
                        replica 1 and instance 2 replica 2; catalog cache off (reads reach the
                        database). Ratios 1 ÷ 0 and 2 ÷ 1 printed and in replicas.json
  --replica-port P      pg3r: primary on port P, replicas on P+1 and P+2 (default 55442)
  --catalog-cache-ms MS ECOMMERCE_CATALOG_CACHE_MS of the servers (default: server default, 1000;
                        0 turns the catalog cache and the sold-out gate off)
  --users N             users of charge/checkout/pay/mixed (default 200)
  --products N          products per scenario (default 100)
  --warmup N            unmeasured steps before read scenarios (default 500)
  --pgbench-seconds S   pgbench duration (default 10)
  --pgbench-clients N   pgbench clients (default 64)
  --pool N              ECOMMERCE_DB_MAX_CONNECTIONS per instance (default: server default)
  --pg-url URL          PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
  --quick               smoke sizes: 2 s reads and mixed, 2000 writes, 2000-request rush for 200,
                        drop and draw of 2000 users for 200 units
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
DROP_BUYERS=20000
DROP_UNITS=1000
DROP_PRESSES=3
DRAW_ENTRANTS=20000
DRAW_UNITS=1000
SQL_USERS=1
REPLICAS=0,1,2
REPLICA_PORT=55442
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
    --signup-users) SQL_USERS=0; shift ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --replica-port) REPLICA_PORT=$2; shift 2 ;;
    --catalog-cache-ms) CATALOG_CACHE_MS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --products) PRODUCTS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --pgbench-seconds) PGBENCH_SECONDS=$2; shift 2 ;;
    --pgbench-clients) PGBENCH_CLIENTS=$2; shift 2 ;;
    --pool) POOL=$2; shift 2 ;;
    --pg-url) PG_URL=${2%/}; shift 2 ;;
    --quick) READ_SECONDS=2; MIXED_SECONDS=2; WRITES=2000; RUSH=2000; WARMUP=200
      DROP_BUYERS=2000; DROP_UNITS=200; DRAW_ENTRANTS=2000; DRAW_UNITS=200; shift ;;
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
# pg3r: the private primary and replicas (a folder of their own), and what start_instances gives
# each instance: INSTANCE_READ_URLS[i] as its DATABASE_READ_URL, INSTANCE_CACHE_MS over --catalog-cache-ms.
REPLICA_DIR=
INSTANCE_READ_URLS=()
INSTANCE_CACHE_MS=
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cleanup() {
  local status=$?
  stop_pids
  replicas_stop
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
  local cache_ms=${INSTANCE_CACHE_MS:-$CATALOG_CACHE_MS}
  for i in $(seq 1 "$count"); do
    local base="$OUT/$name-$i"
    local read_url=${INSTANCE_READ_URLS[$((i - 1))]:-}
    env ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="$url" ECOMMERCE_JWT_SECRET="$JWT_SECRET" ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 \
      ECOMMERCE_EVENTS_FILE="$base.events.jsonl" ${POOL:+ECOMMERCE_DB_MAX_CONNECTIONS=$POOL} \
      ${cache_ms:+ECOMMERCE_CATALOG_CACHE_MS=$cache_ms} ${read_url:+DATABASE_READ_URL=$read_url} \
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
  # The servers' secret: loadgen --users-by-sql signs the tokens of the users it writes.
  ECOMMERCE_JWT_SECRET="$JWT_SECRET" "$LOADGEN" run "$name" --label "$label" --target "$targets" --concurrency "$CONCURRENCY" \
    --database-url "$url" --user-cache "$OUT/users-$label.cache" --out "$OUT" "$@" \
    >>"$OUT/rows.md" 2>"$OUT/$label-$name.log" || status=$?
  grep -E '^\S.*req/s|\[FAILED\]' "$OUT/$label-$name.log" >&2 || true
  if [[ $status -ne 0 ]]; then
    FAILED=1
    log "$label $name: exit $status (see $OUT/$label-$name.log)"
  fi
}

# --- pg3r: a private primary with two streaming replicas (scripts/replica.sh is the model) ---

pg_bin() {
  local name=$1 found
  # (return 0, not return: in the EXIT trap a bare return would answer the status before the trap)
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n $found ]] || { log "$name not found (install PostgreSQL's server package)"; return 1; }
  echo "$found"
}

# as_pg COMMAND...: as the postgres user when this script runs as root (PostgreSQL refuses root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Node 0 is the primary, nodes 1 and 2 its replicas.
replica_url() { echo "postgres://postgres@127.0.0.1:$((REPLICA_PORT + $1))"; }

replica_wait() {
  local port=$1 log_file=$2 isready
  isready=$(pg_bin pg_isready)
  for _ in $(seq 1 300); do
    "$isready" -q -h 127.0.0.1 -p "$port" && return 0
    sleep 0.1
  done
  log "the PostgreSQL node on port $port did not start; its log:"
  tail -n 30 "$log_file" >&2 || true
  return 1
}

# The primary, then two base backups of it started as standbys (-R), all on loopback ports.
replicas_start() {
  local initdb pg_ctl basebackup node
  initdb=$(pg_bin initdb)
  pg_ctl=$(pg_bin pg_ctl)
  basebackup=$(pg_bin pg_basebackup)
  REPLICA_DIR=$(mktemp -d /tmp/ecommerce-bench-replicas.XXXXXX)
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$REPLICA_DIR"; fi
  as_pg "$initdb" -D "$REPLICA_DIR/node0" -U postgres --auth=trust -E UTF8 >/dev/null
  printf '%s\n' "port = $REPLICA_PORT" "listen_addresses = '127.0.0.1'" "unix_socket_directories = '$REPLICA_DIR'" \
    "wal_level = replica" "max_wal_senders = 5" "max_connections = 300" "fsync = off" "full_page_writes = off" \
    | as_pg tee -a "$REPLICA_DIR/node0/postgresql.conf" >/dev/null
  printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 trust" "host replication all 127.0.0.1/32 trust" \
    | as_pg tee "$REPLICA_DIR/node0/pg_hba.conf" >/dev/null
  as_pg "$pg_ctl" -D "$REPLICA_DIR/node0" -l "$REPLICA_DIR/node0.log" -w start >/dev/null
  replica_wait "$REPLICA_PORT" "$REPLICA_DIR/node0.log"
  for node in 1 2; do
    as_pg "$basebackup" -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -D "$REPLICA_DIR/node$node" -R -X stream -c fast
    printf '%s\n' "port = $((REPLICA_PORT + node))" "hot_standby = on" "hot_standby_feedback = on" \
      | as_pg tee -a "$REPLICA_DIR/node$node/postgresql.auto.conf" >/dev/null
    as_pg "$pg_ctl" -D "$REPLICA_DIR/node$node" -l "$REPLICA_DIR/node$node.log" -w start >/dev/null
    replica_wait "$((REPLICA_PORT + node))" "$REPLICA_DIR/node$node.log"
    if [[ $(psql "$(replica_url "$node")/postgres" -qAtX -c 'select pg_is_in_recovery()') != t ]]; then
      log "replica $node is not a standby"
      return 1
    fi
  done
  log "pg3r: primary $(replica_url 0), replicas $(replica_url 1) and $(replica_url 2) (streaming, in $REPLICA_DIR)"
}

# Stops the three nodes (immediate shutdown; their postmaster's own pid if pg_ctl cannot), then
# removes their folder.
replicas_stop() {
  [[ -n $REPLICA_DIR ]] || return 0
  local pg_ctl node pid
  pg_ctl=$(pg_bin pg_ctl 2>/dev/null || true)
  for node in 2 1 0; do
    [[ -f $REPLICA_DIR/node$node/postmaster.pid ]] || continue
    pid=$(head -n 1 "$REPLICA_DIR/node$node/postmaster.pid")
    if [[ -n $pg_ctl ]]; then
      as_pg "$pg_ctl" -D "$REPLICA_DIR/node$node" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      kill -QUIT "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rm -rf "$REPLICA_DIR"
  REPLICA_DIR=
  return 0
}

# Committed transactions in database <db> on node <n> so far (a standby counts its own reads).
node_xacts() {
  psql "$(replica_url "$1")/postgres" -qAtX \
    -c "select coalesce(sum(xact_commit), 0) from pg_stat_database where datname = '$2'" 2>/dev/null || echo 0
}

# One browse run per entry of --replicas, each on a fresh database of the primary with fresh
# instances, the catalog cache off: reads go to the primary (0), all to replica 1 (1), or to
# both (2: instances 1 and 3 read replica 1, instance 2 replica 2).
run_replica_scaling() {
  replicas_start
  local runs="[]" k=0 n label db i node result
  local -a before after
  local -A seen=()
  for n in ${REPLICAS//,/ }; do
    if [[ ! $n =~ ^[012]$ ]]; then
      log "--replicas: $n is not 0, 1 or 2"
      FAILED=1
      continue
    fi
    k=$((k + 1))
    seen[$n]=$((${seen[$n]:-0} + 1))
    label="pg-3-r$n"
    [[ ${seen[$n]} -gt 1 ]] && label+="-${seen[$n]}"
    db="bench_replicas_$k"
    psql "$(replica_url 0)/postgres" -qAtX -v ON_ERROR_STOP=1 -c "create database $db"
    # The database has reached the standbys before an instance connects to it there.
    for node in 1 2; do
      for _ in $(seq 1 100); do
        psql "$(replica_url "$node")/$db" -qAtX -c 'select 1' >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
    INSTANCE_READ_URLS=()
    for i in 1 2 3; do
      case $n in
        0) INSTANCE_READ_URLS+=("") ;;
        1) INSTANCE_READ_URLS+=("$(replica_url 1)/$db") ;;
        2) INSTANCE_READ_URLS+=("$(replica_url $(((i - 1) % 2 + 1)))/$db") ;;
      esac
    done
    INSTANCE_CACHE_MS=0
    before=()
    for node in 0 1 2; do before+=("$(node_xacts "$node" "$db")"); done
    start_instances 3 "$(replica_url 0)/$db" "$label"
    if [[ $n -eq 0 ]]; then
      log "$label: no DATABASE_READ_URL (every read on the primary)"
    else
      log "$label: DATABASE_READ_URL of the 3 instances: ${INSTANCE_READ_URLS[*]}"
    fi
    scenario "$label" "$TARGETS" "$(replica_url 0)/$db" browse --duration "$READ_SECONDS" --warmup "$WARMUP" --products "$PRODUCTS"
    stop_pids
    INSTANCE_READ_URLS=()
    INSTANCE_CACHE_MS=
    sleep 1 # statistics reach pg_stat_database up to a second late
    after=()
    for node in 0 1 2; do after+=("$(node_xacts "$node" "$db")"); done
    result="$OUT/$label-browse.json"
    if [[ -f $result ]]; then
      runs=$(jq --argjson acc "$runs" --arg name "$label" --argjson replicas "$n" \
        --argjson x0 "$((after[0] - before[0]))" --argjson x1 "$((after[1] - before[1]))" \
        --argjson x2 "$((after[2] - before[2]))" \
        '$acc + [{"label": $name, "replicas": $replicas, "requests_per_second": .requests_per_second,
                  "requests": .requests, "seconds": .seconds, "p50_ms": .latency_ms.p50, "p99_ms": .latency_ms.p99,
                  "checks_ok": (.checks | all(.ok)),
                  "transactions": {"primary": $x0, "replica1": $x1, "replica2": $x2}}]' "$result")
    fi
  done
  replicas_stop
  jq -n --argjson runs "$runs" --arg cores "$(nproc)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '
    def mean(n): [$runs[] | select(.replicas == n) | .requests_per_second]
      | if length > 0 then add / length else null end;
    def ratio(a; b): if a != null and b != null and b > 0 then a / b else null end;
    {runs: $runs,
     mean_requests_per_second: {"0": mean(0), "1": mean(1), "2": mean(2)},
     ratios: {one_replica_over_primary_only: ratio(mean(1); mean(0)), two_replicas_over_one: ratio(mean(2); mean(1))},
     note: ("browse, catalog cache off, 3 instances; the primary, both replicas, the instances and loadgen share "
       + $cores + " cores; transactions: commits per node during set-up, warm-up and run; load average at the end " + $load)}' \
    >"$OUT/replicas.json"
  {
    echo "| run | read replicas | browse req/s | p50 / p99 ms | transactions primary / replica 1 / replica 2 | checks |"
    echo "|---|---:|---:|---:|---|---|"
    jq -r '.runs[] | "| \(.label) | \(.replicas) | \(.requests_per_second | round) | \(.p50_ms * 100 | round / 100) / \(.p99_ms * 100 | round / 100) | \(.transactions.primary) / \(.transactions.replica1) / \(.transactions.replica2) | \(if .checks_ok then "ok" else "FAILED" end) |"' \
      "$OUT/replicas.json"
    jq -r 'def r: if type == "number" then (. * 100 | round / 100 | tostring) else "n/a" end;
      "ratios of the mean req/s: 1 replica ÷ primary only = \(.ratios.one_replica_over_primary_only | r), 2 replicas ÷ 1 = \(.ratios.two_replicas_over_one | r)"' \
      "$OUT/replicas.json"
  } >"$OUT/replicas.md"
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
  local by_sql=()
  [[ $SQL_USERS -eq 1 ]] && by_sql=(--users-by-sql)
  has product-drop && scenario "$label" "$targets" "$url" product-drop --requests "$DROP_BUYERS" --coupon-total "$DROP_UNITS" \
    --presses "$DROP_PRESSES" --setup-concurrency 16 "${by_sql[@]}"
  has draw-entries && scenario "$label" "$targets" "$url" draw-entries --requests "$DRAW_ENTRANTS" --coupon-total "$DRAW_UNITS" \
    --draw --setup-concurrency 16 "${by_sql[@]}"
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

# 4. Replica scaling: browse on 3 instances reading from 0, 1 or 2 streaming replicas.
if [[ ",$MODES," == *",pg3r,"* ]]; then
  run_replica_scaling
fi

# 5. Tables, JSON and charts.
elapsed=$(( $(date +%s) - started ))
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || REV+=" (with uncommitted changes)"
SIZES="reads ${READ_SECONDS} s, mixed ${MIXED_SECONDS} s, writes $WRITES, rush $RUSH for $RUSH_COUPONS coupons, $USERS users, $PRODUCTS products, $CONCURRENCY connections, warm-up $WARMUP${CATALOG_CACHE_MS:+, catalog cache $CATALOG_CACHE_MS ms}"
USERS_MADE="users signed up"
[[ $SQL_USERS -eq 1 ]] && USERS_MADE="users written by SQL"
has product-drop && SIZES+=", drop $DROP_BUYERS buyers for $DROP_UNITS units ($USERS_MADE)"
has draw-entries && SIZES+=", draw $DRAW_ENTRANTS entrants for $DRAW_UNITS units ($USERS_MADE)"
[[ ",$MODES," == *",pg3r,"* ]] && SIZES+=", replicas $REPLICAS (browse, catalog cache off)"
REPORT=(--results "$OUT" --pgbench "$OUT/pgbench.txt" --pgbench-charge "$OUT/pgbench-charge.txt"
  --meta "machine=$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GB"
  --meta "postgres=$(psql_admin -c 'show server_version' 2>/dev/null || echo unknown)"
  --meta "commit=$REV"
  --meta "command=bench/run.sh $ARGS"
  --meta "sizes=$SIZES"
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
if [[ -f $OUT/replicas.md ]]; then
  log "replica scaling, browse (all on $(nproc) cores; $OUT/replicas.json):"
  cat "$OUT/replicas.md" >&2
fi
if [[ $FAILED -ne 0 ]]; then
  log "some step or check FAILED (see the logs in $OUT)"
  exit 1
fi
