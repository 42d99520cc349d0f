# shellcheck shell=bash
# compose-smoke step 9, cleanup: the EXIT trap, on success and on failure. On failure it
# first shows what the containers and dockerd said; --keep leaves everything in place.
# Sourced by scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

cleanup() {
  local rc=$? failed_cleanup=0
  set +e
  trap - EXIT
  if [ "$current" -ge 0 ]; then
    step_result[current]=FAILED
    step_secs[current]=$(($(date +%s) - step_t0))
    [ "$rc" != 0 ] || rc=1
  fi
  [ "$rc" = 0 ] || show_what_failed
  if [ "$keep" = 1 ]; then
    keep_everything
    summary "$rc"
    exit "$rc"
  fi

  begin 8
  if docker_up; then
    remove_projects || failed_cleanup=1
    if [ "$clean" = 1 ]; then
      remove_images || failed_cleanup=1
    else
      say "kept for the next run: $app_image, the stand-ins, the build cache (--clean removes them)"
    fi
  fi
  if [ "$started_dockerd" = 1 ]; then stop_own_engine || failed_cleanup=1; fi
  unmount_under "$work"
  rm -rf --one-file-system "$work" || failed_cleanup=1
  if [ "$failed_cleanup" = 1 ]; then
    end FAILED
    [ "$rc" != 0 ] || rc=1
  else
    end passed
  fi
  summary "$rc"
  exit "$rc"
}

show_what_failed() { # the projects' containers and logs, dockerd's errors
  if docker_up && [ -n "$(project_containers)" ]; then
    printf '\n--- docker-compose ps ---\n' >&2
    "${compose[@]}" ps >&2
    printf '\n--- docker-compose logs (last 80 lines per service) ---\n' >&2
    "${compose[@]}" logs --no-color --tail=80 >&2
  fi
  if docker_up && [ -n "$(project_containers "$fleet_project")" ]; then
    printf '\n--- fleet: docker-compose ps ---\n' >&2
    "${fleet[@]}" ps >&2
    printf '\n--- fleet: docker-compose logs (last 40 lines per service) ---\n' >&2
    "${fleet[@]}" logs --no-color --tail=40 >&2
  fi
  if [ "$started_dockerd" = 1 ] && grep -Eq 'level=(error|fatal)' "$work/dockerd.log"; then
    printf '\n--- dockerd errors (last 10) ---\n' >&2
    grep -E 'level=(error|fatal)' "$work/dockerd.log" | tail -n 10 >&2
  fi
}

keep_everything() { # --keep: the summary line, and how to remove it all by hand
  step_result[8]=skipped
  step_note[8]="--keep: left projects $project and $fleet_project, $work"
  [ "$started_dockerd" = 0 ] || step_note[8]+=", dockerd (pid $dockerd_pid)"
  printf '\n==> [9/9] cleanup skipped (--keep). To remove by hand:\n'
  printf '    %s down -v; %s down -v; docker rm -f %s; docker network rm %s; docker rmi %s %s' \
    "${compose[*]}" "${fleet[*]}" "$fake_ws_container" "$fake_ws_network" "$app_image" "$fake_ws_image"
  [ "${#built_images[@]}" = 0 ] || printf ' %s' "${built_images[@]}"
  printf '; rm -rf %s\n' "$work"
}

# project_left PROJECT: true when PROJECT has containers, volumes or networks.
project_left() {
  [ -n "$(project_containers "$1")" ] ||
    [ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$1")" ] ||
    [ -n "$(docker network ls -q --filter "label=com.docker.compose.project=$1")" ]
}

remove_projects() { # both projects' containers, networks and volumes; the fake's
  local failed=0
  remove_fake_ws || failed=1
  if project_left "$fleet_project"; then
    try cleanup "${fleet[@]}" down -v --remove-orphans --timeout 15 || failed=1
  fi
  if project_left "$project"; then
    try cleanup "${compose[@]}" down -v --remove-orphans --timeout 10 || failed=1
  fi
  return "$failed"
}

remove_images() { # --clean: the app's image, the stand-ins, this engine's build cache
  local failed=0 ref standins=()
  for ref in "$app_image" "$fake_ws_image"; do
    if docker image inspect "$ref" >/dev/null 2>&1; then
      try cleanup docker rmi "$ref" || failed=1
    fi
  done
  # The stand-ins: built by this run or an earlier one (labelled). Children first:
  # the other stand-ins are built FROM the debian one.
  for ref in "$rust_image" "$postgres_image" "$haproxy_image" "$debian_image"; do
    if [ "$(image_kind "$ref")" = standin ]; then standins+=("$ref"); fi
  done
  if [ "${#standins[@]}" -gt 0 ]; then
    try cleanup docker rmi "${standins[@]}" || failed=1
  fi
  if [ "$started_dockerd" = 1 ]; then
    # This run's own engine: its build cache (the cargo registry and target
    # mounts, the app's layers) is this run's too.
    try cleanup docker builder prune -af || failed=1
  fi
  return "$failed"
}

stop_own_engine() { # the dockerd this run started; its roots when this run made them
  local failed=0
  say "stopping dockerd (pid $dockerd_pid), which this run started"
  stop_dockerd || failed=1
  if [ "$created_root" = 1 ] && [ "$clean" = 1 ]; then
    # The data root did not exist before this run: remove it whole (vfs leftovers,
    # the engine's own databases).
    unmount_under "$docker_root"
    say "\$ rm -rf $docker_root"
    rm -rf --one-file-system "$docker_root" || failed=1
  elif [ "$created_root" = 1 ]; then
    say "kept $docker_root (its images and build cache) for the next run; --clean removes it"
  fi
  if [ "$created_exec_root" = 1 ]; then
    unmount_under "$exec_root"
    rm -rf --one-file-system "$exec_root" || failed=1
  fi
  return "$failed"
}
