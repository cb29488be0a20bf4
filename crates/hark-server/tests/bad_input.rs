//! Bad input gets a clear 4xx in the error envelope, writes nothing, and leaves the
//! server serving: malformed and invalid transcript requests, absurd list queries,
//! oversized bodies, empty and non-audio uploads.

mod common;
mod support;
use common::*;
use hark_core::Plan;
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;

const MAX_UPLOAD: u64 = 4096;
const MAX_JSON: usize = 8192;

async fn server(db: Db) -> TestServer {
    TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.max_upload_bytes = MAX_UPLOAD;
        c.max_json_bytes = MAX_JSON;
    })
    .await
}

/// Invalid `POST /v2/transcript` bodies: 400 with a message naming the problem; no
/// transcript is written; the next good request works.
async fn invalid_transcript_requests(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let u = upload(&ts, &t.key, script(&["Fine."])).await;
    let baseline = list(&ts, &t.key, "").await;
    assert_eq!(baseline["page_details"]["result_count"], 0);
    let with = |extra: Value| {
        let mut body = json!({ "audio_url": u });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("   ".into(), "empty"),
        ("{".into(), "Invalid JSON"),
        ("{\"audio_url\": }".into(), "Invalid JSON"),
        (
            format!("{{\"audio_url\": \"{u}\"}} trailing"),
            "Invalid JSON",
        ),
        ("[]".into(), "JSON object"),
        ("null".into(), "JSON object"),
        ("\"audio_url\"".into(), "JSON object"),
        (json!({}).to_string(), "audio_url"),
        (json!({"punctuate": true}).to_string(), "audio_url"),
        (json!({"audio_url": 5}).to_string(), "invalid type"),
        (json!({"audio_url": null}).to_string(), "invalid type: null"),
        (with(json!({"punctuate": "yes"})), "invalid type"),
        (with(json!({"format_text": 1})), "invalid type"),
        (
            with(json!({"speech_models": "universal-2"})),
            "invalid type",
        ),
        (with(json!({"speech_models": [1, 2]})), "invalid type"),
        (with(json!({"audio_start_from": "10"})), "invalid type"),
        (with(json!({"audio_start_from": 1.5})), "invalid type"),
        (
            with(json!({"custom_spelling": {"from": ["a"], "to": "b"}})),
            "invalid type",
        ),
        (
            with(json!({"custom_spelling": [{"from": ["a"], "to": "b", "x": 1}]})),
            "unknown field",
        ),
        (
            with(json!({"bogus_field": 1})),
            "Unknown field 'bogus_field'",
        ),
        (with(json!({"Audio_Url": "x"})), "Unknown field 'Audio_Url'"),
        (
            with(json!({"speaker_labels": true})),
            "'speaker_labels' is not supported",
        ),
        (
            with(json!({"redact_pii": true})),
            "'redact_pii' is not supported",
        ),
        (
            with(json!({"content_safety_confidence": 50})),
            "'content_safety_confidence' is not supported",
        ),
        (
            with(json!({"keyterms_prompt": ["hark"]})),
            "'keyterms_prompt' is not supported",
        ),
        (
            with(json!({"speakers_expected": 2})),
            "'speakers_expected' is not supported",
        ),
        (
            with(json!({"audio_start_from": -1})),
            "audio_start_from must not be negative",
        ),
        (
            with(json!({"audio_end_at": -5})),
            "audio_end_at must not be negative",
        ),
        (
            with(json!({"audio_start_from": 500, "audio_end_at": 100})),
            "greater",
        ),
        (
            with(json!({"language_confidence_threshold": 1.5})),
            "between 0 and 1",
        ),
        (
            with(json!({"language_confidence_threshold": -0.1})),
            "between 0 and 1",
        ),
        (with(json!({"temperature": 3})), "between 0 and 1"),
        (with(json!({"speech_models": []})), "at least one"),
        (
            with(json!({"speech_models": ["no-such-model"]})),
            "None of the requested speech_models",
        ),
        (
            with(json!({"language_code": "e n"})),
            "not a valid language code",
        ),
        (
            with(json!({"language_detection": true, "language_code": "en"})),
            "language_detection",
        ),
        (
            with(json!({"webhook_url": "ftp://example.com/hook"})),
            "http or https",
        ),
        (
            with(json!({"webhook_url": "not a url"})),
            "webhook_url is not a valid URL",
        ),
        (
            with(json!({"webhook_auth_header_name": "X-Auth"})),
            "together",
        ),
        (
            with(json!({"webhook_auth_header_name": "bad name", "webhook_auth_header_value": "v"})),
            "not a valid header name",
        ),
        (
            json!({"audio_url": ""}).to_string(),
            "audio_url must not be empty",
        ),
        (
            json!({"audio_url": "not a url"}).to_string(),
            "audio_url is not a valid URL",
        ),
        (
            json!({"audio_url": "ftp://example.com/a.wav"}).to_string(),
            "http or https",
        ),
        (
            json!({"audio_url": "file:///etc/passwd"}).to_string(),
            "http or https",
        ),
    ];
    for (body, needle) in &cases {
        let r = send(
            ts.http
                .post(ts.url("/v2/transcript"))
                .header("authorization", &t.key)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        let msg = r.error(400);
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "body {body}: message '{msg}' should mention '{needle}'"
        );
        // No row written; the server still answers a good request.
        assert_eq!(list(&ts, &t.key, "").await, baseline, "after {body}");
    }
    // The deprecated singular speech_model: AssemblyAI's exact text.
    let r = post_json(
        &ts,
        &t.key,
        "/v2/transcript",
        &json!({"audio_url": u, "speech_model": "best"}),
    )
    .await;
    r.exact_error(
        400,
        "speech_model is deprecated. Use \"speech_models\" instead. See documentation: https://www.assemblyai.com/docs/pre-recorded-audio/select-the-speech-model",
    );
    // Documented-but-unsupported features switched off are accepted (SDKs send them).
    let ok = create(
        &ts,
        &t.key,
        json!({"audio_url": u, "speaker_labels": false, "redact_pii": false,
               "speech_model": null, "keyterms_prompt": [], "punctuate": true}),
    )
    .await;
    assert_eq!(ok["status"], "queued");
    let done = wait_done(&ts, &t.key, ok["id"].as_str().unwrap()).await;
    assert_eq!(done["text"], "Fine.");
    assert_eq!(
        list(&ts, &t.key, "").await["page_details"]["result_count"],
        1
    );
    ts.stop().await;
}

/// Absurd list queries and view parameters: 400 envelopes.
async fn absurd_query_values(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let id = transcribe(&ts, &t.key, &["One", "two."]).await;
    wait_done(&ts, &t.key, &id).await;
    let baseline = list(&ts, &t.key, "").await;
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("status=bogus", "status"),
        ("status=COMPLETED%20", "status"),
        ("created_on=2024-13-45", "created_on"),
        ("created_on=yesterday", "created_on"),
        ("created_on=2024-02-30", "created_on"),
        ("before_id=not-a-uuid", "before_id"),
        ("after_id=1234", "after_id"),
        ("throttled_only=maybe", "throttled_only"),
    ] {
        let r = get(&ts, &t.key, &format!("/v2/transcript?{query}")).await;
        let msg = r.error(400);
        assert!(msg.contains(needle), "{query}: '{msg}'");
        assert_eq!(list(&ts, &t.key, "").await, baseline);
    }
    // A well-formed id that is not ours as a cursor: an empty page, not an error.
    let stranger = uuid::Uuid::new_v4();
    let r = list(&ts, &t.key, &format!("before_id={stranger}")).await;
    assert_eq!(r["page_details"]["result_count"], 0);

    for path in [
        format!("/v2/transcript/{id}/srt?chars_per_caption=0"),
        format!("/v2/transcript/{id}/vtt?chars_per_caption=abc"),
        format!("/v2/transcript/{id}/vtt?chars_per_caption=-3"),
        format!("/v2/transcript/{id}/word-search"),
        format!("/v2/transcript/{id}/word-search?words=,,"),
        format!("/v2/transcript/{id}/word-search?words=a%20b%20c%20d%20e%20f"),
    ] {
        let r = get(&ts, &t.key, &path).await;
        let msg = r.error(400);
        assert!(!msg.is_empty(), "{path}");
    }
    for path in [
        "/v2/transcript/not-a-uuid".to_string(),
        "/v2/transcript/not-a-uuid/sentences".to_string(),
        format!("/v2/transcript/{}", uuid::Uuid::new_v4()),
    ] {
        get(&ts, &t.key, &path)
            .await
            .exact_error(400, NOT_FOUND_TRANSCRIPT);
    }
    delete(&ts, &t.key, "/v2/transcript/%00")
        .await
        .exact_error(400, NOT_FOUND_TRANSCRIPT);
    assert_eq!(list(&ts, &t.key, "").await, baseline);
    ts.stop().await;
}

/// Oversized and empty bodies, and content that is not audio.
async fn oversized_empty_and_non_audio(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let uploads = uploads_dir(&ts);
    let baseline = list(&ts, &t.key, "").await;

    // Oversized upload, with a length and chunked: 413, no file left behind.
    let mut big = script(&["big"]);
    big.resize(MAX_UPLOAD as usize + 1, b'x');
    let r = post_raw(&ts, &t.key, "/v2/upload", big).await;
    let msg = r.error(413);
    assert!(msg.contains(&MAX_UPLOAD.to_string()), "{msg}");
    assert_eq!(files_under(&uploads), Vec::<std::path::PathBuf>::new());
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(script(&["big"]))];
    chunks.extend((0..3).map(|_| Ok(vec![b'y'; 2000])));
    let r = send(
        ts.http
            .post(ts.url("/v2/upload"))
            .header("authorization", &t.key)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    r.error(413);
    assert_eq!(files_under(&uploads), Vec::<std::path::PathBuf>::new());
    // Exactly at the limit is fine.
    let mut fits = script(&["Fits."]);
    fits.resize(MAX_UPLOAD as usize, b'\n');
    let fits_url = upload(&ts, &t.key, fits).await;
    assert_eq!(files_under(&uploads).len(), 1);

    // Empty upload: 400, nothing stored.
    let r = post_raw(&ts, &t.key, "/v2/upload", Vec::new()).await;
    let msg = r.error(400);
    assert!(msg.to_lowercase().contains("empty"), "{msg}");
    // Recognisable non-audio (text) is refused at upload time.
    let r = post_raw(
        &ts,
        &t.key,
        "/v2/upload",
        b"Dear diary, this is plainly a text file and not audio at all.\n".to_vec(),
    )
    .await;
    let msg = r.error(400);
    assert!(
        msg.starts_with("File does not appear to contain audio"),
        "{msg}"
    );
    assert_eq!(files_under(&uploads).len(), 1, "nothing stored");

    // Oversized JSON body: 413 envelope, with and without a length; nothing written.
    let huge = json!({"audio_url": fits_url, "padding": "p".repeat(MAX_JSON)}).to_string();
    let r = post_raw(&ts, &t.key, "/v2/transcript", huge.clone().into_bytes()).await;
    r.error(413);
    let halves: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .as_bytes()
        .chunks(MAX_JSON / 2)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = send(
        ts.http
            .post(ts.url("/v2/transcript"))
            .header("authorization", &t.key)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(halves))),
    )
    .await;
    r.error(413);
    assert_eq!(list(&ts, &t.key, "").await, baseline);

    // Unrecognised binary that is not audio: accepted at upload, then the transcript
    // ends in AssemblyAI's "does not contain audio" error.
    let junk = upload(
        &ts,
        &t.key,
        vec![0x00, 0xC3, 0x28, 0xA0, 0xA1, 0xFF, 0xFE, 0x80, 0x81, 0x01],
    )
    .await;
    let created = create(&ts, &t.key, json!({ "audio_url": junk })).await;
    let failed = wait_done(&ts, &t.key, created["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "error", "{failed}");
    let err = failed["error"].as_str().unwrap();
    assert!(
        err.starts_with("File does not appear to contain audio."),
        "{err}"
    );
    assert_eq!(failed["text"], Value::Null);
    assert_eq!(failed["words"], Value::Null);

    // The server still serves: a good transcript goes through.
    let good = create(&ts, &t.key, json!({ "audio_url": fits_url })).await;
    let done = wait_done(&ts, &t.key, good["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "Fits.");
    assert_eq!(
        list(&ts, &t.key, "").await["page_details"]["result_count"],
        2
    );
    ts.stop().await;
}

/// A large upload with a wrong key gets its 401 answer, not a reset connection: the
/// server reads the refused body before it answers.
async fn refused_large_upload_gets_its_answer(db: Db) {
    let ts = server(db).await;
    let body = vec![7u8; 4 << 20];
    for _ in 0..5 {
        let r = ts
            .http
            .post(ts.url("/v2/upload"))
            .header("authorization", "hark_key_wrong")
            .body(body.clone())
            .send()
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(r.status(), 401);
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(
            v["error"],
            "Authentication error, API token missing/invalid"
        );
    }
    ts.stop().await;
}

both_databases!(
    invalid_transcript_requests,
    absurd_query_values,
    oversized_empty_and_non_audio,
    refused_large_upload_gets_its_answer
);
