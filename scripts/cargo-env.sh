#!/usr/bin/env bash
# Sourced by the scripts that build Hark: one shared target directory outside the
# clone, and the mold linker when it is installed (install-test-deps.sh installs it):
# linking the test binaries was the slowest step of an incremental build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hark/target}"
# Intermediate artifacts (compiled dependencies, test binaries) live in one build
# directory that every checkout on the machine shares, so a second worktree reuses the
# compiled dependencies instead of compiling them again; its final binaries
# (CARGO_BIN_EXE_*) stay in its own CARGO_TARGET_DIR.
export CARGO_BUILD_BUILD_DIR="${CARGO_BUILD_BUILD_DIR:-$HOME/.cache/hark/build}"
# Cargo names a workspace crate's artifacts by its path *relative* to the workspace, so
# two checkouts would overwrite each other's hark-* artifacts in the shared directory
# (and take the other's as fresh). A codegen-units value derived from this checkout's
# path makes their names differ; dependencies keep a fixed value
# (`[profile.dev.package."*"]` in Cargo.toml) and stay shared.
if [ -z "${CARGO_PROFILE_DEV_CODEGEN_UNITS:-}" ]; then
    export CARGO_PROFILE_DEV_CODEGEN_UNITS=$((200 + $(printf '%s' "$PWD" | cksum | cut -d' ' -f1) % 50))
fi
if [ -z "${CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-}" ] && [ "$(uname -m)" = x86_64 ] \
    && command -v mold >/dev/null 2>&1; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
