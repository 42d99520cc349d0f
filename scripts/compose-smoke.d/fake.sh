# shellcheck shell=bash
# compose-smoke step 7, fake-ws-server image: `docker build --target fake-ws-server`,
# the container up and healthy on a network of its own, driven from the host through
# the Python helper (attached) with a real websockets client; then a clean stop.
# Sourced by scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

fake_ws_health() { # wait_for check: the container's healthcheck
  local health
  health=$(docker inspect -f '{{.State.Health.Status}}' "$fake_ws_container" 2>/dev/null || echo gone)
  case $health in
    healthy) waited=ok ;;
    unhealthy | gone) waited=$health ;;
  esac
  return 0
}

# The Python with websockets: scripts/test's virtualenv, else one of this run's own.
fake_ws_python() {
  local venv=fake-ws-server-cli/clients/python/.venv
  if ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
    venv=$work/venv
    run venv python3 -m venv "$venv"
    run venv "$venv/bin/pip" install -q -r fake-ws-server-cli/clients/python/requirements-test.txt
  fi
  fake_ws_py=$venv/bin/python
}

fake_ws_image() {
  run fake-build timeout 1800 docker build --network host --target fake-ws-server \
    -t "$fake_ws_image" .
  run fake-run docker network create "$fake_ws_network"
  run fake-run docker run -d --name "$fake_ws_container" --network "$fake_ws_network" \
    -p 127.0.0.1::8080 -p 127.0.0.1::8081 "$fake_ws_image" --path /ws
  wait_for 60 1 fake_ws_health
  [ "$waited" = ok ] || die "the fake-ws-server container is not healthy within 60 s: $waited"
  local ws admin
  ws=$(docker port "$fake_ws_container" 8080/tcp | head -n 1)
  admin=$(docker port "$fake_ws_container" 8081/tcp | head -n 1)
  say "healthy: WebSocket on $ws, admin API on $admin"
  fake_ws_python
  run fake-check "$fake_ws_py" scripts/compose-smoke.d/fake_ws_image_check.py \
    "ws://$ws/ws" "http://$admin"
  tail -n 1 "$work/fake-check.log" | sed 's/^/    /'
  run fake-run docker stop -t 10 "$fake_ws_container"
  local code
  code=$(docker inspect -f '{{.State.ExitCode}}' "$fake_ws_container")
  [ "$code" = 0 ] || die "the fake-ws-server container stopped with exit code $code"
  note "built, healthy, driven, stopped with 0"
  remove_fake_ws
}

remove_fake_ws() { # its container and network, when there
  local failed=0
  if docker container inspect "$fake_ws_container" >/dev/null 2>&1; then
    try fake-run docker rm -f "$fake_ws_container" || failed=1
  fi
  if docker network inspect "$fake_ws_network" >/dev/null 2>&1; then
    try fake-run docker network rm "$fake_ws_network" || failed=1
  fi
  return "$failed"
}
