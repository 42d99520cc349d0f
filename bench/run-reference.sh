#!/usr/bin/env bash
# The services' closed-loop flow and pgbench's full-flow.sql at the same client count,
# alternating, several runs each, in one go on this machine; prints both medians and
# the ratio services / pgbench. Extra arguments go to `loadgen reference`
# (--clients 32 --duration 30s --runs 3 by default).
#
#   bench/run-reference.sh
#   bench/run-reference.sh --clients 16 --runs 5
#
# Binaries: target/release/{orders,payments,loadgen}, built here, unless
# LOADGEN_ORDERS_BIN / LOADGEN_PAYMENTS_BIN / LOADGEN name others.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/binaries.sh
source bench/binaries.sh
pgbench="${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}"
exec "$loadgen" reference --pgbench "$pgbench" "$@"
