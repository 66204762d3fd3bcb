#!/usr/bin/env bash
# The NATS cluster of the deployment kit (deploy/nats/) forms and keeps the stream with a node down.
#
#   scripts/check-nats-cluster.sh
#
# Starts the three nodes of deploy/nats/node-{1,2,3}.conf with their ports moved to free loopback
# ports and their storage in a temp folder, creates ECOMMERCE_ORDERS with 3 replicas through
# deploy/nats/create-stream.py, stops the stream's leader, and checks that the stream still
# answers from the two others with a new leader. Bounded; everything is stopped on exit.
# (The relay's own behaviour against a cluster is tested by the server's test suite.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
command -v nats-server >/dev/null || { echo "check-nats-cluster: nats-server is not installed" >&2; exit 1; }
START=$(date +%s)
log() { printf '[nats %3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
WORK=$(mktemp -d -t ecommerce-nats.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ $rc -ne 0 ]] && tail -n 5 "$WORK"/node-*.log >&2 2>/dev/null
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A CLIENT ROUTE HTTP
for i in 1 2 3; do CLIENT[$i]=$(free_port); ROUTE[$i]=$(free_port); HTTP[$i]=$(free_port); done
for i in 1 2 3; do
  sed -e "s/^listen: 127\.0\.0\.1:[0-9]*/listen: 127.0.0.1:${CLIENT[$i]}/" \
      -e "s/^http: 127\.0\.0\.1:[0-9]*/http: 127.0.0.1:${HTTP[$i]}/" \
      -e "s/^  listen: 127\.0\.0\.1:[0-9]*/  listen: 127.0.0.1:${ROUTE[$i]}/" \
      -e "s#nats-route://127\.0\.0\.1:6222#nats-route://127.0.0.1:${ROUTE[1]}#" \
      -e "s#nats-route://127\.0\.0\.1:6223#nats-route://127.0.0.1:${ROUTE[2]}#" \
      -e "s#nats-route://127\.0\.0\.1:6224#nats-route://127.0.0.1:${ROUTE[3]}#" \
      -e "s#store_dir: \"/var/lib/nats/#store_dir: \"$WORK/#" \
      "$ROOT/deploy/nats/node-$i.conf" >"$WORK/node-$i.conf"
  grep -q "$WORK/" "$WORK/node-$i.conf" || { echo "could not move node $i's storage" >&2; exit 1; }
  nats-server -c "$WORK/node-$i.conf" >"$WORK/node-$i.log" 2>&1 &
  PIDS[$i]=$!
done

# JetStream needs a meta leader before it can create a stream: poll each node's health, bounded.
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:${HTTP[$i]}/healthz?js-enabled-only=true" >/dev/null && break
    sleep 0.1
  done
done
created=""
for _ in $(seq 1 50); do
  if created=$("$ROOT/deploy/nats/create-stream.py" --server "127.0.0.1:${CLIENT[1]}" --replicas 3 2>"$WORK/create.err"); then
    break
  fi
  created=""
  sleep 0.2
done
[[ -n "$created" ]] || { cat "$WORK/create.err" >&2; echo "check-nats-cluster: the stream was not created" >&2; exit 1; }
leader=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["leader"])' "$created")
log "ECOMMERCE_ORDERS created with 3 replicas; leader $leader"

n=${leader##*-}
kill "${PIDS[$n]}"
wait "${PIDS[$n]}" 2>/dev/null || true
log "stopped node $n (the leader)"
other=$(( n % 3 + 1 ))
info=""
for _ in $(seq 1 100); do  # a new leader is elected within a few seconds
  info=$("$ROOT/deploy/nats/create-stream.py" --server "127.0.0.1:${CLIENT[$other]}" --info 2>/dev/null) &&
    new=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["leader"] or "")' "$info") &&
    [[ -n "$new" && "$new" != "$leader" ]] && break
  info=""
  sleep 0.2
done
[[ -n "$info" ]] || { echo "check-nats-cluster: no new leader for the stream after node $n stopped" >&2; exit 1; }
replicas=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["replicas"])' "$info")
[[ "$replicas" == 3 ]] || { echo "check-nats-cluster: stream has $replicas replicas" >&2; exit 1; }
log "ok: with node $n down the stream answers from node $other, leader $new"
