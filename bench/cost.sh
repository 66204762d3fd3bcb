#!/usr/bin/env bash
# CPU cost per request type: the server's instructions per request (valgrind --tool=callgrind,
# stable on a shared machine), its CPU time per request natively, and the CPU time of the
# PostgreSQL backends serving it. One fresh PostgreSQL database; set-up (users, products, orders,
# coupons, draws) through a plain server; then, for each request type, a warm-up and N requests
# sent one at a time over one keep-alive connection, the counters taken just before and after
# (callgrind_control -z / -d, /proc/<pid>/task/*/schedstat), so start-up and set-up are excluded.
# The server's idle cost (relay polls, backlog job) over the same time is measured and subtracted.
# Everything started is stopped, and the database dropped, on exit (also on failure or Ctrl-C).
#
#   bench/cost.sh                      # the table on stdout (about 10 minutes on 2 cores)
#   bench/cost.sh --out docs/cost.md   # also the table in FILE (markdown; FILE.json: JSON)
#   bench/cost.sh --help
set -euo pipefail

usage() {
  cat <<'EOF'
bench/cost.sh [options]
  --reads N        requests per read type (default 2000)
  --writes N       requests per write type (default 400)
  --signins N      sign-ins (Argon2id) (default 10)
  --warmup N       unmeasured requests before each type (default 10)
  --types LIST     request types, comma-separated (default all; see below)
  --modes LIST     native,callgrind (default both): CPU time natively, instructions under callgrind
  --pg-url URL     PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
  --out FILE       also write the table to FILE (markdown), and the figures to FILE.json
                   (FILE ending in .json: the JSON only)
  --no-build       use the binaries already in $CARGO_TARGET_DIR/release (or target/release)
  --keep           keep the run folder's callgrind dumps (target/cost/<run>/)
Types: product, product-uncached, list, popular, signin, charge, order, pay, pay-refused,
coupon, coupon-sold-out, draw-entry.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

READS=2000
WRITES=400
SIGNINS=10
WARMUP=10
TYPES=product,product-uncached,list,popular,signin,charge,order,pay,pay-refused,coupon,coupon-sold-out,draw-entry
MODES=native,callgrind
PG_URL=postgres://postgres@127.0.0.1:5432
OUT_FILE=
BUILD=1
KEEP=0
ARGS="$*"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reads) READS=$2; shift 2 ;;
    --writes) WRITES=$2; shift 2 ;;
    --signins) SIGNINS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --pg-url) PG_URL=${2%/}; shift 2 ;;
    --out) OUT_FILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done
[[ $WARMUP -ge 3 ]] || { echo "--warmup must be at least 3 (the sold-out gate needs a paid and a refused payment)" >&2; exit 64; }

RUN_ID=$(date -u +%Y%m%d-%H%M%S)-$$
OUT="$ROOT/target/cost/$RUN_ID"
mkdir -p "$OUT"
DB="ecommerce_cost_${RUN_ID//-/_}"
DB_URL="$PG_URL/$DB"
ADMIN_EMAIL=admin@cost.test
ADMIN_PASSWORD="cost-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET_DIR/release/ecommerce"
PIDS=()
DB_MADE=0
log() { printf '[cost %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cleanup() {
  local status=$?
  stop_pids 600  # callgrind takes long to exit
  if [[ $DB_MADE -eq 1 ]]; then
    psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || log "could not drop $DB"
  fi
  [[ $KEEP -eq 1 ]] || rm -f "$OUT"/callgrind.out.*
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ",$MODES," == *",callgrind,"* ]] && ! command -v valgrind >/dev/null; then
  log "installing valgrind"
  apt-get install -y valgrind >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }
fi
command -v python3 >/dev/null || { log "python3 is needed (the request driver)"; exit 1; }
if [[ $BUILD -eq 1 ]]; then
  log "building the release server"
  cargo build --release -p ecommerce
fi
[[ -x $SERVER ]] || { log "missing $SERVER"; exit 1; }

# start_server <name> [wrapper...]: starts one instance on $DB_URL; sets SERVER_PID, SERVER_URL.
start_server() {
  local name=$1; shift
  local base="$OUT/$name"
  env ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="$DB_URL" ECOMMERCE_JWT_SECRET="$JWT_SECRET" \
    ECOMMERCE_ADMIN_EMAIL=$ADMIN_EMAIL ECOMMERCE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
    ECOMMERCE_RATE_LIMIT_AUTH=0 ECOMMERCE_RATE_LIMIT_USER=0 ECOMMERCE_ORDER_TTL_SECONDS=86400 \
    ECOMMERCE_EVENTS_FILE="$base.events.jsonl" \
    ECOMMERCE_CATALOG_CACHE_MS=60000 ECOMMERCE_POPULAR_CACHE_SECONDS=3600 \
    ECOMMERCE_EXPIRY_INTERVAL_MS=3600000 ECOMMERCE_DRAW_INTERVAL_MS=3600000 \
    "$@" "$SERVER" >"$base.out" 2>"$base.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  local line
  for _ in $(seq 1 3000); do
    line=$(grep -m1 -o 'listening on http://[0-9.:]*' "$base.out" 2>/dev/null || true)
    if [[ -n $line ]]; then SERVER_URL=${line#listening on }; log "$name: pid $SERVER_PID at $SERVER_URL"; return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$name exited before listening; see $base.err"; return 1; }
    sleep 0.1
  done
  log "$name did not listen within 300 s"; return 1
}

DRIVER="$OUT/driver.py"
cat >"$DRIVER" <<'PYTHON'
"""Request driver of bench/cost.sh: set-up, measured runs and the report (standard library only)."""
import argparse, datetime, glob, http.client, json, os, statistics, subprocess, sys, time, urllib.parse
from concurrent.futures import ThreadPoolExecutor

PASSWORD = "cost-password-1"


class Api:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base, timeout=600):
        u = urllib.parse.urlparse(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def call(self, method, path, body=None, token=None, headers=None):
        h = {"Accept": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        if headers:
            h.update(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = None
        return r.status, value

    def must(self, status, method, path, body=None, token=None, headers=None):
        got, value = self.call(method, path, body, token, headers)
        if got != status:
            sys.exit(f"{method} {path}: {got} {value} (expected {status})")
        return value


def rfc3339(offset_s):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def setup(a):
    """Users (signed up, logged in, charged), products, and per measured run: a coupon, a coupon
    of quantity 1, a draw, and pending orders of a product of 1 unit (the sold-out gate)."""
    api = Api(a.base)
    admin = api.must(200, "POST", "/api/v1/auth/token", {"email": a.admin_email, "password": a.admin_password})["access_token"]
    runs = a.runs
    users_needed = a.warmup + max(a.writes, a.signins)
    def product(name, stock, price=1000):
        return api.must(201, "POST", "/api/v1/admin/products", {"name": name, "price": price, "stock": stock}, admin)["id"]
    main = product("cost main", 1_000_000)
    popular = [product(f"cost popular {i}", 1_000_000) for i in range(5)]
    for i in range(15):
        product(f"cost filler {i}", 1_000)

    def make_user(n):
        own = Api(a.base)
        email = f"cost{n}@cost.test"
        own.must(201, "POST", "/api/v1/users", {"email": email, "password": PASSWORD, "name": f"Cost {n}"})
        v = own.must(200, "POST", "/api/v1/auth/token", {"email": email, "password": PASSWORD})
        uid, tok = v["user_id"], v["access_token"]
        own.must(200, "POST", f"/api/v1/users/{uid}/balance/charges", {"amount": 1_000_000}, tok,
                 {"Idempotency-Key": f"setup-{n}"})
        return {"email": email, "id": uid, "token": tok}

    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(make_user, range(users_needed)))
    print(f"setup: {len(users)} users in {time.time() - started:.0f} s", file=sys.stderr)
    # A few paid orders, so /products/popular has a list to rank.
    for i, p in enumerate(popular):
        for k in range(i + 1):
            u = users[(i + k) % len(users)]
            o = api.must(201, "POST", f"/api/v1/users/{u['id']}/orders", {"items": [{"product_id": p, "quantity": 1}]}, u["token"])
            api.must(200, "POST", f"/api/v1/orders/{o['id']}/payment", {"user_coupon_id": None}, u["token"])
    per_run = []
    gate = product("cost sold-out drop", 1)
    for r in range(runs):
        coupon = api.must(201, "POST", "/api/v1/admin/coupons", {"name": f"cost coupon {r}", "discount_type": "FIXED",
            "discount_value": 1000, "total_quantity": users_needed + 10, "valid_for_seconds": 86400}, admin)["id"]
        sold_out = api.must(201, "POST", "/api/v1/admin/coupons", {"name": f"cost sold-out coupon {r}", "discount_type": "FIXED",
            "discount_value": 1000, "total_quantity": 1, "valid_for_seconds": 86400}, admin)["id"]
        draw_product = product(f"cost draw {r}", users_needed + 10)
        draw = api.must(201, "POST", "/api/v1/admin/draws", {"product_id": draw_product, "quantity": users_needed + 10,
            "entry_starts_at": rfc3339(-60), "entry_ends_at": rfc3339(6 * 3600), "payment_window_seconds": 600}, admin)["id"]
        gate_orders = []
        for i in range(a.warmup + a.writes + 2):
            u = users[i % len(users)]
            o = api.must(201, "POST", f"/api/v1/users/{u['id']}/orders", {"items": [{"product_id": gate, "quantity": 1}]}, u["token"])
            gate_orders.append([u["id"], o["id"]])
        per_run.append({"coupon": coupon, "sold_out_coupon": sold_out, "draw": draw, "gate_orders": gate_orders})
    state = {"admin": admin, "users": users, "main": main, "per_run": per_run, "created": time.time()}
    with open(a.state, "w") as f:
        json.dump(state, f)


def task_cpu_ns(pid):
    """CPU time of every live thread of pid, in ns (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class Backends:
    """CPU time of the PostgreSQL backends connected to one database (not the shared
    checkpointer, WAL writer and background writer)."""

    def __init__(self, pg_url, db):
        self.pg_url, self.db = pg_url, db

    def sample(self):
        out = subprocess.run(["psql", self.pg_url + "/postgres", "-qAtX", "-c",
                              f"select pid from pg_stat_activity where datname = '{self.db}' and pid <> pg_backend_pid()"],
                             check=True, capture_output=True, text=True).stdout.split()
        return {int(p): task_cpu_ns(int(p)) for p in out}

    @staticmethod
    def delta(before, after):
        return sum(v - before.get(p, 0) for p, v in after.items())


class Callgrind:
    def __init__(self, pid, out_dir):
        self.pid, self.out_dir = pid, out_dir

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.pid)], check=True, capture_output=True, timeout=600)

    def zero(self):
        self.control("-z")

    def dump(self):
        """Instructions since the last zero (a dump writes a file and zeroes the counters)."""
        before = set(glob.glob(os.path.join(self.out_dir, f"callgrind.out.{self.pid}*")))
        self.control("-d")
        for _ in range(600):
            new = set(glob.glob(os.path.join(self.out_dir, f"callgrind.out.{self.pid}*"))) - before
            if new:
                path = max(new, key=os.path.getmtime)
                time.sleep(0.2)
                total = summary = None
                with open(path) as f:
                    for line in f:
                        if line.startswith("totals:"):
                            total = int(line.split()[1])
                        elif line.startswith("summary:"):
                            summary = int(line.split()[1])
                value = total if total is not None else summary
                if value is not None:
                    os.remove(path)
                    return value
            time.sleep(0.1)
        sys.exit("callgrind dump not found")


TYPES = ["product", "product-uncached", "list", "popular", "signin", "charge", "order", "pay", "pay-refused",
         "coupon", "coupon-sold-out", "draw-entry"]

LABELS = {
    "product": "product page, cached (`GET /products/{id}`)",
    "product-uncached": "product page, uncached (admin token: one primary read)",
    "list": "product list, cached (`GET /products?limit=20`)",
    "popular": "popular, cached (`GET /products/popular`)",
    "signin": "sign-in (`POST /auth/token`, Argon2id)",
    "charge": "charge (`POST …/balance/charges`, new key)",
    "order": "order create (one line, direct)",
    "pay": "payment (one line, no coupon, no key)",
    "pay-refused": "payment refused by the sold-out gate (409)",
    "coupon": "coupon issue (201)",
    "coupon-sold-out": "coupon issue, sold out (409)",
    "draw-entry": "draw entry (201)",
}


def requests_of(kind, state, run, a):
    """(warm-up, measured) lists of (method, path, body, token, headers, expected status); the
    order ids of `pay` come from `order`, so those two are built lazily."""
    users, admin, main = state["users"], state["admin"], state["main"]
    r = state["per_run"][run]
    w = a.warmup
    def per_user(n, f):
        return [f(users[i % len(users)], i) for i in range(n)]
    if kind == "product":
        make = lambda n: [("GET", f"/api/v1/products/{main}", None, None, None, 200)] * n
        return make(w), make(a.reads)
    if kind == "product-uncached":
        make = lambda n: [("GET", f"/api/v1/products/{main}", None, admin, None, 200)] * n
        return make(w), make(a.reads)
    if kind == "list":
        make = lambda n: [("GET", "/api/v1/products?limit=20", None, None, None, 200)] * n
        return make(w), make(a.reads)
    if kind == "popular":
        make = lambda n: [("GET", "/api/v1/products/popular?days=3&limit=5", None, None, None, 200)] * n
        return make(w), make(a.reads)
    if kind == "signin":
        all_ = per_user(w + a.signins, lambda u, i: ("POST", "/api/v1/auth/token", {"email": u["email"], "password": PASSWORD}, None, None, 200))
        return all_[:w], all_[w:]
    if kind == "charge":
        all_ = per_user(w + a.writes, lambda u, i: ("POST", f"/api/v1/users/{u['id']}/balance/charges", {"amount": 1000}, u["token"],
                                                       {"Idempotency-Key": f"cost-{run}-{i}"}, 200))
        return all_[:w], all_[w:]
    if kind == "coupon":
        all_ = per_user(w + a.writes, lambda u, i: ("POST", f"/api/v1/users/{u['id']}/coupons", {"coupon_id": r["coupon"]}, u["token"], None, 201))
        return all_[:w], all_[w:]
    if kind == "coupon-sold-out":
        all_ = per_user(w + a.writes, lambda u, i: ("POST", f"/api/v1/users/{u['id']}/coupons", {"coupon_id": r["sold_out_coupon"]}, u["token"],
                                                       None, 201 if i == 0 else 409))
        return all_[:w], all_[w:]
    if kind == "draw-entry":
        all_ = per_user(w + a.writes, lambda u, i: ("POST", f"/api/v1/users/{u['id']}/draws/{r['draw']}/entries", None, u["token"], None, 201))
        return all_[:w], all_[w:]
    if kind == "order":
        all_ = per_user(w + a.writes, lambda u, i: ("POST", f"/api/v1/users/{u['id']}/orders", {"items": [{"product_id": main, "quantity": 1}]},
                                                       u["token"], None, 201))
        return all_[:w], all_[w:]
    if kind == "pay":
        orders = state["orders"].get(str(run), [])
        if len(orders) < w + a.writes:
            sys.exit("pay needs the orders of `order` in the same run")
        token = {u["id"]: u["token"] for u in users}
        all_ = [("POST", f"/api/v1/orders/{oid}/payment", {"user_coupon_id": None}, token[uid], None, 200) for uid, oid in orders]
        return all_[:w], all_[w:w + a.writes]
    if kind == "pay-refused":
        token = {u["id"]: u["token"] for u in users}
        all_ = [("POST", f"/api/v1/orders/{oid}/payment", {"user_coupon_id": None}, token[uid], None, None) for uid, oid in r["gate_orders"]]
        return all_[:w], all_[w:w + a.writes]
    raise SystemExit(f"unknown type {kind}")


def measure(a):
    with open(a.state) as f:
        state = json.load(f)
    state.setdefault("orders", {})
    run = a.run
    api = Api(a.base)
    pg = Backends(a.pg_url, a.db)
    cg = Callgrind(a.pid, a.out_dir) if a.mode == "callgrind" else None
    results = []

    def window(seconds):
        """Idle cost over `seconds`: (instructions, server CPU ns, backend CPU ns)."""
        b_pg = pg.sample()
        cpu0 = task_cpu_ns(a.pid)
        if cg:
            cg.zero()
        t0 = time.time()
        time.sleep(seconds)
        ins = cg.dump() if cg else None
        return ins, task_cpu_ns(a.pid) - cpu0, Backends.delta(b_pg, pg.sample()), time.time() - t0

    api.must(200, "GET", "/health")
    ins, cpu, pgcpu, el = window(a.idle_seconds)
    idle = {"seconds": el, "instructions_per_s": ins / el if ins is not None else None,
            "cpu_ns_per_s": cpu / el, "pg_cpu_ns_per_s": pgcpu / el}
    print(f"[{a.mode}] idle: {idle}", file=sys.stderr)

    for kind in a.types:
        warm, measured = requests_of(kind, state, run, a)
        if kind == "pay-refused":
            # Pay until one answers 409 OUT_OF_STOCK (the gate then remembers the product), then
            # the rest of the warm-up must be refusals too.
            seen_oos = False
            for m, p, b, t, h, _ in warm:
                status, v = api.call(m, p, b, t, h)
                if status == 409 and v and v.get("code") == "OUT_OF_STOCK":
                    seen_oos = True
                elif status != 200 or seen_oos:
                    sys.exit(f"pay-refused warm-up: {status} {v}")
            if not seen_oos:
                sys.exit("pay-refused: no OUT_OF_STOCK in the warm-up")
            measured = [(m, p, b, t, h, 409) for m, p, b, t, h, _ in measured]
        else:
            for m, p, b, t, h, want in warm:
                status, v = api.call(m, p, b, t, h)
                if status != want:
                    sys.exit(f"{kind} warm-up: {m} {p}: {status} {v}")
                if kind == "order":
                    state["orders"].setdefault(str(run), []).append([v["user_id"], v["id"]])
        time.sleep(0.3)  # the relay's round after the warm-up's payments
        b_pg = pg.sample()
        cpu0 = task_cpu_ns(a.pid)
        if cg:
            cg.zero()
        t0 = time.time()
        bad = 0
        codes = {}
        for m, p, b, t, h, want in measured:
            status, v = api.call(m, p, b, t, h)
            if status != want:
                bad += 1
            code = (v or {}).get("code") if status >= 400 and isinstance(v, dict) else None
            codes[f"{status} {code}" if code else str(status)] = codes.get(f"{status} {code}" if code else str(status), 0) + 1
            if kind == "order" and status == 201:
                state["orders"].setdefault(str(run), []).append([v["user_id"], v["id"]])
        if kind in ("pay", "charge", "order"):
            time.sleep(0.3)  # the relay publishes the last payments' events within its 200 ms
        el = time.time() - t0
        ins = cg.dump() if cg else None
        cpu = task_cpu_ns(a.pid) - cpu0
        pgcpu = Backends.delta(b_pg, pg.sample())
        n = len(measured)
        row = {"type": kind, "label": LABELS[kind], "requests": n, "unexpected": bad, "answers": codes,
               "seconds": el, "mode": a.mode}
        if ins is not None:
            row["instructions_raw"] = ins
            row["instructions_per_request"] = max(ins - idle["instructions_per_s"] * el, 0) / n
        row["cpu_us_per_request"] = max(cpu - idle["cpu_ns_per_s"] * el, 0) / n / 1000
        row["pg_cpu_us_per_request"] = max(pgcpu - idle["pg_cpu_ns_per_s"] * el, 0) / n / 1000
        results.append(row)
        print(f"[{a.mode}] {kind}: {json.dumps(row)}", file=sys.stderr)
        if bad:
            sys.exit(f"{kind}: {bad} unexpected answers: {codes}")
    with open(a.state, "w") as f:
        json.dump(state, f)
    with open(a.result, "w") as f:
        json.dump({"mode": a.mode, "idle": idle, "rows": results}, f, indent=1)


def fmt(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def report(a):
    runs = {}
    for path in a.results:
        with open(path) as f:
            r = json.load(f)
        runs[r["mode"]] = r
    native = {row["type"]: row for row in runs.get("native", {}).get("rows", [])}
    cg = {row["type"]: row for row in runs.get("callgrind", {}).get("rows", [])}
    types = [t for t in TYPES if t in native or t in cg]
    ips = [cg[t]["instructions_per_request"] / native[t]["cpu_us_per_request"]
           for t in types if t in cg and t in native and native[t]["cpu_us_per_request"] > 0]
    core_ips = statistics.median(ips) if ips else None  # instructions per µs of CPU
    rows = []
    for t in types:
        c, n = cg.get(t, {}), native.get(t, {})
        ins = c.get("instructions_per_request")
        cpu = n.get("cpu_us_per_request")
        rows.append({
            "type": t, "label": LABELS[t], "requests": c.get("requests") or n.get("requests"),
            "instructions": ins, "cpu_us": cpu, "pg_cpu_us": n.get("pg_cpu_us_per_request", c.get("pg_cpu_us_per_request")),
            "instructions_per_us": ins / cpu if ins and cpu else None,
            "per_core_second_measured": 1e6 / cpu if cpu else None,
            "pg_per_core_second": 1e6 / n["pg_cpu_us_per_request"] if n.get("pg_cpu_us_per_request") else None,
        })
    meta = dict(kv.split("=", 1) for kv in a.meta)
    meta["core_instructions_per_us_median"] = core_ips
    meta["idle"] = {m: r["idle"] for m, r in runs.items()}
    lines = []
    lines.append("| request type | N | server instructions / req (callgrind) | server CPU µs / req (native) | "
                 "instructions per CPU µs | req / core-s (native CPU) | "
                 "PostgreSQL backend CPU µs / req | req / primary core-s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lines.append(f"| {r['label']} | {fmt(r['requests'])} | {fmt(r['instructions'])} | {fmt(r['cpu_us'], 1)} | "
                     f"{fmt(r['instructions_per_us'])} | {fmt(r['per_core_second_measured'])} | "
                     f"{fmt(r['pg_cpu_us'], 1)} | {fmt(r['pg_per_core_second'])} |")
    text = "\n".join(lines) + "\n"
    notes = [f"- {k}: {v}" for k, v in meta.items() if k not in ("idle", "core_instructions_per_us_median")]
    notes.append(f"- median instructions per CPU µs of the server (native CPU time ÷ callgrind count, over the types): {fmt(core_ips)}")
    for m, idle in meta["idle"].items():
        notes.append(f"- idle ({m}, subtracted): " + ", ".join(
            f"{k} {fmt(v)}" for k, v in idle.items() if k != "seconds" and v is not None) + f" over {idle['seconds']:.1f} s")
    text = text + "\n" + "\n".join(notes) + "\n"
    print(text)
    if a.out:
        data = {"meta": meta, "rows": rows, "runs": runs}
        if a.out.endswith(".json"):
            with open(a.out, "w") as f:
                json.dump(data, f, indent=1)
        else:
            with open(a.out, "w") as f:
                f.write(text)
            with open(a.out + ".json", "w") as f:
                json.dump(data, f, indent=1)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    m = sub.add_parser("measure")
    for q in (s, m):
        q.add_argument("--base", required=True)
        q.add_argument("--state", required=True)
        q.add_argument("--warmup", type=int, required=True)
        q.add_argument("--writes", type=int, required=True)
        q.add_argument("--signins", type=int, required=True)
    s.add_argument("--admin-email", required=True)
    s.add_argument("--admin-password", required=True)
    s.add_argument("--runs", type=int, required=True)
    m.add_argument("--reads", type=int, required=True)
    m.add_argument("--run", type=int, required=True)
    m.add_argument("--mode", choices=["native", "callgrind"], required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--pg-url", required=True)
    m.add_argument("--db", required=True)
    m.add_argument("--out-dir", required=True)
    m.add_argument("--result", required=True)
    m.add_argument("--idle-seconds", type=float, default=5)
    m.add_argument("--types", type=lambda s: [t for t in s.split(",") if t], required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", nargs="+", required=True)
    r.add_argument("--meta", action="append", default=[])
    r.add_argument("--out")
    a = p.parse_args()
    if a.cmd == "measure":
        unknown = [t for t in a.types if t not in TYPES]
        if unknown:
            sys.exit(f"unknown types {unknown}")
        if "pay" in a.types and "order" not in a.types:
            sys.exit("pay needs order (its pending orders)")
    {"setup": setup, "measure": measure, "report": report}[a.cmd](a)


main()
PYTHON

started=$(date +%s)
log "run $RUN_ID in $OUT; load: $(uptime | sed 's/.*load average/load average/')"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
psql_admin -c "create database $DB" >/dev/null
DB_MADE=1
IFS=, read -ra MODE_LIST <<<"$MODES"
COMMON=(--warmup "$WARMUP" --writes "$WRITES" --signins "$SIGNINS" --state "$OUT/state.json")

start_server setup
python3 "$DRIVER" setup --base "$SERVER_URL" "${COMMON[@]}" --runs "${#MODE_LIST[@]}" \
  --admin-email "$ADMIN_EMAIL" --admin-password "$ADMIN_PASSWORD"
stop_pids 600

RESULTS=()
run=0
for mode in "${MODE_LIST[@]}"; do
  case "$mode" in
    native) start_server native ;;
    callgrind) start_server callgrind valgrind --tool=callgrind --dump-instr=no --collect-jumps=no \
      "--callgrind-out-file=$OUT/callgrind.out.%p" ;;
    *) log "unknown mode $mode"; exit 64 ;;
  esac
  log "$mode: measuring $TYPES"
  python3 "$DRIVER" measure --base "$SERVER_URL" "${COMMON[@]}" --reads "$READS" --run "$run" --mode "$mode" \
    --pid "$SERVER_PID" --pg-url "$PG_URL" --db "$DB" --out-dir "$OUT" --result "$OUT/$mode.json" --types "$TYPES"
  RESULTS+=("$OUT/$mode.json")
  stop_pids 600
  run=$((run + 1))
done

elapsed=$(( $(date +%s) - started ))
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || REV+=" (with uncommitted changes)"
python3 "$DRIVER" report --results "${RESULTS[@]}" ${OUT_FILE:+--out "$OUT_FILE"} \
  --meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')" --meta "command=bench/cost.sh $ARGS" --meta "commit=$REV" \
  --meta "machine=$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
  --meta "load average=$LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after" \
  --meta "postgres=$(psql_admin -c 'show server_version' 2>/dev/null || echo unknown)" \
  --meta "valgrind=$(valgrind --version 2>/dev/null || echo none)" \
  --meta "sizes=reads $READS, writes $WRITES, sign-ins $SIGNINS, warm-up $WARMUP per type, one request at a time on one keep-alive connection" \
  --meta "duration=${elapsed} s" --meta "raw=target/cost/$RUN_ID/"
log "done in ${elapsed} s"
