# shellcheck shell=bash
# Sourced by run-baseline.sh and run-reference.sh: the binaries they run, built here
# unless LOADGEN_ORDERS_BIN, LOADGEN_PAYMENTS_BIN and LOADGEN all name others.
# Sets LOADGEN_ORDERS_BIN and LOADGEN_PAYMENTS_BIN (exported), and loadgen.
if [[ -z "${LOADGEN_ORDERS_BIN:-}" || -z "${LOADGEN_PAYMENTS_BIN:-}" || -z "${LOADGEN:-}" ]]; then
    cargo build --release -p orders -p payments -p bench
fi
target="${CARGO_TARGET_DIR:-target}"
export LOADGEN_ORDERS_BIN="${LOADGEN_ORDERS_BIN:-$target/release/orders}"
export LOADGEN_PAYMENTS_BIN="${LOADGEN_PAYMENTS_BIN:-$target/release/payments}"
# shellcheck disable=SC2034 # used by the scripts that source this
loadgen="${LOADGEN:-$target/release/loadgen}"
