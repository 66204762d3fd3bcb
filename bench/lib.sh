# Shell helpers the bench scripts share (sourced, not run): the PostgreSQL admin connection and
# stopping the processes a script started. Expects PG_URL and a PIDS array in the caller.

psql_admin() { psql "$PG_URL/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }

# Stops every pid in PIDS: TERM, then KILL after $1 tenths of a second (default 100) each.
stop_pids() {
  local pid patience=${1:-100}
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 "$patience"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
