#!/usr/bin/env bash
# Peak memory of long batch audio, before and after streaming (issue 13, finding 5).
#  1. Decoding + log-mel of a LONG_HOURS-hour file (default 10): the whole-file way, as
#     BEFORE_REF (default main) does it, built from a temporary worktree of that commit,
#     and the streamed way of this checkout (survey pass + window-by-window log-mel).
#     Both print a checksum of every 30-s window's log-mel, which must be equal.
#  2. Transcribing an E2E_MINUTES-minute file (default 60) end to end with the
#     `transcribe` example of BEFORE_REF and of this checkout (tiny.en, 2 threads).
# Peak RSS comes from /usr/bin/time -v. The audio is real speech (jfk.wav and the
# LibriVox clips of the fixtures) repeated with sox, 16 kHz mono WAV; LONG_FORMAT=mp3
# re-encodes the long file as 32 kb/s MP3 (ffmpeg) first.
# Needs HARK_TEST_FIXTURES, HARK_TEST_MODEL_DIR, sox, /usr/bin/time (and ffmpeg for mp3).
# Builds the dev profile (its speech and audio crates are compiled at opt-level 3, like
# release): unlike release, it gives each checkout's own crates distinct artifacts in the
# shared build directory (scripts/cargo-env.sh). HARK_BENCH_SKIP_E2E=1 skips step 2.
# Usage: bench/memory/run.sh     (env: LONG_HOURS, E2E_MINUTES, BEFORE_REF, LONG_FORMAT, BENCH_WORK)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${HARK_TEST_MODEL_DIR:?set HARK_TEST_MODEL_DIR to the tiny.en model directory}"
: "${HARK_TEST_FIXTURES:?set HARK_TEST_FIXTURES to the speech fixture directory}"
hours="${LONG_HOURS:-10}"
e2e_minutes="${E2E_MINUTES:-60}"
before_ref="${BEFORE_REF:-main}"
format="${LONG_FORMAT:-wav}"
work="${BENCH_WORK:-$(mktemp -d /tmp/hark-memory.XXXXXX)}"
mkdir -p "$work"
echo "load: $(uptime)"

# --- audio: real speech, repeated ---------------------------------------------------
base="$work/speech.wav"
if [ ! -f "$base" ]; then
  parts=("$HARK_TEST_FIXTURES/jfk.wav")
  for f in "$HARK_TEST_FIXTURES"/librivox/*.wav; do parts+=("$f"); done
  i=0
  for f in "${parts[@]}"; do
    sox "$f" -r 16000 -c 1 -b 16 "$work/part$i.wav" pad 0 0.7
    i=$((i + 1))
  done
  sox "$work"/part*.wav "$base"
  rm -f "$work"/part*.wav
fi
base_secs="$(soxi -D "$base")"
make_long() { # seconds, output
  local secs="$1" out="$2"
  [ -f "$out" ] && return 0
  local repeats
  repeats="$(python3 -c "import math; print(math.ceil($secs / $base_secs))")"
  sox "$base" "$out.tmp.wav" repeat "$((repeats - 1))" trim 0 "$secs"
  mv "$out.tmp.wav" "$out"
}
long="$work/long-${hours}h.wav"
make_long "$((hours * 3600))" "$long"
if [ "$format" = mp3 ]; then
  [ -f "$long.mp3" ] || ffmpeg -nostdin -loglevel error -y -i "$long" -b:a 32k "$long.mp3"
  long="$long.mp3"
fi
e2e="$work/e2e-${e2e_minutes}m.wav"
make_long "$((e2e_minutes * 60))" "$e2e"
echo "long file: $long ($(soxi -D "$long" 2>/dev/null || echo '?') s, $(du -h "$long" | cut -f1))"

# --- builds ----------------------------------------------------------------------------
build() { # checkout, target dir, examples...
  local checkout="$1" target="$2"
  shift 2
  local args=()
  for e in "$@"; do args+=(--example "$e"); done
  (
    cd "$checkout"
    unset CARGO_PROFILE_DEV_CODEGEN_UNITS
    export CARGO_TARGET_DIR="$target"
    # shellcheck source=/dev/null
    source scripts/cargo-env.sh
    cargo build -p hark-speech "${args[@]}" >&2
  )
}
after_target="${CARGO_TARGET_DIR:-$HOME/.cache/hark/target}"
build "$root" "$after_target" long_audio_whole long_audio_streamed transcribe
after_bin="$after_target/debug/examples"

before_tree="$work/before"
if [ ! -d "$before_tree" ]; then
  git -C "$root" worktree add --detach "$before_tree" "$before_ref" >&2
fi
# The whole-file driver uses only APIs that exist before, so it is copied in unchanged.
cp "$root/crates/hark-speech/examples/long_audio_whole.rs" "$before_tree/crates/hark-speech/examples/"
before_target="$work/before-target"
build "$before_tree" "$before_target" long_audio_whole transcribe
before_bin="$before_target/debug/examples"

# --- measurements --------------------------------------------------------------------
peak() { # label, output file, command...: peak RSS and wall time; stdout to the file
  local label="$1" out="$2"
  shift 2
  local log="$work/time.log"
  /usr/bin/time -v "$@" >"$out" 2>"$log" || { tail -n 30 "$log" >&2; return 1; }
  local kb wall
  kb="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")"
  wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")"
  printf '%-46s peak RSS %8.1f MiB  wall %s\n' "$label" "$(echo "$kb / 1024" | bc -l)" "$wall"
}

echo
echo "== decoding + log-mel of ${hours} h ($format) =="
peak "before ($before_ref): decode whole + log-mel" "$work/mel-before.json" "$before_bin/long_audio_whole" "$long"
peak "after: survey + streamed log-mel" "$work/mel-after.json" "$after_bin/long_audio_streamed" "$long"
cat "$work/mel-before.json" "$work/mel-after.json"
python3 - "$work/mel-before.json" "$work/mel-after.json" <<'PY'
import json, sys
a, b = (json.loads(open(p).read()) for p in sys.argv[1:3])
same = all(a[k] == b[k] for k in ("samples", "content_frames", "checksum"))
print("log-mel windows identical before/after:", "yes" if same else "NO")
sys.exit(0 if same else 1)
PY

if [ "${HARK_BENCH_SKIP_E2E:-0}" != 1 ]; then
  echo
  echo "== transcribing ${e2e_minutes} min end to end (tiny.en, 2 threads) =="
  peak "before ($before_ref): transcribe" "$work/e2e-before.json" \
    "$before_bin/transcribe" --model-dir "$HARK_TEST_MODEL_DIR" --threads 2 --json "$e2e"
  peak "after: transcribe (streamed)" "$work/e2e-after.json" \
    "$after_bin/transcribe" --model-dir "$HARK_TEST_MODEL_DIR" --threads 2 --json "$e2e"
  python3 - "$work/e2e-before.json" "$work/e2e-after.json" <<'PY'
import json, sys
a, b = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
for name, o in (("before", a), ("after", b)):
    print(f"  {name}: {len(o['words'])} words, audio {o['audio_duration']:.1f} s, "
          f"inference {o['inference_ms'] / 1000:.1f} s, stats {o['stats']}")
same = a["text"] == b["text"] and a["words"] == b["words"] and a["audio_duration"] == b["audio_duration"]
print("transcript (text, word times, confidences, duration) identical before/after:",
      "yes" if same else "NO")
sys.exit(0 if same else 1)
PY
fi
echo
echo "work files in $work (remove the worktree with: git worktree remove --force $before_tree)"
