"""Shared setup for the official-SDK tests against a running Hark server.

These tests are driven by `crates/hark/tests/sdk_python.rs`, which starts `hark serve`
and passes the environment below. Run by hand with a server of your own:

    HARK_BASE_URL=http://127.0.0.1:8080 HARK_API_KEY=... HARK_TEST_JFK_WAV=.../jfk.wav \
        $HARK_VENV/bin/python -m pytest -q tests/py

Missing configuration fails the tests (it never skips them).
"""

import os
import re

import assemblyai as aai
import pytest

REQUIRED_ENV = {
    "HARK_BASE_URL": "the Hark server's origin, e.g. http://127.0.0.1:8080",
    "HARK_API_KEY": "an API key of that server (`hark admin init --json` prints one)",
    "HARK_TEST_JFK_WAV": "the JFK fixture (run scripts/test-fixtures.sh and source its env.sh)",
}

JFK_PHRASE = "ask not what your country can do for you"


def normalise(text):
    """Lower case, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", (text or "").lower()).split())


@pytest.fixture(scope="session")
def env():
    missing = [f"{name} ({why})" for name, why in REQUIRED_ENV.items() if not os.environ.get(name)]
    if missing:
        pytest.fail("missing environment for the SDK tests: " + "; ".join(missing), pytrace=False)
    values = {name: os.environ[name] for name in REQUIRED_ENV}
    if not os.path.isfile(values["HARK_TEST_JFK_WAV"]):
        pytest.fail(
            f"HARK_TEST_JFK_WAV={values['HARK_TEST_JFK_WAV']} does not exist; run scripts/test-fixtures.sh",
            pytrace=False,
        )
    return values


@pytest.fixture(scope="session", autouse=True)
def sdk_settings(env):
    """Points the unmodified SDK at Hark through its public settings."""
    aai.settings.base_url = env["HARK_BASE_URL"]
    aai.settings.api_key = env["HARK_API_KEY"]
    aai.settings.polling_interval = 0.2
    return aai.settings


@pytest.fixture(scope="session")
def jfk_wav(env):
    return env["HARK_TEST_JFK_WAV"]


@pytest.fixture(scope="session")
def jfk_transcript(jfk_wav):
    """One completed transcript of the JFK clip, shared by the read-only tests."""
    transcript = aai.Transcriber().transcribe(jfk_wav, poll_timeout=300)
    assert transcript.status == aai.TranscriptStatus.completed, (
        f"transcript {transcript.id} ended {transcript.status}: {transcript.error}"
    )
    return transcript
