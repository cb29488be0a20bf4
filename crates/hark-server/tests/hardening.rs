//! Hardening regressions (issue 13) through the running server, on SQLite and
//! PostgreSQL: unauthenticated callers cost no work on `/v3/ws` and learn nothing of
//! the installed models, unknown keys are answered from memory briefly (and a key
//! created meanwhile works at once) and bounded per client address, streaming settings
//! and queues are bounded, MFA enrolment needs re-authentication and ends the person's
//! other sessions, and "Require MFA" judges how each session signed in.

mod common;
mod support;

use common::*;
use futures::{SinkExt, StreamExt};
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::speech::{
    SpeechEngine, SpeechError, SpeechStream, StreamEvent, StreamingConfig, StreamingUpdate,
    TranscribeRequest, Transcription,
};
use hark_core::Clock;
use hark_core::{ApiKeyId, Plan, StreamSessionId};
use hark_store::{Actor, JobStore, KeyStore, NewApiKey, StreamStore, TranscriptStore, UserStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn scripted(db: Db) -> TestServer {
    TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.metrics_bind = "127.0.0.1:0".into();
    })
    .await
}

async fn connect(ts: &TestServer, query: &str, auth: Option<&str>) -> Ws {
    let url = format!("{}/v3/ws?{query}", ts.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    if let Some(auth) = auth {
        request
            .headers_mut()
            .insert("authorization", auth.parse().expect("header"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    ws
}

/// The close the server ends with (code, reason), skipping other messages.
async fn close_of(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within 20 s"),
            Ok(None) | Ok(Some(Err(_))) => return (0, String::new()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((0, String::new()))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn metric(ts: &TestServer, line_prefix: &str) -> f64 {
    let addr = ts
        .server
        .as_ref()
        .and_then(|s| s.metrics_addr)
        .expect("metrics listener");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Finding 2: an unknown temporary token is refused before the model is looked at, so
/// the close is the same whether the named model is installed or not.
async fn unknown_token_is_refused_before_any_work(db: Db) {
    let ts = scripted(db).await;
    let unknown = keys::generate(SecretKind::TempToken);
    let mut closes = Vec::new();
    for model in ["nonexistent-model", "whisper-tiny.en"] {
        let mut ws = connect(
            &ts,
            &format!("speech_model={model}&token={}", unknown.expose()),
            None,
        )
        .await;
        closes.push(close_of(&mut ws).await);
    }
    let refused = (
        1008,
        "Unauthorized Connection: Invalid temporary token".to_string(),
    );
    assert_eq!(closes, vec![refused.clone(), refused]);
    ts.stop().await;
}

/// Finding 2: a well-formed unknown API key is remembered as unknown for a few seconds
/// (no database query each), and a key created with that very secret works at once.
async fn unknown_keys_are_remembered_until_a_key_is_created(db: Db) {
    let ts = scripted(db).await;
    let t = ts.tenant(Plan::Payg).await;
    let secret = keys::generate(SecretKind::ApiKey);
    let hits_before = metric(&ts, "hark_key_cache_total{result=\"unknown_hit\"}").await;
    for _ in 0..4 {
        let r = support::get(&ts, secret.expose(), "/v2/transcript").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let hits = metric(&ts, "hark_key_cache_total{result=\"unknown_hit\"}").await - hits_before;
    assert!(hits >= 3.0, "unknown answers from memory: {hits}");
    let id = ApiKeyId::new();
    ts.store
        .create_api_key(
            NewApiKey {
                id,
                project_id: t.project,
                name: "chosen".into(),
                digest_hex: SecretDigest::of(secret.expose()).to_hex(),
                sealed: ts.master_key().seal(secret.expose(), &id.to_string()),
                masked: keys::mask(secret.expose()),
                created_by: "operator".into(),
                expires_at: None,
                scopes: vec![],
            },
            &Actor::Operator,
        )
        .await
        .expect("key");
    if db == Db::Sqlite {
        // Another process on SQLite (the operator CLI) tells the server this way.
        assert!(hark_server::control::notify_credentials_changed(&ts.config.data_dir).await);
    }
    // PostgreSQL: the creation's notification reaches the server's listener.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = support::get(&ts, secret.expose(), "/v2/transcript").await;
        if r.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was still refused: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ts.stop().await;
}

/// A streaming engine that takes `delay` over every piece of audio and counts the
/// endpoints it is asked to force.
struct SlowEngine {
    delay: Duration,
    forced: Arc<AtomicUsize>,
}

struct SlowStream {
    delay: Duration,
    forced: Arc<AtomicUsize>,
    samples: u64,
}

impl SpeechEngine for SlowEngine {
    fn models(&self) -> Vec<String> {
        vec!["whisper-tiny.en".into()]
    }

    fn transcribe(&self, _: &TranscribeRequest) -> Result<Transcription, SpeechError> {
        Err(SpeechError::Engine("streaming only".into()))
    }

    fn open_stream(
        self: Arc<Self>,
        _model: &str,
        _config: StreamingConfig,
    ) -> Result<Box<dyn SpeechStream>, SpeechError> {
        Ok(Box::new(SlowStream {
            delay: self.delay,
            forced: self.forced.clone(),
            samples: 0,
        }))
    }
}

impl SpeechStream for SlowStream {
    fn push_audio(&mut self, pcm: &[f32]) -> Result<Vec<StreamEvent>, SpeechError> {
        std::thread::sleep(self.delay);
        self.samples += pcm.len() as u64;
        Ok(Vec::new())
    }

    fn force_endpoint(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        self.forced.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(Vec::new())
    }

    fn update(&mut self, _: &StreamingUpdate) {}

    fn audio_ms(&self) -> u64 {
        self.samples / 16
    }
}

async fn slow(
    db: Db,
    delay_ms: u64,
    tweak: impl FnOnce(&mut hark_server::config::Config),
) -> (TestServer, Arc<AtomicUsize>) {
    let forced = Arc::new(AtomicUsize::new(0));
    let engine = SlowEngine {
        delay: Duration::from_millis(delay_ms),
        forced: forced.clone(),
    };
    (
        TestServer::start_with(db, Some(Arc::new(engine)), tweak).await,
        forced,
    )
}

/// Waits for `Begin`; returns the session id.
async fn begun(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "Begin" {
                    return v["id"].as_str().expect("id").to_string();
                }
            }
            other => panic!("no Begin: {other:?}"),
        }
    }
}

/// `ms` of silent 16 kHz s16le audio.
fn silence(ms: usize) -> Message {
    Message::Binary(vec![0u8; 32 * ms].into())
}

/// Finding 3: API keys are refused in `?token=` (query strings end up in logs).
async fn api_keys_are_refused_in_the_query_string(db: Db) {
    let ts = scripted(db).await;
    let t = ts.tenant(Plan::Payg).await;
    let mut ws = connect(&ts, &format!("token={}", t.key), None).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("query string"), "{reason}");
    // In the header it works.
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    begun(&mut ws).await;
    ts.stop().await;
}

/// Finding 3: a flood of `ForceEndpoint` reaches the engine as one (no audio came in
/// between, and they are rate-limited).
async fn force_endpoint_floods_are_rate_limited(db: Db) {
    let (ts, forced) = slow(db, 300, |_| {}).await;
    let t = ts.tenant(Plan::Payg).await;
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    begun(&mut ws).await;
    ws.send(silence(100)).await.expect("audio");
    for _ in 0..50 {
        ws.send(Message::Text(r#"{"type":"ForceEndpoint"}"#.into()))
            .await
            .expect("force");
    }
    ws.send(Message::Text(r#"{"type":"Terminate"}"#.into()))
        .await
        .expect("terminate");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1000, "{reason}");
    assert_eq!(forced.load(Ordering::SeqCst), 1);
    ts.stop().await;
}

/// Finding 3: audio waiting for a slow engine is bounded; past the bound the session
/// ends (3005) instead of memory growing.
async fn pending_audio_is_bounded(db: Db) {
    let (ts, _) = slow(db, 3_000, |c| c.streaming.max_pending_audio_secs = 2).await;
    let t = ts.tenant(Plan::Payg).await;
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    begun(&mut ws).await;
    for _ in 0..5 {
        if ws.send(silence(1000)).await.is_err() {
            break;
        }
    }
    let _ = ws
        .send(Message::Text(r#"{"type":"Terminate"}"#.into()))
        .await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 3005, "{reason}");
    assert!(reason.contains("keep up"), "{reason}");
    ts.stop().await;
}

/// Finding 8: a large invalid text frame is not echoed at length into the close
/// reason nor into the stored end reason.
async fn invalid_frames_are_not_echoed_at_length(db: Db) {
    let ts = scripted(db).await;
    let t = ts.tenant(Plan::Payg).await;
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    let id = begun(&mut ws).await;
    let junk = format!("{{not json {}", "x".repeat(50_000));
    ws.send(Message::Text(junk.into())).await.expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 3006, "{reason}");
    assert!(reason.starts_with("Invalid JSON: {not json"), "{reason}");
    let id = StreamSessionId::parse(&id).expect("session id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let row = ts.store.get_stream_session(id).await.expect("read");
        if let Some(reason) = row.and_then(|r| r.end_reason) {
            break reason;
        }
        assert!(tokio::time::Instant::now() < deadline, "session not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stored.len() < 200,
        "stored end reason of {} bytes",
        stored.len()
    );
    ts.stop().await;
}

/// Finding 5: a job claimed `max_job_attempts` times without finishing (its workers
/// died) ends in `error` with a clear message instead of taking the next worker down.
async fn poison_jobs_end_in_error(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| c.workers = 0).await;
    let t = ts.tenant(Plan::Payg).await;
    let id = support::transcribe(&ts, &t.key, &["never", "finishes"]).await;
    // Three workers claim it and die (their 1 ms leases lapse).
    for i in 0..3 {
        let claimed = ts
            .store
            .claim_job(&format!("dead-{i}"), 1)
            .await
            .expect("claim");
        assert!(claimed.is_some(), "claim {i}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let worker = ts
        .start_peer(Some(Arc::new(ScriptedEngine)), |c| c.workers = 1)
        .await;
    let done = wait_done(&ts, &t.key, &id).await;
    assert_eq!(done["status"], "error", "{done}");
    let error = done["error"].as_str().expect("error");
    assert!(
        error.contains("started 3 times and never finished"),
        "{error}"
    );
    worker.stop().await;
    ts.stop().await;
}

/// Finding 6: deleting one transcript leaves an upload another transcript uses (a new
/// transcript can still be made from it, its file stays).
async fn deleting_a_transcript_keeps_a_shared_upload(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.funded_tenant().await;
    let url = support::upload(&ts, &t.key, script(&["shared", "audio"])).await;
    let body = serde_json::json!({ "audio_url": url });
    let first = support::create(&ts, &t.key, body.clone()).await;
    let second = support::create(&ts, &t.key, body.clone()).await;
    for t_ in [&first, &second] {
        wait_done(&ts, &t.key, t_["id"].as_str().expect("id")).await;
    }
    let r = support::delete(
        &ts,
        &t.key,
        &format!("/v2/transcript/{}", first["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(support::files_under(&support::uploads_dir(&ts)).len(), 1);
    let third = support::create(&ts, &t.key, body).await;
    let done = wait_done(&ts, &t.key, third["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "shared audio");
    ts.stop().await;
}

/// Findings 4 and 6: files of interrupted uploads (`.partial`) and files no upload row
/// names (a crash between writing and committing, or after a deletion) are removed
/// at start; files of stored uploads stay.
async fn partial_and_orphaned_upload_files_are_swept_at_start(db: Db) {
    let mut ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.tenant(Plan::Payg).await;
    let url = support::upload(&ts, &t.key, script(&["kept"])).await;
    let dir = support::uploads_dir(&ts).join(t.project.to_string());
    let kept = dir.join(support::upload_id(&url));
    std::fs::write(
        dir.join("0192aaaa-0000-7000-8000-000000000000.partial"),
        b"half",
    )
    .expect("partial");
    std::fs::write(dir.join("0192aaaa-0000-7000-8000-000000000001"), b"orphan").expect("orphan");
    assert_eq!(support::files_under(&dir).len(), 3);
    if let Some(server) = ts.server.take() {
        server.shutdown().await;
    }
    let (data_dir, url_db) = (ts.config.data_dir.clone(), ts.config.database_url.clone());
    let again = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.data_dir = data_dir;
        c.database_url = url_db;
    })
    .await;
    assert_eq!(support::files_under(&dir), vec![kept]);
    let id = hark_core::UploadId::parse(support::upload_id(&url)).expect("upload id");
    assert!(ts.store.get_upload(id).await.expect("read").is_some());
    again.stop().await;
    ts.stop().await;
}

/// Finding 4: an upload no transcript uses expires after `upload_ttl_secs` (row and
/// file); one a transcript uses stays.
async fn unused_uploads_expire(db: Db) {
    let clock = Arc::new(hark_core::clock::ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock.clone(), |c| {
        c.upload_ttl_secs = 60
    })
    .await;
    let t = ts.funded_tenant().await;
    let unused = support::upload(&ts, &t.key, script(&["unused"])).await;
    let used = support::upload(&ts, &t.key, script(&["used"])).await;
    let made = support::create(&ts, &t.key, serde_json::json!({ "audio_url": used })).await;
    wait_done(&ts, &t.key, made["id"].as_str().expect("id")).await;
    let state = &ts.server.as_ref().expect("server").state;
    assert_eq!(hark_server::uploads::expire_once(state, 60_000).await, 0);
    clock.advance_ms(61_000);
    assert_eq!(hark_server::uploads::expire_once(state, 60_000).await, 1);
    let left = support::files_under(&support::uploads_dir(&ts));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(support::upload_id(&used)));
    let r = support::post_json(
        &ts,
        &t.key,
        "/v2/transcript",
        &serde_json::json!({ "audio_url": unused }),
    )
    .await;
    assert_eq!(r.error(403), support::UPLOAD_FORBIDDEN);
    ts.stop().await;
}

/// Finding 4: an account's uploads stay within `upload_quota_bytes`.
async fn uploads_stay_within_the_account_quota(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.upload_quota_bytes = 1_000
    })
    .await;
    let t = ts.tenant(Plan::Payg).await;
    let audio = |n: usize| {
        let mut b = b"RIFF".to_vec();
        b.resize(n, 1);
        b
    };
    support::upload(&ts, &t.key, audio(800)).await;
    let r = support::post_raw(&ts, &t.key, "/v2/upload", audio(300)).await;
    assert!(r.error(413).contains("quota"), "{}", r.text);
    assert_eq!(support::files_under(&support::uploads_dir(&ts)).len(), 1);
    // Another account has its own quota.
    let other = ts.tenant(Plan::Payg).await;
    support::upload(&ts, &other.key, audio(300)).await;
    ts.stop().await;
}

/// Finding 4: a body that stalls is answered 408 and leaves no file.
async fn stalled_upload_bodies_time_out(db: Db) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.upload_idle_timeout_secs = 1
    })
    .await;
    let t = ts.tenant(Plan::Payg).await;
    let addr = ts.server.as_ref().expect("server").addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v2/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Length: 100000\r\n\r\nRIFF0000WAVE",
        t.key
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(support::files_under(&support::uploads_dir(&ts)).is_empty());
    ts.stop().await;
}

/// Finding 8: the data directory, its upload folders and the SQLite database are
/// this user's only.
async fn data_directory_is_private(db: Db) {
    use std::os::unix::fs::PermissionsExt;
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let t = ts.tenant(Plan::Payg).await;
    let url = support::upload(&ts, &t.key, script(&["private"])).await;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = support::uploads_dir(&ts);
    assert_eq!(mode(&ts.config.data_dir), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(t.project.to_string())), 0o700);
    assert_eq!(
        mode(
            &dir.join(t.project.to_string())
                .join(support::upload_id(&url))
        ),
        0o600
    );
    if db == Db::Sqlite {
        let file = ts
            .config
            .database_url
            .strip_prefix("sqlite://")
            .expect("sqlite url")
            .to_string();
        // The harness keeps its database outside the data directory; the server
        // still narrows it.
        assert_eq!(mode(std::path::Path::new(&file)), 0o600);
    }
    ts.stop().await;
}

/// Finding 8: recovery codes are stored as digests keyed under the master key (a
/// copy of the database cannot be searched for the short codes); codes stored as plain
/// SHA-256 before still work, once.
async fn recovery_codes_are_keyed_digests(db: Db) {
    use common::mgmt::*;
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    reauth_ok(&ts, &a.owner.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", Some(&a.owner.token), None).await;
    let seed = begin.ok()["secret"].as_str().expect("seed").to_string();
    let code = hark_core::totp::current_code(&seed, ts.clock.now_ms()).expect("code");
    let confirmed = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        Some(&a.owner.token),
        Some(serde_json::json!({"code": code})),
    )
    .await;
    let codes: Vec<String> = confirmed.ok()["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    let plain = |c: &str| SecretDigest::of(&hark_core::totp::normalize_recovery_code(c)).to_hex();
    let dump = dump_database(&ts).await;
    for c in &codes {
        assert!(
            !dump.contains(&plain(c)),
            "a recovery code stored as plain SHA-256"
        );
    }
    let login_with = |code: String| {
        let ts = &ts;
        let email = a.owner.email.clone();
        async move {
            call(
                ts,
                "POST",
                "/auth/login",
                None,
                Some(serde_json::json!({
                    "email": email, "password": PASSWORD, "return_token": true, "recovery_code": code
                })),
            )
            .await
        }
    };
    assert_eq!(login_with(codes[0].clone()).await.status, 200);
    assert_eq!(login_with(codes[0].clone()).await.status, 401);
    // A code from before keyed digests (stored as plain SHA-256).
    let legacy = "abcde-fghij";
    sqlx::query("INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2)")
        .bind(a.owner.user_id.to_string())
        .bind(plain(legacy))
        .execute(ts.store.pool())
        .await
        .expect("legacy code");
    assert_eq!(login_with(legacy.into()).await.status, 200);
    assert_eq!(login_with(legacy.into()).await.status, 401);
    ts.stop().await;
}

/// Finding 8: enrolling a TOTP factor needs a recent re-authentication (a stolen
/// session alone cannot bind its holder's authenticator), at both steps, and
/// confirming it signs out the person's other sessions while this one stays.
async fn mfa_enrolment_needs_reauth_and_ends_other_sessions(db: Db) {
    use common::mgmt::*;
    let clock = Arc::new(hark_core::clock::ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    let elsewhere = login_ok(&ts, &a.owner.email).await;
    let t = Some(a.owner.token.as_str());
    let begin = call(&ts, "POST", "/me/mfa/totp", t, None).await;
    assert_eq!(
        (begin.status, begin.code()),
        (403, "reauth_required"),
        "{}",
        begin.text
    );
    assert!(ts
        .store
        .totp(a.owner.user_id)
        .await
        .expect("totp")
        .is_none());
    reauth_ok(&ts, &a.owner.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", t, None).await;
    let seed = begin.ok()["secret"].as_str().expect("seed").to_string();
    // The re-authentication window closes before the code is entered.
    clock.advance_ms(hark_server::manage::REAUTH_WINDOW_MS + 1_000);
    let code = hark_core::totp::current_code(&seed, clock.now_ms()).expect("code");
    let late = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        t,
        Some(serde_json::json!({"code": code})),
    )
    .await;
    assert_eq!((late.status, late.code()), (403, "reauth_required"));
    reauth_ok(&ts, &a.owner.token).await;
    let confirmed = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        t,
        Some(serde_json::json!({"code": code})),
    )
    .await;
    assert_eq!(confirmed.ok()["other_sessions_ended"], 1);
    assert!(confirmed.body["note"]
        .as_str()
        .expect("note")
        .contains("Your 1 other session was signed out"));
    let gone = call(&ts, "GET", "/me", Some(&elsewhere.token), None).await;
    assert_eq!((gone.status, gone.code()), (401, "unauthenticated"));
    let me = call(&ts, "GET", "/me", t, None).await;
    assert_eq!(me.ok()["user"]["mfa_enabled"], true);
    ts.stop().await;
}

/// Finding 8, the dashboard's door: the enrolment page asks for the password before
/// it makes a seed, and the recovery codes page says the other sessions were signed
/// out.
async fn dashboard_mfa_enrolment_asks_for_the_password(db: Db) {
    use common::browser::Browser;
    use common::mgmt::*;
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let elsewhere = login_ok(&ts, &a.owner.email).await;
    let mut b = Browser::signed_in(&ts, &a.owner);
    let page = b.get("/profile/mfa").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let csrf = page.csrf();
    let bare = b.post("/profile/mfa/start", &[("csrf", &csrf)]).await;
    assert_eq!(bare.status, 403, "{}", bare.body);
    assert!(
        bare.body.contains("Enter your password again"),
        "{}",
        bare.body
    );
    let wrong = b
        .post(
            "/profile/mfa/start",
            &[("csrf", &csrf), ("password", "not the password")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(ts
        .store
        .totp(a.owner.user_id)
        .await
        .expect("totp")
        .is_none());
    let started = b
        .post(
            "/profile/mfa/start",
            &[("csrf", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let pending = b.get("/profile/mfa").await;
    let marker = "<code id=\"totp-secret\">";
    let at = pending.body.find(marker).expect("the secret is shown") + marker.len();
    let secret = &pending.body[at..at + pending.body[at..].find('<').expect("end")];
    let code = hark_core::totp::current_code(secret, ts.clock.now_ms()).expect("code");
    let done = b
        .post("/profile/mfa/confirm", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("Your 1 other session was signed out"),
        "{}",
        done.body
    );
    let gone = call(&ts, "GET", "/me", Some(&elsewhere.token), None).await;
    assert_eq!(gone.status, 401);
    assert_eq!(b.get("/profile").await.status, 200);
    ts.stop().await;
}

/// Finding 8: an account's "Require MFA" is judged by how the session signed in: a
/// session of an enrolled person opened with a password alone (written here as the
/// rows from before Hark recorded the method are, without it) is refused, the person's
/// sessions signed in with a code pass.
async fn require_mfa_judges_how_the_session_signed_in(db: Db) {
    use common::mgmt::*;
    let clock = Arc::new(hark_core::clock::ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    reauth_ok(&ts, &a.owner.token).await;
    let t = Some(a.owner.token.as_str());
    let begin = call(&ts, "POST", "/me/mfa/totp", t, None).await;
    let seed = begin.ok()["secret"].as_str().expect("seed").to_string();
    let code = hark_core::totp::current_code(&seed, ts.clock.now_ms()).expect("code");
    call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        t,
        Some(serde_json::json!({"code": code})),
    )
    .await
    .ok();
    let require = call(
        &ts,
        "PATCH",
        &format!("/accounts/{}", a.account),
        t,
        Some(serde_json::json!({"require_mfa": true})),
    )
    .await;
    assert_eq!(require.ok()["require_mfa"], true);
    let password_only = keys::generate(SecretKind::Session);
    let now = ts.clock.now_ms();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, digest, csrf_digest, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(a.owner.user_id.to_string())
    .bind(SecretDigest::of(password_only.expose()).to_hex())
    .bind(SecretDigest::of("csrf").to_hex())
    .bind(now)
    .bind(now + 3_600_000)
    .execute(ts.store.pool())
    .await
    .expect("a password-only session");
    let projects = format!("/accounts/{}/projects", a.account);
    let refused = call(&ts, "GET", &projects, Some(password_only.expose()), None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "mfa_sign_in_required"),
        "{}",
        refused.text
    );
    let me = call(&ts, "GET", "/me", Some(password_only.expose()), None).await;
    assert_eq!(me.ok()["mfa_sign_in_required"], true);
    // The session that enrolled, and a new sign-in with a code, pass.
    assert_eq!(call(&ts, "GET", &projects, t, None).await.status, 200);
    // Each code works once: the next step's code.
    clock.advance_ms(30_000);
    let with_code = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(serde_json::json!({
            "email": a.owner.email, "password": PASSWORD, "return_token": true,
            "totp_code": hark_core::totp::current_code(&seed, clock.now_ms()).expect("code"),
        })),
    )
    .await;
    let fresh = with_code.ok()["token"].as_str().expect("token");
    assert_eq!(
        call(&ts, "GET", &projects, Some(fresh), None).await.status,
        200
    );
    let me = call(&ts, "GET", "/me", Some(fresh), None).await;
    assert_eq!(me.ok()["mfa_sign_in_required"], false);
    ts.stop().await;
}

/// Finding 2/8: a client sending many distinct well-formed unknown API keys spends a
/// per-address budget of database lookups; past it its uncached keys are answered 429
/// in the API's error shape *without* a query (shown by closing the database: the
/// answer stays 429, not a server error), counted as `rate_limited`. Its cached keys
/// keep working, and a new window gives a new budget.
async fn unknown_key_floods_are_bounded_per_address(db: Db) {
    let clock = Arc::new(hark_core::clock::ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock.clone(), |c| {
        c.metrics_bind = "127.0.0.1:0".into();
        c.rate_limit.unknown_keys_per_address = 5;
        c.rate_limit.unknown_keys_window_secs = 60;
    })
    .await;
    let t = ts.tenant(Plan::Payg).await;
    // Creating the tenant is a credential change that every node hears (on PostgreSQL
    // through LISTEN/NOTIFY and the epoch poll, a moment later) and that clears the key
    // cache: let it land before the key is first used, so the key stays cached.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        support::get(&ts, &t.key, "/v2/transcript").await.status,
        200
    );
    let limited_before = metric(&ts, "hark_auth_failures_total{kind=\"rate_limited\"}").await;
    let guess = || keys::generate(SecretKind::ApiKey);
    for _ in 0..5 {
        let r = support::get(&ts, guess().expose(), "/v2/transcript").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    for _ in 0..3 {
        let r = support::get(&ts, guess().expose(), "/v2/transcript").await;
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.json()["error"], "Too Many Requests");
        let retry: u64 = r.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
    }
    let limited = metric(&ts, "hark_auth_failures_total{kind=\"rate_limited\"}").await;
    assert!(
        limited - limited_before >= 3.0,
        "{limited_before} -> {limited}"
    );
    // The client's working (cached) key is unaffected.
    assert_eq!(
        support::get(&ts, &t.key, "/v2/transcript").await.status,
        200
    );
    // A new window, a new budget.
    clock.advance_ms(60_000);
    for _ in 0..5 {
        let r = support::get(&ts, guess().expose(), "/v2/transcript").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    // Past the budget no query is made: with the database closed the answer is still
    // 429 (a lookup would have failed with a server error).
    ts.store.close().await;
    for _ in 0..3 {
        let r = support::get(&ts, guess().expose(), "/v2/transcript").await;
        assert_eq!(r.status, 429, "{}", r.text);
    }
    ts.stop().await;
}

both_databases!(
    mfa_enrolment_needs_reauth_and_ends_other_sessions,
    dashboard_mfa_enrolment_asks_for_the_password,
    require_mfa_judges_how_the_session_signed_in,
    unknown_key_floods_are_bounded_per_address,
    recovery_codes_are_keyed_digests,
    deleting_a_transcript_keeps_a_shared_upload,
    partial_and_orphaned_upload_files_are_swept_at_start,
    unused_uploads_expire,
    uploads_stay_within_the_account_quota,
    stalled_upload_bodies_time_out,
    data_directory_is_private,
    poison_jobs_end_in_error,
    unknown_token_is_refused_before_any_work,
    unknown_keys_are_remembered_until_a_key_is_created,
    api_keys_are_refused_in_the_query_string,
    force_endpoint_floods_are_rate_limited,
    pending_audio_is_bounded,
    invalid_frames_are_not_echoed_at_length,
);
