# shellcheck shell=bash
# compose-smoke step 1, engine: the packages it needs, a Docker engine (the one that
# answers, else dockerd started here), no containers left by an earlier run, the host
# ports free. Sourced by scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

docker_up() { docker info >/dev/null 2>&1; }
project_containers() { docker ps -aq --filter "label=com.docker.compose.project=${1:-$project}"; }

unmount_under() { # unmount anything mounted at or below DIR (deepest first)
  local dir=$1
  findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | sort -r |
    while IFS= read -r m; do umount -l "$m" || true; done
}

# --- dockerd, started and stopped by this run --------------------------------------------------
# start_dockerd DRIVER: true once it answers; on failure nothing of it runs.
start_dockerd() {
  say "\$ dockerd --storage-driver=$1 --iptables=false --bridge=none  (log: $work/dockerd.log)"
  setsid dockerd --storage-driver="$1" --iptables=false --bridge=none </dev/null >>"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  started_dockerd=1
  wait_for 60 0.5 dockerd_answers
  [ "$waited" != ok ] || return 0
  tail -n 20 "$work/dockerd.log" | sed 's/^/    | /' >&2
  stop_dockerd
  started_dockerd=0 dockerd_pid=
  return 1
}
dockerd_answers() { # a wait_for check; gives up when dockerd has exited
  if docker_up; then
    waited=ok
  elif ! kill -0 "$dockerd_pid" 2>/dev/null; then
    waited=exited
  fi
}

stop_dockerd() { # SIGTERM, 30 s to exit, then SIGKILL (and false)
  kill -TERM "$dockerd_pid" 2>/dev/null || return 0
  [ -n "$dockerd_pid" ] || return 0
  wait_for 30 0.5 dockerd_gone
  [ "$waited" != ok ] || return 0
  say "dockerd did not stop within 30 s: killing it"
  kill -KILL "$dockerd_pid" 2>/dev/null || true
  return 1
}
dockerd_gone() { kill -0 "$dockerd_pid" 2>/dev/null || waited=ok; } # a wait_for check

# --- host ports ------------------------------------------------------------------------------
port_in_use() { # port_in_use PORT: true when something listens there
  python3 - "$1" <<'EOF'
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError as e:
    sys.exit(0 if e.errno == errno.EADDRINUSE else 2)
sys.exit(1)
EOF
}

# shellcheck disable=SC2120 # fleet.sh passes the HAProxy stats port
check_ports() { # check_ports [EXTRA...]: the host ports the stack publishes are free
  local port ports=("$orders_port" "$payments_port" "$@")
  for port in "${ports[@]}"; do
    if port_in_use "$port"; then
      ss -ltnp "sport = :$port" 2>/dev/null | sed 's/^/    /' >&2 || true
      die "host port $port is in use; the stack publishes Orders on $orders_port and Payments on $payments_port (the fleet also HAProxy's stats on $haproxy_stats_port): stop what listens there, then run again"
    fi
  done
  say "host ports ${ports[*]} are free"
}

# --- the step ----------------------------------------------------------------------------------
set_up_engine() {
  [ "$(id -u)" = 0 ] || die "run as root (installs packages, starts dockerd)"
  check_image_names
  install_missing
  start_engine
  say "$(docker version -f 'engine {{.Server.Version}}, client {{.Client.Version}} (/usr/bin/docker)'), $(docker info -f '{{.Driver}}') storage, docker-compose $(docker-compose version --short)"
  remove_leftovers
  check_ports # now, before the long part, and again just before `up`
}

check_image_names() { # the Dockerfile and compose files use the images provided here
  if ! grep -q "^FROM $rust_image AS build" Dockerfile || ! grep -q "^FROM $debian_image AS run" Dockerfile ||
    ! grep -q "image: $postgres_image\$" docker-compose.yml || ! grep -q "image: $haproxy_image\$" docker-compose.fleet.yml; then
    die "Dockerfile/docker-compose*.yml no longer use $rust_image, $debian_image, $postgres_image, $haproxy_image: update scripts/compose-smoke and scripts/docker-standins"
  fi
}

install_missing() { # Debian's docker.io, docker-compose, and the tools used here
  local missing=()
  [ -x /usr/bin/docker ] && [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
    note "installed ${missing[*]}"
  fi
}

# start_engine: /usr/bin/docker first on PATH (see scripts/compose-smoke); the engine
# that answers, else dockerd started here (overlay2 where the kernel has overlayfs, vfs
# otherwise or when overlay2 will not start).
start_engine() {
  mkdir -p "$work/bin"
  ln -s /usr/bin/docker "$work/bin/docker"
  export PATH="$work/bin:$PATH"
  if docker_up; then
    say "a Docker engine already answers: using it (and leaving it running)"
    note "dockerd already running"
    return 0
  fi
  if [ ! -e "$docker_root" ] || [ -z "$(ls -A "$docker_root")" ]; then created_root=1; fi
  if [ ! -e "$exec_root" ]; then created_exec_root=1; fi
  if [ -z "$storage_driver" ]; then
    if grep -qw overlay /proc/filesystems; then storage_driver=overlay2; else storage_driver=vfs; fi
  fi
  if ! start_dockerd "$storage_driver"; then
    [ "$storage_driver" != vfs ] || die "dockerd did not start (see its log above)"
    say "dockerd did not start with $storage_driver: trying vfs"
    storage_driver=vfs
    start_dockerd vfs || die "dockerd did not start (see its log above)"
  fi
  note "dockerd started ($storage_driver)"
}

remove_leftovers() { # the containers an earlier run left in either project
  if [ -n "$(project_containers)" ]; then
    say "project $project has containers from an earlier run: removing them"
    run engine "${compose[@]}" down -v --remove-orphans --timeout 10
  fi
  if [ -n "$(project_containers "$fleet_project")" ]; then
    say "project $fleet_project has containers from an earlier run: removing them"
    run engine "${fleet[@]}" down -v --remove-orphans --timeout 15
  fi
}
