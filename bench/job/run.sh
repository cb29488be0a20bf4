#!/usr/bin/env bash
# One batch transcription through the whole server, per Hark binary named: upload an Ogg
# Opus file of real speech (the LibriVox clips from scripts/test-fixtures.sh, looped to
# AUDIO_SECS and encoded by ffmpeg at 32 kb/s mono), create the transcript, poll until it
# is completed. Prints the CPU, then per binary and run the seconds from the create
# request to `completed` and a digest of the text, so builds (e.g. `--release` against
# the `quickstart` profile scripts/serve.sh builds) are compared on the path a user
# takes: HTTP, upload storage, the job queue, decoding, speech, rendering.
# Each binary gets a fresh data directory with the fixtures' Whisper tiny.en model and
# one transcription worker, on a free loopback port.
# Usage: [AUDIO_SECS=300] [REPEATS=2] bench/job/run.sh HARK_BIN [HARK_BIN ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$#" -ge 1 ] || { echo "usage: bench/job/run.sh HARK_BIN [HARK_BIN ...]" >&2; exit 2; }
eval "$(bash scripts/test-fixtures.sh)"
secs="${AUDIO_SECS:-300}"
work="$(mktemp -d)"
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

sox "$HARK_TEST_LIBRIVOX_DIR"/*.wav "$work/clips.wav"
ffmpeg -loglevel error -stream_loop -1 -i "$work/clips.wav" -t "$secs" -ac 1 \
    -c:a libopus -b:a 32k "$work/speech.opus"

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores, audio ${secs} s Ogg Opus"
printf 'binary\trun\tjob_s\twords\ttext_sha256\n'
for bin in "$@"; do
    data="$work/data"
    rm -rf "$data"
    "$bin" --data-dir "$data" models install "$HARK_TEST_MODEL_DIR" >/dev/null
    key="$("$bin" --data-dir "$data" admin init --email bench@example.com --account-name Bench \
        --json | json_field api_key)"
    port="$(free_port)"
    "$bin" --data-dir "$data" serve --bind "127.0.0.1:$port" --workers 1 >"$work/server.log" 2>&1 &
    server=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 200); do
        curl -fs "$base/ready" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "$base/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }
    for run in $(seq 1 "${REPEATS:-2}"); do
        upload="$(curl -fs -H "Authorization: $key" --data-binary @"$work/speech.opus" \
            "$base/v2/upload" | json_field upload_url)"
        start=$(date +%s.%N)
        id="$(curl -fs -H "Authorization: $key" -H 'Content-Type: application/json' \
            -d "{\"audio_url\":\"$upload\"}" "$base/v2/transcript" | json_field id)"
        while :; do
            curl -fs -H "Authorization: $key" "$base/v2/transcript/$id" >"$work/t.json"
            status="$(json_field status <"$work/t.json")"
            [ "$status" = completed ] && break
            [ "$status" = error ] && { cat "$work/t.json" >&2; exit 1; }
            sleep 0.05
        done
        end=$(date +%s.%N)
        words="$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["words"]))' <"$work/t.json")"
        digest="$(json_field text <"$work/t.json" | sha256sum | cut -c1-12)"
        printf '%s\t%s\t%.2f\t%s\t%s\n' "$bin" "$run" "$(python3 -c "print($end - $start)")" "$words" "$digest"
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
done
