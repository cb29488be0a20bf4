//! Every AssemblyAI-compatible route over real HTTP, on SQLite and PostgreSQL:
//! uploads (any content type, chunked), create, get, list with paging, delete, the
//! derived views, header handling and the 404 envelope.

mod common;
mod support;
use common::*;
use hark_core::Plan;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::*;

async fn server(db: Db) -> TestServer {
    TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await
}

/// Uploads in three ways, creates, polls, views, deletes.
async fn upload_create_get_views_delete(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let project_dir = uploads_dir(&ts).join(t.project.to_string());

    // No content type at all (what the Python SDK sends).
    let plain = upload(&ts, &t.key, script(&["Plain", "upload."])).await;
    // application/octet-stream (what the JS SDK sends).
    let r = send(
        ts.http
            .post(ts.url("/v2/upload"))
            .header("authorization", &t.key)
            .header("content-type", "application/octet-stream")
            .body(script(&["Octet", "stream."])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let octet = r.json()["upload_url"].as_str().unwrap().to_string();
    // Chunked transfer encoding: a streamed body with no length.
    let bytes = script(&[
        "The", "quick", "brown", "fox.", "It", "jumps", "over", "the", "dog.",
    ]);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
    let r = send(
        ts.http
            .post(ts.url("/v2/upload"))
            .header("authorization", &t.key)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let chunked = r.json()["upload_url"].as_str().unwrap().to_string();

    for url in [&plain, &octet, &chunked] {
        assert!(
            url.starts_with(&format!("{}/v2/upload/", ts.base)),
            "upload URL on this server: {url}"
        );
        let on_disk = project_dir.join(upload_id(url));
        assert!(on_disk.is_file(), "{} stored", on_disk.display());
    }
    assert_eq!(
        std::fs::read(project_dir.join(upload_id(&chunked))).unwrap(),
        bytes,
        "chunked upload stored byte for byte"
    );

    // Create: 200 with the full object.
    let created = create(&ts, &t.key, json!({ "audio_url": chunked })).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id is a uuid: {id}");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["audio_url"], chunked.as_str());
    assert_eq!(created["speech_model"], Value::Null);
    assert_eq!(created["speech_models"], Value::Null);
    assert_eq!(created["webhook_auth"], false);
    assert_eq!(created["webhook_url"], Value::Null);
    assert_eq!(created["webhook_auth_header_name"], Value::Null);
    assert_eq!(created["text"], Value::Null);
    assert_eq!(created["words"], Value::Null);
    assert_eq!(created["language_model"], "assemblyai_default");
    assert_eq!(created["acoustic_model"], "assemblyai_default");
    for flag in ["auto_highlights", "redact_pii", "summarization"] {
        assert_eq!(created[flag], false, "{flag}");
    }
    for key in ["language_confidence_threshold", "language_confidence"] {
        assert!(created.get(key).is_some(), "{key} present");
    }
    assert!(created.get("webhook_auth_header_value").is_none());

    // Get until completed.
    let done = wait_done(&ts, &t.key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["text"], "The quick brown fox. It jumps over the dog.");
    assert_eq!(done["speech_model"], Value::Null);
    assert_eq!(done["speech_model_used"], "whisper-tiny.en");
    assert!(done["audio_duration"].is_u64(), "integer seconds: {done}");
    assert_eq!(done["audio_duration"], 4); // last word ends at 3500 ms, rounded
    assert!(done["confidence"].is_f64());
    let words = done["words"].as_array().unwrap();
    assert_eq!(words.len(), 9);
    for (i, w) in words.iter().enumerate() {
        assert!(w["start"].is_u64() && w["end"].is_u64(), "int ms: {w}");
        assert_eq!(w["start"], (i * 400) as u64);
        assert_eq!(w["end"], (i * 400 + 300) as u64);
        let c = w["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        assert!(w.get("speaker").is_some() && w["speaker"].is_null(), "{w}");
    }
    assert_eq!(words[3]["text"], "fox.");

    // Derived views.
    let s = get(&ts, &t.key, &format!("/v2/transcript/{id}/sentences")).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let s = s.json();
    assert_eq!(s["id"], id.as_str());
    let sentences = s["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 2, "{s}");
    assert_eq!(sentences[0]["text"], "The quick brown fox.");
    assert_eq!(sentences[1]["text"], "It jumps over the dog.");
    assert_eq!(sentences[1]["start"], 1600);
    assert_eq!(sentences[1]["end"], 3500);
    assert_eq!(sentences[0]["words"].as_array().unwrap().len(), 4);
    assert!(s["audio_duration"].is_number() && s["confidence"].is_number());

    let p = get(&ts, &t.key, &format!("/v2/transcript/{id}/paragraphs")).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let p = p.json();
    assert_eq!(p["id"], id.as_str());
    let paragraphs = p["paragraphs"].as_array().unwrap();
    assert!(!paragraphs.is_empty());
    let joined: Vec<&str> = paragraphs
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        joined.join(" "),
        "The quick brown fox. It jumps over the dog."
    );

    let srt = get(&ts, &t.key, &format!("/v2/transcript/{id}/srt")).await;
    assert_eq!(srt.status, 200, "{}", srt.text);
    assert!(srt.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(srt.text.starts_with("1\n00:00:00,000 --> "), "{}", srt.text);
    assert!(srt.text.contains("quick"), "{}", srt.text);

    let vtt = get(&ts, &t.key, &format!("/v2/transcript/{id}/vtt")).await;
    assert_eq!(vtt.status, 200, "{}", vtt.text);
    assert!(vtt.text.starts_with("WEBVTT"), "{}", vtt.text);
    assert!(vtt.text.contains("00:00:00.000 --> "), "{}", vtt.text);

    // chars_per_caption splits captions: more cues, none longer than asked
    // (a single word longer than the limit is the only exception).
    let cues = |text: &str| text.matches(" --> ").count();
    let narrow = get(
        &ts,
        &t.key,
        &format!("/v2/transcript/{id}/vtt?chars_per_caption=10"),
    )
    .await;
    assert_eq!(narrow.status, 200, "{}", narrow.text);
    assert!(
        cues(&narrow.text) > cues(&vtt.text),
        "narrow:\n{}\nwide:\n{}",
        narrow.text,
        vtt.text
    );
    for line in narrow.text.lines() {
        if line.is_empty() || line.contains("-->") || line == "WEBVTT" {
            continue;
        }
        assert!(
            line.len() <= 10 || !line.contains(' '),
            "caption '{line}' longer than 10 chars"
        );
    }
    let narrow_srt = get(
        &ts,
        &t.key,
        &format!("/v2/transcript/{id}/srt?chars_per_caption=10"),
    )
    .await;
    assert_eq!(narrow_srt.status, 200);
    assert!(cues(&narrow_srt.text) > cues(&srt.text));

    let ws = get(
        &ts,
        &t.key,
        &format!("/v2/transcript/{id}/word-search?words=the,fox,absent"),
    )
    .await;
    assert_eq!(ws.status, 200, "{}", ws.text);
    let ws = ws.json();
    assert_eq!(ws["id"], id.as_str());
    let matches = ws["matches"].as_array().unwrap();
    let the = matches
        .iter()
        .find(|m| m["text"] == "the")
        .expect("'the' found");
    assert_eq!(the["count"], 2, "{ws}");
    assert_eq!(the["indexes"], json!([0, 7]));
    assert_eq!(the["timestamps"], json!([[0, 300], [2800, 3100]]));
    let fox = matches.iter().find(|m| m["text"] == "fox").expect("fox");
    assert_eq!(fox["count"], 1);
    assert_eq!(fox["indexes"], json!([3]));
    assert!(matches
        .iter()
        .all(|m| m["text"] != "absent" || m["count"] == 0));
    assert_eq!(ws["total_count"], 3);

    // Delete: scrubbed, status kept, still listed, uploaded file gone from disk.
    let upload_file = project_dir.join(upload_id(&chunked));
    assert!(upload_file.is_file());
    let d = delete(&ts, &t.key, &format!("/v2/transcript/{id}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    let d = d.json();
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["status"], "completed");
    assert_eq!(d["text"], "Deleted by user.");
    assert_eq!(d["audio_url"], "http://deleted_by_user");
    assert_eq!(d["words"], Value::Null);
    assert_eq!(d["confidence"], Value::Null);
    assert_eq!(d["audio_duration"], 4);
    assert!(!upload_file.exists(), "uploaded file deleted from disk");
    assert!(
        project_dir.join(upload_id(&plain)).is_file(),
        "other uploads untouched"
    );
    let again = get(&ts, &t.key, &format!("/v2/transcript/{id}")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["text"], "Deleted by user.");
    assert_eq!(again.json()["status"], "completed");
    let l = list(&ts, &t.key, "").await;
    let item = l["transcripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .expect("deleted transcript still listed")
        .clone();
    assert_eq!(item["audio_url"], "http://deleted_by_user");
    assert_eq!(item["status"], "completed");
    // Views of a deleted transcript no longer reveal its words.
    let s = get(&ts, &t.key, &format!("/v2/transcript/{id}/sentences")).await;
    s.error(400);
    assert!(!s.text.contains("quick"));
    // The deleted upload can no longer be transcribed.
    let r = post_json(
        &ts,
        &t.key,
        "/v2/transcript",
        &json!({ "audio_url": chunked }),
    )
    .await;
    r.exact_error(403, UPLOAD_FORBIDDEN);
    ts.stop().await;
}

/// Listing: defaults, limits, filters, timestamps, order and paging links.
async fn list_filters_and_paging(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let empty = list(&ts, &t.key, "").await;
    assert_eq!(empty["page_details"]["limit"], 10);
    assert_eq!(empty["page_details"]["result_count"], 0);
    assert_eq!(empty["transcripts"], json!([]));
    assert_eq!(empty["page_details"]["prev_url"], Value::Null);
    assert_eq!(empty["page_details"]["next_url"], Value::Null);

    let mut created = Vec::new(); // oldest first
    for i in 0..4 {
        let word = format!("word{i}");
        created.push(transcribe(&ts, &t.key, &[&word, "end."]).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in &created {
        wait_done(&ts, &t.key, id).await;
    }
    // One transcript that ends in error (not audio), to filter on.
    let junk = upload(&ts, &t.key, vec![0x00, 0xC3, 0x28, 0xFF, 0xFE, 0x01, 0x02]).await;
    let bad = create(&ts, &t.key, json!({ "audio_url": junk })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_done(&ts, &t.key, &bad).await["status"], "error");

    let all = list(&ts, &t.key, "").await;
    let pd = &all["page_details"];
    assert_eq!(pd["limit"], 10);
    assert_eq!(pd["result_count"], 5);
    let mut newest_first: Vec<String> = created.iter().rev().cloned().collect();
    newest_first.insert(0, bad.clone());
    assert_eq!(ids(&all), newest_first, "newest first");
    assert_eq!(
        pd["current_url"],
        format!("{}/v2/transcript?limit=10", ts.base)
    );
    let items = all["transcripts"].as_array().unwrap();
    let mut previous_created = String::from("9999");
    for item in items {
        let id = item["id"].as_str().unwrap();
        assert_eq!(
            item["resource_url"],
            format!("{}/v2/transcript/{id}", ts.base)
        );
        let created_at = item["created"].as_str().unwrap();
        assert!(is_aai_timestamp(created_at), "created: {created_at}");
        assert!(created_at <= previous_created.as_str(), "newest first");
        previous_created = created_at.to_string();
        let completed = item["completed"].as_str().expect("completed set");
        assert!(is_aai_timestamp(completed), "completed: {completed}");
        assert!(completed >= created_at);
        assert!(item["audio_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/v2/upload/", ts.base)));
        assert!(item.get("error").is_some());
    }
    assert_eq!(items[0]["status"], "error");
    assert!(items[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("File does not appear to contain audio"));
    assert_eq!(items[1]["error"], Value::Null);
    // resource_url works when fetched verbatim.
    let r = send(
        ts.http
            .get(items[1]["resource_url"].as_str().unwrap())
            .header("authorization", &t.key),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], items[1]["id"]);

    // limit bounds.
    let one = list(&ts, &t.key, "limit=1").await;
    assert_eq!(ids(&one), vec![bad.clone()]);
    assert_eq!(one["page_details"]["limit"], 1);
    let max = list(&ts, &t.key, "limit=200").await;
    assert_eq!(max["page_details"]["result_count"], 5);
    assert_eq!(max["page_details"]["limit"], 200);

    // status filter.
    let done = list(&ts, &t.key, "status=completed").await;
    assert_eq!(
        ids(&done),
        created.iter().rev().cloned().collect::<Vec<_>>()
    );
    let errored = list(&ts, &t.key, "status=error").await;
    assert_eq!(ids(&errored), vec![bad.clone()]);
    assert_eq!(
        list(&ts, &t.key, "status=queued").await["page_details"]["result_count"],
        0
    );
    // The status filter is kept in paging links.
    assert!(done["page_details"]["prev_url"]
        .as_str()
        .unwrap()
        .contains("status=completed"));

    // created_on: today (UTC) has them all, another day none.
    let today = items[0]["created"].as_str().unwrap()[..10].to_string();
    let on = list(&ts, &t.key, &format!("created_on={today}")).await;
    assert_eq!(on["page_details"]["result_count"], 5);
    let off = list(&ts, &t.key, "created_on=2001-02-03").await;
    assert_eq!(off["page_details"]["result_count"], 0);

    // Paging: limit=2 over [bad, c3, c2, c1, c0]; follow the links verbatim.
    let follow = |url: &str| {
        let url = url.to_string();
        let ts = &ts;
        let key = t.key.clone();
        async move {
            assert!(
                url.starts_with(&ts.base),
                "absolute link on this server: {url}"
            );
            let r = send(ts.http.get(&url).header("authorization", key)).await;
            assert_eq!(r.status, 200, "{url}: {}", r.text);
            r.json()
        }
    };
    let page1 = list(&ts, &t.key, "limit=2").await;
    assert_eq!(ids(&page1), vec![bad.clone(), created[3].clone()]);
    let prev = page1["page_details"]["prev_url"].as_str().unwrap();
    assert_eq!(
        prev,
        format!("{}/v2/transcript?limit=2&before_id={}", ts.base, created[3])
    );
    assert_eq!(
        page1["page_details"]["next_url"].as_str().unwrap(),
        format!("{}/v2/transcript?limit=2&after_id={bad}", ts.base)
    );
    let page2 = follow(prev).await;
    assert_eq!(ids(&page2), vec![created[2].clone(), created[1].clone()]);
    assert_eq!(
        page2["page_details"]["current_url"].as_str().unwrap(),
        prev,
        "current_url is the URL fetched"
    );
    let page3 = follow(page2["page_details"]["prev_url"].as_str().unwrap()).await;
    assert_eq!(ids(&page3), vec![created[0].clone()]);
    let page4 = follow(page3["page_details"]["prev_url"].as_str().unwrap()).await;
    assert_eq!(page4["page_details"]["result_count"], 0);
    assert_eq!(page4["page_details"]["prev_url"], Value::Null);
    // And forward again: next_url leads to newer transcripts.
    let back = follow(page3["page_details"]["next_url"].as_str().unwrap()).await;
    assert_eq!(ids(&back), vec![created[2].clone(), created[1].clone()]);
    let back = follow(back["page_details"]["next_url"].as_str().unwrap()).await;
    assert_eq!(ids(&back), vec![bad.clone(), created[3].clone()]);
    let newest = follow(page1["page_details"]["next_url"].as_str().unwrap()).await;
    assert_eq!(newest["page_details"]["result_count"], 0);
    // Both cursors: a window.
    let window = list(
        &ts,
        &t.key,
        &format!("before_id={}&after_id={}", created[3], created[0]),
    )
    .await;
    assert_eq!(ids(&window), vec![created[2].clone(), created[1].clone()]);
    // An inconsistent cursor pair is refused.
    let r = get(
        &ts,
        &t.key,
        &format!(
            "/v2/transcript?before_id={}&after_id={}",
            created[0], created[3]
        ),
    )
    .await;
    assert_eq!(
        r.error(400),
        "'after_id' must be a newer transcript than 'before_id'"
    );
    ts.stop().await;
}

/// Header handling, Bearer, unknown paths and methods.
async fn headers_and_not_found(db: Db) {
    let ts = server(db).await;
    let t = ts.tenant(Plan::Free).await;
    let id = transcribe(&ts, &t.key, &["Hi."]).await;
    // Title-case `Authorization` on the wire (reqwest otherwise sends lowercase).
    let title_case = reqwest::Client::builder()
        .http1_title_case_headers()
        .build()
        .unwrap();
    let r = send(
        title_case
            .get(ts.url(&format!("/v2/transcript/{id}")))
            .header("Authorization", &t.key),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        ts.http
            .get(ts.url(&format!("/v2/transcript/{id}")))
            .header("authorization", &t.key),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Bearer <key>, in any case of the scheme.
    for scheme in ["Bearer", "bearer"] {
        let r = get(&ts, &format!("{scheme} {}", t.key), "/v2/transcript").await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.text);
        assert_eq!(ids(&r.json()), vec![id.clone()]);
    }
    let r = send(
        ts.http
            .post(ts.url("/v2/upload"))
            .header("authorization", format!("Bearer {}", t.key))
            .body(script(&["x"])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Unknown paths: the 404 envelope, with or without a key. (`/` is the dashboard.)
    for path in [
        "/v1/transcript",
        "/v2",
        "/v2/nothing",
        "/v2/transcripts",
        &format!("/v2/transcript/{id}/bogus"),
        &format!("/v2/transcript/{id}/sentences/extra"),
    ] {
        let r = get(&ts, &t.key, path).await;
        r.exact_error(404, "Not found");
    }
    let r = send(ts.http.get(ts.url("/v2/nothing"))).await;
    r.exact_error(404, "Not found");
    // A wrong method is an error envelope too, never a bare body.
    let r = send(
        ts.http
            .put(ts.url(&format!("/v2/transcript/{id}")))
            .header("authorization", &t.key),
    )
    .await;
    assert!(r.status == 405 || r.status == 404, "{}", r.status);
    r.error(r.status);
    ts.stop().await;
}

both_databases!(
    upload_create_get_views_delete,
    list_filters_and_paging,
    headers_and_not_found
);
