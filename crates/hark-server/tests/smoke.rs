//! Boots the server and runs one transcript through it on both databases.

mod common;
use common::*;
use hark_core::Plan;
use std::sync::Arc;

async fn upload_transcribe_get(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.tenant(Plan::Free).await;
    let up: serde_json::Value = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", &t.key)
        .body(script(&["Hello", "world."]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = up["upload_url"].as_str().unwrap().to_string();
    let created: serde_json::Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &t.key)
        .json(&serde_json::json!({"audio_url": url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["status"], "queued");
    let done = wait_done(&ts, &t.key, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "Hello world.");
    assert_eq!(done["speech_model_used"], "whisper-tiny.en");
    ts.stop().await;
}

both_databases!(upload_transcribe_get);
