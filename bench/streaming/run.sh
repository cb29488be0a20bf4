#!/usr/bin/env bash
# Streaming capacity of one `hark serve` (release build, SQLite, the tiny.en model,
# plain ws:// on loopback):
#   1. live: for each N in STREAMS, N concurrent sessions send a 45-s speech programme
#      (JFK + LibriVox clips with pauses) at real-time pace in 100-ms chunks; prints the
#      final-turn latency p50/p95/max (end of speech -> final Turn received) and the WER of
#      every stream's finals against the clips' references (scored as bench/speech
#      scores). Twice: all streams playing the programme in step (0.7 s apart: every
#      stream pauses at nearly the same moment, the worst case), then rotated (stream i
#      starts at clip i).
#   2. idle: opens IDLE_SESSIONS sessions that send nothing; prints the server's RSS
#      before and after and the memory per idle session.
# Goals (issue): >= 4 live streams with p95 <= 1 s; <= 50 KB per idle session.
#
# Needs: fixtures (scripts/test-fixtures.sh), the test venv (scripts/install-test-deps.sh:
# its `websockets` comes with the SDK).
# Usage: bench/streaming/run.sh
# Settings: STREAMS="1 2 4 6" IDLE_SESSIONS=10000 (0 skips) TLS=0 (1: --tls-self-signed and
# wss://); HARK_SIMD=avx2|scalar forces the server's kernel path (the CPU line says which ran),
# HARK_ENCODER_PRECISION=int8 gives it the int8 encoder;
# HARK_BIN=path runs that `hark` binary instead of building this checkout's (to compare
# two builds on one machine); SERVE_LOG=path keeps the server's log there, and with
# HARK_LOG=warn,hark_speech=debug it holds one line per inference (the wait for a slot,
# the context, a recheck, encoder and decoder seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
STREAMS=${STREAMS:-"1 2 4 6"}
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
TLS=${TLS:-0}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hark/target}"
VENV="${HARK_VENV:-$HOME/.cache/hark/venv}"
eval "$(bash scripts/test-fixtures.sh)"

if [ -n "${HARK_BIN:-}" ]; then
    HARK="$HARK_BIN"
else
    cargo build --release --locked -p hark >&2
    HARK="$CARGO_TARGET_DIR/release/hark"
fi
data="$(mktemp -d)"
server=""
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT

"$HARK" --data-dir "$data" models install "$HARK_TEST_MODEL_DIR" >/dev/null
init="$("$HARK" --data-dir "$data" admin init --email bench@example.com --account-name bench --json)"
key="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' <<<"$init")"
account="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["account_id"])' <<<"$init")"
"$HARK" --data-dir "$data" admin account set-plan "$account" enterprise \
    --limit streaming_sessions_per_minute=1000000 >/dev/null

# 10,000 sessions need as many sockets on each side (each process has its own limit).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
port=$((20000 + RANDOM % 20000))
tls_args=()
scheme=ws
client_tls=()
if [ "$TLS" = 1 ]; then
    tls_args=(--tls-self-signed)
    scheme=wss
    client_tls=(--cafile "$data/tls/cert.pem")
fi
log="${SERVE_LOG:-$data/serve.log}"
HARK_LOG="${HARK_LOG:-warn}" "$HARK" --data-dir "$data" serve --bind "127.0.0.1:$port" "${tls_args[@]}" 2>"$log" &
server=$!
for _ in $(seq 1 100); do
    grep -q "hark listening" "$log" && break
    sleep 0.1
done
grep -q "hark listening" "$log" || { cat "$log" >&2; exit 1; }
echo "hark $(git rev-parse --short HEAD) (${HARK_BIN:-this checkout}) tls=$TLS pid=$server cores=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
grep -m1 "hark speech cpu:" "$log" || true
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# shellcheck disable=SC2086
"$VENV/bin/python" bench/streaming/bench.py --url "$scheme://127.0.0.1:$port" --key "$key" "${client_tls[@]}" \
    live --fixtures "$HARK_TEST_FIXTURES" --streams $STREAMS --show-text
# shellcheck disable=SC2086
"$VENV/bin/python" bench/streaming/bench.py --url "$scheme://127.0.0.1:$port" --key "$key" "${client_tls[@]}" \
    live --fixtures "$HARK_TEST_FIXTURES" --streams $STREAMS --rotate
echo "load average after the live runs: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$IDLE_SESSIONS" != 0 ]; then
"$VENV/bin/python" bench/streaming/bench.py --url "$scheme://127.0.0.1:$port" --key "$key" "${client_tls[@]}" \
    idle --pid "$server" --sessions "$IDLE_SESSIONS"
fi
