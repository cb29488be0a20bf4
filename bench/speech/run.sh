#!/usr/bin/env bash
# Hark vs faster-whisper on the same clips and tiny.en model (greedy, 2 threads).
# Needs: HARK_TEST_MODEL_DIR (CTranslate2 tiny.en dir), HARK_TEST_FIXTURES (librivox/, jfk.wav),
# espeak-ng, sox, /usr/bin/time, and faster-whisper importable by python3.
# Usage: bench/speech/run.sh [--repeats N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${HARK_TEST_MODEL_DIR:?set HARK_TEST_MODEL_DIR to the tiny.en model directory}"
: "${HARK_TEST_FIXTURES:?set HARK_TEST_FIXTURES to the speech fixture directory}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -p hark-speech --example transcribe --manifest-path "$root/Cargo.toml" >&2
exec python3 "$here/bench.py" "$CARGO_TARGET_DIR/release/examples/transcribe" \
  "$HARK_TEST_MODEL_DIR" "$HARK_TEST_FIXTURES" "$@"
