#!/usr/bin/env bash
# The memory (RSS) of one instance, measured from /proc/<pid>/status: idle; 1,000 idle keep-alive
# connections; 1,000 busy connections on cached reads (popular, product pages, compressed product
# lists) and on a write mix; slowloris-style slow clients up to the connection cap; abandoned
# requests; a burst of sign-ups. Prints a Markdown table (MiB = 1,048,576 bytes).
#
# A measurement, not a test: it exits non-zero only when the set-up fails (build, server start,
# database), never because of a figure.
#
#   bench/memory.sh                       # SQLite, about 3 minutes after a release build
#   bench/memory.sh --engines sqlite,postgres
#   bench/memory.sh --help
#
# For each phase the table gives the RSS when the load is in place, the highest RSS sampled every
# 100 ms while it runs, the peak (VmHWM, reset through /proc/<pid>/clear_refs when the load is in
# place, so it is the peak of that phase alone) and the RSS 3 s after the load ended.
set -euo pipefail

usage() {
  cat <<'EOF'
bench/memory.sh [options]
  --engines LIST        sqlite,postgres (default sqlite): one instance on each, in turn
  --connections N       connections of the idle and busy phases (default 1000)
  --seconds S           measured seconds of each busy phase (default 10)
  --max-connections N   ECOMMERCE_MAX_CONNECTIONS of the instance (default 2000); the slowloris
                        phase opens 200 more than that
  --header-timeout-ms M ECOMMERCE_HEADER_TIMEOUT_MS (default: the server's, 10000)
  --signups N           sign-ups of the burst (default 1000)
  --phases LIST         idle,keepalive,popular,browse,compressed,mixed,slowloris,slowloris-big,
                        abandon,signups (default: all)
  --pg-url URL          PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
  --server-env K=V      extra environment of the instance (repeatable), e.g. MIMALLOC_PURGE_DELAY=0
  --no-build            use the binaries already built
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ENGINES=sqlite
CONNECTIONS=1000
SECONDS_BUSY=10
MAX_CONNECTIONS=2000
HEADER_TIMEOUT_MS=
SIGNUPS=1000
PHASES=idle,keepalive,popular,browse,compressed,mixed,slowloris,slowloris-big,abandon,signups
PG_URL=postgres://postgres@127.0.0.1:5432
SERVER_ENV=()
BUILD=1
ARGS="$*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --engines) ENGINES=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --seconds) SECONDS_BUSY=$2; shift 2 ;;
    --max-connections) MAX_CONNECTIONS=$2; shift 2 ;;
    --header-timeout-ms) HEADER_TIMEOUT_MS=$2; shift 2 ;;
    --signups) SIGNUPS=$2; shift 2 ;;
    --phases) PHASES=$2; shift 2 ;;
    --pg-url) PG_URL=${2%/}; shift 2 ;;
    --server-env) SERVER_ENV+=("$2"); shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done

RUN_ID=$(date -u +%Y%m%d-%H%M%S)-$$
OUT="$ROOT/target/bench/memory-$RUN_ID"
mkdir -p "$OUT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET_DIR/release/ecommerce"
LOADGEN="$TARGET_DIR/release/loadgen"
CLIENTS="$ROOT/bench/memory-clients.py"
ADMIN_EMAIL=admin@loadgen.test
ADMIN_PASSWORD="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD
PID=
DATABASES=()
log() { printf '[memory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

stop_server() {
  [[ -n $PID ]] || return 0
  PIDS=("$PID")
  stop_pids
  PID=
}

cleanup() {
  local status=$?
  stop_server
  local db
  for db in "${DATABASES[@]}"; do
    psql_admin -c "drop database if exists $db with (force)" >/dev/null 2>&1 || log "could not drop $db"
  done
  rm -f "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

has() { [[ ",$PHASES," == *",$1,"* ]]; }

# status_kib <field>: VmRSS or VmHWM of the instance, in KiB.
status_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$PID/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
reset_peak() { echo 5 >"/proc/$PID/clear_refs" 2>/dev/null || true; }

start_server() {
  local name=$1 url=$2
  local base="$OUT/$name"
  env ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="$url" ECOMMERCE_JWT_SECRET="$JWT_SECRET" \
    ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 ECOMMERCE_EVENTS_FILE="$base.events.jsonl" \
    ECOMMERCE_MAX_CONNECTIONS="$MAX_CONNECTIONS" ${HEADER_TIMEOUT_MS:+ECOMMERCE_HEADER_TIMEOUT_MS=$HEADER_TIMEOUT_MS} \
    "${SERVER_ENV[@]}" "$SERVER" >"$base.out" 2>"$base.err" &
  PID=$!
  local line
  for _ in $(seq 1 600); do
    line=$(grep -m1 -o 'listening on http://[0-9.:]*' "$base.out" 2>/dev/null || true)
    if [[ -n $line ]]; then URL=${line#listening on }; return 0; fi
    kill -0 "$PID" 2>/dev/null || { log "the server exited before listening; see $base.err"; exit 1; }
    sleep 0.1
  done
  log "the server did not listen within 60 s"; exit 1
}

ROWS=()
# phase <label> <marker> <command...>: runs the command (its stdout and stderr in a log); once
# <marker> (a grep -E pattern) shows in the log, the load is in place: the RSS is read and the
# peak reset. The RSS is sampled until the command ends, then read again 3 s later.
phase() {
  local label=$1 marker=$2; shift 2
  local slug=${label//[^a-zA-Z0-9]/-}
  local logf="$OUT/$ENGINE-$slug.log"
  log "$ENGINE: $label"
  sleep 1
  "$@" >"$logf" 2>&1 &
  local client=$! at_ready= max=0 rss seen=0
  while kill -0 "$client" 2>/dev/null; do
    rss=$(status_kib VmRSS)
    if [[ $seen -eq 0 ]] && grep -qE "$marker" "$logf"; then
      seen=1; at_ready=$rss; max=$rss; reset_peak
    fi
    [[ $seen -eq 1 && $rss -gt $max ]] && max=$rss
    sleep 0.1
  done
  local status=0
  wait "$client" || status=$?
  local peak
  peak=$(status_kib VmHWM)
  sleep 3
  local after
  after=$(status_kib VmRSS)
  local outcome
  outcome=$(grep -E '^result |req/s' "$logf" | tail -n 1 | sed -e 's/^result //' -e 's/|/\//g' || true)
  [[ $status -ne 0 ]] && outcome="client exit $status (see $logf) $outcome"
  [[ $seen -eq 0 ]] && { at_ready=0; outcome="never ready; $outcome"; }
  ROWS+=("| $ENGINE | $label | $(mib "$at_ready") | $(mib "$max") | $(mib "$peak") | $(mib "$after") | $outcome |")
  log "  at ready $(mib "$at_ready") MiB, max $(mib "$max") MiB, peak $(mib "$peak") MiB, after $(mib "$after") MiB; $outcome"
}

loadgen() {
  "$LOADGEN" run "$1" --target "$URL" --concurrency "$CONNECTIONS" --duration "$SECONDS_BUSY" --warmup 2000 \
    --users 200 --products 100 --setup-concurrency 8 --user-cache "$OUT/users-$ENGINE.cache" --no-checks \
    --label "$ENGINE"
}

run_engine() {
  local url=$1
  start_server "$ENGINE" "$url"
  log "$ENGINE: instance $PID at $URL"
  if has idle; then
    sleep 2
    local rss
    rss=$(status_kib VmRSS)
    ROWS+=("| $ENGINE | idle after start | $(mib "$rss") | | $(mib "$(status_kib VmHWM)") | | |")
    log "  idle: $(mib "$rss") MiB"
  fi
  has keepalive && phase "$CONNECTIONS idle keep-alive connections" '^ready' \
    python3 "$CLIENTS" idle "$URL" -c "$CONNECTIONS" --path /api/v1/products/popular --hold 5
  has popular && phase "$CONNECTIONS busy, GET /products/popular (loadgen popular)" '^run:' loadgen popular
  has browse && phase "$CONNECTIONS busy, product pages and lists (loadgen browse)" '^run:' loadgen browse
  if has compressed; then
    # What browsers send: the product list (over the 1 KiB compression floor) in gzip or br.
    phase "$CONNECTIONS busy, GET /products gzip and br" '^ready' \
      python3 "$CLIENTS" busy "$URL" -c "$CONNECTIONS" --seconds "$SECONDS_BUSY" \
      --path '/api/v1/products?limit=100' --path '/api/v1/products?limit=20' \
      --header 'Accept-Encoding: gzip, deflate, br, zstd'
  fi
  has mixed && phase "$CONNECTIONS busy, write mix (loadgen mixed)" '^run:' loadgen mixed
  has slowloris && phase "slowloris: $((MAX_CONNECTIONS + 200)) slow heads (cap $MAX_CONNECTIONS)" '^ready' \
    python3 "$CLIENTS" slowloris "$URL" -c "$((MAX_CONNECTIONS + 200))" --seconds 14
  has slowloris-big && phase "slowloris: $MAX_CONNECTIONS heads of 60 KiB (cap $MAX_CONNECTIONS)" '^ready' \
    python3 "$CLIENTS" slowloris "$URL" -c "$MAX_CONNECTIONS" --seconds 14 --head-bytes 61440
  if has abandon; then
    phase "abandoned sign-ins, $CONNECTIONS at a time" '^ready' \
      python3 "$CLIENTS" abandon "$URL" -c "$CONNECTIONS" --seconds "$SECONDS_BUSY" --path /api/v1/auth/token \
      --body "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"wrong-password-{n}\"}"
    phase "abandoned half-sent bodies, $CONNECTIONS at a time" '^ready' \
      python3 "$CLIENTS" abandon "$URL" -c "$CONNECTIONS" --seconds "$SECONDS_BUSY" --path /api/v1/users \
      --body '{"email":"x{n}@memory.test","password":"abandoned-{n}","name":"A"}' --partial
  fi
  has signups && phase "burst of $SIGNUPS sign-ups at once" '^ready' \
    python3 "$CLIENTS" signups "$URL" -c "$SIGNUPS"
  sleep 2
  ROWS+=("| $ENGINE | idle at the end | $(mib "$(status_kib VmRSS)") | | | | |")
  stop_server
}

[[ -r /proc/self/clear_refs || -w /proc/self/clear_refs ]] || log "no /proc/<pid>/clear_refs: peaks are since start"
if [[ $BUILD -eq 1 ]]; then
  log "building release binaries"
  cargo build --release -p ecommerce -p ecommerce-loadgen
fi
[[ -x $SERVER && -x $LOADGEN ]] || { log "missing $SERVER or $LOADGEN"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed for the raw-socket clients"; exit 1; }
ulimit -n "$(( (MAX_CONNECTIONS + 1000) > 4096 ? MAX_CONNECTIONS + 1000 : 4096 ))" 2>/dev/null \
  || log "cannot raise the open-file limit (ulimit -n $(ulimit -n))"

started=$(date +%s)
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
for ENGINE in ${ENGINES//,/ }; do
  case "$ENGINE" in
    sqlite) run_engine "sqlite://$OUT/memory.db" ;;
    postgres)
      db="ecommerce_memory_${RUN_ID//-/_}"
      psql_admin -c "create database $db" >/dev/null || { log "cannot create $db on $PG_URL"; exit 1; }
      DATABASES+=("$db")
      run_engine "$PG_URL/$db"
      ;;
    *) log "unknown engine $ENGINE"; exit 64 ;;
  esac
done
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || REV+=" (with uncommitted changes)"
{
  echo "bench/memory.sh $ARGS — $(date -u +%Y-%m-%d), commit $REV, $(nproc) cores;" \
    "load average $LOAD_BEFORE before, $LOAD_AFTER after; $(( $(date +%s) - started )) s"
  echo
  echo "| engine | state | RSS under load (MiB) | highest sampled (MiB) | peak VmHWM (MiB) | 3 s after (MiB) | clients |"
  echo "|---|---|---:|---:|---:|---:|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/memory.md"
log "logs in $OUT"
