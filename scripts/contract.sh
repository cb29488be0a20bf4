#!/usr/bin/env bash
# Contract test of the management API: boots `hark serve` on a temporary data dir
# (SQLite, loopback, a free port), creates an account and its Owner (`hark admin init`,
# then `hark admin user set-password`), signs in for a session token, and runs
# schemathesis with ALL its checks against the server's own /api/v1/openapi.json,
# authenticated as that Owner. Fails on any failure schemathesis reports.
#
#   scripts/contract.sh                    (HARK_CONTRACT_MAX_EXAMPLES, default 25)
#
# `POST /api/v1/auth/logout` ends the session every other operation runs under, so it
# is tested in a second run of its own, after the first (not left out).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${HARK_VENV:-$HOME/.cache/hark/venv}"
MAX_EXAMPLES="${HARK_CONTRACT_MAX_EXAMPLES:-25}"
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh

if ! "$VENV/bin/python" -m pip show -q schemathesis >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check schemathesis
fi
cargo build --quiet --locked -p hark --bin hark
HARK="$CARGO_TARGET_DIR/debug/hark"

data_dir=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap cleanup EXIT

port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
email="contract-owner@example.com"
password="contract-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

"$HARK" --data-dir "$data_dir" admin init --email "$email" --account-name "Contract" --json >/dev/null
printf '%s' "$password" | "$HARK" --data-dir "$data_dir" admin user set-password "$email" >/dev/null

# Generous limits: schemathesis sends thousands of requests and many wrong-password
# calls (re-authentication); the throttles are tested elsewhere.
HARK_RATE_LIMIT__REQUESTS=1000000 "$HARK" --data-dir "$data_dir" serve --bind "127.0.0.1:$port" \
    --public-base-url "$base" >"$data_dir/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$base/health" >/dev/null || { cat "$data_dir/serve.log" >&2; exit 1; }

login() {
    curl -fsS "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$email\",\"password\":\"$password\",\"return_token\":true}" |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

st_run() {
    "$VENV/bin/schemathesis" run "$base/api/v1/openapi.json" \
        --checks all --max-examples "$MAX_EXAMPLES" --seed 1 \
        --request-timeout 10 --workers 1 --no-color "$@"
}

status=0
# Both sessions first: the first run's wrong-password calls use up this address's login
# attempts (the throttle holds), so a sign-in after it would be refused.
token=$(login)
logout_token=$(login)
st_run -H "Authorization: Bearer $token" --exclude-path /api/v1/auth/logout || status=$?
st_run -H "Authorization: Bearer $logout_token" --include-path /api/v1/auth/logout || status=$?
if [ "$status" -ne 0 ]; then
    echo "contract.sh: schemathesis reported failures; server log: " >&2
    tail -n 40 "$data_dir/serve.log" >&2
fi
exit "$status"
