#!/usr/bin/env bash
# Audio decoding speed of the release build, per format: AUDIO_SECS (default 600) of
# espeak-ng speech, looped and encoded by ffmpeg as Ogg Opus, MP3, FLAC, M4A/AAC and
# WAV (48 kHz stereo, as phones and browsers record), then decoded to 16 kHz mono by
# crates/hark-audio/examples/decode_speed.rs, streamed as the workers do. Prints the
# CPU, then per file its audio length, the best decode time of REPEATS runs and the
# real-time factor. Used to check that build settings leave decoding as fast.
# Needs ffmpeg and espeak-ng (scripts/install-test-deps.sh installs both).
# Usage: [AUDIO_SECS=600] [REPEATS=3] [PROFILE=quickstart] bench/audio/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
secs="${AUDIO_SECS:-600}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

espeak-ng -w "$work/voice.wav" "The quick brown fox jumps over the lazy dog. \
Ask not what your country can do for you; ask what you can do for your country."
ffmpeg -loglevel error -stream_loop -1 -i "$work/voice.wav" -t "$secs" -ar 48000 -ac 2 "$work/long.wav"
ffmpeg -loglevel error -i "$work/long.wav" -c:a libopus -b:a 64k "$work/long.opus"
ffmpeg -loglevel error -i "$work/long.wav" -c:a libmp3lame -b:a 128k "$work/long.mp3"
ffmpeg -loglevel error -i "$work/long.wav" -c:a flac "$work/long.flac"
ffmpeg -loglevel error -i "$work/long.wav" -c:a aac -b:a 128k "$work/long.m4a"

profile="${PROFILE:-release}"   # or quickstart, the profile scripts/serve.sh builds
cargo build --profile "$profile" --locked -p hark-audio --example decode_speed >&2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores, head $(git rev-parse --short HEAD), profile $profile"
cd "$work"
"$CARGO_TARGET_DIR/$profile/examples/decode_speed" --repeats "${REPEATS:-3}" \
    long.opus long.mp3 long.flac long.m4a long.wav
