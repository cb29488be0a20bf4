#!/usr/bin/env python3
"""Soak and fault driver for bench/soak/run.sh (read run.sh's header first).

Starts `hark serve` on loopback against the private PostgreSQL and the small data
filesystem that run.sh prepared, drives mixed traffic at a steady rate for SOAK_SECS,
injects three faults (PostgreSQL restart, data disk full, kill -9 mid-upload), prints a
report line every REPORT_SECS, then checks the database and the data directory:

- every transcript it submitted completed exactly once, with the same text as every
  other transcript of the same file, and was billed exactly once;
- every streaming session it opened is closed and billed exactly once;
- upload rows and upload files match one to one, with no `.partial` file left;
- the server never answered 5xx outside a fault, and never panicked.

Exits 1 when a check fails. Standard library, httpx and websockets (the test venv's).
"""

import errno
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

ENV = os.environ
HARK = ENV["SOAK_HARK"]
WORK = Path(ENV["SOAK_WORK"])
DATA = Path(ENV["SOAK_DATA_DIR"])
DB_URL = ENV["SOAK_DB_URL"]
PG_BIN = Path(ENV["SOAK_PG_BIN"])
PG_DATA = ENV["SOAK_PG_DATA"]
PG_PORT = ENV["SOAK_PG_PORT"]
PG_OPTS = ENV["SOAK_PG_OPTS"]
KEY = ENV["SOAK_API_KEY"]
ACCOUNT = ENV["SOAK_ACCOUNT_ID"]
PROJECT = ENV["SOAK_PROJECT_ID"]
EMAIL = ENV["SOAK_EMAIL"]
PASSWORD = ENV["SOAK_PASSWORD"]
SECS = int(ENV.get("SOAK_SECS", "600"))
REPORT_SECS = int(ENV.get("SOAK_REPORT_SECS", "30"))
WARMUP_SECS = min(60, max(15, SECS // 10))
CARDS = sorted(Path(ENV["HARK_TEST_CARDS_DIR"]).glob("*.wav"))
SPEECH_RAW = Path(ENV["HARK_TEST_GOFORWARD_RAW"]).read_bytes()  # 16 kHz s16le mono
SLOW_UPLOAD = Path(ENV["HARK_TEST_JFK_WAV"]).read_bytes()
UPLOADS = DATA / "uploads"

# Steady rates (seconds between operations of each kind).
PERIOD = {
    "transcribe": float(ENV.get("SOAK_TRANSCRIBE_EVERY", "8")),
    "poll": 1.0,
    "list": 2.0,
    "manage": 2.0,
    "stream": float(ENV.get("SOAK_STREAM_EVERY", "15")),
}
KINDS = ["upload", "create", "get", "list", "manage", "stream"]

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def log(msg):
    print(f"[{now():6.1f}s] {msg}", flush=True)


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Failures:
    """Check failures: any entry fails the run."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def add(self, what):
        with self.lock:
            self.items.append(f"{now():.1f}s {what}")
        log(f"CHECK FAILED: {what}")


FAILED = Failures()


class Stats:
    """Every request: (time, kind, outcome, latency ms, detail). Outcome is 'ok',
    'refused' (a clear, expected refusal during a fault) or 'error'."""

    def __init__(self):
        self.rows = []
        self.lock = threading.Lock()
        self.windows = []  # (name, start, end or None)

    def add(self, kind, outcome, ms, detail=""):
        with self.lock:
            self.rows.append((now(), kind, outcome, ms, detail))

    def open_window(self, name):
        with self.lock:
            self.windows.append([name, now(), None])
            return len(self.windows) - 1

    def close_window(self, idx, grace=0.0):
        with self.lock:
            self.windows[idx][2] = now() + grace

    def in_window(self, t):
        return any(s <= t and (e is None or t <= e) for _, s, e in self.windows)

    def snapshot(self):
        with self.lock:
            return list(self.rows)


STATS = Stats()


class Server:
    """The `hark serve` process under test (restartable on the same port)."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = open(WORK / "server.log", "ab")
        self.starts = 0

    def start(self):
        env = dict(ENV)
        env.update(
            {
                # Short leases so the faults' recovery fits the run; defaults otherwise.
                "HARK_JOB_LEASE_MS": ENV.get("SOAK_JOB_LEASE_MS", "10000"),
                "HARK_STREAMING__NODE_LEASE_SECS": ENV.get("SOAK_NODE_LEASE_SECS", "9"),
                "RUST_LOG": ENV.get("RUST_LOG", "info"),
            }
        )
        self.proc = subprocess.Popen(
            [HARK, "--data-dir", str(DATA), "--database-url", DB_URL, "serve",
             "--bind", f"127.0.0.1:{self.port}", "--workers", ENV.get("SOAK_WORKERS", "1")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        self.starts += 1
        started = time.monotonic()
        deadline = started + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {WORK}/server.log")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("server did not become ready within 120 s")

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_mib(self):
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


SERVER = Server()


def psql(sql):
    out = subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", "soak",
         "-At", "-F", "|", "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def api_headers():
    return {"authorization": KEY}


class Tracker:
    """What the driver submitted and what it saw, for the final checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = {}  # transcript id -> (file name, submitted at)
        self.completed = {}  # transcript id -> (file name, text, turnaround s)
        self.job_errors = {}  # transcript id -> error text
        self.sessions = {}  # session id -> finished at (None while live)
        self.slow_partial = None


TRACK = Tracker()
STOP = threading.Event()


def timed(kind, fn, ok_statuses=(200,), refusal=None):
    """Runs one HTTP request, records it; returns the response or None."""
    started = time.monotonic()
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the run
        STATS.add(kind, "error", (time.monotonic() - started) * 1000, f"{type(e).__name__}: {e}")
        return None
    ms = (time.monotonic() - started) * 1000
    if r.status_code in ok_statuses:
        STATS.add(kind, "ok", ms)
        return r
    if refusal and refusal(r):
        STATS.add(kind, "refused", ms, f"{r.status_code} {r.text[:200]}")
        return None
    STATS.add(kind, "error", ms, f"{r.status_code} {r.text[:200]}")
    return None


DISK_FULL = threading.Event()


def is_storage_refusal(r):
    """A clear out-of-space refusal in the API's error envelope."""
    if r.status_code != 507:
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return set(body) == {"error"} and "space" in body["error"]


def every(period, body):
    """Calls body() on a fixed schedule (steady rate, no drift) until STOP."""
    n = 0
    start = time.monotonic()
    while not STOP.is_set():
        body()
        n += 1
        wait = start + n * period - time.monotonic()
        if wait > 0:
            STOP.wait(wait)


def transcribe_loop():
    client = httpx.Client(base_url=SERVER.base, timeout=30)
    i = [0]

    def once():
        f = CARDS[i[0] % len(CARDS)]
        i[0] += 1
        r = timed("upload", lambda: client.post("/v2/upload", headers=api_headers(),
                                                content=f.read_bytes()),
                  refusal=lambda r: DISK_FULL.is_set() and is_storage_refusal(r))
        if r is None:
            return
        url = r.json().get("upload_url", "")
        r = timed("create", lambda: client.post("/v2/transcript", headers=api_headers(),
                                                json={"audio_url": url}))
        if r is None:
            return
        body = r.json()
        if body.get("status") != "queued":
            FAILED.add(f"new transcript not queued: {body}")
            return
        with TRACK.lock:
            TRACK.pending[body["id"]] = (f.name, time.monotonic())

    every(PERIOD["transcribe"], once)


def poll_pending(client):
    with TRACK.lock:
        ids = list(TRACK.pending)
    for tid in ids:
        r = timed("get", lambda: client.get(f"/v2/transcript/{tid}", headers=api_headers()))
        if r is None:
            continue
        body = r.json()
        status = body.get("status")
        if status == "completed":
            with TRACK.lock:
                name, submitted = TRACK.pending.pop(tid)
                TRACK.completed[tid] = (name, body.get("text") or "",
                                        time.monotonic() - submitted)
        elif status == "error":
            with TRACK.lock:
                TRACK.pending.pop(tid, None)
                TRACK.job_errors[tid] = body.get("error")
            FAILED.add(f"transcript {tid} ended in error: {body.get('error')}")


def poll_loop():
    client = httpx.Client(base_url=SERVER.base, timeout=30)
    every(PERIOD["poll"], lambda: poll_pending(client))


def list_loop():
    client = httpx.Client(base_url=SERVER.base, timeout=30)

    def once():
        r = timed("list", lambda: client.get("/v2/transcript", params={"limit": 10},
                                             headers=api_headers()))
        if r is not None and not isinstance(r.json().get("transcripts"), list):
            FAILED.add(f"transcript list without transcripts: {r.text[:200]}")

    every(PERIOD["list"], once)


def manage_loop():
    client = httpx.Client(base_url=SERVER.base, timeout=30)
    token = [None]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    a = f"/api/v1/accounts/{ACCOUNT}"
    routes = [
        "/api/v1/me",
        f"{a}/projects",
        f"{a}/projects/{PROJECT}/keys",
        f"{a}/usage?from={day}&to={tomorrow}&granularity=hour&group_by=product",
        f"{a}/balance",
        f"{a}/projects/{PROJECT}/transcripts?limit=10",
        f"{a}/audit?limit=5",
    ]
    i = [0]

    def once():
        if token[0] is None:
            r = timed("manage", lambda: client.post(
                "/api/v1/auth/login",
                json={"email": EMAIL, "password": PASSWORD, "return_token": True}))
            if r is not None:
                token[0] = r.json()["token"]
            return
        route = routes[i[0] % len(routes)]
        i[0] += 1
        timed("manage", lambda: client.get(route, headers={"authorization": f"Bearer {token[0]}"}))

    every(PERIOD["manage"], once)


FRAME = 3200  # 100 ms of 16 kHz s16le


def stream_once(base_ws):
    """One live session: speech at real time, silence, Terminate; checks the final turn."""
    started = time.monotonic()
    sid = None
    try:
        with ws_connect(f"{base_ws}/v3/ws?sample_rate=16000&encoding=pcm_s16le",
                        additional_headers=api_headers(), open_timeout=15,
                        close_timeout=15) as ws:
            begin = json.loads(ws.recv(timeout=15))
            if begin.get("type") != "Begin":
                raise RuntimeError(f"first message {begin}")
            sid = begin["id"]
            with TRACK.lock:
                TRACK.sessions[sid] = None
            begin_ms = (time.monotonic() - started) * 1000
            audio = SPEECH_RAW + bytes(16000 * 2 * 2)  # the phrase, then 2 s of silence
            finals, messages = [], []
            t = time.monotonic()
            for k in range(0, len(audio), FRAME):
                ws.send(audio[k:k + FRAME])
                t += 0.1
                while True:
                    try:
                        messages.append(json.loads(ws.recv(timeout=max(0.0, t - time.monotonic()))))
                    except TimeoutError:
                        break
            ws.send(json.dumps({"type": "Terminate"}))
            deadline = time.monotonic() + 30
            terminated = False
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                except TimeoutError:
                    break
                messages.append(msg)
                if msg.get("type") == "Termination":
                    terminated = True
                    break
            finals = [m["transcript"] for m in messages
                      if m.get("type") == "Turn" and m.get("end_of_turn")]
            if not terminated:
                raise RuntimeError("no Termination")
            if not any("forward" in f.lower() for f in finals):
                raise RuntimeError(f"no final turn with the phrase: {finals}")
    except Exception as e:  # noqa: BLE001
        STATS.add("stream", "error", (time.monotonic() - started) * 1000,
                  f"{type(e).__name__}: {e}")
        return
    finally:
        if sid is not None:
            with TRACK.lock:
                TRACK.sessions[sid] = time.monotonic()
    STATS.add("stream", "ok", begin_ms)


def stream_loop():
    base_ws = SERVER.base.replace("http://", "ws://")
    every(PERIOD["stream"], lambda: stream_once(base_ws))


# ---------------------------------------------------------------- faults


def probe_until_ok(what, fn, timeout):
    """Retries fn() every 100 ms until it answers 200; returns seconds taken or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if fn().status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    FAILED.add(f"{what}: no success within {timeout} s")
    return None


def restart_postgres():
    log("FAULT postgres restart: pg_ctl restart -m fast")
    w = STATS.open_window("postgres restart")
    t = time.monotonic()
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", PG_DATA, "-m", "fast",
         "-w", "-o", PG_OPTS, "-l", str(WORK / "pg.log"), "restart"],
        check=True, capture_output=True,
    )
    down = time.monotonic() - t
    client = httpx.Client(base_url=SERVER.base, timeout=10)
    # A database-backed request of each kind must succeed again by itself.
    rec_list = probe_until_ok("list after postgres restart",
                              lambda: client.get("/v2/transcript", params={"limit": 1},
                                                 headers=api_headers()), 60)
    rec_ready = probe_until_ok("/ready after postgres restart", lambda: client.get("/ready"), 60)
    STATS.close_window(w, grace=5)
    log(f"postgres was down {down:.1f} s; then the API answered a list after "
        f"{rec_list if rec_list is None else round(rec_list, 2)} s, /ready after "
        f"{rec_ready if rec_ready is None else round(rec_ready, 2)} s")
    return {"pg_restart_s": down, "list_recovered_s": rec_list, "ready_recovered_s": rec_ready}


def partial_files():
    return sorted(UPLOADS.glob("*/*.partial"))


def fill_disk():
    log("FAULT disk full: filling the data filesystem")
    w = STATS.open_window("disk full")
    filler = DATA / "soak-filler"
    written = 0
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = bytes(size)
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    DISK_FULL.set()
    st = os.statvfs(DATA)
    log(f"filled {written / 2**20:.1f} MiB; {st.f_bavail * st.f_frsize} bytes free")
    client = httpx.Client(base_url=SERVER.base, timeout=30)
    before = set(r[0] for r in psql("SELECT id FROM uploads"))
    refusals = []
    for f in CARDS[:3]:
        r = client.post("/v2/upload", headers=api_headers(), content=f.read_bytes())
        refusals.append(r)
        log(f"upload while full: {r.status_code} {r.text}")
        if not is_storage_refusal(r):
            FAILED.add(f"upload on a full disk answered {r.status_code} {r.text[:200]} "
                       f"(expected 507 in the error envelope)")
    time.sleep(float(ENV.get("SOAK_DISK_FULL_HOLD", "10")))  # background uploads meet it too
    if partial_files():
        FAILED.add(f"partial files left while the disk is full: {partial_files()}")
    after = set(r[0] for r in psql("SELECT id FROM uploads"))
    for uid in after - before:
        path = UPLOADS / psql(f"SELECT path FROM uploads WHERE id = '{uid}'")[0][0]
        if not path.is_file() or path.stat().st_size == 0:
            FAILED.add(f"upload row {uid} written while the disk was full has no whole file")
    filler.unlink()
    DISK_FULL.clear()
    log("space returned (filler removed)")
    took = probe_until_ok("upload after space returned",
                          lambda: client.post("/v2/upload", headers=api_headers(),
                                              content=CARDS[0].read_bytes()), 30)
    STATS.close_window(w, grace=2)
    log(f"uploads work again after {took if took is None else round(took, 2)} s")
    return {"disk_refusal": refusals[0].text if refusals else None, "disk_recovered_s": took}


def slow_body():
    chunk = 8192
    for k in range(0, len(SLOW_UPLOAD), chunk):
        yield SLOW_UPLOAD[k:k + chunk]
        time.sleep(0.1)


def kill9_mid_upload():
    log("FAULT kill -9 mid-upload")
    w = STATS.open_window("kill -9")
    done = {}

    def upload():
        try:
            r = httpx.post(f"{SERVER.base}/v2/upload", headers=api_headers(), content=slow_body(),
                           timeout=60)
            done["status"] = r.status_code
        except httpx.HTTPError as e:
            done["error"] = type(e).__name__

    th = threading.Thread(target=upload, daemon=True)
    before = set(partial_files())
    th.start()
    # The slow upload's partial file is the one that stays (the background uploads'
    # finish within milliseconds).
    partial = None
    first_seen = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and partial is None:
        for p in partial_files():
            if p not in before:
                first_seen.setdefault(p, time.monotonic())
        for p, seen in first_seen.items():
            if time.monotonic() - seen > 0.5 and p.exists() and p.stat().st_size > 0:
                partial = p
        time.sleep(0.05)
    if partial is None:
        FAILED.add("the slow upload never showed a .partial file")
    else:
        log(f"slow upload in flight: {partial.name} holds {partial.stat().st_size} bytes")
    time.sleep(0.3)
    killed_at = time.time()
    SERVER.kill9()
    th.join(10)
    log(f"server killed (-9); the slow upload's client saw {done}")
    if "status" in done:
        FAILED.add(f"the slow upload finished before the kill: {done}")
    restart_s = SERVER.start()
    log(f"server restarted and ready in {restart_s:.1f} s")
    if partial is not None:
        uid = partial.name.removesuffix(".partial")
        left = [p for p in partial.parent.iterdir() if p.name.startswith(uid)]
        rows = psql(f"SELECT count(*) FROM uploads WHERE id = '{uid}'")[0][0]
        if left or rows != "0":
            FAILED.add(f"after kill -9 and restart upload {uid} left files {left} and {rows} rows")
        else:
            log(f"upload {uid}: no file and no row after restart")
    # Uploads the background traffic started on the new process may be in flight now;
    # files the killed process was writing are the ones last written before the kill.
    def written_before_kill(p):
        try:
            return p.stat().st_mtime <= killed_at
        except FileNotFoundError:
            return False

    left = [p for p in partial_files() if written_before_kill(p)]
    if left:
        FAILED.add(f"partial files of the killed process after restart: {left}")
    STATS.close_window(w, grace=3)
    return {"restart_ready_s": restart_s}


# ---------------------------------------------------------------- report and checks

RSS = []  # (t, MiB, server start number)


def sampler():
    while not STOP.is_set():
        rss = SERVER.rss_mib()
        if rss is not None:
            RSS.append((now(), rss, SERVER.starts))
        STOP.wait(5)


def report_line(t_from, t_to):
    rows = [r for r in STATS.snapshot() if t_from <= r[0] < t_to]
    errors = sum(1 for r in rows if r[2] == "error")
    refused = sum(1 for r in rows if r[2] == "refused")
    parts = []
    for kind in KINDS:
        lat = [r[3] for r in rows if r[1] == kind and r[2] == "ok"]
        n = sum(1 for r in rows if r[1] == kind)
        if n:
            parts.append(f"{kind} {n} p50 {pct(lat, .5):.0f} p99 {pct(lat, .99):.0f}")
    rss = [m for t, m, _ in RSS if t_from <= t < t_to]
    rss_s = f"{rss[-1]:.0f} MiB" if rss else "-"
    rate = 100 * errors / len(rows) if rows else 0
    log(f"REPORT {len(rows)} req, {errors} err ({rate:.2f}%), {refused} refused | "
        + " | ".join(parts) + f" | ms | RSS {rss_s} | load {os.getloadavg()[0]:.2f}")


def reporter():
    last = 0.0
    while not STOP.wait(REPORT_SECS):
        t = now()
        report_line(last, t)
        last = t


def final_checks(faults):
    rows = STATS.snapshot()
    errors = [r for r in rows if r[2] == "error"]
    outside = [r for r in errors if not STATS.in_window(r[0])]
    print("\n=== summary ===")
    print(f"duration {SECS} s, requests {len(rows)}, errors {len(errors)} "
          f"({100 * len(errors) / max(1, len(rows)):.2f}%), of which outside fault windows "
          f"{len(outside)}, clear refusals during disk full "
          f"{sum(1 for r in rows if r[2] == 'refused')}")
    for name, s, e in STATS.windows:
        inside = [r for r in errors if s <= r[0] <= (e or s)]
        print(f"  fault '{name}' {s:.0f}-{(e or s):.0f} s: {len(inside)} failed requests")
        for r in inside[:5]:
            print(f"      {r[0]:.1f}s {r[1]}: {r[4][:150]}")
    for name, s, e in STATS.windows:
        if name == "disk full":
            leaks = [r for r in errors if s <= r[0] <= (e or s) and r[4].startswith("5") and not r[4].startswith("507 ")]
            if leaks:
                FAILED.add(f"5xx other than a clear 507 while the disk was full: {leaks[:3]}")
    for r in outside[:20]:
        print(f"  UNEXPECTED {r[0]:.1f}s {r[1]}: {r[4][:200]}")
    if outside:
        FAILED.add(f"{len(outside)} requests failed outside the fault windows")
    print("latency (ms) over the whole run, successful requests:")
    for kind in KINDS:
        lat = [r[3] for r in rows if r[1] == kind and r[2] == "ok"]
        print(f"  {kind:7s} n={len(lat):5d} p50 {pct(lat, .5):7.1f} p99 {pct(lat, .99):7.1f}"
              f" max {max(lat) if lat else float('nan'):7.1f}")
    turn = [c[2] for c in TRACK.completed.values()]
    print(f"  job turnaround (create -> seen completed, 1 s polls) n={len(turn)} "
          f"p50 {pct(turn, .5):.2f} s p99 {pct(turn, .99):.2f} s")
    for k, v in faults.items():
        print(f"  {k}: {v}")

    # RSS: the first server process, after warm-up, until the kill.
    first = [(t, m) for t, m, start in RSS if start == 1 and t >= WARMUP_SECS]
    if len(first) >= 4:
        q = max(1, len(first) // 4)
        early = statistics.median(m for _, m in first[:q])
        late = statistics.median(m for _, m in first[-q:])
        print(f"RSS of the first process after warm-up: first quarter median {early:.0f} MiB, "
              f"last quarter median {late:.0f} MiB ({100 * (late - early) / early:+.1f}%), "
              f"max {max(m for _, m in first):.0f} MiB over {len(first)} samples")
        if late > early * 1.10 + 16:
            FAILED.add(f"RSS grew after warm-up: {early:.0f} -> {late:.0f} MiB")
    second = [m for _, m, start in RSS if start > 1]
    if second:
        print(f"RSS of the restarted process: last {second[-1]:.0f} MiB")

    # Database and disk.
    submitted = set(TRACK.completed) | set(TRACK.pending) | set(TRACK.job_errors)
    status = {r[0]: r[1] for r in psql("SELECT id, status FROM transcripts")}
    billed = {}
    for key, n in psql("SELECT idempotency_key, count(*) FROM usage_events GROUP BY idempotency_key"):
        billed[key] = int(n)
    attempts = psql("SELECT attempts, count(*) FROM jobs GROUP BY attempts ORDER BY attempts")
    print(f"transcripts submitted {len(submitted)}, completed {len(TRACK.completed)}, "
          f"still pending {len(TRACK.pending)}, errors {len(TRACK.job_errors)}; "
          f"job attempts: {', '.join(f'{a}x{n}' for a, n in attempts)}")
    for tid in submitted:
        if status.get(tid) != "completed":
            FAILED.add(f"transcript {tid} is {status.get(tid)}")
        if billed.get(f"transcript:{tid}", 0) != 1:
            FAILED.add(f"transcript {tid} billed {billed.get(f'transcript:{tid}', 0)} times")
    by_file = {}
    for name, text, _ in TRACK.completed.values():
        by_file.setdefault(name, set()).add(text)
    for name, texts in sorted(by_file.items()):
        print(f"  {name}: {sorted(texts)}")
        if len(texts) != 1 or "" in texts:
            FAILED.add(f"{name} transcribed differently across runs: {texts}")
    stt_events = sum(n for k, n in billed.items() if k.startswith("transcript:"))
    done = sum(1 for s in status.values() if s == "completed")
    if stt_events != done:
        FAILED.add(f"{stt_events} transcript usage events for {done} completed transcripts")

    sessions = psql("SELECT id, ended_at IS NOT NULL, coalesce(end_reason, '') FROM stream_sessions")
    open_rows = [s for s in sessions if s[1] != "t"]
    reasons = {}
    for _, _, reason in sessions:
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"streaming sessions {len(sessions)} (driver opened {len(TRACK.sessions)}), "
          f"left open {len(open_rows)}; end reasons {reasons}")
    for sid, _, _ in sessions:
        if billed.get(f"stream:{sid}", 0) != 1:
            FAILED.add(f"session {sid} billed {billed.get(f'stream:{sid}', 0)} times")
    for sid in TRACK.sessions:
        if sid not in {s[0] for s in sessions}:
            FAILED.add(f"session {sid} has no row")
    if open_rows:
        FAILED.add(f"{len(open_rows)} sessions never closed")

    # Stored paths are storage keys relative to the uploads directory (absolute ones
    # from before that change still resolve to themselves).
    rows = {UPLOADS / r[0] for r in psql("SELECT path FROM uploads")}
    files = {p for p in UPLOADS.glob("*/*") if p.is_file()}
    print(f"uploads: {len(rows)} rows, {len(files)} files, {len(partial_files())} partial")
    if rows != files:
        FAILED.add(f"upload rows without files {sorted(rows - files)[:5]}, "
                   f"files without rows {sorted(files - rows)[:5]}")
    panics = [line for line in (WORK / "server.log").read_text(errors="replace").splitlines()
              if "panicked" in line]
    if panics:
        FAILED.add(f"the server panicked: {panics[:3]}")


def wait_for_quiet():
    """After the traffic: pending jobs finish, the sessions of the killed process are
    reaped (node lease), all within a bound."""
    client = httpx.Client(base_url=SERVER.base, timeout=30)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        poll_pending(client)
        open_sessions = psql("SELECT count(*) FROM stream_sessions WHERE ended_at IS NULL")[0][0]
        with TRACK.lock:
            pending = len(TRACK.pending)
        if pending == 0 and open_sessions == "0":
            return
        time.sleep(1)
    log("gave up waiting for pending jobs and open sessions")


def main():
    SERVER.start()
    log(f"server ready on {SERVER.base}; soak {SECS} s, warm-up {WARMUP_SECS} s, "
        f"report every {REPORT_SECS} s; load {os.getloadavg()}")
    threads = [threading.Thread(target=f, daemon=True) for f in
               (transcribe_loop, poll_loop, list_loop, manage_loop, stream_loop, sampler, reporter)]
    for th in threads:
        th.start()
    schedule = [(0.30, restart_postgres), (0.55, fill_disk), (0.80, kill9_mid_upload)]
    faults = {}
    for frac, fault in schedule:
        STOP.wait(max(0.0, T0 + frac * SECS - time.monotonic()))
        faults.update(fault())
    STOP.wait(max(0.0, T0 + SECS - time.monotonic()))
    STOP.set()
    for th in threads:
        th.join(60)
    log("traffic stopped; waiting for pending jobs and the killed process's sessions")
    wait_for_quiet()
    try:
        final_checks(faults)
    finally:
        SERVER.stop()
    if FAILED.items:
        print(f"\nFAIL: {len(FAILED.items)} check(s) failed:")
        for item in FAILED.items[:40]:
            print(f"  {item}")
        return 1
    print("\nPASS: every check held")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        SERVER.stop()
