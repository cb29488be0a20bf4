#!/usr/bin/env bash
# Starts a single-node Garage (the S3-compatible object store the tests use for
# `[storage] kind = "s3"`) on loopback, unless it already runs, then prints `export`
# lines for the tests (like test-fixtures.sh; `eval "$(bash scripts/garage.sh)"`):
#   HARK_TEST_S3_ENDPOINT, HARK_TEST_S3_REGION, HARK_TEST_S3_BUCKET,
#   HARK_TEST_S3_ACCESS_KEY_ID, HARK_TEST_S3_SECRET_ACCESS_KEY
# Its configuration, metadata, data, log and the test key live in
# ${HARK_GARAGE_DIR:-$HOME/.cache/hark/garage}; the binary comes from
# scripts/install-test-deps.sh (${HARK_TOOLS_DIR:-$HOME/.cache/hark/tools}/bin/garage).
# Ports: S3 API ${HARK_GARAGE_S3_PORT:-3900}, RPC +1, admin +3. `scripts/garage.sh stop`
# stops the node this script started.
set -euo pipefail

DIR="${HARK_GARAGE_DIR:-$HOME/.cache/hark/garage}"
TOOLS="${HARK_TOOLS_DIR:-$HOME/.cache/hark/tools}"
S3_PORT="${HARK_GARAGE_S3_PORT:-3900}"
RPC_PORT=$((S3_PORT + 1))
ADMIN_PORT=$((S3_PORT + 3))
REGION=garage
BUCKET=hark-test
KEY_NAME=hark-test

log() { printf 'garage: %s\n' "$*" >&2; }

GARAGE="$(command -v garage 2>/dev/null || true)"
[ -x "$TOOLS/bin/garage" ] && GARAGE="$TOOLS/bin/garage"
if [ -z "$GARAGE" ]; then
    log "ERROR: no garage binary (run scripts/install-test-deps.sh)"
    exit 1
fi
CONF="$DIR/garage.toml"
cli() { "$GARAGE" -c "$CONF" "$@"; }

running() {
    [ -f "$DIR/garage.pid" ] && kill -0 "$(cat "$DIR/garage.pid")" 2>/dev/null
}

if [ "${1:-}" = stop ]; then
    if running; then
        kill "$(cat "$DIR/garage.pid")"
        log "stopped"
    fi
    rm -f "$DIR/garage.pid"
    exit 0
fi

mkdir -p "$DIR/meta" "$DIR/data"
chmod 700 "$DIR"
exec 9>"$DIR/.lock"
flock 9

if [ ! -f "$CONF" ]; then
    cat >"$CONF" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
    chmod 600 "$CONF"
fi

if ! running; then
    log "starting on 127.0.0.1:$S3_PORT ($DIR)"
    # Without the lock descriptor, or the server would hold the lock for its lifetime.
    nohup "$GARAGE" -c "$CONF" server >"$DIR/garage.log" 2>&1 9>&- &
    echo $! >"$DIR/garage.pid"
fi
for _ in $(seq 1 100); do
    cli status >/dev/null 2>&1 && break
    sleep 0.2
done
cli status >/dev/null 2>&1 || { log "ERROR: garage did not start; see $DIR/garage.log"; exit 1; }

# One node holding every partition: assigned and applied once. The layout is read into
# a variable first: piped straight into `grep -q`, which exits at the first match, the
# CLI could die of SIGPIPE before it finished writing, and under pipefail that made the
# test false, so on some runs no layout was applied and every write then failed with
# "Layout not ready" (seen on a brand-new machine).
layout="$(cli layout show 2>/dev/null || true)"
if [[ "$layout" == *"No nodes currently have a role"* ]]; then
    node="$(cli node id -q 2>/dev/null | cut -d@ -f1)"
    cli layout assign -z dc1 -c 1G "$node" >/dev/null
    cli layout apply --version 1 >/dev/null
    log "layout applied"
fi
# A freshly applied layout takes a moment to be usable: until then writes such as key
# creation fail with "Layout not ready", so each write is retried for up to 20 s.
retry() {
    local out
    for _ in $(seq 1 100); do
        out="$("$@" 2>&1)" && { printf '%s\n' "$out"; return 0; }
        sleep 0.2
    done
    "$@"
}

if [ ! -s "$DIR/key.env" ]; then
    created="$(retry cli key create "$KEY_NAME")"
    id="$(printf '%s\n' "$created" | awk -F':[[:space:]]+' '/Key ID/ {print $2; exit}')"
    secret="$(printf '%s\n' "$created" | awk -F':[[:space:]]+' '/Secret key/ {print $2; exit}')"
    [ -n "$id" ] && [ -n "$secret" ] || { log "ERROR: could not read the new key"; printf '%s\n' "$created" >&2; exit 1; }
    if ! cli bucket info "$BUCKET" >/dev/null 2>&1; then
        retry cli bucket create "$BUCKET" >/dev/null
    fi
    retry cli bucket allow --read --write --owner "$BUCKET" --key "$id" >/dev/null
    umask 077
    printf 'ID=%s\nSECRET=%s\n' "$id" "$secret" >"$DIR/key.env"
    log "bucket $BUCKET and key $id created"
fi
# shellcheck disable=SC1091
. "$DIR/key.env"

cat <<ENV
export HARK_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export HARK_TEST_S3_REGION="$REGION"
export HARK_TEST_S3_BUCKET="$BUCKET"
export HARK_TEST_S3_ACCESS_KEY_ID="$ID"
export HARK_TEST_S3_SECRET_ACCESS_KEY="$SECRET"
ENV
