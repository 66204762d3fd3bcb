#!/usr/bin/env bash
# A private PostgreSQL primary and a real streaming replica of it, made with `pg_basebackup -R`,
# on loopback ports of this machine, for the read-replica test (crates/server/tests/replica.rs)
# and CI. The machine's own PostgreSQL (5432) is not touched: the pair lives in its own folder.
#
#   scripts/replica.sh start    make (or reuse) and start both; prints the two URLs
#   scripts/replica.sh stop     stop both and remove the folder
#   scripts/replica.sh status   exit 0 when both answer
#
# Environment: REPLICA_DIR (default /tmp/ecommerce-replica), REPLICA_PRIMARY_PORT (55432),
# REPLICA_PORT (55433). Needs initdb, pg_ctl, pg_basebackup and pg_isready (Debian: package
# postgresql). Run as root, the servers run as the `postgres` user.
set -euo pipefail

DIR=${REPLICA_DIR:-/tmp/ecommerce-replica}
PRIMARY_PORT=${REPLICA_PRIMARY_PORT:-55432}
REPLICA_PORT=${REPLICA_PORT:-55433}

pg_bin() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$found" ]] || { echo "replica.sh: $name not found (install PostgreSQL's server package)" >&2; exit 2; }
  echo "$found"
}

INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
BASEBACKUP=$(pg_bin pg_basebackup)
ISREADY=$(pg_bin pg_isready)

# as_pg COMMAND...: runs as the postgres user when this script runs as root.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ready() { "$ISREADY" -q -h 127.0.0.1 -p "$1"; }

wait_ready() {
  for _ in $(seq 1 100); do
    ready "$1" && return 0
    sleep 0.1
  done
  echo "replica.sh: the server on port $1 did not start; its log:" >&2
  tail -n 30 "$2" >&2 || true
  return 1
}

start() {
  if ready "$PRIMARY_PORT" && ready "$REPLICA_PORT"; then
    urls
    return 0
  fi
  stop >/dev/null 2>&1 || true
  mkdir -p "$DIR"
  [[ $(id -u) -eq 0 ]] && chown postgres: "$DIR"
  as_pg "$INITDB" -D "$DIR/primary" -U postgres --auth=trust -E UTF8 >/dev/null
  as_pg tee -a "$DIR/primary/postgresql.conf" >/dev/null <<EOF
port = $PRIMARY_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 5
max_connections = 200
fsync = off
full_page_writes = off
EOF
  as_pg tee "$DIR/primary/pg_hba.conf" >/dev/null <<EOF
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
EOF
  as_pg "$PG_CTL" -D "$DIR/primary" -l "$DIR/primary.log" -w start >/dev/null
  wait_ready "$PRIMARY_PORT" "$DIR/primary.log"
  # The real thing: a base backup that starts as a standby (-R) streaming from the primary.
  as_pg "$BASEBACKUP" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/replica" -R -X stream -c fast
  as_pg tee -a "$DIR/replica/postgresql.auto.conf" >/dev/null <<EOF
port = $REPLICA_PORT
hot_standby = on
hot_standby_feedback = on
EOF
  as_pg "$PG_CTL" -D "$DIR/replica" -l "$DIR/replica.log" -w start >/dev/null
  wait_ready "$REPLICA_PORT" "$DIR/replica.log"
  local recovery
  recovery=$(psql -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -Atc "select pg_is_in_recovery()")
  [[ "$recovery" == t ]] || { echo "replica.sh: the replica is not in recovery" >&2; return 1; }
  urls
}

urls() {
  echo "primary: postgres://postgres@127.0.0.1:$PRIMARY_PORT/postgres"
  echo "replica: postgres://postgres@127.0.0.1:$REPLICA_PORT/postgres"
}

stop() {
  for node in replica primary; do
    if [[ -f "$DIR/$node/postmaster.pid" ]]; then
      as_pg "$PG_CTL" -D "$DIR/$node" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ready "$PRIMARY_PORT" && ready "$REPLICA_PORT" ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
