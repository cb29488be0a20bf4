#!/usr/bin/env bash
# Revocation propagation over several nodes on one PostgreSQL, and authenticated
# throughput with 1, 2 and 3 nodes (crates/hark-server/examples/revocation_bench.rs).
#
# The lag of one node for one revocation runs from the revocation's commit to the
# first request that node refuses (the node had the key cached); the epoch poll is
# turned down to 60 s, so what is measured is the revocation bus (LISTEN/NOTIFY).
# Goal: p99 <= 100 ms over 1,000 revocations x 3 nodes.
#
# Usage: bench/cluster/run.sh
# Settings (environment):
#   HARK_BENCH_NODES=3 HARK_BENCH_REVOCATIONS=1000 HARK_BENCH_CONNECTIONS=32
#   HARK_BENCH_SECONDS=10 PROFILE=release (or dev: dependencies are optimised there too)
#   HARK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test  CARGO_TARGET_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
export HARK_TEST_POSTGRES_URL="${HARK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PROFILE=${PROFILE:-release}
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 2; }
echo "load before: $(uptime)" >&2
cargo run --quiet --profile "$PROFILE" -p hark-server --example revocation_bench
echo "load after: $(uptime)" >&2
