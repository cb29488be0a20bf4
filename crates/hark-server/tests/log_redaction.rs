//! Secrets in query strings (`/v3/ws?token=…`, `webhook_auth_header_value=…`) and in
//! headers never reach the logs, even at TRACE.

mod common;

use common::*;
use futures::StreamExt;
use hark_core::Plan;
use std::io::Write;
use std::sync::{Arc, Mutex};

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_secrets_stay_out_of_trace_logs() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || SharedWriter(writer.clone()))
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let ts = TestServer::start_with(Db::Sqlite, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.tenant(Plan::Payg).await;
    let minted: serde_json::Value = ts
        .http
        .get(ts.url("/v3/token?expires_in_seconds=60"))
        .header("authorization", &t.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_string();
    let url = format!(
        "{}/v3/ws?token={token}&webhook_url=https%3A%2F%2Fhooks.example.com%2Fh&webhook_auth_header_name=X-Hook&webhook_auth_header_value=hook-s3cret-value",
        ts.base.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let begin = ws.next().await.unwrap().unwrap();
    assert!(begin.to_text().unwrap().contains("Begin"));
    drop(ws);
    ts.stop().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(text.contains("/v3/ws"), "the request was logged at all");
    for secret in [token.as_str(), "hook-s3cret-value", t.key.as_str()] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
}
