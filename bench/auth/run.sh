#!/usr/bin/env bash
# Authentication overhead of GET /v2/transcript/{id}, on loopback, with wrk.
#
# Starts crates/hark-server/examples/auth_bench_target.rs, which serves in one process:
#   A = the real server (hark_server::start): GET /v2/transcript/{id} with an API key
#       (format check, SHA-256 digest, verified-key cache, per-account rate limiter);
#   B = the same handler work (store read + render) for a fixed, pre-resolved key
#       principal, over the same AppState, with the same router layers, no auth.
# Then runs wrk against A and B with identical settings, alternating A,B,A,B,...
# (ROUNDS pairs) so drift (other load, thermal, caches) falls on both sides equally,
# and prints requests/s and p50/p99 latency per run, the means, and the ratio
# mean rps(A) / mean rps(B) against the target (>= 0.95).
#
# CPU placement: client and server must not starve each other. With >= 2 CPUs the
# server process (tokio workers and SQLite connection threads) is pinned with taskset
# to SERVER_CPUS and wrk to CLIENT_CPUS (defaults: server on CPU 0, wrk on CPU 1). The
# server's tokio runtime gets as many worker threads as SERVER_CPUS lists, and wrk as
# many threads as CLIENT_CPUS lists, so no side oversubscribes its cores.
#
# Usage: bench/auth/run.sh
# Settings (environment):
#   DURATION=15s CONNECTIONS=32 ROUNDS=2 WARMUP=3s
#   SERVER_CPUS=0 CLIENT_CPUS=1 WRK_THREADS=<count of CLIENT_CPUS>
#   SERVER_THREADS=<count of SERVER_CPUS>  WORDS=0 (words in the transcript; 0 = queued)
#   TARGET_RATIO=0.95  CARGO_TARGET_DIR (honoured)
#   PROFILE=release (or quickstart, the profile scripts/serve.sh builds)
# Exit status: 0 if the ratio meets the target, 1 if not, 2 on a setup error.
set -euo pipefail

cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-3s}
TARGET_RATIO=${TARGET_RATIO:-0.95}
WORDS=${WORDS:-0}

die() { echo "error: $*" >&2; exit 2; }

# --- wrk -------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing the Debian package" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >&2 || die "could not install wrk"
fi

# --- CPU placement -----------------------------------------------------------------
count_cpus() { # "0" -> 1, "0,1" -> 2, "0-3" -> 4, "0-1,4" -> 3
    local total=0 part a b
    IFS=',' read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then a=${part%-*}; b=${part#*-}; total=$((total + b - a + 1))
        else total=$((total + 1)); fi
    done
    echo "$total"
}
NCPU=$(nproc)
if command -v taskset >/dev/null 2>&1 && [ "$NCPU" -ge 2 ]; then
    SERVER_CPUS=${SERVER_CPUS:-0}
    CLIENT_CPUS=${CLIENT_CPUS:-1}
    SERVER_PIN=(taskset -c "$SERVER_CPUS")
    CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
    SERVER_THREADS=${SERVER_THREADS:-$(count_cpus "$SERVER_CPUS")}
    WRK_THREADS=${WRK_THREADS:-$(count_cpus "$CLIENT_CPUS")}
    PLACEMENT="server on CPU(s) $SERVER_CPUS, wrk on CPU(s) $CLIENT_CPUS"
else
    SERVER_PIN=()
    CLIENT_PIN=()
    SERVER_THREADS=${SERVER_THREADS:-1}
    WRK_THREADS=${WRK_THREADS:-1}
    PLACEMENT="unpinned ($NCPU CPU(s) or no taskset)"
fi

# --- build and start the target ----------------------------------------------------
echo "building the benchmark target (release)..." >&2
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --quiet -p hark-server --example auth_bench_target >&2
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/$PROFILE/examples/auth_bench_target"
[ -x "$BIN" ] || die "$BIN was not built"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

HARK_BENCH_WORKER_THREADS=$SERVER_THREADS HARK_BENCH_WORDS=$WORDS \
    "${SERVER_PIN[@]}" "$BIN" >"$WORK/target.out" 2>"$WORK/target.err" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    [ -s "$WORK/target.out" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/target.err" >&2; die "the target exited"; }
    sleep 0.1
done
[ -s "$WORK/target.out" ] || die "the target printed nothing within 30 s"
INFO=$(head -n1 "$WORK/target.out")
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$INFO"; }
AUTH_URL=$(field auth_url)
NOAUTH_URL=$(field noauth_url)
KEY=$(field key)
[ -n "$AUTH_URL" ] && [ -n "$NOAUTH_URL" ] && [ -n "$KEY" ] || die "cannot parse: $INFO"

# --- sanity: both answer 200 with the same body; a wrong key is refused -------------
if command -v curl >/dev/null 2>&1; then
    a=$(curl -sS -w '\n%{http_code}' -H "Authorization: $KEY" "$AUTH_URL")
    b=$(curl -sS -w '\n%{http_code}' "$NOAUTH_URL")
    [ "$(tail -n1 <<<"$a")" = 200 ] || die "authenticated GET answered: $a"
    [ "$(tail -n1 <<<"$b")" = 200 ] || die "unauthenticated GET answered: $b"
    [ "$a" = "$b" ] || die "the two endpoints answer different bodies"
    code=$(curl -sS -o /dev/null -w '%{http_code}' "$AUTH_URL")
    [ "$code" = 401 ] || die "GET without a key answered $code, not 401"
    BODY_BYTES=$(($(head -n -1 <<<"$a" | wc -c) - 1))
else
    BODY_BYTES="?"
fi

# --- runs --------------------------------------------------------------------------
# Latency in wrk's units (us, ms, s) -> ms.
to_ms() { awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'; }

# run_wrk LABEL DURATION [wrk args...] -> "rps p50_ms p99_ms" on stdout
run_wrk() {
    local label=$1 duration=$2 out
    shift 2
    out=$("${CLIENT_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$duration" --latency "$@")
    echo "$out" >"$WORK/wrk-$label.txt"
    if grep -q "Non-2xx or 3xx responses" <<<"$out"; then
        echo "$out" >&2
        die "$label: some responses were not 2xx (rate limiter? key?)"
    fi
    if grep -q "Socket errors" <<<"$out"; then
        echo "warning: $label: $(grep 'Socket errors' <<<"$out")" >&2
    fi
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    [ -n "$rps" ] && [ -n "$p50" ] && [ -n "$p99" ] || { echo "$out" >&2; die "cannot parse wrk output"; }
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

AUTH_ARGS=(-H "Authorization: $KEY" "$AUTH_URL")
NOAUTH_ARGS=("$NOAUTH_URL")

echo "load before: $(uptime)" >&2
echo "warming up ($WARMUP each)..." >&2
run_wrk warmup-auth "$WARMUP" "${AUTH_ARGS[@]}" >/dev/null
run_wrk warmup-noauth "$WARMUP" "${NOAUTH_ARGS[@]}" >/dev/null

RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS: authenticated..." >&2
    r=$(run_wrk "auth-$round" "$DURATION" "${AUTH_ARGS[@]}")
    echo "auth $round $r" >>"$RESULTS"
    echo "round $round/$ROUNDS: unauthenticated..." >&2
    r=$(run_wrk "noauth-$round" "$DURATION" "${NOAUTH_ARGS[@]}")
    echo "noauth $round $r" >>"$RESULTS"
done
LOAD_AFTER=$(uptime)

# --- report ------------------------------------------------------------------------
echo
echo "GET /v2/transcript/{id}: authenticated (A) vs the same handler work without authentication (B)"
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s) A,B alternating; $PLACEMENT;"
echo "server tokio worker threads: $SERVER_THREADS; transcript words: $WORDS; response body: $BODY_BYTES bytes"
echo "load after: $LOAD_AFTER"
echo
awk -v target="$TARGET_RATIO" '
    {
        side = $1; n[side]++; rps[side] += $3; p50[side] += $4; p99[side] += $5
        row[NR] = sprintf("%-16s %5s %12.0f %10.3f %10.3f", (side == "auth" ? "A authenticated" : "B no auth"), $2, $3, $4, $5)
        if (side == "auth") a[$2] = $3; else b[$2] = $3
    }
    END {
        printf "%-16s %5s %12s %10s %10s\n", "endpoint", "round", "requests/s", "p50 ms", "p99 ms"
        for (i = 1; i <= NR; i++) print row[i]
        print "--------------------------------------------------------------"
        printf "%-16s %5s %12.0f %10.3f %10.3f\n", "A authenticated", "mean", rps["auth"] / n["auth"], p50["auth"] / n["auth"], p99["auth"] / n["auth"]
        printf "%-16s %5s %12.0f %10.3f %10.3f\n", "B no auth", "mean", rps["noauth"] / n["noauth"], p50["noauth"] / n["noauth"], p99["noauth"] / n["noauth"]
        print ""
        per = ""
        for (r in a) if (r in b) per = per sprintf(" round %s: %.3f;", r, a[r] / b[r])
        ratio = (rps["auth"] / n["auth"]) / (rps["noauth"] / n["noauth"])
        printf "per-round ratio A/B:%s\n", per
        printf "throughput ratio A/B (means): %.3f  target >= %s: %s\n", ratio, target, (ratio >= target ? "MET" : "NOT MET")
        exit (ratio >= target ? 0 : 1)
    }' "$RESULTS"
