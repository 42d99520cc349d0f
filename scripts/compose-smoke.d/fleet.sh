# shellcheck shell=bash
# compose-smoke step 8, fleet: docker-compose.fleet.yml on the image step 3 built, the
# walk-through through HAProxy, then every instance restarted in turn under
# `loadgen drive`. Sourced by scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

# lb_status SERVER: HAProxy's view of SERVER in each backend (UP, DOWN, "UP 1/2"…).
lb_status() {
  curl -fsS --max-time 2 "http://localhost:$haproxy_stats_port/stats;csv" 2>/dev/null |
    awk -F, -v s="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") c = i; next }
                       $2 == s { print $c }' | sort | paste -sd ' '
}
# wait_lb_up SERVER SECONDS: until SERVER is UP in every HAProxy backend it serves.
wait_lb_up() {
  wait_for "$2" 0.2 lb_up "$1"
  [ "$waited" = ok ] || die "$1 not UP in HAProxy within $2 s (HAProxy says: ${lb_seen:-nothing})"
}
lb_seen=
lb_up() { # lb_up SERVER: a wait_for check; sets lb_seen
  lb_seen=$(lb_status "$1")
  case $lb_seen in UP | "UP UP") waited=ok ;; esac
}

# fleet_sql DB SQL: one value from the fleet's PostgreSQL.
fleet_sql() {
  "${fleet[@]}" exec -T postgres psql -U postgres -d "$1" -tAc "$2" 2>>"$work/fleet.log" | tr -d '[:space:]'
}
# fleet_wait_sql DB SQL WANT SECONDS: until the value is WANT.
fleet_wait_sql() {
  wait_for "$4" 0.5 sql_is "$1" "$2" "$3"
  [ "$waited" = ok ] || die "$1: \`$2\` is $sql_seen, not $3, after $4 s"
}
sql_seen=
sql_is() { # sql_is DB SQL WANT: a wait_for check; sets sql_seen
  sql_seen=$(fleet_sql "$1" "$2") || sql_seen="error"
  [ "$sql_seen" != "$3" ] || waited=ok
}

# --- the step ----------------------------------------------------------------------------------
fleet_under_restarts() {
  fleet_up
  walk_through
  fleet_wait_sql payments "SELECT count(*) FROM payment_events WHERE acked_at IS NULL" 0 30
  start_drive
  local server
  for server in "${fleet_servers[@]}"; do restart_server "$server"; done
  check_drive
  run fleet "${fleet[@]}" down -v --timeout 15
}

fleet_up() { # certificates, the fleet up and healthy, every instance UP in HAProxy
  export FLEET_CERTS=$work/fleet-certs
  run fleet scripts/fleet-certs
  check_ports "$haproxy_stats_port"
  run fleet "${fleet[@]}" up -d --no-build
  wait_healthy 120 "$fleet_project" 5 6
  local server
  for server in "${fleet_servers[@]}"; do wait_lb_up "$server" 60; done
  say "HAProxy has orders-1, orders-2, payments-1, payments-2 UP"
}

# start_drive: the load in the background, 300 journeys at 5/s (about 60 s), every call
# once, through HAProxy; sets drive_pid. Returns once 20 orders exist.
drive_pid=
start_drive() {
  run fleet env SQLX_OFFLINE=true cargo build --release -p bench
  local loadgen=${CARGO_TARGET_DIR:-target}/release/loadgen
  say "\$ loadgen drive --orders-url http://localhost:$orders_port --orders 300 --rate 5  (log: $work/drive.log)"
  "$loadgen" drive --orders-url "http://localhost:$orders_port" --orders 300 --rate 5 \
    --json "$work/drive.json" >"$work/drive.log" 2>&1 &
  drive_pid=$!
  fleet_wait_sql orders "SELECT count(*) >= 20 FROM orders" t 30
}

# restart_server SERVER: SIGTERM ends it with exit code 0; started, it is back UP in
# HAProxy within 60 s.
restart_server() {
  local server=$1 id t0 stopped state code
  id=$("${fleet[@]}" ps -q "$server")
  t0=$(ms)
  run fleet "${fleet[@]}" stop -t 15 "$server"
  stopped=$(($(ms) - t0))
  read -r state code <<<"$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$id")"
  [ "$state $code" = "exited 0" ] || die "$server did not exit cleanly on SIGTERM (state $state, exit code $code)"
  t0=$(ms)
  run fleet "${fleet[@]}" start "$server"
  wait_lb_up "$server" 60
  say "$server: SIGTERM → exit 0 in $(fmt_ms "$stopped"), started → UP in HAProxy in $(fmt_ms $(($(ms) - t0)))"
  note "$server $(fmt_ms "$stopped")"
}

# check_drive: the load outlasted the restarts and no client saw an error; every order
# fulfilled with one invoice; no event unacked.
check_drive() {
  kill -0 "$drive_pid" 2>/dev/null || die "the load ended before the last restart did: the restarts were not all under load"
  local drive_rc=0
  wait "$drive_pid" || drive_rc=$?
  sed 's/^/    | /' "$work/drive.log" | grep -E 'journeys|error|\[[ x]\]|drive:' || true
  [ "$drive_rc" = 0 ] || die "loadgen drive: exit code $drive_rc (see $work/drive.log above)"
  fleet_wait_sql payments "SELECT count(*) FROM payment_events WHERE acked_at IS NULL" 0 30
  fleet_wait_sql orders "SELECT count(*) FILTER (WHERE status = 'fulfilled') || '/' || count(*) FROM orders" 301/301 30
  fleet_wait_sql orders "SELECT count(*) || '/' || count(DISTINCT order_id) FROM invoices" 301/301 30
  say "301 orders fulfilled, 301 invoices, one each; no event unacked"
  note "301 fulfilled, 0 client errors"
}
