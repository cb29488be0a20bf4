"""Streaming benchmark client for `hark serve` (ws://, or wss:// with --cafile).

live:  N concurrent sessions each send a speech programme (JFK + LibriVox clips with
       pauses, 16 kHz s16le) in 100-ms chunks at real-time pace, as a microphone would;
       reports final-turn latency = arrival of the final Turn - moment its last word was
       spoken (wall clock at which the chunk holding that word's end was sent).
idle:  opens K sessions that send nothing and reports the server's RSS before and after
       (from /proc/<pid>/status), i.e. memory per idle session.

Needs the `websockets` package (a dependency of the official `assemblyai` SDK).
"""

import argparse
import asyncio
import importlib.util
import json
import os
import ssl
import sys
import time
import wave

import websockets

# Word errors are scored exactly as bench/speech scores them (its normaliser and edit
# distance), so streaming and batch WER compare.
_spec = importlib.util.spec_from_file_location(
    "speech_bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "speech", "bench.py")
)
speech_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech_bench)


def clip_paths(fixtures):
    """jfk.wav, then the LibriVox clips in name order: the programme's order."""
    libri = os.path.join(fixtures, "librivox")
    return [os.path.join(fixtures, "jfk.wav")] + sorted(
        os.path.join(libri, f) for f in os.listdir(libri) if f.endswith(".wav")
    )


def load_clips(fixtures):
    """The speech clips, each followed by 1.5 s of silence, as PCM byte strings."""
    out = []
    for path in clip_paths(fixtures):
        with wave.open(path) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
            out.append(w.readframes(w.getnframes()) + b"\0\0" * 24000)
    return out


def load_references(fixtures):
    """What each clip says, in the programme's order."""
    refs = []
    for path in clip_paths(fixtures):
        if os.path.basename(path) == "jfk.wav":
            refs.append(speech_bench.JFK_TEXT)
        else:
            with open(path[:-4] + ".txt") as f:
                refs.append(f.read())
    return refs


def programme_order(clips, stream, rotate):
    """All clips in order; with `rotate`, stream i starts at clip i, so streams do not
    pause in step (live speakers do not)."""
    k = stream % len(clips) if rotate else 0
    return clips[k:] + clips[:k]


def programme_for(clips, stream, rotate):
    return b"".join(programme_order(clips, stream, rotate))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def live_session(url, key, programme, delay, results, stream):
    await asyncio.sleep(delay)
    step = 3200  # 100 ms
    sent_at = {}  # audio ms at the end of a chunk -> wall time it was sent
    latencies, finals = [], []
    async with websockets.connect(
        url, additional_headers={"Authorization": key}, max_size=None, ssl=SSL
    ) as ws:
        begin = json.loads(await ws.recv())
        assert begin["type"] == "Begin", begin

        async def reader():
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "Turn" and msg["end_of_turn"] and not msg["turn_is_formatted"]:
                    now = time.monotonic()
                    if msg["words"]:
                        end_ms = msg["words"][-1]["end"]
                        # The chunk that carried the last word's end.
                        chunk_end = ((end_ms + 99) // 100) * 100
                        spoken = sent_at.get(chunk_end)
                        if spoken is not None:
                            latencies.append((now - spoken, msg["transcript"]))
                        finals.append(msg["transcript"])
                elif msg.get("type") == "Termination":
                    return

        task = asyncio.create_task(reader())
        t0 = time.monotonic()
        for i in range(0, len(programme) - step + 1, step):
            due = t0 + (i + step) / 32000
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            await ws.send(programme[i : i + step])
            sent_at[(i + step) // 32] = time.monotonic()
        await ws.send(json.dumps({"type": "Terminate"}))
        await asyncio.wait_for(task, 60)
    results.append((latencies, finals, stream))


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def live(args):
    clips = load_clips(args.fixtures)
    refs = load_references(args.fixtures)
    url = f"{args.url}/v3/ws?sample_rate=16000"
    for n in args.streams:
        results = []
        started = time.monotonic()
        await asyncio.gather(
            *(
                live_session(url, args.key, programme_for(clips, i, args.rotate), 0.7 * i, results, i)
                for i in range(n)
            )
        )
        wall = time.monotonic() - started
        timed = sorted((x for r in results for x in r[0]), reverse=True)
        lat = [t for t, _ in timed]
        turns = sum(len(r[1]) for r in results)
        audio_s = n * sum(len(c) for c in clips) / 32000
        # Every stream's finals against its programme's references.
        results.sort(key=lambda r: r[2])
        errors = words = 0
        for _, texts, stream in results:
            ref = " ".join(programme_order(refs, stream, args.rotate))
            e, w = speech_bench.word_errors(ref, " ".join(texts))
            errors, words = errors + e, words + w
        print(
            f"live streams={n} {'rotated' if args.rotate else 'in-step'} audio={audio_s:.0f}s wall={wall:.1f}s final_turns={turns} "
            f"latency_p50={percentile(lat, 0.5):.3f}s latency_p95={percentile(lat, 0.95):.3f}s "
            f"latency_max={max(lat) if lat else float('nan'):.3f}s wer={100 * errors / max(words, 1):.1f}% ({errors}/{words} words)",
            flush=True,
        )
        if args.show_text and results:
            print("  sample:", " | ".join(results[0][1][:4]))
            print("  slowest:", " | ".join(f"{t:.2f}s {text[:40]}" for t, text in timed[:4]))
            # Stream 0's every final, so two builds or precisions can be compared word
            # for word on the same programme.
            print("  stream 0:", " | ".join(results[0][1]))


async def idle(args):
    before = rss_kib(args.pid)
    url = f"{args.url}/v3/ws?sample_rate=16000"
    sockets = []
    opened = 0
    sem = asyncio.Semaphore(200)

    async def open_one():
        nonlocal opened
        async with sem:
            ws = await websockets.connect(
                url, additional_headers={"Authorization": args.key}, max_size=None,
                ping_interval=None, open_timeout=60, ssl=SSL,
            )
            msg = json.loads(await ws.recv())
            assert msg["type"] == "Begin", msg
            sockets.append(ws)
            opened += 1

    t0 = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(args.sessions)))
    took = time.monotonic() - t0
    await asyncio.sleep(3)
    after = rss_kib(args.pid)
    per = (after - before) * 1024 / max(opened, 1)
    print(
        f"idle sessions={opened} opened_in={took:.1f}s rss_before={before/1024:.1f}MiB "
        f"rss_after={after/1024:.1f}MiB per_session={per/1024:.1f}KiB",
        flush=True,
    )
    for ws in sockets:
        await ws.close()


SSL = None


def main():
    global SSL
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="ws://host:port or wss://host:port")
    p.add_argument("--key", required=True)
    p.add_argument("--cafile", help="trust this certificate (for wss://)")
    sub = p.add_subparsers(dest="mode", required=True)
    lv = sub.add_parser("live")
    lv.add_argument("--fixtures", required=True)
    lv.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    lv.add_argument("--show-text", action="store_true")
    lv.add_argument(
        "--rotate",
        action="store_true",
        help="stream i starts at clip i (otherwise all streams play the same programme 0.7 s apart)",
    )
    idl = sub.add_parser("idle")
    idl.add_argument("--pid", type=int, required=True)
    idl.add_argument("--sessions", type=int, default=10000)
    args = p.parse_args()
    if args.cafile:
        SSL = ssl.create_default_context(cafile=args.cafile)
    asyncio.run(live(args) if args.mode == "live" else idle(args))


if __name__ == "__main__":
    sys.exit(main())
