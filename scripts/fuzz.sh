#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (fuzz/, cargo fuzz with
# libFuzzer and AddressSanitizer, overflow checks on). Runs each target ONE AT A TIME
# for SECONDS seconds, niced, and prints per target: executions, coverage, crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 20 s, every target)
#   scripts/fuzz.sh --build-only [TARGET...]
#
# The toolchain is stable: cargo fuzz needs nightly flags (-Z sanitizer), so
# RUSTC_BOOTSTRAP=1 is set for this build only. Fuzz builds live in their own target
# directory (sanitizer flags make every dependency compile again; a warm one is reused).
# Corpora grow in ~/.cache/hark/fuzz-corpus/TARGET (outside git); the small committed
# seeds in fuzz/seeds/TARGET are read as a second corpus. A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
if [ "${1:-}" = "--build-only" ]; then
    build_only=true
    shift
fi
seconds=20
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(secrets transcript_request queries streaming_client audio model_files)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
fuzz_target_dir="${HARK_FUZZ_TARGET_DIR:-$HOME/.cache/hark/fuzz-target}"
# The workspace's shared build directory and per-checkout codegen units
# (scripts/cargo-env.sh) are for the ordinary builds; sanitizer artifacts stay apart.
unset CARGO_BUILD_BUILD_DIR CARGO_PROFILE_DEV_CODEGEN_UNITS CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS
corpus_root="${HARK_FUZZ_CORPUS:-$HOME/.cache/hark/fuzz-corpus}"

# -a: debug assertions and overflow checks, so an arithmetic overflow is a crash too.
fuzz_flags=(--fuzz-dir fuzz -a)

# The server's targets need the `server` feature (hark-server and its dependencies);
# they build in a target directory of their own, so that switching features never
# rebuilds the other targets' dependencies (and two builds never wait on one lock).
is_server_target() {
    case "$1" in
        transcript_request | queries | streaming_client) return 0 ;;
        *) return 1 ;;
    esac
}
fuzz_cargo() {
    local cmd=$1 target=$2 niced=()
    shift 2
    # Fuzzing runs at the lowest priority, beside whatever else the machine does.
    [ "$cmd" = run ] && niced=(nice -n 19)
    if is_server_target "$target"; then
        CARGO_TARGET_DIR="$fuzz_target_dir/server" "${niced[@]}" cargo fuzz "$cmd" "${fuzz_flags[@]}" --features=server "$target" "$@"
    else
        CARGO_TARGET_DIR="$fuzz_target_dir" "${niced[@]}" cargo fuzz "$cmd" "${fuzz_flags[@]}" "$target" "$@"
    fi
}

for target in "${targets[@]}"; do
    fuzz_cargo build "$target"
done
$build_only && exit 0

failed=()
for target in "${targets[@]}"; do
    corpus="$corpus_root/$target"
    mkdir -p "$corpus" "fuzz/seeds/$target" "fuzz/artifacts/$target"
    log=$(mktemp)
    started=$(date +%s)
    # -rss_limit_mb: a parser that allocates far beyond its input is a finding too.
    if fuzz_cargo run "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
    fi
    elapsed=$(($(date +%s) - started))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.*corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
    printf 'fuzz %-20s %s  %4ss  execs=%s cov=%s ft=%s corpus=%s\n' \
        "$target" "$status" "$elapsed" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
    if [ "$status" != ok ]; then
        tail -n 60 "$log" >&2
    fi
    rm -f "$log"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
