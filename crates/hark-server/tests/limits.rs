//! Account limits over HTTP: the REST rate limit (429 + Retry-After, per account),
//! the concurrent-job limit (FIFO, `throttled: true` while held back), and the
//! mapping of AssemblyAI model names onto installed models.

mod common;
mod support;
use common::*;
use hark_core::speech::{SpeechEngine, SpeechError, TranscribeRequest, Transcription};
use hark_core::Plan;
use hark_store::{AccountStore, Actor};
use serde_json::{json, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use support::*;

async fn rate_limit_per_account(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        c.rate_limit.requests = 5;
        c.rate_limit.window_secs = 600;
    })
    .await;
    let a = ts.tenant(Plan::Free).await;
    let b = ts.tenant(Plan::Free).await;
    // Five requests of any kind pass.
    upload(&ts, &a.key, script(&["one"])).await;
    for _ in 0..4 {
        list(&ts, &a.key, "").await;
    }
    // The sixth in the window is refused, on every route.
    for (method, path) in [
        ("GET", "/v2/transcript".to_string()),
        ("GET", format!("/v2/transcript/{}", uuid::Uuid::new_v4())),
        ("POST", "/v2/upload".to_string()),
    ] {
        let req = match method {
            "GET" => ts.http.get(ts.url(&path)),
            _ => ts.http.post(ts.url(&path)).body(script(&["x"])),
        };
        let r = send(req.header("authorization", &a.key)).await;
        r.exact_error(429, "Too Many Requests");
        let retry = r
            .headers
            .get("retry-after")
            .expect("Retry-After header")
            .to_str()
            .unwrap();
        let secs: u64 = retry.parse().expect("Retry-After is an integer");
        assert!((1..=600).contains(&secs), "Retry-After {secs}");
    }
    // Another key of the same account shares the limit...
    let (_, second_key) = ts.key(a.project, None).await;
    get(&ts, &second_key, "/v2/transcript")
        .await
        .exact_error(429, "Too Many Requests");
    // ...another account does not, and bad credentials still get 401, not 429.
    for _ in 0..5 {
        list(&ts, &b.key, "").await;
    }
    get(&ts, &b.key, "/v2/transcript")
        .await
        .exact_error(429, "Too Many Requests");
    get(&ts, "not-a-key", "/v2/transcript")
        .await
        .exact_error(401, AUTH_ERROR);
    let c = ts.tenant(Plan::Free).await;
    assert_eq!(
        list(&ts, &c.key, "").await["page_details"]["result_count"],
        0
    );
    ts.stop().await;
}

/// A speech engine that holds every script whose first word is `hold` until the test
/// releases it, recording the order in which jobs start.
#[derive(Default)]
struct GatedEngine {
    state: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Default)]
struct Gate {
    permits: usize,
    started: Vec<String>,
    finished: Vec<String>,
}

impl GatedEngine {
    fn release(&self) {
        self.state.lock().unwrap().permits += 1;
        self.changed.notify_all();
    }

    fn started(&self) -> Vec<String> {
        self.state.lock().unwrap().started.clone()
    }

    fn finished(&self) -> Vec<String> {
        self.state.lock().unwrap().finished.clone()
    }
}

impl SpeechEngine for GatedEngine {
    fn models(&self) -> Vec<String> {
        ScriptedEngine.models()
    }

    fn open_stream(
        self: Arc<Self>,
        model: &str,
        config: hark_core::speech::StreamingConfig,
    ) -> Result<Box<dyn hark_core::speech::SpeechStream>, SpeechError> {
        Arc::new(ScriptedEngine).open_stream(model, config)
    }

    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError> {
        let result = ScriptedEngine.transcribe(request)?;
        let label = result
            .words
            .last()
            .map(|w| w.text.clone())
            .unwrap_or_default();
        if result.words[0].text == "hold" {
            let mut gate = self.state.lock().unwrap();
            gate.started.push(label.clone());
            self.changed.notify_all();
            // Bounded, so a failing test cannot leave a blocking thread behind forever.
            let (mut gate, timeout) = self
                .changed
                .wait_timeout_while(gate, Duration::from_secs(30), |g| g.permits == 0)
                .unwrap();
            if timeout.timed_out() {
                return Err(SpeechError::Engine("gate never opened".into()));
            }
            gate.permits -= 1;
            gate.finished.push(label);
        }
        Ok(result)
    }
}

async fn transcript(ts: &TestServer, key: &str, id: &str) -> Value {
    let r = get(ts, key, &format!("/v2/transcript/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// Polls until `cond` holds for the transcript, or panics after 15 s.
async fn until(
    ts: &TestServer,
    key: &str,
    id: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..300 {
        let v = transcript(ts, key, id).await;
        if cond(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "transcript {id} never {what}: {}",
        transcript(ts, key, id).await
    );
}

async fn concurrency_limit_is_fifo_and_throttled(db: Db) {
    let engine = Arc::new(GatedEngine::default());
    let ts = TestServer::start_with(db, Some(engine.clone()), |c| {
        c.workers = 3;
    })
    .await;
    let a = ts.tenant(Plan::Free).await;
    let mut limits = hark_core::plan::LimitOverrides::default();
    limits.set("concurrent_jobs=1").unwrap();
    ts.store
        .set_plan(a.account, Plan::Enterprise, limits, &Actor::Operator)
        .await
        .expect("set plan");
    let b = ts.tenant(Plan::Free).await;

    let mut ids = Vec::new();
    for label in ["first", "second", "third"] {
        ids.push(transcribe(&ts, &a.key, &["hold", label]).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    until(&ts, &a.key, &ids[0], "started processing", |v| {
        v["status"] == "processing"
    })
    .await;
    // Give the idle workers time to (wrongly) claim a second job of the account.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        engine.started(),
        vec!["first"],
        "only one job of the account runs"
    );
    let first = transcript(&ts, &a.key, &ids[0]).await;
    assert_eq!(
        first["throttled"], false,
        "the running job is not throttled"
    );
    for id in &ids[1..] {
        let v = transcript(&ts, &a.key, id).await;
        assert_eq!(v["status"], "queued", "{v}");
        assert_eq!(v["throttled"], true, "held back by the limit: {v}");
    }
    let throttled = list(&ts, &a.key, "throttled_only=true").await;
    assert_eq!(ids_of(&throttled), vec![ids[2].clone(), ids[1].clone()]);

    // Another account is not held back by this one's limit.
    let other = transcribe(&ts, &b.key, &["free", "flowing."]).await;
    let done = wait_done(&ts, &b.key, &other).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["throttled"], false);
    assert_eq!(transcript(&ts, &a.key, &ids[1]).await["throttled"], true);

    // Release one at a time: strictly first-in, first-out.
    engine.release();
    assert_eq!(wait_done(&ts, &a.key, &ids[0]).await["status"], "completed");
    until(&ts, &a.key, &ids[1], "started processing", |v| {
        v["status"] == "processing"
    })
    .await;
    let third = transcript(&ts, &a.key, &ids[2]).await;
    assert_eq!(
        (third["status"].as_str(), third["throttled"].as_bool()),
        (Some("queued"), Some(true))
    );
    assert_eq!(engine.started(), vec!["first", "second"]);
    engine.release();
    assert_eq!(wait_done(&ts, &a.key, &ids[1]).await["status"], "completed");
    engine.release();
    let last = wait_done(&ts, &a.key, &ids[2]).await;
    assert_eq!(last["status"], "completed");
    assert_eq!(last["throttled"], false);
    assert_eq!(last["text"], "hold third");
    assert_eq!(engine.started(), vec!["first", "second", "third"]);
    assert_eq!(engine.finished(), vec!["first", "second", "third"]);
    assert_eq!(
        list(&ts, &a.key, "throttled_only=true").await["page_details"]["result_count"],
        0
    );
    ts.stop().await;
}

fn ids_of(v: &Value) -> Vec<String> {
    ids(v)
}

async fn speech_model_mapping(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| {
        // An alias onto a model that is not installed.
        c.models
            .aliases
            .insert("universal-2".into(), "whisper-large-v3".into());
    })
    .await;
    let t = ts.tenant(Plan::Free).await;
    let u = upload(&ts, &t.key, script(&["Model", "check."])).await;

    // A documented AssemblyAI name runs the default installed model.
    let c = create(
        &ts,
        &t.key,
        json!({"audio_url": u, "speech_models": ["universal-3-pro"]}),
    )
    .await;
    assert_eq!(c["speech_models"], json!(["universal-3-pro"]));
    assert_eq!(c["speech_model"], Value::Null);
    let done = wait_done(&ts, &t.key, c["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["speech_model_used"], "whisper-tiny.en");
    assert_eq!(done["speech_model"], Value::Null);

    // Priority order: the first that maps to an installed model wins.
    let c = create(
        &ts,
        &t.key,
        json!({"audio_url": u, "speech_models": ["universal-2", "nano"]}),
    )
    .await;
    let done = wait_done(&ts, &t.key, c["id"].as_str().unwrap()).await;
    assert_eq!(done["speech_model_used"], "whisper-tiny.en");
    assert_eq!(done["speech_models"], json!(["universal-2", "nano"]));

    // The installed model named directly.
    let c = create(
        &ts,
        &t.key,
        json!({"audio_url": u, "speech_models": ["whisper-tiny.en"]}),
    )
    .await;
    let done = wait_done(&ts, &t.key, c["id"].as_str().unwrap()).await;
    assert_eq!(done["speech_model_used"], "whisper-tiny.en");

    let before = list(&ts, &t.key, "").await;
    assert_eq!(before["page_details"]["result_count"], 3);
    // Names that map to nothing installed: 400, nothing written.
    for models in [
        json!(["universal-2"]),
        json!(["whisper-large-v3"]),
        json!(["no-such-model", "universal-2"]),
    ] {
        let r = post_json(
            &ts,
            &t.key,
            "/v2/transcript",
            &json!({"audio_url": u, "speech_models": models}),
        )
        .await;
        let msg = r.error(400);
        assert!(msg.contains("speech_models"), "{models}: {msg}");
        assert!(
            msg.contains("whisper-tiny.en"),
            "names what is installed: {msg}"
        );
    }
    assert_eq!(list(&ts, &t.key, "").await, before);
    ts.stop().await;
}

both_databases!(
    rate_limit_per_account,
    concurrency_limit_is_fifo_and_throttled,
    speech_model_mapping
);
