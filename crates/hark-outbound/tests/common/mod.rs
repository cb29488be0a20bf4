//! A local HTTP server for the outbound tests: files, redirects and a webhook receiver.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the webhook receiver saw.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: String,
}

#[derive(Clone, Default)]
pub struct Shared {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Statuses the receiver answers, in order; 200 once empty.
    pub statuses: Arc<Mutex<VecDeque<u16>>>,
    /// How long the receiver waits before answering.
    pub hook_delay: Arc<Mutex<Duration>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Shared,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
    pub fn answer(&self, statuses: &[u16]) {
        self.shared.statuses.lock().unwrap().extend(statuses);
    }
}

/// The byte at offset `i` of every served file.
pub fn byte_at(i: usize) -> u8 {
    (i % 251) as u8
}

pub async fn start() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared {
        port: addr.port(),
        ..Shared::default()
    };
    let app = Router::new()
        .route("/sized/{n}", get(sized))
        .route("/chunked/{n}", get(chunked))
        .route("/stall", get(stall))
        .route("/status/{code}", get(status))
        .route("/redirect/{target}", get(redirect))
        .route("/hook", post(hook))
        .with_state(shared.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestServer { addr, shared }
}

fn file(n: usize) -> Vec<u8> {
    (0..n).map(byte_at).collect()
}

/// A body with a Content-Length.
async fn sized(Path(n): Path<usize>) -> Vec<u8> {
    file(n)
}

/// A chunked body without a Content-Length, in 8 KiB chunks.
async fn chunked(Path(n): Path<usize>) -> Response {
    let data = file(n);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(8192)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks)).into_response()
}

/// Sends a first chunk, then nothing for a minute.
async fn stall() -> Response {
    let stream = futures::stream::unfold(0u32, |state| async move {
        if state > 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from_static(b"abcd")),
            state + 1,
        ))
    });
    Body::from_stream(stream).into_response()
}

async fn status(Path(code): Path<u16>) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

async fn redirect(State(s): State<Shared>, Path(target): Path<String>) -> Response {
    let location = match target.as_str() {
        "self" => format!("http://127.0.0.1:{}/sized/10", s.port),
        "ip2" => format!("http://127.0.0.2:{}/sized/10", s.port),
        "localhost" => format!("http://localhost:{}/sized/10", s.port),
        "mapped" => format!("http://[::ffff:127.0.0.2]:{}/sized/10", s.port),
        "file" => "file:///etc/passwd".to_string(),
        _ => "/redirect/loop".to_string(),
    };
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn hook(
    State(s): State<Shared>,
    uri: Uri,
    Query(_q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    s.received.lock().unwrap().push(Received {
        headers,
        query: uri.query().map(str::to_string),
        body,
    });
    let delay = *s.hook_delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let code = s.statuses.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}
