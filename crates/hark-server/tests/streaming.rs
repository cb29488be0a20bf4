//! Streaming v3 through the running server: `GET /v3/token` ranges, the `/v3/ws` session
//! protocol, every documented close code, single-use tokens (exactly once under
//! concurrency), session cap, expiry and inactivity on an injected clock, new-session
//! rate limits, usage attributed to the minting key, lost clients, shutdown and the
//! session webhook; on SQLite and PostgreSQL.

mod common;
mod support;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;
use futures::{SinkExt, StreamExt};
use hark_core::clock::{Clock, ManualClock};
use hark_core::{Plan, StreamSessionId};
use hark_store::{StreamStore, UsageStore};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const START_MS: i64 = 1_800_000_000_000;

async fn scripted(db: Db) -> TestServer {
    TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await
}

async fn scripted_on_clock(db: Db, clock: Arc<ManualClock>) -> TestServer {
    TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock, |_| {}).await
}

fn ws_url(ts: &TestServer, query: &str) -> String {
    format!("{}/v3/ws?{query}", ts.base.replacen("http", "ws", 1))
}

async fn connect(ts: &TestServer, query: &str, auth: Option<&str>) -> Ws {
    let mut request = ws_url(ts, query).into_client_request().unwrap();
    if let Some(auth) = auth {
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    ws
}

/// What the server sent: JSON messages until the close frame, and the close.
#[derive(Debug, Default)]
struct Transcript {
    messages: Vec<Value>,
    close: Option<(u16, String)>,
}

impl Transcript {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["type"] == kind).collect()
    }

    fn close_code(&self) -> u16 {
        self.close.as_ref().map(|c| c.0).unwrap_or(0)
    }

    fn close_reason(&self) -> &str {
        self.close.as_ref().map(|c| c.1.as_str()).unwrap_or("")
    }

    fn final_texts(&self) -> Vec<String> {
        self.of_type("Turn")
            .into_iter()
            .filter(|t| t["end_of_turn"] == true)
            .map(|t| t["transcript"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Reads until the server closes (or 20 s pass).
async fn read_all(ws: &mut Ws, into: &mut Transcript) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => panic!("no close within 20 s; got {into:?}"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(Message::Text(t)))) => into.messages.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                into.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn expect_message(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 20 s"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
            Some(Ok(Message::Close(f))) => panic!("closed while waiting for {kind}: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("connection ended while waiting for {kind}: {other:?}"),
        }
    }
}

/// A session refused at once: its close.
async fn refused(ts: &TestServer, query: &str, auth: Option<&str>) -> Transcript {
    let mut ws = connect(ts, query, auth).await;
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t).await;
    t
}

/// 16 kHz s16le: a loud tone (one "word" for the scripted engine) or silence.
fn pcm(ms: u32, loud: bool) -> Vec<u8> {
    let n = 16 * ms as usize;
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = if loud {
            ((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 12_000.0) as i16
        } else {
            0
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

async fn send_audio(ws: &mut Ws, ms: u32, loud: bool) {
    for _ in 0..ms / 100 {
        ws.send(Message::Binary(pcm(100, loud).into()))
            .await
            .unwrap();
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn mint(ts: &TestServer, key: &str, query: &str) -> support::Resp {
    support::send(
        ts.http
            .get(ts.url(&format!("/v3/token?{query}")))
            .header("authorization", key),
    )
    .await
}

async fn token(ts: &TestServer, key: &str, query: &str) -> String {
    let r = mint(ts, key, query).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_string()
}

async fn wait_usage(
    ts: &TestServer,
    account: hark_core::AccountId,
    n: usize,
) -> Vec<hark_store::UsageEvent> {
    for _ in 0..200 {
        let events: Vec<_> = ts
            .store
            .usage_events(account)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event.product == "streaming")
            .collect();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} streaming usage events");
}

async fn token_ranges(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    for q in [
        "",
        "expires_in_seconds=0",
        "expires_in_seconds=601",
        "expires_in_seconds=abc",
        "expires_in_seconds=1.5",
        "expires_in_seconds=-5",
        "expires_in_seconds=60&max_session_duration_seconds=59",
        "expires_in_seconds=60&max_session_duration_seconds=10801",
        "expires_in_seconds=60&max_session_duration_seconds=x",
    ] {
        let r = mint(&ts, &t.key, q).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert!(
            r.json()["error"].as_str().unwrap().contains("_seconds"),
            "{q}: {}",
            r.text
        );
    }
    for (q, applied) in [
        ("expires_in_seconds=1", 1),
        ("expires_in_seconds=600", 600),
        ("expires_in_seconds=60&max_session_duration_seconds=60", 60),
        (
            "expires_in_seconds=60&max_session_duration_seconds=10800",
            60,
        ),
    ] {
        let r = mint(&ts, &t.key, q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        let v = r.json();
        assert_eq!(v["expires_in_seconds"], applied, "{q}");
        let token = v["token"].as_str().unwrap();
        assert!(
            token.starts_with("hark_tmp_") && token.len() > 40,
            "{token}"
        );
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    }
    let r = mint(&ts, "nonsense", "expires_in_seconds=60").await;
    r.exact_error(401, "Authentication error, API token missing/invalid");
    // Only the digest is stored.
    let token = token(&ts, &t.key, "expires_in_seconds=60").await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT digest FROM stream_tokens")
        .fetch_all(ts.store.pool())
        .await
        .unwrap();
    assert!(stored.iter().all(|d| !d.contains(&token[9..])));
    ts.stop().await;
}

async fn token_refuses_unknown_parameters(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    for q in [
        "expires_in_seconds=60&foo=1",
        "foo=1&expires_in_seconds=60",
        "expires_in_seconds=60&max_session_duration_seconds=60&foo=",
    ] {
        let r = mint(&ts, &t.key, q).await;
        r.exact_error(
            400,
            "Unknown query parameter 'foo': /v3/token takes expires_in_seconds and max_session_duration_seconds",
        );
    }
    // No token was minted by a refused request.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_tokens")
        .fetch_one(ts.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    ts.stop().await;
}

async fn session_with_api_key(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let mut ws = connect(&ts, "sample_rate=16000&format_turns=True", Some(&t.key)).await;
    let begin = expect_message(&mut ws, "Begin").await;
    let id = begin["id"].as_str().unwrap().to_string();
    assert!(StreamSessionId::parse(&id).is_some());
    let now_s = ts.clock.now_ms() / 1000;
    let expires = begin["expires_at"].as_i64().unwrap();
    assert!((expires - now_s - 10_800).abs() <= 2, "{begin}");
    // Two words, a pause that ends the turn, then one more word and Terminate.
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 200, false).await;
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 600, false).await;
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 100, false).await;
    send_json(&mut ws, json!({"type": "KeepAlive"})).await;
    send_json(&mut ws, json!({"type": "Terminate"})).await;
    let mut t2 = Transcript::default();
    read_all(&mut ws, &mut t2).await;
    assert_eq!(t2.close_code(), 1000, "{t2:?}");
    let turns = t2.of_type("Turn");
    let partials: Vec<_> = turns.iter().filter(|t| t["end_of_turn"] == false).collect();
    assert!(!partials.is_empty(), "{t2:?}");
    for turn in &turns {
        for field in [
            "turn_order",
            "turn_is_formatted",
            "end_of_turn",
            "transcript",
            "utterance",
            "end_of_turn_confidence",
            "words",
        ] {
            assert!(turn.get(field).is_some(), "{field} missing in {turn}");
        }
        for w in turn["words"].as_array().unwrap() {
            for field in ["start", "end", "confidence", "text", "word_is_final"] {
                assert!(w.get(field).is_some(), "{field} missing in {w}");
            }
        }
    }
    // format_turns: each final comes unformatted, then formatted.
    let finals: Vec<_> = turns.iter().filter(|t| t["end_of_turn"] == true).collect();
    assert_eq!(finals.len(), 4, "{t2:?}");
    assert_eq!(finals[0]["turn_is_formatted"], false);
    assert_eq!(finals[1]["turn_is_formatted"], true);
    assert_eq!(finals[1]["transcript"], "w1 w2");
    assert_eq!(finals[1]["utterance"], "w1 w2");
    assert_eq!(finals[3]["transcript"], "w3");
    assert_eq!(finals[0]["turn_order"], 0);
    assert_eq!(finals[3]["turn_order"], 1);
    let termination = t2.of_type("Termination");
    assert_eq!(termination.len(), 1);
    assert_eq!(termination[0]["audio_duration_seconds"], 2);
    assert!(termination[0]["session_duration_seconds"].is_u64());
    assert_eq!(t2.messages.last().unwrap()["type"], "Termination");
    // Billed once, to the key used.
    let usage = wait_usage(&ts, t.account, 1).await;
    assert_eq!(usage.len(), 1);
    let e = &usage[0].event;
    assert_eq!(e.api_key_id, t.key_id);
    assert_eq!(e.project_id, t.project);
    assert_eq!(e.model, "whisper-tiny.en");
    assert!((e.audio_ms - 1_800).abs() < 10, "{e:?}");
    assert!(e.session_ms.is_some());
    assert_eq!(e.idempotency_key, format!("stream:{id}"));
    ts.stop().await;
}

async fn tokens_open_one_session_each(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    // Minted by a second key of the same project: usage goes to the minting key.
    let (minting_key_id, minting_key) = ts.key(t.project, None).await;
    let tok = token(
        &ts,
        &minting_key,
        "expires_in_seconds=60&max_session_duration_seconds=120",
    )
    .await;
    let mut ws = connect(&ts, &format!("token={tok}&sample_rate=16000"), None).await;
    let begin = expect_message(&mut ws, "Begin").await;
    let now_s = ts.clock.now_ms() / 1000;
    assert!(
        (begin["expires_at"].as_i64().unwrap() - now_s - 120).abs() <= 2,
        "{begin}"
    );
    // Reuse while the first session is live, and after it: refused.
    let again = refused(&ts, &format!("token={tok}"), None).await;
    assert_eq!(again.close_code(), 1008, "{again:?}");
    assert!(
        again
            .close_reason()
            .starts_with("Unauthorized Connection: "),
        "{again:?}"
    );
    assert!(
        again.close_reason().contains("already been used"),
        "{again:?}"
    );
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 200, false).await;
    send_json(&mut ws, json!({"type": "Terminate"})).await;
    let mut done = Transcript::default();
    read_all(&mut ws, &mut done).await;
    assert_eq!(done.close_code(), 1000);
    let again = refused(&ts, &format!("token={tok}"), None).await;
    assert_eq!(again.close_code(), 1008);
    let usage = wait_usage(&ts, t.account, 1).await;
    assert_eq!(usage[0].event.api_key_id, minting_key_id);
    // The Python SDK sends the token in the Authorization header.
    let tok2 = token(&ts, &t.key, "expires_in_seconds=60").await;
    let mut ws = connect(&ts, "sample_rate=16000", Some(&tok2)).await;
    expect_message(&mut ws, "Begin").await;
    drop(ws);
    // Unknown and malformed tokens.
    let unknown = hark_core::keys::generate(hark_core::keys::SecretKind::TempToken);
    let r = refused(&ts, &format!("token={}", unknown.expose()), None).await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (1008, "Unauthorized Connection: Invalid temporary token")
    );
    let r = refused(&ts, "token=hark_tmp_garbage", None).await;
    assert_eq!(r.close_code(), 1008);
    ts.stop().await;
}

async fn concurrent_redemption_exactly_once(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let tok = token(&ts, &t.key, "expires_in_seconds=600").await;
    let url = ws_url(&ts, &format!("token={tok}&sample_rate=16000"));
    let attempts = (0..100).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("upgrade");
            let first = tokio::time::timeout(Duration::from_secs(60), ws.next()).await;
            let outcome = match first {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "Begin");
                    "begin"
                }
                Ok(Some(Ok(Message::Close(Some(f))))) if f.code == CloseCode::Policy => "1008",
                other => panic!("unexpected {other:?}"),
            };
            // Keep the winner open until every attempt has answered.
            tokio::time::sleep(Duration::from_millis(500)).await;
            outcome
        })
    });
    let outcomes = futures::future::join_all(attempts).await;
    let begins = outcomes
        .iter()
        .filter(|o| *o.as_ref().unwrap() == "begin")
        .count();
    let refusals = outcomes
        .iter()
        .filter(|o| *o.as_ref().unwrap() == "1008")
        .count();
    assert_eq!((begins, refusals), (1, 99));
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stream_sessions")
        .fetch_one(ts.store.pool())
        .await
        .unwrap();
    assert_eq!(sessions, 1);
    ts.stop().await;
}

async fn expiry_cap_and_inactivity_on_injected_clock(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = scripted_on_clock(db, clock.clone()).await;
    let t = ts.funded_tenant().await;
    // A token unused past its expiry.
    let tok = token(&ts, &t.key, "expires_in_seconds=30").await;
    clock.advance_ms(30_000);
    let r = refused(&ts, &format!("token={tok}"), None).await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (1008, "Unauthorized Connection: Temporary token has expired")
    );
    // A token's session cap: 3008 when reached.
    let tok = token(
        &ts,
        &t.key,
        "expires_in_seconds=30&max_session_duration_seconds=60",
    )
    .await;
    let mut ws = connect(&ts, &format!("token={tok}"), None).await;
    let begin = expect_message(&mut ws, "Begin").await;
    assert_eq!(
        begin["expires_at"].as_i64().unwrap(),
        (clock.now_ms() + 60_000) / 1000
    );
    send_audio(&mut ws, 300, true).await;
    clock.advance_ms(59_000);
    send_audio(&mut ws, 100, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    clock.advance_ms(1_000);
    let mut out = Transcript::default();
    read_all(&mut ws, &mut out).await;
    assert_eq!(
        (out.close_code(), out.close_reason()),
        (3008, "Session Expired: Maximum session duration exceeded")
    );
    // The open turn was finalised before the close.
    assert_eq!(out.final_texts(), vec!["w1"], "{out:?}");
    // The API-key default cap is the configured one (3 h).
    let mut ws = connect(&ts, "inactivity_timeout=5", Some(&t.key)).await;
    let begin = expect_message(&mut ws, "Begin").await;
    assert_eq!(
        begin["expires_at"].as_i64().unwrap(),
        (clock.now_ms() + 10_800_000) / 1000
    );
    send_audio(&mut ws, 200, true).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    clock.advance_ms(4_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    clock.advance_ms(1_500);
    let mut out = Transcript::default();
    read_all(&mut ws, &mut out).await;
    assert_eq!(out.close_code(), 1000, "{out:?}");
    assert!(out.close_reason().contains("inactivity_timeout"), "{out:?}");
    assert_eq!(out.of_type("Termination").len(), 1);
    // Session seconds come from the injected clock.
    let usage = wait_usage(&ts, t.account, 2).await;
    let capped = usage.iter().find(|u| u.event.session_ms == Some(60_000));
    assert!(capped.is_some(), "{usage:?}");
    ts.stop().await;
}

async fn close_codes(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = scripted_on_clock(db, clock.clone()).await;
    let t = ts.funded_tenant().await;
    let r = refused(&ts, "sample_rate=16000", None).await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (
            1008,
            "Unauthorized Connection: Missing Authorization header"
        )
    );
    let r = refused(&ts, "sample_rate=16000", Some("not-a-key")).await;
    assert_eq!(r.close_code(), 1008);
    let r = refused(&ts, "encoding=opus", Some(&t.key)).await;
    assert_eq!(r.close_code(), 3006, "{r:?}");
    assert!(r.close_reason().contains("encoding"), "{r:?}");
    let r = refused(&ts, "speaker_labels=true", Some(&t.key)).await;
    assert_eq!(r.close_code(), 3006, "{r:?}");
    let r = refused(&ts, "speech_model=nonexistent-model", Some(&t.key)).await;
    assert_eq!(r.close_code(), 3006, "{r:?}");

    async fn after_begin(ts: &TestServer, key: &str, query: &str, act: Vec<Message>) -> Transcript {
        let mut ws = connect(ts, query, Some(key)).await;
        expect_message(&mut ws, "Begin").await;
        for m in act {
            if ws.send(m).await.is_err() {
                break;
            }
        }
        let mut out = Transcript::default();
        read_all(&mut ws, &mut out).await;
        out
    }
    let r = after_begin(&ts, &t.key, "", vec![Message::Text("{not json".into())]).await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (3006, "Invalid JSON: {not json")
    );
    let r = after_begin(
        &ts,
        &t.key,
        "",
        vec![Message::Text(r#"{"type":"Dance"}"#.into())],
    )
    .await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (3006, "Invalid Message Type: Dance")
    );
    let r = after_begin(&ts, &t.key, "", vec![Message::Text(r#"[1,2]"#.into())]).await;
    assert_eq!(r.close_code(), 3006);
    let r = after_begin(
        &ts,
        &t.key,
        "",
        vec![Message::Text(
            r#"{"type":"UpdateConfiguration","max_turn_silence":"soon"}"#.into(),
        )],
    )
    .await;
    assert_eq!(r.close_code(), 3006, "{r:?}");
    // Each value in range, the pair not: min above the max in force (1280 ms by default).
    let r = after_begin(
        &ts,
        &t.key,
        "",
        vec![Message::Text(
            r#"{"type":"UpdateConfiguration","min_turn_silence":3000}"#.into(),
        )],
    )
    .await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (
            3006,
            "Invalid Message: min_turn_silence (3000 ms) must not exceed max_turn_silence (1280 ms)"
        )
    );
    // Frames outside 50..1000 ms.
    let r = after_begin(&ts, &t.key, "", vec![Message::Binary(pcm(20, true).into())]).await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (
            3007,
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms"
        )
    );
    let r = after_begin(
        &ts,
        &t.key,
        "",
        vec![Message::Binary(pcm(1500, true).into())],
    )
    .await;
    assert_eq!(
        (r.close_code(), r.close_reason()),
        (
            3007,
            "Input duration violation: 1500 ms. Expected between 50 and 1000 ms"
        )
    );
    // pcm_mulaw at 8 kHz: one byte per sample.
    let r = after_begin(
        &ts,
        &t.key,
        "encoding=pcm_mulaw&sample_rate=8000",
        vec![Message::Binary(vec![0xFFu8; 320].into())],
    )
    .await;
    assert_eq!(r.close_code(), 3007, "{r:?}");
    assert!(r.close_reason().contains("40 ms"), "{r:?}");
    // Faster than real time: the clock stands still while 10 s of audio arrive.
    let frames: Vec<Message> = (0..10)
        .map(|_| Message::Binary(pcm(1000, false).into()))
        .collect();
    let r = after_begin(&ts, &t.key, "", frames).await;
    assert_eq!(r.close_code(), 3007, "{r:?}");
    assert!(
        r.close_reason()
            .starts_with("Audio Transmission Rate Exceeded: Received"),
        "{r:?}"
    );
    // Every opened session was billed once.
    let opened: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stream_sessions WHERE ended_at IS NOT NULL")
            .fetch_one(ts.store.pool())
            .await
            .unwrap();
    let usage = wait_usage(&ts, t.account, opened as usize).await;
    assert_eq!(usage.len() as i64, opened);
    ts.stop().await;
}

async fn new_session_rate_limit(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = scripted_on_clock(db, clock.clone()).await;
    let t = ts.tenant(Plan::Free).await;
    for _ in 0..5 {
        let mut ws = connect(&ts, "", Some(&t.key)).await;
        expect_message(&mut ws, "Begin").await;
        send_json(&mut ws, json!({"type": "Terminate"})).await;
        let mut out = Transcript::default();
        read_all(&mut ws, &mut out).await;
        assert_eq!(out.close_code(), 1000);
    }
    // The sixth in the same minute, with a key or a token: 3009, and the token survives.
    let r = refused(&ts, "", Some(&t.key)).await;
    assert_eq!(r.close_code(), 3009, "{r:?}");
    assert!(
        r.close_reason().contains("Too many concurrent sessions"),
        "{r:?}"
    );
    let tok = token(&ts, &t.key, "expires_in_seconds=600").await;
    let r = refused(&ts, &format!("token={tok}"), None).await;
    assert_eq!(r.close_code(), 3009, "{r:?}");
    // A paid account is not affected.
    let paid = ts.funded_tenant().await;
    let mut ws = connect(&ts, "", Some(&paid.key)).await;
    expect_message(&mut ws, "Begin").await;
    drop(ws);
    clock.advance_ms(60_001);
    let mut ws = connect(&ts, &format!("token={tok}"), None).await;
    expect_message(&mut ws, "Begin").await;
    ts.stop().await;
}

async fn revoked_key_invalidates_tokens_and_sessions_refuse(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let (key_id, key) = ts.key(t.project, None).await;
    let tok = token(&ts, &key, "expires_in_seconds=600").await;
    ts.revoke(key_id).await;
    let r = refused(&ts, &format!("token={tok}"), None).await;
    assert_eq!(r.close_code(), 1008, "{r:?}");
    assert!(r.close_reason().contains("revoked"), "{r:?}");
    let r = refused(&ts, "", Some(&key)).await;
    assert_eq!(r.close_code(), 1008, "{r:?}");
    let r = mint(&ts, &key, "expires_in_seconds=60").await;
    assert_eq!(r.status, 401);
    ts.stop().await;
}

async fn force_endpoint_and_update_configuration(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let mut ws = connect(
        &ts,
        "min_turn_silence=160&max_turn_silence=2000",
        Some(&t.key),
    )
    .await;
    expect_message(&mut ws, "Begin").await;
    // A pause of 300 ms ends a turn at min_turn_silence=160 ...
    send_audio(&mut ws, 200, true).await;
    send_audio(&mut ws, 300, false).await;
    let first = expect_message(&mut ws, "Turn").await;
    assert_eq!(first["end_of_turn"], false);
    let fin = loop {
        let v = expect_message(&mut ws, "Turn").await;
        if v["end_of_turn"] == true {
            break v;
        }
    };
    assert_eq!(fin["transcript"], "w1");
    // ... but not after UpdateConfiguration raises it; ForceEndpoint ends it instead.
    send_json(
        &mut ws,
        json!({"type": "UpdateConfiguration", "min_turn_silence": 1500, "max_turn_silence": null}),
    )
    .await;
    send_audio(&mut ws, 200, true).await;
    send_audio(&mut ws, 300, false).await;
    send_json(&mut ws, json!({"type": "ForceEndpoint"})).await;
    send_json(&mut ws, json!({"type": "Terminate"})).await;
    let mut out = Transcript::default();
    read_all(&mut ws, &mut out).await;
    assert_eq!(out.final_texts(), vec!["w2"], "{out:?}");
    assert_eq!(out.close_code(), 1000);
    ts.stop().await;
}

async fn vanished_and_silent_clients_are_billed(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.streaming.client_timeout_secs = 2;
        c.streaming.ping_interval_secs = 1;
    })
    .await;
    let t = ts.funded_tenant().await;
    // Dropped without a close frame.
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    expect_message(&mut ws, "Begin").await;
    send_audio(&mut ws, 500, true).await;
    drop(ws);
    // Connected but answering nothing (not even pongs): ended after client_timeout.
    let mut silent = connect(&ts, "", Some(&t.key)).await;
    expect_message(&mut silent, "Begin").await;
    send_audio(&mut silent, 300, true).await;
    let usage = wait_usage(&ts, t.account, 1).await;
    assert!((usage[0].event.audio_ms - 500).abs() < 10, "{usage:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let usage = wait_usage(&ts, t.account, 2).await;
    assert_eq!(usage.len(), 2);
    let open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stream_sessions WHERE ended_at IS NULL")
            .fetch_one(ts.store.pool())
            .await
            .unwrap();
    assert_eq!(open, 0);
    drop(silent);
    ts.stop().await;
}

async fn shutdown_ends_sessions_and_bills(db: Db) {
    let mut ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    expect_message(&mut ws, "Begin").await;
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 100, false).await;
    // The server has the audio (a partial came back) before it is told to stop.
    let partial = expect_message(&mut ws, "Turn").await;
    assert_eq!(partial["end_of_turn"], false);
    let reader = tokio::spawn(async move {
        let mut out = Transcript::default();
        read_all(&mut ws, &mut out).await;
        out
    });
    ts.server.take().unwrap().shutdown().await;
    let out = reader.await.unwrap();
    assert_eq!(out.close_code(), 1001, "{out:?}");
    assert_eq!(out.final_texts(), vec!["w1"]);
    let usage = wait_usage(&ts, t.account, 1).await;
    assert_eq!(usage.len(), 1);
    ts.stop().await;
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn hook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

async fn session_webhook(db: Db) {
    let (hook, received) = hook_receiver().await;
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.outbound.allow_private = true
    })
    .await;
    let t = ts.funded_tenant().await;
    let query = format!(
        "webhook_url={}&webhook_auth_header_name=X-Hook&webhook_auth_header_value=s3cret&format_turns=true",
        url::form_urlencoded::byte_serialize(hook.as_bytes()).collect::<String>()
    );
    let mut ws = connect(&ts, &query, Some(&t.key)).await;
    let begin = expect_message(&mut ws, "Begin").await;
    send_audio(&mut ws, 300, true).await;
    send_audio(&mut ws, 600, false).await;
    send_audio(&mut ws, 300, true).await;
    send_json(&mut ws, json!({"type": "Terminate"})).await;
    let mut out = Transcript::default();
    read_all(&mut ws, &mut out).await;
    assert_eq!(out.close_code(), 1000);
    let mut body = None;
    for _ in 0..200 {
        if let Some((headers, b)) = received.lock().unwrap().first() {
            assert_eq!(headers["x-hook"], "s3cret");
            assert!(headers.contains_key("webhook-signature"));
            body = Some(serde_json::from_slice::<Value>(b).unwrap());
        }
        if body.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = body.expect("session webhook delivered");
    assert_eq!(body["session_id"], begin["id"]);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert!(messages.iter().all(|m| m["type"] == "Turn"
        && m["end_of_turn"] == true
        && m["turn_is_formatted"] == true));
    assert_eq!(messages[0]["transcript"], "w1");
    assert_eq!(messages[1]["transcript"], "w2");
    // The header value is stored sealed only.
    let stored: Vec<Option<String>> =
        sqlx::query_scalar("SELECT webhook_auth_header_sealed FROM stream_sessions")
            .fetch_all(ts.store.pool())
            .await
            .unwrap();
    assert!(stored.iter().flatten().all(|s| !s.contains("s3cret")));
    ts.stop().await;
}

async fn lost_process_sessions_are_closed_once(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock.clone(), |c| {
        c.streaming.node_lease_secs = 3
    })
    .await;
    let t = ts.funded_tenant().await;
    // A session row of a process that died mid-session (it renewed its lease once).
    let store = &ts.store;
    store
        .heartbeat_stream_node("dead-node", 30_000)
        .await
        .unwrap();
    let opened = store
        .open_stream_session(hark_store::OpenStreamSession {
            id: StreamSessionId::random(),
            credential: hark_store::StreamCredential::ApiKey {
                account_id: t.account,
                project_id: t.project,
                api_key_id: t.key_id,
            },
            model: "whisper-tiny.en".into(),
            default_max_session_secs: 10_800,
            node_id: "dead-node".into(),
            webhook_url: None,
            webhook_auth_header_name: None,
            webhook_auth_header_sealed: None,
        })
        .await
        .unwrap()
        .unwrap();
    clock.advance_ms(20_000);
    store
        .heartbeat_stream_node("dead-node", 30_000)
        .await
        .unwrap();
    store
        .record_stream_progress(opened.id, 12_000, "[]")
        .await
        .unwrap();
    // Nobody renews it now; the live server's upkeep closes it once the lease lapses.
    clock.advance_ms(31_000);
    let usage = wait_usage(&ts, t.account, 1).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].event.audio_ms, 12_000);
    assert_eq!(usage[0].event.session_ms, Some(20_000));
    let row = store.get_stream_session(opened.id).await.unwrap().unwrap();
    assert!(row.ended_at.is_some());
    assert_eq!(store.reap_stream_sessions("test-reaper").await.unwrap(), 0);
    // A session of the live server is left alone.
    let mut ws = connect(&ts, "", Some(&t.key)).await;
    expect_message(&mut ws, "Begin").await;
    clock.advance_ms(2_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(store.reap_stream_sessions("test-reaper").await.unwrap(), 0);
    drop(ws);
    ts.stop().await;
}

async fn key_scopes_govern_streaming(db: Db) {
    use hark_core::scope::Scope;
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let scoped = |scopes: &'static [Scope]| {
        let ts = &ts;
        async move {
            hark_server::provisioning::issue_scoped_api_key(
                &ts.store,
                &ts.master_key(),
                ts.clock.as_ref(),
                t.project,
                "scoped",
                None,
                scopes,
                &hark_store::Actor::Operator,
            )
            .await
            .unwrap()
            .1
            .into_inner()
        }
    };
    let streaming_only = scoped(&[Scope::Streaming]).await;
    let transcripts_only = scoped(&[Scope::TranscriptsRead, Scope::TranscriptsWrite]).await;
    // A streaming-only key streams and mints, but cannot read transcripts.
    let tok = token(&ts, &streaming_only, "expires_in_seconds=60").await;
    let mut ws = connect(&ts, &format!("token={tok}"), None).await;
    expect_message(&mut ws, "Begin").await;
    drop(ws);
    let mut ws = connect(&ts, "", Some(&streaming_only)).await;
    expect_message(&mut ws, "Begin").await;
    drop(ws);
    assert_eq!(
        support::get(&ts, &streaming_only, "/v2/transcript")
            .await
            .status,
        403
    );
    // A transcripts-only key can neither mint nor stream.
    let r = mint(&ts, &transcripts_only, "expires_in_seconds=60").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.json()["error"].as_str().unwrap().contains("streaming"),
        "{}",
        r.text
    );
    let r = refused(&ts, "", Some(&transcripts_only)).await;
    assert_eq!(r.close_code(), 1008, "{r:?}");
    assert!(r.close_reason().contains("streaming"), "{r:?}");
    ts.stop().await;
}

async fn plain_http_to_ws_is_refused(db: Db) {
    let ts = scripted(db).await;
    let t = ts.funded_tenant().await;
    let r = support::get(&ts, &t.key, "/v3/ws").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("WebSocket"));
    ts.stop().await;
}

both_databases!(
    token_ranges,
    token_refuses_unknown_parameters,
    session_with_api_key,
    tokens_open_one_session_each,
    concurrent_redemption_exactly_once,
    expiry_cap_and_inactivity_on_injected_clock,
    close_codes,
    new_session_rate_limit,
    revoked_key_invalidates_tokens_and_sessions_refuse,
    force_endpoint_and_update_configuration,
    vanished_and_silent_clients_are_billed,
    shutdown_ends_sessions_and_bills,
    session_webhook,
    lost_process_sessions_are_closed_once,
    plain_http_to_ws_is_refused,
    key_scopes_govern_streaming,
);
