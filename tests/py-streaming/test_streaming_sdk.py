"""The official AssemblyAI Python SDK's v3 StreamingClient, unmodified, against a
running `hark serve --tls-self-signed` (driven by crates/hark/tests/sdk_streaming.rs).

Environment: HARK_STREAM_HOST (host:port), HARK_API_KEY, HARK_TEST_JFK_WAV, and
SSL_CERT_FILE pointing at the server's development certificate.
"""

import os
import re
import time
import wave

import pytest
from assemblyai.streaming.v3 import (
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
)

HOST = os.environ["HARK_STREAM_HOST"]
API_KEY = os.environ["HARK_API_KEY"]
WAV = os.environ["HARK_TEST_JFK_WAV"]
JFK = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)


def words(text):
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / len(r)


def pcm():
    with wave.open(WAV) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def chunks(audio, seconds=None, pace=1.0, chunk_ms=100):
    """100 ms chunks at `pace` times real time, then a second of silence."""
    step = 16 * chunk_ms * 2
    if seconds is not None:
        audio = audio[: int(seconds * 16000) * 2]
    audio = audio + b"\0\0" * 16000
    started = time.monotonic()
    for i in range(0, len(audio) - step + 1, step):
        due = started + (i / 32000) / pace
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield audio[i : i + step]


class Session:
    def __init__(self, options, params):
        self.begins, self.turns, self.terminations, self.errors = [], [], [], []
        self.client = StreamingClient(options)
        self.client.on(StreamingEvents.Begin, lambda c, e: self.begins.append(e))
        self.client.on(StreamingEvents.Turn, lambda c, e: self.turns.append(e))
        self.client.on(StreamingEvents.Termination, lambda c, e: self.terminations.append(e))
        self.client.on(StreamingEvents.Error, lambda c, e: self.errors.append(e))
        self.client.connect(params)

    def finals(self):
        return [t for t in self.turns if t.end_of_turn and t.turn_is_formatted]

    def text(self):
        return " ".join(t.transcript for t in self.finals())


def test_token_session_transcribes_real_speech_and_token_is_single_use():
    minter = StreamingClient(StreamingClientOptions(api_key=API_KEY, api_host=HOST))
    token = minter.create_temporary_token(expires_in_seconds=60, max_session_duration_seconds=600)
    assert token.startswith("hark_tmp_")

    s = Session(
        StreamingClientOptions(token=token, api_host=HOST, terminate_timeout=60),
        StreamingParameters(sample_rate=16000, format_turns=True),
    )
    s.client.stream(chunks(pcm()))
    s.client.disconnect(terminate=True)

    assert not s.errors, s.errors
    assert len(s.begins) == 1 and s.begins[0].id
    assert s.begins[0].expires_at.timestamp() - time.time() <= 600
    assert len(s.terminations) == 1
    assert s.terminations[0].audio_duration_seconds in (11, 12, 13)
    partials = [t for t in s.turns if not t.end_of_turn]
    assert partials, "no partial turns"
    finals = s.finals()
    assert finals, [t.transcript for t in s.turns]
    assert wer(JFK, s.text()) <= 0.15, s.text()
    for t in finals:
        assert t.transcript and t.end_of_turn_confidence >= 0
        starts = [w.start for w in t.words]
        assert starts == sorted(starts)
        assert all(0 <= w.start <= w.end <= 14000 for w in t.words)
        assert all(w.word_is_final for w in t.words)

    # The same token cannot open a second session.
    again = Session(
        StreamingClientOptions(token=token, api_host=HOST),
        StreamingParameters(sample_rate=16000),
    )
    deadline = time.monotonic() + 10
    while not again.errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not again.begins
    assert again.errors and again.errors[0].code == 1008, again.errors
    assert "already been used" in str(again.errors[0])
    again.client.disconnect()


def test_api_key_session_and_unformatted_turns():
    s = Session(
        StreamingClientOptions(api_key=API_KEY, api_host=HOST, terminate_timeout=60),
        StreamingParameters(sample_rate=16000, format_turns=False, min_turn_silence=300),
    )
    s.client.stream(chunks(pcm(), seconds=4.5, pace=1.5))
    s.client.disconnect(terminate=True)
    assert not s.errors, s.errors
    assert len(s.begins) == 1 and len(s.terminations) == 1
    finals = [t for t in s.turns if t.end_of_turn]
    assert finals and all(not t.turn_is_formatted for t in finals)
    text = " ".join(t.transcript for t in finals)
    assert text == text.lower() and "," not in text, text
    assert "americans" in words(text), text


def test_bad_key_is_refused_with_1008():
    s = Session(
        StreamingClientOptions(api_key="hark_key_not_a_real_key", api_host=HOST),
        StreamingParameters(sample_rate=16000),
    )
    deadline = time.monotonic() + 10
    while not s.errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not s.begins
    assert s.errors and s.errors[0].code == 1008, s.errors
    s.client.disconnect()


def test_token_range_is_checked():
    minter = StreamingClient(StreamingClientOptions(api_key=API_KEY, api_host=HOST))
    with pytest.raises(Exception) as err:
        minter.create_temporary_token(expires_in_seconds=601)
    assert "400" in str(err.value)
