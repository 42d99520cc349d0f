#!/usr/bin/env bash
# Every scenario of bench/README.md's results table, RUNS times each (3 by default),
# one after the other, then `loadgen explain` once, then the medians (`loadgen
# summarize`). Reports go to target/bench/baseline-<time>/<scenario>-<run>/, the
# summary to summary.md there.
#
#   bench/run-baseline.sh                 # about 40 minutes on the 2-core machine
#   RUNS=1 bench/run-baseline.sh --commit abc1234
#
# Extra arguments go to every loadgen run. Binaries as in run-reference.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/binaries.sh
source bench/binaries.sh
runs="${RUNS:-3}"
dir="$target/bench/baseline-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$dir"
scenarios=(
    "flow-closed|flow --concurrency 32 --duration 30s"
    "flow-open|flow --rate 40 --duration 30s"
    "burst-2000|burst 2000"
    "burst-10000|burst 10000"
    "resume-20000|resume 20000"
    "backlog-5000|backlog 5000 --deadline 120s"
)
for ((run = 1; run <= runs; run++)); do
    for entry in "${scenarios[@]}"; do
        read -r -a args <<<"${entry#*|}"
        run_loadgen "$dir" "${entry%%|*}-$run" "${args[@]}" "$@"
    done
done
# The plans of every statement, once (about 20 s): explain/explain.md.
run_loadgen "$dir" explain explain --flows 3000 "$@"
"$loadgen" summarize "$dir"/*/report.json | tee "$dir/summary.md"
echo "summary: $dir/summary.md" >&2
