#!/usr/bin/env bash
# Scripted faults against real server instances on loopback, each followed by invariant checks in
# the database. Bounded in time; everything it starts is stopped and every database it creates is
# dropped on exit (trap).
#
#   scripts/faults.sh                      # scenarios 1, 2, 3p, 4, 5 and 6 (below)
#   scripts/faults.sh --only 1             # one scenario: 1, 2, 3p, 4, 5 or 6 (repeatable)
#   scripts/faults.sh --with-pg-restart    # also scenario 3 on the machine's shared PostgreSQL
#
# 1  coupon rush + SIGKILL: 3 instances on a fresh PostgreSQL database; users charge their balance
#    (Idempotency-Key) and rush a coupon with fewer coupons than users; one instance is SIGKILLed
#    mid-rush. Requests whose answer was lost are retried on a live instance (same key), as a
#    client behind a load balancer would. Checks: issued <= total; issued == the 201s seen (plus
#    the commits whose 201 was lost with the killed instance, which the retry reveals as
#    COUPON_ALREADY_ISSUED); the holders in the database are exactly the users told so; no shard
#    negative and shards + issued == total; nobody holds the coupon twice; every balance equals
#    its history and every user was charged exactly once per key.
# 2  NATS outage: our own nats-server (free port, own -sd dir) and 3 instances with NATS_URL;
#    orders are paid, NATS is stopped, more orders are paid (all must answer 200), NATS is
#    started again; the outbox must drain (bounded wait) and the stream must hold exactly one
#    distinct order.paid event id per paid order.
# 3p PostgreSQL restart on a private throwaway cluster (initdb on a free port, so nobody else is
#    disturbed): while it is stopped /health answers 503; after it is started again /health
#    answers 200 and a charge succeeds without restarting the instance. Charges and reads keep
#    coming all along: none may answer 500 (a connection the database ended is a 503), and
#    every 503 carries Retry-After.
# 3  the same against the machine's shared PostgreSQL cluster (pg_ctlcluster stop/start). This
#    breaks every other user of PostgreSQL on the machine for a few seconds: opt-in only.
# 4  slowloris (audit H2): one instance on SQLite (header timeout 2 s); 600 sockets, half sending
#    a request head a byte every 0.5 s, half sending nothing, for 8 s. Checks: /health answers
#    200 within 100 ms all along; the server closed every one of them; RSS stays under
#    FAULTS_RSS_MIB during and 2 s after.
# 5  hashing flood (audit H1): 3000 logins from 50 clients at once on their own connections, half
#    of them closed right after sending (hashing queue of 16). Checks: /health within 100 ms all along; the flood gets 401 or 503 only (some
#    503: the queue is bounded); a login right after it is answered within 2 s (no backlog of
#    abandoned hashes); RSS under the bound during and after.
# 6  metrics cardinality (audit H3): 10000 pipelined requests with made-up 40-letter methods and
#    made-up paths. Checks: /health within 100 ms; /metrics does not grow (under 1.2 x + 4 KiB);
#    every method label is one of eight; RSS under the bound during and after.
#    Scenarios 4-6 need no PostgreSQL and run in well under a minute each
#    (scripts/lib/abuse.py does the attacks, Python 3 stdlib only). On a busy machine one
#    /health probe in ten may take over 100 ms (none over 1 s); FAULTS_HEALTH_STRICT=1 allows none.
#
# Environment: FAULTS_SKIP_BUILD=1 uses the existing ${CARGO_TARGET_DIR:-target}/debug/ecommerce; PGHOST/PGPORT/PGUSER
# (default 127.0.0.1/5432/postgres) for the shared PostgreSQL; FAULTS_USERS (default 400) and
# FAULTS_COUPONS (default 250) size the rush; FAULTS_RSS_MIB (default 256) bounds the RSS of
# the attacked instance in scenarios 4-6.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
USERS="${FAULTS_USERS:-400}"
COUPONS="${FAULTS_COUPONS:-250}"
RSS_MIB="${FAULTS_RSS_MIB:-256}"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ecommerce
SECRET="faults-jwt-secret-at-least-32-bytes-$$-$RANDOM$RANDOM"   # ECOMMERCE_JWT_SECRET needs 32 bytes
ADMIN_EMAIL=faults-admin@example.com
ADMIN_PASSWORD=faults-admin-password
START=$(date +%s)

SCENARIOS=()
WITH_SHARED_PG=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --with-pg-restart) WITH_SHARED_PG=1 ;;
    --only) SCENARIOS+=("$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(1 2 3p 4 5 6)
[[ $WITH_SHARED_PG == 1 ]] && SCENARIOS+=(3)

log() { printf '[faults %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
FAILED=0
check() {  # check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then
    log "  ok   $1 ($2)"
  else
    log "  FAIL $1: got $2, expected $3"
    FAILED=1
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- cleanup ------------------------------------------------------------------------------------
WORK=$(mktemp -d -t ecommerce-faults.XXXXXX)
PIDS=()          # server instances
NATS_PID=""
DATABASES=()     # on the shared cluster
PRIVATE_PG=""    # data dir of the private cluster while it may run
SHARED_PG_STOPPED=0
PG_VERSION=$(ls /etc/postgresql 2>/dev/null | head -n 1 || true)

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
as_postgres() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PG_BIN=""
[[ -n "$PG_VERSION" ]] && PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  [[ -n "$NATS_PID" ]] && stop_pid "$NATS_PID"
  if [[ $SHARED_PG_STOPPED == 1 ]]; then
    log "cleanup: starting the shared PostgreSQL again"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
  fi
  if [[ -n "$PRIVATE_PG" ]]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PRIVATE_PG/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$PRIVATE_PG"
  fi
  for db in "${DATABASES[@]}"; do
    psql -d postgres -qAtc "drop database if exists $db with (force)" >/dev/null 2>&1
  done
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/*.err; do
      [[ -s "$f" ]] || continue
      echo "--- last lines of $(basename "$f") ---" >&2
      tail -n 15 "$f" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ------------------------------------------------------------------------------------
create_db() {  # create_db NAME (shared cluster)
  psql -d postgres -qAtc "create database $1" >/dev/null
  DATABASES+=("$1")
}
sql() { psql -d "$1" -qAtc "$2"; }   # sql DB QUERY (shared cluster)

# start_instance NAME VAR=VALUE...: starts target/debug/ecommerce on a free port with the given
# environment; sets INSTANCE_URL and INSTANCE_PID.
start_instance() {
  local name=$1; shift
  env ECOMMERCE_ADDR=127.0.0.1:0 ECOMMERCE_JWT_SECRET="$SECRET" ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 \
    ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
    ECOMMERCE_DB_MAX_CONNECTIONS=8 ECOMMERCE_EVENTS_FILE="$WORK/$name.events.jsonl" \
    RUST_LOG="${RUST_LOG:-warn}" "$@" \
    "$BIN" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  INSTANCE_PID=$!
  PIDS+=("$INSTANCE_PID")
  INSTANCE_URL=""
  for _ in $(seq 1 300); do
    INSTANCE_URL=$(sed -n 's/^ecommerce listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/$name.out")
    [[ -n "$INSTANCE_URL" ]] && return 0
    kill -0 "$INSTANCE_PID" 2>/dev/null || { log "instance $name exited during start-up"; tail -n 20 "$WORK/$name.err" >&2; exit 1; }
    sleep 0.1
  done
  log "instance $name did not print its address within 30 s"; exit 1
}

status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

# The HTTP client of the scenarios: round robin over instances, fail-over like a load balancer
# (connection refused = not sent, try the next instance; answer lost = unknown outcome, retried
# with the same Idempotency-Key / the same request), thread pool for concurrency.
cat >"$WORK/client.py" <<'PY'
import http.client, json, os, random, signal, sys, threading, time
from concurrent.futures import ThreadPoolExecutor, as_completed
from urllib.parse import urlparse


class Lost(Exception):
    """The request may have reached an instance, but no answer came back."""


class Cluster:
    def __init__(self, urls):
        self.addrs = [(u.hostname, u.port) for u in map(urlparse, urls)]
        self.dead = set()
        self.next = 0
        self.lock = threading.Lock()
        self.local = threading.local()
        self.token = None

    def _conn(self, i):
        conns = self.local.__dict__.setdefault("conns", {})
        if i not in conns:
            conns[i] = http.client.HTTPConnection(*self.addrs[i], timeout=30)
        return conns[i]

    def _drop(self, i):
        conn = self.local.__dict__.get("conns", {}).pop(i, None)
        if conn:
            conn.close()

    def _pick(self):
        with self.lock:
            for _ in range(len(self.addrs)):
                i = self.next % len(self.addrs)
                self.next += 1
                if i not in self.dead:
                    return i
        raise RuntimeError("every instance is down")

    def call(self, method, path, body=None, key=None, instance=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if key:
            headers["Idempotency-Key"] = key
        data = json.dumps(body).encode() if body is not None else None
        for _ in range(len(self.addrs) + 1):
            i = self._pick() if instance is None else instance
            try:
                conn = self._conn(i)
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except ConnectionRefusedError:
                self._drop(i)
                with self.lock:
                    self.dead.add(i)
                if instance is not None:
                    raise
            except (http.client.HTTPException, OSError) as e:
                self._drop(i)
                raise Lost(f"{method} {path} on instance {i}: {e!r}")
        raise RuntimeError("every instance is down")

    def retrying(self, method, path, body=None, key=None, tries=6):
        """Calls until an answer comes; returns (status, body, lost_before)."""
        lost = 0
        while True:
            try:
                status, doc = self.call(method, path, body, key)
                return status, doc, lost
            except Lost:
                lost += 1
                if lost >= tries:
                    raise
                time.sleep(0.05)


def must(status, doc, expected, what):
    if status != expected:
        raise SystemExit(f"{what}: HTTP {status} {doc}, expected {expected}")
    return doc


def login(cluster, email, password):
    doc = must(*cluster.call("POST", "/api/v1/auth/token", {"email": email, "password": password}), 200, "token")
    cluster.token = doc["access_token"]


def create_users(cluster, n, prefix):
    def one(k):
        status, doc, _ = cluster.retrying("POST", "/api/v1/users",
                                          {"email": f"{prefix}{k}@example.com", "password": "password-123", "name": f"U{k}"})
        return must(status, doc, 201, "create user")["id"]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def rush(args):
    """Charges and coupon rush; SIGKILLs one instance after a share of the users is done."""
    urls, users_n, coupons, kill_pid, kill_after = args["urls"], args["users"], args["coupons"], args["kill_pid"], args["kill_after"]
    cluster = Cluster(urls)
    login(cluster, args["admin_email"], args["admin_password"])
    t0 = time.time()
    users = create_users(cluster, users_n, f"rush{os.getpid()}-")
    print(f"created {len(users)} users in {time.time() - t0:.1f}s", file=sys.stderr)
    coupon = must(*cluster.call("POST", "/api/v1/admin/coupons", {
        "name": "Rush", "discount_type": "FIXED", "discount_value": 1000,
        "total_quantity": coupons, "valid_for_seconds": 3600}), 201, "create coupon")["id"]

    outcome = {}
    errors = []
    lost_total = [0]
    lock = threading.Lock()

    def charge(uid, key):
        status, doc, lost = cluster.retrying("POST", f"/api/v1/users/{uid}/balance/charges", {"amount": 10000}, key=key)
        with lock:
            lost_total[0] += lost
        if status != 200 or doc.get("charged_amount") != 10000:
            errors.append(f"charge {uid} {key}: {status} {doc}")

    def issue(uid):
        status, doc, lost = cluster.retrying("POST", f"/api/v1/users/{uid}/coupons", {"coupon_id": coupon})
        with lock:
            lost_total[0] += lost
        code = (doc or {}).get("code")
        if status == 201:
            return "201"
        if status == 409 and code == "COUPON_ALREADY_ISSUED" and lost:
            return "lost-201"  # committed, but the answer died with the instance
        if status == 409 and code == "COUPON_SOLD_OUT":
            return "sold-out"
        errors.append(f"issue {uid}: {status} {doc} (lost {lost})")
        return "error"

    def task(uid):
        charge(uid, f"rush-{uid}-a")
        result = issue(uid)
        outcome[uid] = result
        # The same user again: never a second coupon.
        status, doc, _ = cluster.retrying("POST", f"/api/v1/users/{uid}/coupons", {"coupon_id": coupon})
        want = "COUPON_ALREADY_ISSUED" if result in ("201", "lost-201") else "COUPON_SOLD_OUT"
        if status != 409 or (doc or {}).get("code") != want:
            errors.append(f"second issue {uid}: {status} {doc}, expected 409 {want}")
        charge(uid, f"rush-{uid}-b")

    order = users[:]
    random.shuffle(order)
    done = 0
    killed_at = None
    t0 = time.time()
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(task, uid) for uid in order]
        for f in as_completed(futures):
            f.result()
            done += 1
            if killed_at is None and done >= kill_after:
                os.kill(kill_pid, signal.SIGKILL)
                killed_at = done
                print(f"SIGKILLed instance pid {kill_pid} after {done} users", file=sys.stderr)
    elapsed = time.time() - t0
    holders = sorted(u for u, r in outcome.items() if r in ("201", "lost-201"))
    summary = {
        "coupon_id": coupon,
        "users": len(users),
        "seen_201": sum(1 for r in outcome.values() if r == "201"),
        "lost_201": sum(1 for r in outcome.values() if r == "lost-201"),
        "sold_out": sum(1 for r in outcome.values() if r == "sold-out"),
        "lost_answers": lost_total[0],
        "killed_after_users": killed_at,
        "rush_seconds": round(elapsed, 1),
        "errors": errors[:20],
        "error_count": len(errors),
        "holders": holders,
        "user_ids": users,
    }
    json.dump(summary, sys.stdout)


def payments(args):
    """Setup or pay phase of the NATS scenario."""
    cluster = Cluster(args["urls"])
    login(cluster, args["admin_email"], args["admin_password"])
    if args["phase"] == "setup":
        product = must(*cluster.call("POST", "/api/v1/admin/products", {"name": "Tee", "price": 1000, "stock": 100000}), 201, "product")["id"]
        users = create_users(cluster, args["users"], f"pay{os.getpid()}-")
        for uid in users:
            must(*cluster.call("POST", f"/api/v1/users/{uid}/balance/charges", {"amount": 500000}, key=f"setup-{uid}"), 200, "charge")
        json.dump({"product": product, "users": users}, sys.stdout)
        return
    product, users, n = args["product"], args["users"], args["orders"]
    paid, errors = [], []

    def one(k):
        uid = users[k % len(users)]
        status, doc, _ = cluster.retrying("POST", f"/api/v1/users/{uid}/orders", {"items": [{"product_id": product, "quantity": 1 + k % 3}]})
        if status != 201:
            errors.append(f"order: {status} {doc}")
            return
        key = f"pay-{doc['id']}"
        status, doc, _ = cluster.retrying("POST", f"/api/v1/orders/{doc['id']}/payment", {}, key=key)
        if status != 200 or doc.get("status") != "PAID":
            errors.append(f"payment: {status} {doc}")
            return
        paid.append(doc["id"])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    json.dump({"paid": sorted(paid), "errors": errors[:20], "error_count": len(errors)}, sys.stdout)


if __name__ == "__main__":
    args = json.loads(sys.argv[2])
    {"rush": rush, "payments": payments}[sys.argv[1]](args)
PY
client() { timeout 300 python3 "$WORK/client.py" "$@"; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

# --- scenario 1: coupon rush with an instance SIGKILLed ---------------------------------------
scenario_1() {
  log "scenario 1: coupon rush ($USERS users, $COUPONS coupons), 3 instances, one SIGKILLed mid-rush"
  local db=ecommerce_faults_$$_1
  create_db "$db"
  local url="postgres://$PGUSER@$PGHOST:$PGPORT/$db" urls=() pids=()
  for i in 1 2 3; do
    start_instance "s1-$i" DATABASE_URL="$url"
    urls+=("$INSTANCE_URL"); pids+=("$INSTANCE_PID")
  done
  log "  instances ${urls[*]}"
  local args
  args=$(printf '{"urls":["%s","%s","%s"],"users":%d,"coupons":%d,"kill_pid":%d,"kill_after":%d,"admin_email":"%s","admin_password":"%s"}' \
    "${urls[@]}" "$USERS" "$COUPONS" "${pids[2]}" $((USERS / 3)) "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
  client rush "$args" >"$WORK/rush.json"
  kill -0 "${pids[2]}" 2>/dev/null && { log "  FAIL the instance to kill is still alive"; FAILED=1; }
  local f=$WORK/rush.json coupon seen lost_201 issued
  coupon=$(jget "$f" 'd["coupon_id"]')
  seen=$(jget "$f" 'd["seen_201"]'); lost_201=$(jget "$f" 'd["lost_201"]')
  log "  rush: $(jget "$f" '{k: v for k, v in d.items() if k not in ("holders", "user_ids", "errors")}')"
  if [[ $(jget "$f" 'd["error_count"]') != 0 ]]; then
    log "  FAIL unexpected answers: $(jget "$f" 'd["errors"]')"; FAILED=1
  fi
  issued=$(sql "$db" "select count(*) from user_coupon where coupon_id = $coupon")
  check "issued <= total" "$(sql "$db" "select count(*) <= $COUPONS from user_coupon where coupon_id = $coupon")" t
  check "issued == 201s seen + 201s lost with the killed instance ($seen + $lost_201)" "$issued" "$((seen + lost_201))"
  check "sold out (more users than coupons)" "$issued" "$COUPONS"
  jget "$f" '"\n".join(map(str, d["holders"]))' >"$WORK/holders.client"
  sql "$db" "select user_id from user_coupon where coupon_id = $coupon order by user_id" >"$WORK/holders.db"
  check "holders in the database == users told they hold it" "$(diff -q "$WORK/holders.client" "$WORK/holders.db" >/dev/null && echo same || echo different)" same
  check "no shard negative" "$(sql "$db" "select count(*) from coupon_shard where remaining < 0")" 0
  check "shards + issued == total" "$(sql "$db" "select sum(remaining) + $issued from coupon_shard where coupon_id = $coupon")" "$COUPONS"
  check "nobody holds a coupon twice" "$(sql "$db" "select count(*) from (select 1 from user_coupon group by user_id, coupon_id having count(*) > 1) t")" 0
  check "balances equal history" "$(sql "$db" "select count(*) from account a where balance <> coalesce((select sum(amount) from balance_entry e where e.user_id = a.id), 0)")" 0
  check "each user charged exactly once per key (2 x 10000)" \
    "$(sql "$db" "select count(*) from account a where role <> 'ADMIN' and (balance <> 20000 or (select count(*) from balance_entry e where e.user_id = a.id and kind = 'CHARGE') <> 2)")" 0
  check "users with a balance" "$(sql "$db" "select count(*) from account where role <> 'ADMIN'")" "$USERS"
  for pid in "${pids[@]:0:2}"; do stop_pid "$pid"; done
}

# --- scenario 2: NATS outage ------------------------------------------------------------------
scenario_2() {
  log "scenario 2: NATS outage while orders are paid"
  local db=ecommerce_faults_$$_2 port sd=$WORK/nats-store
  create_db "$db"
  port=$(free_port)
  mkdir -p "$sd"
  start_nats() {
    /usr/sbin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$sd" >>"$WORK/nats.err" 2>&1 &
    NATS_PID=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
    log "  nats-server did not open port $port"; exit 1
  }
  start_nats
  local nats=nats://127.0.0.1:$port url="postgres://$PGUSER@$PGHOST:$PGPORT/$db" urls=() pids=()
  for i in 1 2 3; do
    start_instance "s2-$i" DATABASE_URL="$url" NATS_URL="$nats"
    urls+=("$INSTANCE_URL"); pids+=("$INSTANCE_PID")
  done
  log "  nats $nats (pid $NATS_PID), instances ${urls[*]}"
  local base
  base=$(printf '"urls":["%s","%s","%s"],"admin_email":"%s","admin_password":"%s"' "${urls[@]}" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
  client payments "{$base,\"phase\":\"setup\",\"users\":10}" >"$WORK/setup.json"
  local product users
  product=$(jget "$WORK/setup.json" 'd["product"]'); users=$(jget "$WORK/setup.json" 'd["users"]')
  client payments "{$base,\"phase\":\"pay\",\"product\":$product,\"users\":$users,\"orders\":20}" >"$WORK/pay1.json"
  check "payments before the outage" "$(jget "$WORK/pay1.json" 'len(d["paid"])')" 20

  log "  stopping NATS"
  stop_pid "$NATS_PID"; NATS_PID=""
  client payments "{$base,\"phase\":\"pay\",\"product\":$product,\"users\":$users,\"orders\":40}" >"$WORK/pay2.json"
  check "payments during the outage answer 200" "$(jget "$WORK/pay2.json" 'len(d["paid"])')" 40
  [[ $(jget "$WORK/pay2.json" 'd["error_count"]') == 0 ]] || { log "  FAIL $(jget "$WORK/pay2.json" 'd["errors"]')"; FAILED=1; }
  local waiting
  waiting=$(sql "$db" "select count(*) from outbox where sent_at is null")
  log "  events waiting in the outbox while NATS is down: $waiting"
  [[ $waiting -gt 0 ]] || { log "  FAIL no event waits in the outbox during the outage"; FAILED=1; }
  # The outage is visible in the metrics: the backlog gauge (refreshed every 2 s) and the
  # publish failures (a publish gives up after 3 s without the broker's ack).
  local backlog=0 failures=0 t0=$SECONDS metrics
  while (( SECONDS - t0 < 20 )); do
    metrics=$(curl -s --max-time 5 "${urls[0]}/metrics" "${urls[1]}/metrics" "${urls[2]}/metrics" || true)
    backlog=$(awk '$1 == "outbox_backlog" && $2 > m {m = $2} END {print m + 0}' <<<"$metrics")
    failures=$(awk '$1 == "outbox_publish_failures_total" {s += $2} END {print s + 0}' <<<"$metrics")
    [[ $backlog -gt 0 && $failures -gt 0 ]] && break
    sleep 0.5
  done
  log "  metrics during the outage ($((SECONDS - t0)) s): outbox_backlog $backlog, outbox_publish_failures_total $failures"
  check "outbox_backlog shows the waiting events" "$backlog" "$waiting"
  check "outbox_publish_failures_total counts the failed publishes" "$(( failures > 0 ))" 1

  log "  starting NATS again"
  start_nats
  local unsent=-1 t0=$SECONDS
  while (( SECONDS - t0 < 90 )); do
    unsent=$(sql "$db" "select count(*) from outbox where sent_at is null")
    [[ $unsent == 0 ]] && break
    sleep 0.5
  done
  check "outbox drained after NATS came back (waited $((SECONDS - t0)) s)" "$unsent" 0

  NATS_URL=$nats timeout 6 "$BIN" events tail >"$WORK/stream.jsonl" 2>"$WORK/tail.err" || true
  local paid_db
  paid_db=$(sql "$db" "select count(*) from purchase_order where status = 'PAID'")
  check "paid orders in the database" "$paid_db" 60
  python3 - "$WORK/stream.jsonl" "$WORK/pay1.json" "$WORK/pay2.json" >"$WORK/stream.check" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
paid = sorted(json.load(open(sys.argv[2]))["paid"] + json.load(open(sys.argv[3]))["paid"])
ids = {e["id"] for e in events if e["type"] == "order.paid"}
per_order = {}
for e in events:
    if e["type"] == "order.paid":
        per_order.setdefault(e["data"]["order_id"], set()).add(e["id"])
print(len(events), len(ids), int(sorted(per_order) == paid and all(len(v) == 1 for v in per_order.values())))
PY
  local messages distinct exact
  read -r messages distinct exact <"$WORK/stream.check"
  log "  stream: $messages messages"
  check "distinct order.paid event ids on the stream == paid orders" "$distinct" "$paid_db"
  check "exactly one event id per paid order, for the orders paid" "$exact" 1
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  stop_pid "$NATS_PID"; NATS_PID=""
}

# --- scenario 3: PostgreSQL stopped and started under a running instance -----------------------
# pg_restart_check DATABASE_URL PSQL-PREFIX STOP-CMD START-CMD
pg_restart_check() {
  local url=$1 stop_cmd=$2 start_cmd=$3 name=$4
  start_instance "$name" DATABASE_URL="$url"
  local base=$INSTANCE_URL pid=$INSTANCE_PID
  check "health before" "$(status_of "$base/health")" 200
  local token uid
  token=$(curl -sS --max-time 10 -H 'Content-Type: application/json' -X POST "$base/api/v1/auth/token" \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  uid=$(curl -sS --max-time 10 -H 'Content-Type: application/json' -X POST "$base/api/v1/users" \
    -d '{"email":"pg-restart@example.com","password":"password-123","name":"P"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

  # Charges and reads keep coming while the database goes away and comes back (audit M4): a
  # connection the server ends (57P01 admin shutdown) or a pool timeout must be a 503 with
  # Retry-After, never a 500.
  rm -f "$WORK/$name.pound.stop"
  python3 - "$base" "$token" "$uid" "$WORK/$name.pound.stop" >"$WORK/$name.pound.txt" 2>&1 <<'PY' &
import http.client, json, os, sys, threading, time
from urllib.parse import urlparse
base, token, uid, stop = sys.argv[1:]
u = urlparse(base)
seen, lock = {}, threading.Lock()
def pound(n):
    i = 0
    while not os.path.exists(stop):
        i += 1
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=40)
        h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            if i % 2:
                h["Idempotency-Key"] = f"pound-{n}-{i}"
                conn.request("POST", f"/api/v1/users/{uid}/balance/charges", json.dumps({"amount": 1000}), h)
            else:
                conn.request("GET", f"/api/v1/users/{uid}/balance", headers=h)
            r = conn.getresponse(); r.read()
            key = f"{r.status}" + ("" if r.status != 503 or r.getheader("Retry-After") else "-no-retry-after")
        except Exception as e:
            key = type(e).__name__
        with lock:
            seen[key] = seen.get(key, 0) + 1
        conn.close()
        time.sleep(0.05)
threads = [threading.Thread(target=pound, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())))
PY
  local pound_pid=$!
  sleep 0.5
  log "  stopping PostgreSQL"
  eval "$stop_cmd"
  local health="" t0=$SECONDS
  while (( SECONDS - t0 < 15 )); do
    health=$(status_of "$base/health")
    [[ $health == 503 ]] && break
    sleep 0.3
  done
  check "health while PostgreSQL is down" "$health" 503
  local down_ct down_status
  down_status=$(curl -s -o "$WORK/down.json" -w '%{http_code} %{content_type}' --max-time 10 "$base/api/v1/products" || true)
  log "  GET /api/v1/products while down: $down_status $(head -c 200 "$WORK/down.json" 2>/dev/null)"
  down_ct=${down_status#* }
  check "an API request while down answers problem+json" "${down_ct%%;*}" application/problem+json
  # The contract names SERVICE_UNAVAILABLE 503 but does not say a database outage must use it:
  # report, do not fail.
  [[ ${down_status%% *} == 503 ]] || log "  NOTE an API request while the database is down answers ${down_status%% *}, not 503 SERVICE_UNAVAILABLE"
  check "an API request while down answers 5xx" "$(( ${down_status%% *} >= 500 ))" 1

  log "  starting PostgreSQL"
  eval "$start_cmd"
  t0=$SECONDS
  while (( SECONDS - t0 < 30 )); do
    health=$(status_of "$base/health")
    [[ $health == 200 ]] && break
    sleep 0.3
  done
  check "health after PostgreSQL is back (waited $((SECONDS - t0)) s)" "$health" 200
  touch "$WORK/$name.pound.stop"
  wait "$pound_pid" 2>/dev/null || true
  local pounded
  pounded=$(tail -n 1 "$WORK/$name.pound.txt")
  log "  answers to charges and reads during the outage: $pounded"
  check "no 500 during the outage" "$(grep -c '500=' <<<"$pounded" || true)" 0
  check "every 503 during the outage has Retry-After" "$(grep -c 'no-retry-after' <<<"$pounded" || true)" 0
  check "same instance process (not restarted)" "$(kill -0 "$pid" 2>/dev/null && echo alive || echo dead)" alive
  local before_charge
  before_charge=$(curl -s --max-time 5 -H "Authorization: Bearer $token" "$base/api/v1/users/$uid/balance" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["balance"])')
  check "a charge after recovery" "$(status_of -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H 'Idempotency-Key: after-restart' -d '{"amount": 5000}' "$base/api/v1/users/$uid/balance/charges")" 200
  check "balance after recovery" "$(curl -s --max-time 5 -H "Authorization: Bearer $token" "$base/api/v1/users/$uid/balance" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["balance"])')" "$((before_charge + 5000))"
  stop_pid "$pid"
}

scenario_3p() {
  log "scenario 3p: PostgreSQL restart on a private throwaway cluster"
  [[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] || { log "  FAIL no PostgreSQL server binaries under /usr/lib/postgresql"; FAILED=1; return; }
  PRIVATE_PG=$(mktemp -d -t ecommerce-faults-pg.XXXXXX)
  [[ $(id -u) == 0 ]] && chown postgres: "$PRIVATE_PG"
  local port
  port=$(free_port)
  as_postgres "$PG_BIN/initdb" -D "$PRIVATE_PG/data" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1
  local ctl="as_postgres $PG_BIN/pg_ctl -D $PRIVATE_PG/data -l $PRIVATE_PG/log -w -t 30"
  local opts="-o '-p $port -k $PRIVATE_PG -c listen_addresses=127.0.0.1 -c fsync=off'"
  eval "$ctl $opts start" >/dev/null
  psql -h 127.0.0.1 -p "$port" -d postgres -qAtc "create database ecommerce" >/dev/null
  pg_restart_check "postgres://postgres@127.0.0.1:$port/ecommerce" \
    "$ctl -m fast stop >/dev/null" "$ctl $opts start >/dev/null" s3p
  check "balances equal history" "$(psql -h 127.0.0.1 -p "$port" -d ecommerce -qAtc \
    "select count(*) from account a where balance <> coalesce((select sum(amount) from balance_entry e where e.user_id = a.id), 0)")" 0
  eval "$ctl -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$PRIVATE_PG"; PRIVATE_PG=""
}

scenario_3() {
  log "scenario 3: restart of the SHARED PostgreSQL ($PG_VERSION main) under a running instance"
  [[ -n "$PG_VERSION" ]] || { log "  FAIL no cluster under /etc/postgresql"; FAILED=1; return; }
  local db=ecommerce_faults_$$_3
  create_db "$db"
  pg_restart_check "postgres://$PGUSER@$PGHOST:$PGPORT/$db" \
    "SHARED_PG_STOPPED=1; pg_ctlcluster --skip-systemctl-redirect $PG_VERSION main stop" \
    "pg_ctlcluster --skip-systemctl-redirect $PG_VERSION main start && SHARED_PG_STOPPED=0; for _ in \$(seq 1 60); do pg_isready -q && break; sleep 0.5; done" s3
  check "balances equal history" "$(sql "$db" "select count(*) from account a where balance <> coalesce((select sum(amount) from balance_entry e where e.user_id = a.id), 0)")" 0
}

# --- scenarios 4, 5, 6: abuse of one instance (audit H1, H2, H3) -----------------------------
# abuse_check NAME ATTACK [VAR=VALUE...]: one instance on a fresh SQLite file, attacked by
# scripts/lib/abuse.py; its ok/FAIL lines become checks.
abuse_check() {
  local name=$1 attack=$2; shift 2
  start_instance "$name" DATABASE_URL="sqlite://$WORK/$name.db" ECOMMERCE_RATE_LIMIT_AUTH=0 \
    ECOMMERCE_RATE_LIMIT_USER=0 "$@"
  local pid=$INSTANCE_PID out
  out=$(timeout 120 python3 "$ROOT/scripts/lib/abuse.py" "$attack" "$INSTANCE_URL" "$pid" --rss-mib "$RSS_MIB" 2>&1) || FAILED=1
  while IFS= read -r line; do log "$line"; done <<<"$out"
  grep -q '^  FAIL' <<<"$out" && FAILED=1
  kill -0 "$pid" 2>/dev/null || { log "  FAIL the instance died under the attack"; FAILED=1; }
  stop_pid "$pid"
}

scenario_4() {
  log "scenario 4: slowloris (half-open sockets, slow headers) against one instance"
  abuse_check s4 slowloris ECOMMERCE_HEADER_TIMEOUT_MS=2000
}

scenario_5() {
  log "scenario 5: a flood of logins, half of them abandoned, against one instance"
  # A queue of 16 (default: 128 per thread) so that the flood's 50 clients at once fill it.
  abuse_check s5 hash-flood ECOMMERCE_HASH_QUEUE=16
}

scenario_6() {
  log "scenario 6: made-up methods and paths against /metrics"
  abuse_check s6 metrics
}

# --- main ---------------------------------------------------------------------------------------
pg_isready -q || { echo "PostgreSQL is not running on $PGHOST:$PGPORT" >&2; exit 1; }
if [[ "${FAULTS_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
for s in "${SCENARIOS[@]}"; do
  case "$s" in
    1) scenario_1 ;;
    2) scenario_2 ;;
    3p) scenario_3p ;;
    3) scenario_3 ;;
    4) scenario_4 ;;
    5) scenario_5 ;;
    6) scenario_6 ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
if [[ $FAILED != 0 ]]; then
  log "faults: FAILED"
  exit 1
fi
log "faults: OK (${SCENARIOS[*]})"
