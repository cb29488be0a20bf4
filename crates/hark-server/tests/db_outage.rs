//! A PostgreSQL outage while the server runs, as during a database restart: every
//! connection of the server is cut and new ones are refused for a while, then the
//! database is back. The server must recover by itself, and work that ended during the
//! outage must still be recorded and billed exactly once (bench/soak restarts a real
//! PostgreSQL; these tests cut only their own database, never the shared server).

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use hark_core::speech::{
    SpeechEngine, SpeechError, SpeechStream, StreamingConfig, TranscribeRequest, Transcription,
};
use hark_store::testing::postgres_admin_url;
use hark_store::UsageStore;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, Row};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Cuts the test database off: no new connection is allowed and the open ones are
/// terminated (what clients see while PostgreSQL restarts).
struct Outage {
    admin: PgConnection,
    database: String,
}

impl Outage {
    async fn begin(ts: &TestServer) -> Self {
        let database = ts
            .config
            .database_url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .expect("database name")
            .to_string();
        let mut admin = PgConnection::connect(&postgres_admin_url())
            .await
            .expect("admin connection");
        admin
            .execute(format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false").as_str())
            .await
            .expect("refuse connections");
        sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .expect("terminate connections");
        Self { admin, database }
    }

    async fn end(mut self) {
        self.admin
            .execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.database).as_str())
            .await
            .expect("allow connections");
    }
}

async fn open_session(ts: &TestServer, key: &str) -> (Ws, String) {
    let url = format!(
        "{}/v3/ws?sample_rate=16000",
        ts.base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("authorization", key.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    let begin = next_of_type(&mut ws, "Begin").await;
    let id = begin["id"].as_str().expect("session id").to_string();
    (ws, id)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 20 s"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == kind {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended while waiting for {kind}: {other:?}"),
        }
    }
}

/// 100 ms frames of a loud tone (one word for the scripted engine), then silence.
async fn send_word(ws: &mut Ws) {
    for loud in [true, true, true, false, false] {
        let frame: Vec<u8> = (0..1600)
            .flat_map(|i| {
                let v = if loud {
                    ((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 12_000.0) as i16
                } else {
                    0
                };
                v.to_le_bytes()
            })
            .collect();
        ws.send(Message::Binary(frame.into())).await.expect("send");
    }
}

async fn usage_of(ts: &TestServer, t: &Tenant, key: &str) -> Vec<hark_store::UsageEvent> {
    ts.store
        .usage_events(t.account)
        .await
        .expect("usage")
        .into_iter()
        .filter(|e| e.event.idempotency_key == key)
        .collect()
}

/// A session that ends while the database is away is closed and billed, once, when it
/// is back, by the process that served it (before, the row stayed open, unbilled, for
/// as long as that process lived: its lease kept others from reaping it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ending_during_an_outage_is_billed_once_the_database_is_back() {
    let ts = TestServer::start_with(Db::Postgres, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.funded_tenant().await;
    let (mut ws, id) = open_session(&ts, &t.key).await;
    send_word(&mut ws).await;
    let outage = Outage::begin(&ts).await;
    ws.send(Message::Text(
        json!({"type": "Terminate"}).to_string().into(),
    ))
    .await
    .expect("terminate");
    next_of_type(&mut ws, "Termination").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    outage.end().await;
    let key = format!("stream:{id}");
    let mut billed = Vec::new();
    for _ in 0..100 {
        billed = usage_of(&ts, &t, &key).await;
        if !billed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        billed.len(),
        1,
        "session {id} billed {} times",
        billed.len()
    );
    // Billed up to its end, not up to the retry after the outage.
    let session_ms = billed[0].event.session_ms.expect("session time");
    assert!(session_ms < 1_400, "session billed {session_ms} ms");
    // The API answers at once now that the database is back.
    let r = ts
        .http
        .get(ts.url("/v2/transcript?limit=1"))
        .header("authorization", &t.key)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    ts.stop().await;
}

/// The scripted engine, held inside `transcribe` until the test lets it go.
struct GatedEngine {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl SpeechEngine for GatedEngine {
    fn models(&self) -> Vec<String> {
        ScriptedEngine.models()
    }

    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError> {
        let _ = self.entered.lock().map(|tx| tx.send(()));
        let _ = self
            .release
            .lock()
            .map(|rx| rx.recv_timeout(Duration::from_secs(20)));
        ScriptedEngine.transcribe(request)
    }

    fn open_stream(
        self: Arc<Self>,
        model: &str,
        config: StreamingConfig,
    ) -> Result<Box<dyn SpeechStream>, SpeechError> {
        Arc::new(ScriptedEngine).open_stream(model, config)
    }
}

/// A transcription that finishes while the database is away is recorded (and billed)
/// once it is back, by the worker that did it: not thrown away and run again after
/// its lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_finishing_during_an_outage_is_recorded_once_the_database_is_back() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let engine = Arc::new(GatedEngine {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let ts = TestServer::start_with(Db::Postgres, Some(engine), |c| {
        c.workers = 1;
        c.job_lease_ms = 6_000;
    })
    .await;
    let t = ts.funded_tenant().await;
    let upload: Value = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", &t.key)
        .body(script(&["hello", "world"]))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let created: Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &t.key)
        .json(&json!({"audio_url": upload["upload_url"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("the worker started transcribing");
    let outage = Outage::begin(&ts).await;
    release_tx.send(()).expect("release");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    outage.end().await;
    let done = wait_done(&ts, &t.key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "hello world");
    let attempts: i64 = sqlx::query("SELECT attempts FROM jobs WHERE transcript_id = $1")
        .bind(&id)
        .fetch_one(ts.store.pool())
        .await
        .expect("job row")
        .try_get("attempts")
        .expect("attempts");
    assert_eq!(attempts, 1, "the transcription ran again");
    assert_eq!(
        usage_of(&ts, &t, &format!("transcript:{id}")).await.len(),
        1
    );
    ts.stop().await;
}
