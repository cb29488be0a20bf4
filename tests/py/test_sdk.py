"""The official AssemblyAI Python SDK, unmodified, against Hark (see conftest.py)."""

import time

import assemblyai as aai
import pytest

from conftest import JFK_PHRASE, normalise

AUTH_ERROR = "Authentication error, API token missing/invalid"


def test_transcribe_file_gives_the_real_transcript(jfk_transcript):
    t = jfk_transcript
    assert t.id
    assert t.error is None
    assert JFK_PHRASE in normalise(t.text), f"unexpected text: {t.text!r}"
    assert "fellow americans" in normalise(t.text), f"unexpected text: {t.text!r}"
    assert t.words, "a completed transcript has words"
    raw = t.json_response
    assert raw["status"] == "completed"
    assert isinstance(raw["audio_duration"], (int, float)) and 10 <= raw["audio_duration"] <= 12
    assert 0.0 < raw["confidence"] <= 1.0
    previous_start = -1
    for w in raw["words"]:
        for field in ("start", "end"):
            assert isinstance(w[field], int) and not isinstance(w[field], bool), f"word {w} has a non-integer {field}"
        assert 0 <= w["start"] <= w["end"] <= 12_000, f"word {w} is out of the audio's range"
        assert w["start"] >= previous_start, "words are in time order"
        previous_start = w["start"]
        assert 0.0 <= w["confidence"] <= 1.0
        assert w["text"].strip()
    assert normalise(" ".join(w.text for w in t.words)) == normalise(t.text)


def test_get_by_id(jfk_transcript):
    fetched = aai.Transcript.get_by_id(jfk_transcript.id)
    assert fetched.id == jfk_transcript.id
    assert fetched.status == aai.TranscriptStatus.completed
    assert fetched.text == jfk_transcript.text
    assert len(fetched.words) == len(jfk_transcript.words)


def test_sentences_and_paragraphs(jfk_transcript):
    sentences = jfk_transcript.get_sentences()
    assert sentences, "at least one sentence"
    assert JFK_PHRASE in normalise(" ".join(s.text for s in sentences))
    for s in sentences:
        assert isinstance(s.start, int) and isinstance(s.end, int) and s.start <= s.end
        assert s.words, f"sentence {s.text!r} has its words"
    assert sum(len(s.words) for s in sentences) == len(jfk_transcript.words)

    paragraphs = jfk_transcript.get_paragraphs()
    assert paragraphs, "at least one paragraph"
    assert normalise(" ".join(p.text for p in paragraphs)) == normalise(jfk_transcript.text)
    assert sum(len(p.words) for p in paragraphs) == len(jfk_transcript.words)


def test_srt_subtitles(jfk_transcript):
    srt = jfk_transcript.export_subtitles_srt()
    lines = srt.strip().splitlines()
    assert lines[0] == "1", f"SRT starts with cue 1: {srt[:80]!r}"
    assert " --> " in lines[1] and lines[1].startswith("00:00:"), f"unexpected cue timing {lines[1]!r}"
    assert "country" in srt.lower()
    assert JFK_PHRASE in normalise(srt.replace("-->", " "))


def test_word_search(jfk_transcript):
    matches = jfk_transcript.word_search(["country"])
    assert len(matches) == 1, f"one match entry for one word: {matches}"
    m = matches[0]
    assert m.text == "country"
    expected = [i for i, w in enumerate(jfk_transcript.words) if normalise(w.text) == "country"]
    assert len(expected) >= 2, f"the JFK clip says 'country' twice: {jfk_transcript.text!r}"
    assert m.count == len(expected)
    assert sorted(m.indexes) == expected
    assert len(m.timestamps) == m.count
    for (start, end), i in zip(sorted(m.timestamps), expected):
        assert (start, end) == (jfk_transcript.words[i].start, jfk_transcript.words[i].end)


def test_transcribe_url_without_speech_models(jfk_wav):
    transcriber = aai.Transcriber()
    upload_url = transcriber.upload_file(jfk_wav)
    assert upload_url.startswith(aai.settings.base_url)
    transcript = transcriber.transcribe(upload_url, poll_timeout=300)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert transcript.audio_url == upload_url
    assert JFK_PHRASE in normalise(transcript.text)
    assert transcript.json_response["speech_model_used"]
    # The SDK leaves speech_models out when it is not configured; Hark used its default.
    assert transcript.json_response.get("speech_models") in (None, [])


def test_list_and_page_through_transcripts(jfk_wav):
    transcriber = aai.Transcriber()
    upload_url = transcriber.upload_file(jfk_wav)
    created = []
    for _ in range(3):
        created.append(transcriber.submit(upload_url).id)
        time.sleep(0.01)  # distinct creation times: the list is newest first

    first = transcriber.list_transcripts(aai.ListTranscriptParameters(limit=2))
    assert first.page_details.limit == 2
    assert first.page_details.result_count == len(first.transcripts) == 2
    assert [t.id for t in first.transcripts] == created[::-1][:2], "newest first"
    for item in first.transcripts:
        assert item.audio_url == upload_url
        assert item.resource_url.endswith(f"/v2/transcript/{item.id}")
        assert item.created
    assert first.page_details.before_id_of_prev_url == first.transcripts[-1].id

    params = aai.ListTranscriptParameters(limit=2)
    seen = []
    page = transcriber.list_transcripts(params)
    for _ in range(100):
        assert len(page.transcripts) <= 2
        seen.extend(t.id for t in page.transcripts)
        before = page.page_details.before_id_of_prev_url
        if before is None:
            break
        params.before_id = before
        page = transcriber.list_transcripts(params)
    else:
        pytest.fail("paging did not end within 100 pages")
    assert len(seen) == len(set(seen)), f"a transcript appeared on two pages: {seen}"
    assert seen[:3] == created[::-1]
    assert len(seen) >= 4, "the earlier tests' transcripts are listed too"


def test_delete_by_id(jfk_wav):
    transcript = aai.Transcriber().transcribe(jfk_wav, poll_timeout=300)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    deleted = aai.Transcript.delete_by_id(transcript.id)
    assert deleted.id == transcript.id
    assert deleted.text == "Deleted by user."
    assert not deleted.words
    again = aai.Transcript.get_by_id(transcript.id)
    assert again.text == "Deleted by user."
    assert again.status == aai.TranscriptStatus.completed


def test_wrong_key_is_an_authentication_error(jfk_wav):
    bad = aai.Transcriber(api_key="not-a-real-key")

    # A local file: the upload is refused and the SDK raises.
    with pytest.raises(aai.TranscriptError) as upload_error:
        bad.transcribe(jfk_wav)
    assert str(upload_error.value).endswith(AUTH_ERROR), str(upload_error.value)
    assert upload_error.value.status_code == 401

    # A URL: creating the transcript is refused.
    with pytest.raises(aai.AssemblyAIError) as create_error:
        bad.transcribe("https://example.com/speech.wav")
    assert str(create_error.value).endswith(AUTH_ERROR), str(create_error.value)
    assert create_error.value.status_code == 401

    # Listing too.
    with pytest.raises(aai.AssemblyAIError) as list_error:
        bad.list_transcripts()
    assert AUTH_ERROR in str(list_error.value)
