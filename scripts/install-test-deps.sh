#!/usr/bin/env bash
# Installs what Hark's test suite needs on a fresh Debian machine, skipping whatever is
# already there (safe to run on every CI start; a no-op takes well under a second):
#   - Debian packages: sox (+ all format handlers), ffmpeg, espeak-ng, mold (the linker),
#     chromium and chromium-driver (the dashboard's browser tests, over WebDriver),
#     redis-server when missing (the cluster tests)
#   - a Python venv at ${HARK_VENV:-$HOME/.cache/hark/venv} with assemblyai and pytest
#     (the official SDK tests). faster-whisper is for bench/ only and is not installed.
#   - Node.js and the official Node SDK (npm `assemblyai`, major 4) in
#     ${HARK_NODE_DIR:-$HOME/.cache/hark/node} (the streaming SDK tests), and axe-core
#     (major 4) there too: the browser tests run it on every dashboard page.
#   - Garage (crate `garage`, the S3-compatible store the object-storage tests use),
#     built once with `cargo install` into ${HARK_TOOLS_DIR:-$HOME/.cache/hark/tools}
#     with only the SQLite metadata engine (bundled C libraries, no metrics/K2V/LMDB).
set -euo pipefail

APT_PACKAGES=(sox libsox-fmt-all ffmpeg espeak-ng mold chromium chromium-driver)
PY_PACKAGES=(assemblyai pytest)
VENV="${HARK_VENV:-$HOME/.cache/hark/venv}"
NODE_DIR="${HARK_NODE_DIR:-$HOME/.cache/hark/node}"
NODE_SDK="assemblyai@4"
AXE="axe-core@4"

log() { printf 'install-test-deps: %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "not root and no sudo: apt installs will fail if anything is missing"
    fi
fi

is_installed() {
    # Captured, not piped into `grep -q`: under pipefail a writer killed by SIGPIPE when
    # grep exits early would turn a match into a failure.
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == *"install ok installed"* ]]
}

command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
# The cluster tests share the rate limit through a real Redis.
command -v redis-server >/dev/null 2>&1 || APT_PACKAGES+=(redis-server)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

# python3 -m venv needs ensurepip, which Debian ships separately.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
    log "apt: installed ${missing[*]}"
else
    log "apt: already present: ${APT_PACKAGES[*]}"
fi

for tool in sox soxi ffmpeg espeak-ng node npm chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || { log "ERROR: $tool still missing after install"; exit 1; }
done

if [ ! -x "$VENV/bin/python" ]; then
    log "venv: creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
else
    log "venv: using $VENV"
fi

py_missing=()
for pkg in "${PY_PACKAGES[@]}"; do
    "$VENV/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1 || py_missing+=("$pkg")
done
if [ "${#py_missing[@]}" -gt 0 ]; then
    log "pip: installing ${py_missing[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${py_missing[@]}"
    log "pip: installed ${py_missing[*]}"
else
    log "pip: already present: ${PY_PACKAGES[*]}"
fi

if [ ! -f "$NODE_DIR/node_modules/assemblyai/package.json" ]; then
    log "npm: installing $NODE_SDK into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund "$NODE_SDK"
    log "npm: installed $NODE_SDK"
else
    log "npm: already present: $NODE_SDK in $NODE_DIR"
fi

if [ ! -f "$NODE_DIR/node_modules/axe-core/axe.min.js" ]; then
    log "npm: installing $AXE into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund "$AXE"
    log "npm: installed $AXE"
else
    log "npm: already present: $AXE in $NODE_DIR"
fi

TOOLS="${HARK_TOOLS_DIR:-$HOME/.cache/hark/tools}"
GARAGE_VERSION=2.5.0
if [ ! -x "$TOOLS/bin/garage" ]; then
    log "cargo: installing garage $GARAGE_VERSION into $TOOLS (one-time build)"
    cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
        --features sqlite,bundled-libs --root "$TOOLS" \
        --target-dir "${HARK_TOOLS_BUILD_DIR:-$HOME/.cache/hark/garage-build}"
    log "cargo: installed garage"
else
    log "cargo: already present: garage in $TOOLS"
fi

log "done (venv python: $VENV/bin/python, node modules: $NODE_DIR/node_modules)"
