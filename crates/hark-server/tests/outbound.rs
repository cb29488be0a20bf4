//! Through the running server: remote `audio_url` downloads under the outbound policy,
//! and signed webhooks with the custom auth header, on both databases.

mod common;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::*;
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

both_databases!(
    remote_audio_and_signed_webhook,
    private_addresses_are_refused_by_default
);
