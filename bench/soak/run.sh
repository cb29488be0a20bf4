#!/usr/bin/env bash
# Soak and faults (issue 13): one `hark serve` on loopback, SOAK_SECS (default 600) of
# mixed traffic at a steady rate (an upload + transcript every 8 s and its polling, a
# transcript list every 2 s, a management call every 2 s, a live /v3/ws session every
# 15 s), a report line every 30 s (requests, error rate, p50/p99 per kind, server RSS),
# and three faults on the way:
#   30 %  PostgreSQL is restarted (pg_ctl restart -m fast): the server must recover by
#         itself; every job completes once, nothing is billed twice;
#   55 %  the data directory's filesystem fills up: uploads are refused with 507 in the
#         error envelope, nothing half-written stays, uploads work when space returns;
#   80 %  the server is killed with kill -9 in the middle of a slow upload, and
#         restarted: no `.partial` file, no file and no row of that upload remain.
# At the end the driver (bench/soak/soak.py) checks the database and the data
# directory: see its docstring. Results of a full run: bench/soak/README.md.
#
# Isolation: a private PostgreSQL (initdb into a temp dir, port SOAK_PG_PORT=55432,
# run as the postgres user), so the machine's shared PostgreSQL is never touched; the
# data directory is a tmpfs of SOAK_DISK_MB (default: the model's size + 48 MiB) mounted
# for the run (needs root), so "disk full" is a real ENOSPC. Everything is removed at exit.
#
# Usage: bench/soak/run.sh        (SOAK_SECS=120 bench/soak/run.sh for a short trial)
# Settings: SOAK_SECS=600 SOAK_REPORT_SECS=30 SOAK_PG_PORT=55432 SOAK_DISK_MB SOAK_WORKERS=1
#   SOAK_TRANSCRIBE_EVERY=8 SOAK_STREAM_EVERY=15 SOAK_JOB_LEASE_MS=10000 SOAK_NODE_LEASE_SECS=9 PROFILE=dev (or release) CARGO_TARGET_DIR
#   SOAK_HARK_BIN (a built `hark` to use instead of building one) SOAK_KEEP=1 (keep the temp dir on failure)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
PROFILE=${PROFILE:-dev}
VENV="${HARK_VENV:-$HOME/.cache/hark/venv}"
[ "$(id -u)" = 0 ] || { echo "run.sh mounts a small tmpfs for the data directory: run as root" >&2; exit 2; }
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
eval "$(bash scripts/test-fixtures.sh)"

if [ -n "${SOAK_HARK_BIN:-}" ]; then
    HARK="$SOAK_HARK_BIN"
else
    cargo build --quiet --profile "$PROFILE" -p hark --bin hark >&2
    case "$PROFILE" in dev) HARK="$CARGO_TARGET_DIR/debug/hark" ;; *) HARK="$CARGO_TARGET_DIR/$PROFILE/hark" ;; esac
fi

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PG_PORT=${SOAK_PG_PORT:-55432}
work="$(mktemp -d /tmp/hark-soak.XXXXXX)"
chmod 755 "$work"
data="$work/data"
pgdata="$work/pg"
mkdir -p "$data" "$pgdata" "$work/pgsock"
touch "$work/pg.log"
chown postgres "$pgdata" "$work/pgsock" "$work/pg.log"
pg_opts="-p $PG_PORT -k $work/pgsock -c listen_addresses=127.0.0.1"
pg() { runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; }

cleanup() {
    status=$?
    pg pg_ctl -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    umount "$data" 2>/dev/null || true
    if [ "$status" = 0 ] || [ -z "${SOAK_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

model_mb=$(du -sm "$HARK_TEST_MODEL_DIR" | cut -f1)
disk_mb=${SOAK_DISK_MB:-$((model_mb + 48))}
mount -t tmpfs -o "size=${disk_mb}m,mode=0700" hark-soak "$data"

pg initdb -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null
pg pg_ctl -D "$pgdata" -o "$pg_opts" -l "$work/pg.log" -w start >/dev/null
pg createdb -h 127.0.0.1 -p "$PG_PORT" -U postgres soak
db_url="postgres://postgres@127.0.0.1:$PG_PORT/soak"

"$HARK" --data-dir "$data" --database-url "$db_url" migrate >/dev/null
"$HARK" --data-dir "$data" --database-url "$db_url" models install "$HARK_TEST_MODEL_DIR" >/dev/null
email=soak@example.com
password="soak-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
init="$("$HARK" --data-dir "$data" --database-url "$db_url" admin init --email "$email" \
    --account-name soak --plan payg --json)"
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$init"; }
account="$(field account_id)"
"$HARK" --data-dir "$data" --database-url "$db_url" admin account credit "$account" \
    --amount 100.00 --note soak >/dev/null
printf '%s' "$password" | "$HARK" --data-dir "$data" --database-url "$db_url" admin user set-password "$email" >/dev/null

echo "soak: $(date -u +%FT%TZ), $(nproc) cores, data dir tmpfs ${disk_mb} MiB (model ${model_mb} MiB), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on :$PG_PORT"
echo "load before: $(uptime)"
SOAK_HARK="$HARK" SOAK_WORK="$work" SOAK_DATA_DIR="$data" SOAK_DB_URL="$db_url" \
SOAK_PG_BIN="$PG_BIN" SOAK_PG_DATA="$pgdata" SOAK_PG_PORT="$PG_PORT" SOAK_PG_OPTS="$pg_opts" \
SOAK_API_KEY="$(field api_key)" SOAK_ACCOUNT_ID="$account" SOAK_PROJECT_ID="$(field project_id)" \
SOAK_EMAIL="$email" SOAK_PASSWORD="$password" \
    "$VENV/bin/python" "$root/bench/soak/soak.py"
echo "load after: $(uptime)"
