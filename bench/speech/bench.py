#!/usr/bin/env python3
"""Hark vs faster-whisper on the same clips and the same tiny.en CTranslate2 model.

Prepares clip sets (LibriVox excerpts, jfk.wav, espeak-ng sentences, a ~120-s espeak-ng
passage), runs Hark's release `transcribe` example and faster-whisper (greedy, 2 threads,
float32 and int8) each in its own process, and prints per engine and set: audio seconds,
processing seconds (PCM in memory -> text, model load excluded), RTFx, WER against the known
text, peak RSS, and the Hark/faster-whisper speed ratio.

Usage: bench.py HARK_BINARY MODEL_DIR FIXTURES_DIR [--repeats N]
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is cloudy with a chance of rain in the afternoon.",
    "Our meeting starts at nine in the morning and ends before lunch.",
    "She sells sea shells by the sea shore every summer.",
    "A journey of a thousand miles begins with a single step.",
    "The museum opens early on weekends and closes late on Fridays.",
    "He forgot his umbrella at the station and had to walk home in the rain.",
]

# What jfk.wav says (the fixtures' other clips carry theirs in .txt files beside them).
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n):
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    return str(n)


def normalise(text):
    """The same small Whisper-like English normaliser as the Rust tests."""
    out = []
    for raw in text.lower().replace("-", " ").replace("\u2014", " ").split():
        w = "".join(c for c in raw if c.isalnum() or c == "'").strip("'")
        if not w:
            continue
        w = {"mr": "mister", "mrs": "missus", "dr": "doctor"}.get(w, w)
        if w.isdigit() and int(w) < 100:
            w = spell(int(w))
        out.extend(w.split())
    return out


def word_errors(ref, hyp):
    r, h = normalise(ref), normalise(hyp)
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        cur = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            cur[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return prev[len(h)], len(r)


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def espeak_wav(path, text):
    raw = path + ".22k.wav"
    run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, text])
    # -D: no dither, so the same text gives the same clip in every run (sox dithers when
    # it reduces to 16 bits, and tiny.en reads some of these sentences differently with
    # different dither).
    run(["sox", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", path])
    os.remove(raw)


def duration(path):
    out = subprocess.run(["soxi", "-D", path], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def prepare(fixtures, work):
    sets = {}
    lib = os.path.join(fixtures, "librivox")
    sets["librivox"] = [
        (os.path.join(lib, f), open(os.path.join(lib, f[:-4] + ".txt")).read())
        for f in sorted(os.listdir(lib)) if f.endswith(".wav")
    ]
    sets["jfk"] = [(os.path.join(fixtures, "jfk.wav"), JFK_TEXT)]
    clips = []
    for i, s in enumerate(SENTENCES):
        p = os.path.join(work, f"tts{i}.wav")
        espeak_wav(p, s)
        clips.append((p, s))
    sets["espeak"] = clips
    passage = " ".join(SENTENCES[(i * 3) % len(SENTENCES)] for i in range(40))
    p = os.path.join(work, "tts_long.wav")
    espeak_wav(p, passage)
    sets["espeak-120s"] = [(p, passage)]
    return sets


# What restricts faster-whisper to one instruction set (CTranslate2 honours
# CT2_FORCE_CPU_ISA; its GEMMs come from MKL, which honours MKL_ENABLE_INSTRUCTIONS).
FW_ISA = {
    "avx512": {"CT2_FORCE_CPU_ISA": "AVX512"},
    "avx2": {"CT2_FORCE_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "scalar": {"CT2_FORCE_CPU_ISA": "GENERIC", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}

FW_SCRIPT = r"""
import json, sys, time
from faster_whisper import WhisperModel, decode_audio
model_dir, compute, words = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
files = json.loads(sys.stdin.read())
model = WhisperModel(model_dir, device="cpu", compute_type=compute, cpu_threads=2, num_workers=1)
for f in files:
    audio = decode_audio(f)
    t = time.perf_counter()
    segs, info = model.transcribe(audio, beam_size=1, best_of=1, language="en",
                                  word_timestamps=words, vad_filter=False)
    text = " ".join(s.text.strip() for s in segs)
    ms = (time.perf_counter() - t) * 1000
    print(json.dumps({"file": f, "text": text, "inference_ms": ms}), flush=True)
"""


def timed(cmd, stdin=None, env=None):
    full = ["/usr/bin/time", "-v"] + cmd
    p = subprocess.run(full, input=stdin, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"command failed: {' '.join(cmd[:3])}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    results = {}
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            o = json.loads(line)
            results[o["file"]] = o
    return results, rss


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    hark, model_dir, fixtures = sys.argv[1:4]
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 1
    work = tempfile.mkdtemp(prefix="hark-bench-")
    sets = prepare(fixtures, work)
    files = [p for clips in sets.values() for p, _ in clips]
    # The CPU, its flags and the kernel path, and the load, so figures from different
    # machines and runs are not compared blindly. HARK_BENCH_PATHS="avx512 avx2" runs Hark
    # once per kernel path (HARK_SIMD) in the same run as faster-whisper.
    print("load average at start:", open("/proc/loadavg").read().split()[:3])
    paths = os.environ.get("HARK_BENCH_PATHS", "").split()
    engines = {}
    # Per kernel path: Hark with HARK_SIMD, and faster-whisper restricted to the same
    # instruction set (CTranslate2's CT2_FORCE_CPU_ISA, and MKL_ENABLE_INSTRUCTIONS for
    # the MKL GEMMs it calls), so an AVX2 figure taken on an AVX-512 machine compares
    # like with like. `pairs` says which faster-whisper runs each Hark run is set against.
    pairs = {}
    # Each Hark row names its encoder precision: the engine's default for the path (what
    # `--cpu-info` says it would use) unless HARK_ENCODER_PRECISION is set.
    def default_precision(env):
        line = subprocess.run([hark, "--cpu-info"], capture_output=True, text=True, env=env).stdout
        print(line.strip())
        found = re.search(r"encoder: (\w+)", line)
        return found.group(1) if found else "?"
    for path in paths or [None]:
        tag = "" if path is None else f" [{path}]"
        env = dict(os.environ, **({"HARK_SIMD": path} if path else {}))
        precision = default_precision(env)
        hark_name = f"hark {precision}{tag}"
        engines[hark_name] = (lambda env: lambda: timed([hark, "--model-dir", model_dir, "--threads", "2", "--json", *files], env=env))(env)
        fw_env = dict(os.environ)
        if path in FW_ISA:
            fw_env.update(FW_ISA[path])
        f32, int8 = f"faster-whisper float32{tag}", f"faster-whisper int8{tag}"
        engines[f32] = (lambda env: lambda: timed([sys.executable, "-c", FW_SCRIPT, model_dir, "float32", "0"], json.dumps(files), env=env))(fw_env)
        if path is None or path == paths[0]:
            engines[f"faster-whisper float32 +words{tag}"] = (lambda env: lambda: timed([sys.executable, "-c", FW_SCRIPT, model_dir, "float32", "1"], json.dumps(files), env=env))(fw_env)
        engines[int8] = (lambda env: lambda: timed([sys.executable, "-c", FW_SCRIPT, model_dir, "int8", "0"], json.dumps(files), env=env))(fw_env)
        pairs[hark_name] = (f32, int8)
        # HARK_BENCH_BOTH=1 (HARK_BENCH_INT8=1, its older name) also runs Hark with the
        # other encoder precision on every path, beside the same faster-whisper runs.
        if os.environ.get("HARK_BENCH_INT8") == "1" or os.environ.get("HARK_BENCH_BOTH") == "1":
            other = "f32" if precision == "int8" else "int8"
            other_env = dict(env, HARK_ENCODER_PRECISION=other)
            name = f"hark {other}{tag} (set)"
            engines[name] = (lambda env: lambda: timed([hark, "--model-dir", model_dir, "--threads", "2", "--json", *files], env=env))(other_env)
            pairs[name] = (f32, int8)
    # HARK_BENCH_SHORT=1 also runs Hark with --short-context (short clips over a shorter
    # encoder window; see docs/speech.md), on the first path.
    if os.environ.get("HARK_BENCH_SHORT") == "1":
        first = paths[0] if paths else None
        env = dict(os.environ, **({"HARK_SIMD": first} if first else {}))
        name = "hark --short-context" + ("" if first is None else f" [{first}]")
        engines[name] = (lambda env: lambda: timed([hark, "--model-dir", model_dir, "--threads", "2", "--json", "--short-context", *files], env=env))(env)
        pairs[name] = next(iter(pairs.values()))
    # With --repeats N every engine runs once per round, N rounds, and the fastest time
    # per file is kept: on a shared VM whose speed drifts over minutes, interleaving
    # keeps one engine from getting all the slow minutes.
    measured = {}
    for round_no in range(repeats):
        for name, fn in engines.items():
            res, rss = fn()
            best = measured.get(name)
            if best is None:
                measured[name] = (res, rss)
            else:  # keep the fastest time per file over rounds
                for f, o in res.items():
                    if o["inference_ms"] < best[0][f]["inference_ms"]:
                        best[0][f] = o
                measured[name] = (best[0], max(best[1], rss))
            print(f"# ran {name} (round {round_no + 1} of {repeats})", file=sys.stderr)

    secs_by = {}
    print(f"{'engine':32} {'set':12} {'audio s':>8} {'proc s':>8} {'RTFx':>7} {'WER %':>6} {'RSS MiB':>8}")
    for set_name, clips in sets.items():
        audio = sum(duration(p) for p, _ in clips)
        for name, (res, rss) in measured.items():
            secs = sum(res[p]["inference_ms"] for p, _ in clips) / 1000
            errs = words = 0
            for p, ref in clips:
                e, n = word_errors(ref, res[p]["text"])
                errs, words = errs + e, words + n
            secs_by[(name, set_name)] = secs
            print(f"{name:32} {set_name:12} {audio:8.1f} {secs:8.2f} {audio / secs:7.1f} {100 * errs / max(words, 1):6.1f} {rss:8.0f}")
        for name, (f32, int8) in pairs.items():
            hark_secs = secs_by[(name, set_name)]
            print(f"{'':32} {set_name:12} {name}: / {f32} = {secs_by[(f32, set_name)] / hark_secs:.2f}, / int8 = {secs_by[(int8, set_name)] / hark_secs:.2f} (>1 means Hark is faster)")
    print("load average at end:", open("/proc/loadavg").read().split()[:3])
    print(f"clips in {work}")


if __name__ == "__main__":
    main()
