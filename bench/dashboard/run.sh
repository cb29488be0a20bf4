#!/usr/bin/env bash
# Dashboard render benchmark: every account page of one large account (1,000 API keys,
# 1,000 members and 1,000 pending invites, 10,000 transcripts) requested over loopback;
# p50/p95/max per page and its weight, against p95 <= 20 ms and <= 60 KB.
# See crates/hark-server/examples/dashboard_bench.rs for the settings.
#
# Usage: bench/dashboard/run.sh            (SQLite)
#        HARK_BENCH_DB=postgres bench/dashboard/run.sh   (a fresh database on HARK_TEST_POSTGRES_URL's server)
# Built with the dev profile (dependencies optimised, Hark's own crates not): a
# conservative figure; release builds are faster.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
exec cargo run --quiet --locked --example dashboard_bench
