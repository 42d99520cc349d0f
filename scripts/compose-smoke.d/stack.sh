# shellcheck shell=bash
# compose-smoke steps 3 to 6 on docker-compose.yml: up --build, the README's
# walk-through, a restart on the same volume, a clean stop. Sourced by
# scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

# wait_healthy SECONDS [PROJECT HEALTHY TOTAL]: the project's TOTAL containers (3)
# running, HEALTHY of them (3) healthy; the others have no health check.
wait_healthy() {
  local of=${2:-$project} healthy=${3:-3} total=${4:-3}
  wait_for "$1" 1 containers_up "$of" "$healthy" "$total" "$SECONDS"
  case $waited in
    ok) return 0 ;;
    stopped)
      printf '%s\n' "$states" | sed 's/^/    /' >&2
      die "a container stopped or turned unhealthy"
      ;;
    *)
      printf '%s\n' "$states" | sed 's/^/    /' >&2
      die "not all $total containers up ($healthy healthy) within $1 s"
      ;;
  esac
}
# containers_up PROJECT HEALTHY TOTAL T0: a wait_for check; sets states, one line per
# container: its service, state and health. Gives up when one stopped or is unhealthy.
states=
containers_up() {
  local ids
  ids=$(project_containers "$1")
  states=""
  # shellcheck disable=SC2086 # one argument per container id
  [ -z "$ids" ] || states=$(docker inspect -f \
    '{{ index .Config.Labels "com.docker.compose.service" }} {{ .State.Status }} {{ if .State.Health }}{{ .State.Health.Status }}{{ else }}no-healthcheck{{ end }}' $ids)
  if [ "$(grep -c ' running healthy$' <<<"$states")" = "$2" ] &&
    [ "$(grep -Ec ' running (healthy|no-healthcheck)$' <<<"$states")" = "$3" ] &&
    [ "$(wc -l <<<"$states")" = "$3" ]; then
    say "all up after $((SECONDS - $4)) s: $(awk '{print $1}' <<<"$states" | sort | paste -sd ' ')"
    waited=ok
  elif grep -Eq ' (exited|dead)| unhealthy$' <<<"$states"; then
    waited=stopped
  fi
}

# --- HTTP ------------------------------------------------------------------------------------
# http METHOD URL [JSON]: sets status and body.
status=
body=
http() {
  local args=(-sS -o "$work/http.body" -w '%{http_code}' --max-time 10 -X "$1" "$2")
  if [ $# -ge 3 ]; then args+=(-H 'content-type: application/json' --data "$3"); fi
  status=$(curl "${args[@]}") || die "curl -X $1 $2 failed"
  body=$(cat "$work/http.body")
}
expect_status() { # expect_status CODE WHAT
  [ "$status" = "$1" ] || die "$2: expected HTTP $1, got $status: $body"
}
field() { jq -r "$1" <<<"$body"; }

# poll_order ID STATUS SECONDS: until the order has STATUS (and then prints it).
poll_order() {
  wait_for "$3" 0.5 order_is "$1" "$2" "$SECONDS"
  [ "$waited" = ok ] || die "order $1 not $2 within $3 s: $body"
}
order_is() { # order_is ID STATUS T0: a wait_for check; dies on cancelled or failed
  http GET "localhost:$orders_port/orders/$1"
  expect_status 200 "GET /orders/$1"
  case $(field .status) in
    "$2") say "$2 after $((SECONDS - $3)) s"; waited=ok ;;
    cancelled | failed) die "order $1 went to $(field .status) instead of $2: $body" ;;
  esac
}

# --- step 3, up --build --------------------------------------------------------------------
up_build() {
  check_ports
  local t_up=$SECONDS
  run up timeout 1800 "${compose[@]}" up --build -d
  say "up --build returned after $((SECONDS - t_up)) s"
  # Compose builds the image once per service that has `build:` (both do, same image):
  # the first build compiles, the second finds everything cached.
  awk '/^Building / { svc = $2; order[++n] = svc; built[svc] = "cargo build cached" }
       /Finished `release` profile/ { sub(/.*Finished `release` profile /, ""); built[svc] = "cargo build " $0 }
       END { for (i = 1; i <= n; i++) print "    image for " order[i] ": " built[order[i]] }' "$work/up.log"
  note "build+up $((SECONDS - t_up)) s"
  wait_healthy 120
}

# --- step 4 (and in the fleet), the walk-through ------------------------------------------------
# walk_through: the README's walk-through against localhost:$orders_port and the page
# on localhost:$payments_port; sets order_id and invoice.
order_id=
invoice=
walk_through() {
  say "\$ curl -X POST localhost:$orders_port/orders -d '{\"amount\": 1999, \"currency\": \"EUR\", \"description\": \"2 × coffee\"}'"
  http POST "localhost:$orders_port/orders" '{"amount": 1999, "currency": "EUR", "description": "2 × coffee"}'
  expect_status 201 "POST /orders"
  order_id=$(field .id)
  case $order_id in "" | null) die "POST /orders answered without an id: $body" ;; esac
  [ "$(field .status)" = pending_payment ] || die "a new order should be pending_payment: $body"
  say "201, order $order_id, pending_payment"

  say "\$ curl localhost:$orders_port/orders/$order_id   (until awaiting_payment)"
  poll_order "$order_id" awaiting_payment 60
  local payment_url
  payment_url=$(field .payment_url)
  case $payment_url in
    "http://localhost:$payments_port/pay/"?*) say "payment_url $payment_url, method $(field .payment_method)" ;;
    *) die "awaiting_payment without a payment page on localhost:$payments_port: $body" ;;
  esac

  say "\$ curl $payment_url   (the page the customer sees)"
  http GET "$payment_url"
  expect_status 200 "GET the payment page"

  say "\$ curl -X POST $payment_url/complete"
  http POST "$payment_url/complete"
  expect_status 303 "POST $payment_url/complete"
  say "303"

  say "\$ curl localhost:$orders_port/orders/$order_id   (until fulfilled)"
  poll_order "$order_id" fulfilled 60

  say "\$ curl localhost:$orders_port/orders/$order_id/invoice"
  http GET "localhost:$orders_port/orders/$order_id/invoice"
  expect_status 200 "GET /orders/$order_id/invoice"
  [ "$(field .order_id)" = "$order_id" ] || die "the invoice is not for order $order_id: $body"
  [ "$(field .amount) $(field .currency)" = "1999 EUR" ] || die "the invoice is not for 1999 EUR: $body"
  invoice=$(field .number)
  case $invoice in "" | null) die "the invoice has no number: $body" ;; esac
  say "200, invoice $invoice for order $order_id, 1999 EUR"
  note "order fulfilled, invoice $invoice"
}

# --- step 5, restart on the same volume ------------------------------------------------------
restart_same_volume() {
  run restart "${compose[@]}" down
  [ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ] ||
    die "down removed the volume"
  run restart "${compose[@]}" up -d
  wait_healthy 120
  http GET "localhost:$orders_port/orders/$order_id"
  expect_status 200 "GET /orders/$order_id after the restart"
  [ "$(field .status)" = fulfilled ] || die "after the restart the order is not fulfilled: $body"
  http GET "localhost:$orders_port/orders/$order_id/invoice"
  expect_status 200 "GET /orders/$order_id/invoice after the restart"
  [ "$(field .number)" = "$invoice" ] || die "after the restart the invoice is $(field .number), was $invoice"
  say "order $order_id still fulfilled, invoice still $invoice"
  note "still fulfilled, $invoice"
}

# --- step 6, stop ------------------------------------------------------------------------------
stop_one_by_one() {
  local service
  for service in orders payments postgres; do stop_service "$service" 10; done
  run stop "${compose[@]}" down
}
# stop_service SERVICE GRACE: `stop` ends it with exit code 0 within GRACE seconds.
stop_service() {
  local service=$1 grace=$2 id t0 took state code oom
  id=$(docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$service")
  [ -n "$id" ] || die "no $service container"
  t0=$(ms)
  run stop "${compose[@]}" stop "$service"
  took=$(($(ms) - t0))
  read -r state code oom <<<"$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}' "$id")"
  say "$service: $state, exit code $code, stopped in $(fmt_ms "$took")"
  [ "$state $code $oom" = "exited 0 false" ] ||
    die "$service did not exit cleanly on its stop signal (state $state, exit code $code, OOM-killed $oom)"
  [ "$took" -lt $((grace * 1000)) ] || die "$service took ${took} ms to stop, over its ${grace} s grace period"
  note "$service exit 0 in $(fmt_ms "$took")"
}
