#!/usr/bin/env bash
# Checks the nginx configuration of the deployment kit (deploy/nginx.conf + nginx-server.conf).
#
#   scripts/check-nginx.sh            # nginx -t, also with the commented TLS server blocks enabled
#   scripts/check-nginx.sh --smoke    # and a smoke test: a real server behind the real config
#
# 1. `nginx -t` on deploy/nginx.conf as shipped, under a throwaway -p prefix.
# 2. The same with the two commented TLS server blocks uncommented (a self-signed certificate,
#    loopback ports), so that the block an operator enables stays valid.
# 3. --smoke: starts the server (fresh SQLite) on a free loopback port and nginx with the shipped
#    config, its upstream pointed at that server and its listener on another free port; then
#    checks what the kit promises at the edge: requests pass with a request id, made-up methods
#    get 405 problem+json, /metrics is refused, oversize bodies get 413, the token route answers
#    429 RATE_LIMITED with Retry-After after its burst, large JSON is gzipped, and a crafted
#    X-Request-Id is replaced.
#
# Needs nginx (Debian: nginx-light) and openssl; the smoke test also a built server
# (CHECK_NGINX_SKIP_BUILD=1 uses the existing binary in ${CARGO_TARGET_DIR:-target}/debug).
# Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=0
[[ "${1:-}" == --smoke ]] && SMOKE=1

command -v nginx >/dev/null || { echo "check-nginx: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

START=$(date +%s)
log() { printf '[nginx %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
WORK=$(mktemp -d -t ecommerce-nginx.XXXXXX)
PREFIX=$WORK/prefix
mkdir -p "$PREFIX/logs" "$PREFIX/tmp"
SERVER_PID=""
NGINX_CONF=""
cleanup() {
  local rc=$?
  if [[ -n "$NGINX_CONF" && -f "$PREFIX/logs/nginx.pid" ]]; then
    nginx -p "$PREFIX" -c "$NGINX_CONF" -s stop 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/server.err" ]]; then
    echo "--- last server log lines ---" >&2
    tail -n 20 "$WORK/server.err" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- 1. as shipped -------------------------------------------------------------------------------
log "nginx -t deploy/nginx.conf"
nginx -q -p "$PREFIX" -c "$ROOT/deploy/nginx.conf" -t

# --- 2. with the TLS server blocks enabled -----------------------------------------------------
# A copy next to its include, with the commented blocks uncommented, loopback ports and a
# self-signed certificate.
log "nginx -t with the TLS server blocks enabled"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cp "$ROOT/deploy/nginx-server.conf" "$WORK/"
python3 - "$ROOT/deploy/nginx.conf" "$WORK" <<'PY'
import sys
src, work = sys.argv[1], sys.argv[2]
text = open(src).read()
start = text.index("    # server {\n    #     listen 80;")
end = text.rindex("    # }") + len("    # }")
lines = []
for line in text[start:end].split("\n"):
    if line.startswith("    # "):
        line = "    " + line[len("    # "):]
    elif line.strip() == "#":
        line = ""
    lines.append(line)
block = "\n".join(lines)
block = (block.replace("/etc/ssl/ecommerce/fullchain.pem", f"{work}/cert.pem")
              .replace("/etc/ssl/ecommerce/privkey.pem", f"{work}/key.pem")
              .replace("listen 80;", "listen 127.0.0.1:18480;")
              .replace("listen [::]:80;", "")
              .replace("listen 443 ssl", "listen 127.0.0.1:18443 ssl")
              .replace("listen [::]:443 ssl;", ""))
if "    # server {" in block or "listen 443" in block:
    sys.exit("could not uncomment the TLS blocks")
open(f"{work}/nginx-tls.conf", "w").write(text[:start] + block + text[end:])
PY
nginx -q -p "$PREFIX" -c "$WORK/nginx-tls.conf" -t

[[ $SMOKE == 1 ]] || { log "ok"; exit 0; }

# --- 3. smoke test behind the shipped config ---------------------------------------------------
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ecommerce"
if [[ "${CHECK_NGINX_SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build -p ecommerce"
  cargo build --quiet -p ecommerce
fi
[[ -x "$BIN" ]] || { echo "check-nginx: no server binary at $BIN" >&2; exit 1; }

ECOMMERCE_ADDR=127.0.0.1:0 DATABASE_URL="sqlite://$WORK/n.db" ECOMMERCE_EVENTS_FILE="$WORK/events.jsonl" \
  ECOMMERCE_TRUSTED_PROXIES=127.0.0.1 NO_COLOR=1 RUST_LOG=warn \
  "$BIN" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
UPSTREAM=""
for _ in $(seq 1 300); do
  UPSTREAM=$(sed -n 's/^ecommerce listening on http:\/\/\([^ ]*\)$/\1/p' "$WORK/server.out")
  [[ -n "$UPSTREAM" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited during start-up" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$UPSTREAM" ]] || { echo "server did not print its address within 30 s" >&2; exit 1; }

EDGE_PORT=$(free_port)
sed -e "s/server 127\.0\.0\.1:808[23] .*;//" \
    -e "s/server 127\.0\.0\.1:8081 /server $UPSTREAM /" \
    -e "s/listen 127\.0\.0\.1:8080 /listen 127.0.0.1:$EDGE_PORT /" \
    -e "s|^error_log stderr warn;|error_log logs/error.log warn;|" \
    "$ROOT/deploy/nginx.conf" >"$WORK/nginx-smoke.conf"
NGINX_CONF=$WORK/nginx-smoke.conf
nginx -q -p "$PREFIX" -c "$NGINX_CONF"
EDGE=http://127.0.0.1:$EDGE_PORT
for _ in $(seq 1 50); do curl -s -o /dev/null "$EDGE/health" && break; sleep 0.1; done
log "server $UPSTREAM behind nginx $EDGE"

FAILED=0
check() {  # check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then log "  ok   $1"; else log "  FAIL $1: got '$2', expected '$3'"; FAILED=1; fi
}
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
header() {  # header NAME curl-args...: the value of one answer header
  local name=$1; shift
  curl -s -D - -o /dev/null --max-time 10 "$@" | tr -d '\r' | sed -n "s/^$name: //Ip" | head -n 1
}
code() { curl -s --max-time 10 "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("code"))' 2>/dev/null || echo none; }

check "GET /health passes" "$(status "$EDGE/health")" 200
check "request id kept" "$(header X-Request-Id -H 'X-Request-Id: smoke-1' "$EDGE/health")" smoke-1
crafted=$(header X-Request-Id -H 'X-Request-Id: a} b=c' "$EDGE/health")
check "crafted request id replaced" "$([[ -n "$crafted" && "$crafted" != 'a} b=c' ]] && echo replaced || echo "$crafted")" replaced
check "made-up method: 405" "$(status -X BREW "$EDGE/api/v1/products")" 405
check "made-up method: problem+json" "$(code -X BREW "$EDGE/api/v1/products")" METHOD_NOT_ALLOWED
check "/metrics refused at the edge" "$(status "$EDGE/metrics")" 403
big=$(head -c 70000 /dev/zero | tr '\0' x)
check "oversize body: 413 problem+json" \
  "$(printf '%s' "$big" | code -X POST -H 'Content-Type: application/json' --data-binary @- "$EDGE/api/v1/users")" PAYLOAD_TOO_LARGE
check "large JSON gzipped" "$(header Content-Encoding -H 'Accept-Encoding: gzip' "$EDGE/api-docs/openapi.json")" gzip
check "small JSON not gzipped" "$(header Content-Encoding -H 'Accept-Encoding: gzip' "$EDGE/health")" ""
codes=""
for _ in $(seq 1 14); do
  codes+="$(status -X POST -H 'Content-Type: application/json' -d '{"email":"nobody@example.com","password":"wrong-password"}' "$EDGE/api/v1/auth/token") "
done
check "token requests past the burst: 429" "$([[ "$codes" == *429* ]] && echo 429 || echo "$codes")" 429
check "nginx 429 has Retry-After" "$(header Retry-After -X POST -H 'Content-Type: application/json' -d '{}' "$EDGE/api/v1/auth/token")" 2
check "reads are not rate limited" "$(for _ in $(seq 1 30); do status "$EDGE/api/v1/products"; echo; done | sort -u | tr -d '\n')" 200

[[ $FAILED == 0 ]] || { log "nginx smoke test FAILED"; exit 1; }
log "ok"
