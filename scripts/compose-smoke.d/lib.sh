# shellcheck shell=bash
# compose-smoke's helpers: the steps and their summary, output, commands logged, waits
# with a deadline, apt. Sourced by scripts/compose-smoke, which sets the globals used
# here (step_names, step_result, step_secs, step_note, current, step_t0, t_start, work).
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

# --- output, steps, timings ----------------------------------------------------------------
say() { printf '    %s\n' "$*"; }
note() { # note TEXT: appended to the current step's line in the summary
  if [ -n "${step_note[current]}" ]; then step_note[current]+="; $1"; else step_note[current]=$1; fi
}
die() { printf '\ncompose-smoke: FAIL: %s\n' "$*" >&2; exit 1; }
begin() { # begin INDEX
  current=$1
  step_t0=$(date +%s)
  printf '\n==> [%d/%d] %s\n' "$((current + 1))" "${#step_names[@]}" "${step_names[current]}"
}
end() { # end [RESULT]
  step_result[current]=${1:-passed}
  step_secs[current]=$(($(date +%s) - step_t0))
  say "${step_result[current]} in ${step_secs[current]} s"
  current=-1
}
# step INDEX FUNCTION: the step's heading, the function, its result. The function runs as
# a plain command, so `set -e` holds in it; a failure ends the run in the EXIT trap, which
# marks the step FAILED.
step() {
  begin "$1"
  "$2"
  end passed
}

summary() { # summary EXIT-CODE: one line per step, then the verdict
  local rc=$1 i passed=0 failed=0 total
  total=$(($(date +%s) - t_start))
  printf '\ncompose-smoke summary\n'
  printf '  %-3s %-14s %-8s %5s  %s\n' "" step result seconds notes
  for i in "${!step_names[@]}"; do
    printf '  %-3s %-14s %-8s %5s  %s\n' "$((i + 1))" "${step_names[i]}" "${step_result[i]}" \
      "${step_secs[i]:--}" "${step_note[i]}"
    case ${step_result[i]} in passed) passed=$((passed + 1)) ;; FAILED) failed=$((failed + 1)) ;; esac
  done
  if [ "$rc" = 0 ]; then
    printf 'compose-smoke: %d steps passed in %d s\n' "$passed" "$total"
  else
    printf 'compose-smoke: FAILED (%d passed, %d failed) in %d s\n' "$passed" "$failed" "$total"
  fi
}

ms() { date +%s%3N; }
fmt_ms() { printf '%d.%d s' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# --- commands, their output to a log ---------------------------------------------------------
# try LOG CMD...: show the command, append its output to $work/LOG.log; on failure
# show the log's tail and return the command's status.
try() {
  local log=$work/$1.log rc=0 t0=$SECONDS
  shift
  say "\$ $*"
  "$@" >>"$log" 2>&1 || rc=$?
  [ $((SECONDS - t0)) -lt 2 ] || say "  ($((SECONDS - t0)) s)"
  if [ "$rc" != 0 ]; then
    printf '    --- exit code %s; last lines of %s ---\n' "$rc" "$log" >&2
    tail -n 60 "$log" | sed 's/^/    | /' >&2
  fi
  return "$rc"
}
# run LOG CMD...: the same, and a failure ends the run.
run() {
  try "$@" || die "exit code $?: ${*:2}"
}

apt_updated=0
apt_install() { # apt_install PACKAGE...: apt-get update once per run, then install
  if [ "$apt_updated" = 0 ]; then
    run apt apt-get update -q
    apt_updated=1
  fi
  run apt apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "$@"
}

# --- waits with a deadline -------------------------------------------------------------------
# wait_for SECONDS INTERVAL CHECK [ARG...]: call CHECK ARG..., and again every INTERVAL
# seconds, until CHECK sets `waited` to anything but "again" (ok, or its own reason to
# give up at once) or SECONDS have passed (then waited=timeout). The caller reads
# `waited`. CHECK runs as a plain command, not in a condition, so that `set -e` still
# ends the run when one of its commands fails; it must return 0.
waited=
wait_for() {
  local deadline=$((SECONDS + $1)) interval=$2
  shift 2
  while :; do
    waited=again
    "$@"
    [ "$waited" = again ] || return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      waited=timeout
      return 0
    fi
    sleep "$interval"
  done
}
