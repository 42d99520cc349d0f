#!/usr/bin/env bash
# What traces cost (issue 21): the closed-loop flow with traces off, on at 1 %
# (parentbased_traceidratio 0.01) and on at 100 % (parentbased_always_on), both "on"
# exporting over OTLP/HTTP to bench/otlp-sink.py (which takes and drops every export),
# RUNS times each (3 by default), interleaved; then the medians (`loadgen summarize`)
# and the ratios to "off", of flows/s and of the services' CPU time per flow. With BASELINE_ORDERS_BIN and BASELINE_PAYMENTS_BIN (a build
# from before traces, for example), those run first in each round, as "baseline".
#
#   bench/run-tracing-cost.sh                        # about 7 minutes on 2 cores
#   RUNS=5 bench/run-tracing-cost.sh --concurrency 16
#
# Extra arguments go to every loadgen run (default: --concurrency 32 --duration 30s).
# Binaries as in run-reference.sh. Reports: target/bench/tracing-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/binaries.sh
source bench/binaries.sh
runs="${RUNS:-3}"
port="${OTLP_SINK_PORT:-4318}"
dir="$target/bench/tracing-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$dir"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--concurrency 32 --duration 30s)

python3 bench/otlp-sink.py "$port" >"$dir/otlp-sink.log" 2>&1 &
sink=$!
trap 'kill "$sink" 2>/dev/null || true' EXIT
endpoint="http://127.0.0.1:$port"

for ((n = 1; n <= runs; n++)); do
    if [[ -n "${BASELINE_ORDERS_BIN:-}" && -n "${BASELINE_PAYMENTS_BIN:-}" ]]; then
        run_loadgen "$dir" "baseline-$n" flow --commit baseline \
            --orders-bin "$BASELINE_ORDERS_BIN" --payments-bin "$BASELINE_PAYMENTS_BIN" "${args[@]}"
    fi
    run_loadgen "$dir" "off-$n" flow --commit traces-off "${args[@]}"
    OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint OTEL_TRACES_SAMPLER=parentbased_traceidratio \
        OTEL_TRACES_SAMPLER_ARG=0.01 \
        run_loadgen "$dir" "on-1pct-$n" flow --commit traces-1pct "${args[@]}"
    OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint OTEL_TRACES_SAMPLER=parentbased_always_on \
        run_loadgen "$dir" "on-100pct-$n" flow --commit traces-100pct "${args[@]}"
done
kill "$sink" 2>/dev/null || true
wait "$sink" 2>/dev/null || true

for set in baseline off on-1pct on-100pct; do
    compgen -G "$dir/$set-*/report.json" >/dev/null || continue
    "$loadgen" summarize "$dir"/"$set"-*/report.json >"$dir/$set.md"
done
# The medians of flows/s, and each ratio to "off".
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
flows() {
    python3 -c 'import json, sys
print(next(f["value"] for f in json.load(open(sys.argv[1]))["figures"] if f["name"] == "flows/s"))' "$1"
}
cpu_per_flow() {
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
flows = next(f["value"] for f in r["figures"] if f["name"] == "flows completed")
cpu = sum(s["cpu_seconds"] for s in r["services"] if s["name"] in ("orders", "payments"))
print(1000 * cpu / flows)' "$1"
}
off=$(for f in "$dir"/off-*/report.json; do flows "$f"; done | median)
{
    echo "| traces | flows/s (median of $runs) | ÷ off |"
    echo "|---|---:|---:|"
    for set in baseline off on-1pct on-100pct; do
        compgen -G "$dir/$set-*/report.json" >/dev/null || continue
        m=$(for f in "$dir"/"$set"-*/report.json; do flows "$f"; done | median)
        printf '| %s | %.0f | %.2f |\n' "$set" "$m" "$(echo "$m / $off" | bc -l)"
    done
    echo
    # CPU per flow: the services' user + system CPU time over the flows they served.
    # A closed loop's flows/s swings with whatever else the machine runs; the CPU a
    # flow costs the services swings far less, and it is what tracing adds.
    echo "| traces | services' CPU ms per flow (median of $runs) | ÷ off | off ÷ it |"
    echo "|---|---:|---:|---:|"
    off_cpu=$(for f in "$dir"/off-*/report.json; do cpu_per_flow "$f"; done | median)
    for set in baseline off on-1pct on-100pct; do
        compgen -G "$dir/$set-*/report.json" >/dev/null || continue
        m=$(for f in "$dir"/"$set"-*/report.json; do cpu_per_flow "$f"; done | median)
        printf '| %s | %.3f | %.2f | %.2f |\n' "$set" "$m" "$(echo "$m / $off_cpu" | bc -l)" \
            "$(echo "$off_cpu / $m" | bc -l)"
    done
    echo
    cat "$dir/otlp-sink.log"
} | tee "$dir/summary.md"
echo "summary: $dir/summary.md" >&2
