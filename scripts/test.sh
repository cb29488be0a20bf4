#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls this): installs the test
# dependencies and fixtures if missing, makes sure PostgreSQL is up (its tests are
# never skipped), then format check, clippy with warnings as errors (also on the
# single-node build), every test of the workspace on SQLite and PostgreSQL (property
# tests of the parsers included; audio storage also on a local Garage), the single-node
# build's own test, the schemathesis contract run against /api/v1
# (HARK_CONTRACT=0 skips it) and short fuzz runs (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

export HARK_TEST_POSTGRES_URL="${HARK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

bash scripts/install-test-deps.sh
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
# shellcheck disable=SC1090
fixtures_env="$(bash scripts/test-fixtures.sh)"
eval "$fixtures_env"

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "test.sh: PostgreSQL is not answering on 127.0.0.1:5432; trying to start it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
    pg_isready -h 127.0.0.1 -p 5432 -q || { echo "test.sh: PostgreSQL is required and unreachable" >&2; exit 1; }
fi

# The cluster tests share the REST rate limit through Redis; never skipped either.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "test.sh: Redis is not answering on 127.0.0.1:6379; starting it" >&2
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "test.sh: Redis is required and unreachable" >&2; exit 1; }
fi

# The object-storage tests run against a real S3 server (Garage, on loopback); never
# skipped either: without HARK_TEST_S3_* they fail.
# (Captured first: a failure inside `eval "$(...)"` would not stop the script.)
garage_env="$(bash scripts/garage.sh)"
# shellcheck disable=SC1090
eval "$garage_env"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The single-node build that scripts/serve.sh makes (no PostgreSQL, S3 or Redis code).
cargo clippy -p hark --locked --no-default-features -- -D warnings
cargo test --workspace --locked
# That build serves on SQLite and refuses what it lacks with a message (tests/lean_build.rs).
cargo test -p hark --locked --no-default-features --test lean_build

# Contract: schemathesis, all checks, against the management API's own OpenAPI document,
# signed in (docs/testing.md#contract-schemathesis-against-apiv1); about 40 s.
if [ "${HARK_CONTRACT:-1}" = 1 ]; then
    bash scripts/contract.sh
fi

# Short coverage-guided runs of the fuzz targets that build without hark-server (the
# server's parsers get their short runs as property tests in `cargo test` above; all six
# targets run long with `scripts/fuzz.sh 600`). HARK_CI_FUZZ_SECS=0 skips this step.
# A fresh corpus from the committed seeds, so the step's time does not grow with the
# corpus the long runs keep in ~/.cache/hark/fuzz-corpus.
if [ "${HARK_CI_FUZZ_SECS:-15}" -gt 0 ]; then
    ci_corpus=$(mktemp -d)
    HARK_FUZZ_CORPUS="$ci_corpus" bash scripts/fuzz.sh "${HARK_CI_FUZZ_SECS:-15}" secrets model_files audio
    rm -rf "$ci_corpus"
fi
