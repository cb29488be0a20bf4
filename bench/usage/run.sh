#!/usr/bin/env bash
# Usage-report latency over 10 million generated usage events, on SQLite and PostgreSQL.
#
# Runs crates/hark-server/examples/usage_bench.rs once per backend: it generates the
# events of one account (90 days, 5 projects x 4 keys, 2 products, 3 models) into the
# hourly rollups, then times five report shapes (24 h by hour; 7 days by hour and key;
# 30 days by day and model; 30 days by day and project, filtered; 90 days by month and
# product), 200 runs each, through the same core function as GET .../usage, and prints
# p50/p95/p99. Target: p95 <= 50 ms.
#
# Usage: bench/usage/run.sh            (EVENTS=10000000, PROFILE=dev|dev-opt|release)
# dev-opt: the dev profile with the workspace crates optimised too (opt-level 2, as the
# dependencies already are), a stand-in for release without rebuilding every dependency.
# Needs PostgreSQL at HARK_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-10000000}
PROFILE=${PROFILE:-dev}
PG_ADMIN=${HARK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
[ -f scripts/cargo-env.sh ] && source scripts/cargo-env.sh

release=()
[ "$PROFILE" = release ] && release=(--release)
if [ "$PROFILE" = dev-opt ]; then
    for crate in hark-core hark-store hark-server hark-outbound; do
        release+=(--config "profile.dev.package.$crate.opt-level=2")
    done
fi
cargo build -q "${release[@]}" --workspace --example usage_bench
bin="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = release ] && echo release || echo debug)/examples/usage_bench"

work=$(mktemp -d)
db="hark_usage_bench_$$"
cleanup() {
    rm -rf "$work"
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== SQLite"
"$bin" "sqlite://$work/bench.db" "$EVENTS"

echo "== PostgreSQL"
psql -q "$PG_ADMIN" -c "CREATE DATABASE $db" >/dev/null
"$bin" "${PG_ADMIN%/*}/$db" "$EVENTS"
