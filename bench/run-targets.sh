#!/usr/bin/env bash
# Every target of issue 8, RUNS times each (3 by default), the scenarios interleaved
# (run 1 of each, then run 2 of each...) so that a slow minute of this shared machine
# does not land on one scenario only; then `loadgen reference` at 32 and 64 clients
# (services and pgbench full-flow.sql alternating, RUNS runs each), `loadgen explain`
# once, and the medians (`loadgen summarize`). Reports go to
# target/bench/targets-<time>/<scenario>-<run>/, the summary to summary.md there.
#
#   bench/run-targets.sh                  # about 10 minutes on the 2-core machine
#   RUNS=1 bench/run-targets.sh --commit abc1234
#
# The targets (bench/README.md, "Results", has the table):
#   flow --rate 1000    p99 create → page and complete → fulfilled ≤ 50 ms
#   flow --rate 1500    ≥ 1,500 full flows/s sustained (every flow fulfilled)
#   burst 10000         every page within 3 s of the last 201
#   resume 100000       every page within 10 s of the connection; RSS < 100 / 200 MB
#   backlog 50000       both backlogs drain without deadlock
#   reference           services ≥ 1.0 × pgbench at the same client count
#
# Extra arguments go to every loadgen run. Binaries as in run-reference.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/binaries.sh
source bench/binaries.sh
runs="${RUNS:-3}"
pgbench="${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}"
dir="$target/bench/targets-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$dir"
scenarios=(
    "open-1000|flow --rate 1000 --duration 20s"
    "open-1500|flow --rate 1500 --duration 20s"
    "burst-10000|burst 10000"
    "resume-100000|resume 100000"
    "backlog-50000|backlog 50000 --deadline 180s"
)
for ((n = 1; n <= runs; n++)); do
    for entry in "${scenarios[@]}"; do
        read -r -a args <<<"${entry#*|}"
        run_loadgen "$dir" "${entry%%|*}-$n" "${args[@]}" "$@"
    done
done
for clients in 32 64; do
    run_loadgen "$dir" "reference-$clients" reference --pgbench "$pgbench" --clients "$clients" \
        --runs "$runs" --duration 15s "$@"
done
run_loadgen "$dir" explain explain --flows 5000 "$@"
"$loadgen" summarize "$dir"/*/report.json | tee "$dir/summary.md"
echo "summary: $dir/summary.md" >&2
