# shellcheck shell=bash
# Sourced by the run-*.sh scripts: the binaries they run, built here unless
# LOADGEN_ORDERS_BIN, LOADGEN_PAYMENTS_BIN and LOADGEN all name others.
# Sets LOADGEN_ORDERS_BIN and LOADGEN_PAYMENTS_BIN (exported), and loadgen; defines
# run_loadgen.
if [[ -z "${LOADGEN_ORDERS_BIN:-}" || -z "${LOADGEN_PAYMENTS_BIN:-}" || -z "${LOADGEN:-}" ]]; then
    cargo build --release -p orders -p payments -p bench
fi
target="${CARGO_TARGET_DIR:-target}"
export LOADGEN_ORDERS_BIN="${LOADGEN_ORDERS_BIN:-$target/release/orders}"
export LOADGEN_PAYMENTS_BIN="${LOADGEN_PAYMENTS_BIN:-$target/release/payments}"
# shellcheck disable=SC2034 # used by the scripts that source this
loadgen="${LOADGEN:-$target/release/loadgen}"

# run_loadgen DIR NAME ARGS...: one loadgen run, its report in DIR/NAME/, its Markdown
# summary in DIR/NAME.md, its stderr in DIR/NAME.err. A failed check (exit 1) is a
# result too; only an error (2) stops the series.
run_loadgen() {
    local dir=$1 name=$2 status=0
    shift 2
    echo "== $name" >&2
    "$loadgen" "$@" --out "$dir/$name" >"$dir/$name.md" 2>"$dir/$name.err" || status=$?
    if ((status > 1)); then
        cat "$dir/$name.err" >&2
        exit "$status"
    fi
}
