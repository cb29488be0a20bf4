//! Through the running server: remote `audio_url` downloads under the outbound policy,
//! and signed webhooks with the custom auth header, on both databases.

mod common;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::*;
use futures::StreamExt;
use hark_core::Plan;
use hark_store::AccountStore;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

/// A receiver on loopback: serves a script as audio at `/audio.bin` and records every
/// POST to `/hook`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new()
        .route(
            "/audio.bin",
            get(|| async { script(&["Remote", "words."]) }),
        )
        .route(
            "/hook",
            post(
                move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push((uri.to_string(), headers, body));
                        "ok"
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

async fn remote_audio_and_signed_webhook(db: Db) {
    let (origin, received) = receiver().await;
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.outbound.allow_private = true
    })
    .await;
    let t = ts.tenant(Plan::Payg).await;
    let created: serde_json::Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &t.key)
        .json(&json!({
            "audio_url": format!("{origin}/audio.bin"),
            "webhook_url": format!("{origin}/hook?customer_id=42"),
            "webhook_auth_header_name": "X-Hook-Token",
            "webhook_auth_header_value": "s3cret",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["webhook_auth"], true);
    assert!(
        !created.to_string().contains("s3cret"),
        "the header value is never returned"
    );
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_done(&ts, &t.key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "Remote words.");

    let mut delivered = None;
    for _ in 0..100 {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            delivered = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if delivered.is_none() {
        let rows = sqlx::query(
            "SELECT state, attempts, last_status_code, last_error FROM webhook_deliveries",
        )
        .fetch_all(ts.store.pool())
        .await
        .unwrap();
        if let Some(r) = rows.first() {
            use sqlx::Row;
            panic!(
                "webhook not delivered: state {:?} attempts {:?} status {:?} error {:?}",
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<Option<i64>, _>(2),
                r.get::<Option<String>, _>(3)
            );
        }
        panic!("no webhook delivery row was written");
    }
    let (uri, headers, body) = delivered.expect("the webhook arrives");
    assert_eq!(uri, "/hook?customer_id=42");
    let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body_json,
        json!({"transcript_id": id, "status": "completed"})
    );
    assert_eq!(headers["x-hook-token"], "s3cret");
    let sealed = ts
        .store
        .project_webhook_secret(t.project)
        .await
        .unwrap()
        .unwrap();
    let secret = ts
        .master_key()
        .open(&sealed, &t.project.to_string())
        .unwrap();
    let msg_id = headers["webhook-id"].to_str().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let signature = headers["webhook-signature"].to_str().unwrap();
    assert!(hark_core::webhook_sign::verify(
        &secret, msg_id, timestamp, &body, signature
    ));

    let mut code = serde_json::Value::Null;
    for _ in 0..50 {
        code = wait_done(&ts, &t.key, &id).await["webhook_status_code"].clone();
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, 200);
    ts.stop().await;
}

async fn private_addresses_are_refused_by_default(db: Db) {
    let (origin, received) = receiver().await;
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.tenant(Plan::Payg).await;
    let created: serde_json::Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &t.key)
        .json(&json!({"audio_url": format!("{origin}/audio.bin"), "webhook_url": format!("{origin}/hook")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let done = wait_done(&ts, &t.key, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "error");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.starts_with("Download error, unable to download"),
        "{error}"
    );
    assert!(error.contains("outbound policy"), "{error}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "no request reached the private address"
    );
    ts.stop().await;
}

/// A downloaded `audio_url` goes through the audio storage like an upload (so a retry
/// of its job reads it from there) and is gone once its job is over: while the remote
/// body is still arriving its object is being written under the project's uploads, and
/// afterwards nothing of it is left.
async fn remote_audio_goes_through_the_audio_storage(db: Db) {
    let audio = script(&["Stored", "download."]);
    let (first, rest) = audio.split_at(audio.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app = axum::Router::new().route(
        "/slow.bin",
        get(move || {
            let (first, rest, gate) = (first.clone(), rest.clone(), gate.clone());
            async move {
                let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
                    .chain(futures::stream::once(async move {
                        gate.notified().await;
                        Ok(rest)
                    }));
                axum::body::Body::from_stream(body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.outbound.allow_private = true
    })
    .await;
    let t = ts.tenant(Plan::Payg).await;
    let created: serde_json::Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &t.key)
        .json(&json!({ "audio_url": format!("{origin}/slow.bin") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let project_dir = ts
        .config
        .data_dir
        .join("uploads")
        .join(t.project.to_string());
    let mut in_storage = false;
    for _ in 0..200 {
        if files_in(&project_dir) > 0 {
            in_storage = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(in_storage, "the download is written into the audio storage");
    release.notify_one();
    let done = wait_done(&ts, &t.key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "Stored download.");
    assert_eq!(files_in(&project_dir), 0, "nothing of the download is left");
    ts.stop().await;
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

both_databases!(
    remote_audio_and_signed_webhook,
    private_addresses_are_refused_by_default,
    remote_audio_goes_through_the_audio_storage
);
