#!/usr/bin/env bash
# Sourced by the scripts that build Hark: one shared target directory outside the
# clone, and the mold linker when it is installed (install-test-deps.sh installs it):
# linking the test binaries was the slowest step of an incremental build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hark/target}"
if [ -z "${CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-}" ] && [ "$(uname -m)" = x86_64 ] \
    && command -v mold >/dev/null 2>&1; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
