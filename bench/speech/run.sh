#!/usr/bin/env bash
# Hark vs faster-whisper on the same clips and tiny.en model (greedy, 2 threads).
# Needs: HARK_TEST_MODEL_DIR (CTranslate2 tiny.en dir), HARK_TEST_FIXTURES (librivox/, jfk.wav),
# espeak-ng, sox and /usr/bin/time; faster-whisper is installed into a venv under
# ~/.cache/hark/fwvenv (HARK_FW_VENV) unless python3 already imports it.
# Usage: [HARK_BENCH_PATHS="avx512 avx2"] [HARK_SIMD=avx2] [PROFILE=quickstart] bench/speech/run.sh [--repeats N]
# (HARK_BENCH_PATHS runs Hark once per kernel path in the same run, each beside
# faster-whisper restricted to the same instruction set; HARK_SIMD forces one;
# each Hark row names its encoder precision, the path's default unless
# HARK_ENCODER_PRECISION is set; HARK_BENCH_BOTH=1 adds the other precision on every path;
# HARK_BENCH_SHORT=1 adds a Hark run with --short-context.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${HARK_TEST_MODEL_DIR:?set HARK_TEST_MODEL_DIR to the tiny.en model directory}"
: "${HARK_TEST_FIXTURES:?set HARK_TEST_FIXTURES to the speech fixture directory}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
profile="${PROFILE:-release}"   # or quickstart, the profile scripts/serve.sh builds
cargo build --profile "$profile" -p hark-speech --example transcribe --manifest-path "$root/Cargo.toml" >&2
# faster-whisper runs in its own venv (created on first use) unless python3 already has it.
python=python3
if ! python3 -c 'import faster_whisper' 2>/dev/null; then
  venv="${HARK_FW_VENV:-$HOME/.cache/hark/fwvenv}"
  if ! "$venv/bin/python" -c 'import faster_whisper' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q faster-whisper >&2
  fi
  python="$venv/bin/python"
fi
exec "$python" "$here/bench.py" "$CARGO_TARGET_DIR/$profile/examples/transcribe" \
  "$HARK_TEST_MODEL_DIR" "$HARK_TEST_FIXTURES" "$@"
