#!/usr/bin/env bash
# What traces cost in instructions (issue 21): the services' own work per flow, counted
# by valgrind's callgrind, which counts instructions, not seconds, so the figure does not
# move with whatever else the machine runs (a closed loop's flows/s swings by ±15 % on a
# shared 2-core machine, more than the cost being measured).
#
# For traces off, on at 1 % and on at 100 % (as run-tracing-cost.sh, exporting to
# bench/otlp-sink.py), loadgen runs `flow --concurrency 4` for COUNT_LOW and COUNT_HIGH
# flows (100 and 300) with both services under callgrind; the difference of the two
# runs' totals over the difference of the counts is the instructions of one flow, with
# start-up, migrations and shutdown taken out. RUNS rounds (2 by default), interleaved;
# medians. About 6 minutes a round. SETS picks some of the three (default
# "off on-1pct on-100pct").
#
#   bench/run-tracing-instructions.sh
# Binaries as in run-reference.sh. Reports: target/bench/tracing-instructions-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/binaries.sh
source bench/binaries.sh
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
runs="${RUNS:-2}"
low="${COUNT_LOW:-100}"
high="${COUNT_HIGH:-300}"
port="${OTLP_SINK_PORT:-4318}"
dir="$(realpath "$target")/bench/tracing-instructions-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$dir/bin"

# loadgen starts the services itself: it is given wrappers that exec them under
# callgrind, each process writing its counts into the run's directory (CG_OUT).
for service in orders payments; do
    var="LOADGEN_${service^^}_BIN"
    # shellcheck disable=SC2016 # $CG_OUT and $@ are the wrapper's, expanded when it runs
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file="$CG_OUT/%s-%%p.out" %q "$@"\n' \
        "$service" "$(realpath "${!var}")" >"$dir/bin/$service"
    chmod +x "$dir/bin/$service"
done

python3 bench/otlp-sink.py "$port" >"$dir/otlp-sink.log" 2>&1 &
sink=$!
trap 'kill "$sink" 2>/dev/null || true' EXIT
endpoint="http://127.0.0.1:$port"

# one SET COUNT ROUND [VAR=VALUE...]: one run; prints "SET COUNT ROUND instructions".
one() {
    local set=$1 count=$2 round=$3 out
    shift 3
    out="$dir/$set-$count-$round"
    mkdir -p "$out"
    env "$@" CG_OUT="$out" "$loadgen" flow --concurrency 4 --count "$count" \
        --orders-bin "$dir/bin/orders" --payments-bin "$dir/bin/payments" \
        --out "$out/run" >"$out/report.md" 2>"$out/loadgen.err"
    echo "$set $count $round $(cat "$out"/*.out | awk '/^totals:/ {s += $2} END {print s}')"
}
read -ra sets <<<"${SETS:-off on-1pct on-100pct}"
on=(OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint")
# set_env SET: the environment of one of the sets.
set_env() {
    case $1 in
        off) echo NO_TRACES=1 ;;
        on-1pct) echo "${on[@]}" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 ;;
        on-100pct) echo "${on[@]}" OTEL_TRACES_SAMPLER=parentbased_always_on ;;
        *) echo "unknown set $1 (SETS takes off, on-1pct, on-100pct)" >&2; return 2 ;;
    esac
}
for set in "${sets[@]}"; do set_env "$set" >/dev/null; done
for ((n = 1; n <= runs; n++)); do
    for count in "$low" "$high"; do
        for set in "${sets[@]}"; do
            # shellcheck disable=SC2046 # the set's VAR=VALUE words, split on purpose
            one "$set" "$count" "$n" $(set_env "$set")
        done
    done
done | tee "$dir/totals.txt"

python3 - "$dir/totals.txt" "$low" "$high" "$runs" "${sets[@]}" <<'PY' | tee "$dir/summary.md"
import statistics, sys
path, low, high, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sets = sys.argv[5:]
totals = {}
for line in open(path):
    name, count, round_, value = line.split()
    totals[(name, int(count), round_)] = int(value)
per_flow = {}
for (name, count, round_), value in totals.items():
    if count == high and (name, low, round_) in totals:
        per_flow.setdefault(name, []).append((value - totals[(name, low, round_)]) / (high - low))
base = sets[0]
off = statistics.median(per_flow[base])
print(f"| traces | both services' instructions per flow (median of {runs}) | ÷ {base} |")
print("|---|---:|---:|")
for name in sets:
    m = statistics.median(per_flow[name])
    runs_text = " · ".join(f"{v / 1e6:.3f} M" for v in per_flow[name])
    print(f"| {name} | {m / 1e6:.3f} M ({runs_text}) | {m / off:.2f} |")
PY
echo "summary: $dir/summary.md" >&2
