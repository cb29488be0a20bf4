//! Issue 12's cluster as real processes: three `hark serve` nodes (A, B, C) and one
//! `hark worker` on one fresh PostgreSQL database with Redis and a Garage bucket for the
//! uploaded audio, all started here (the model and the master key in one shared data
//! directory). A key revoked
//! through A is refused by B and C, and C's live session of it ends (1008, billed once),
//! within 1 s; a single-use streaming token raced for by 100 connections over the three
//! nodes opens one session; 200 jobs submitted through every node each complete and are
//! billed exactly once although a worker-running node is `kill -9`ed mid-job; the REST
//! budget is exact across the nodes; an upload through A is transcribed by the worker and
//! its audio goes when its transcript, its project or its account is deleted.

mod common;

use common::{fixture_path, normalise, with_database, Install, Server, Tenant};
use futures::{SinkExt, StreamExt};
use hark_core::clock::{Clock, SystemClock};
use hark_core::AccountId;
use hark_store::blobs::S3Settings;
use hark_store::{SqlStore, UsageStore};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Revocation reaches every node, and ends live sessions, within this (issue 12).
const BOUND: Duration = Duration::from_secs(1);
const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Every account's REST budget across the cluster: the budget case exhausts it, the
/// other cases stay well within it.
const REST_BUDGET: usize = 1000;
/// Long enough that no request is refunded while the budget case runs.
const REST_WINDOW_SECS: u64 = 86_400;
/// Short, so the jobs of a killed node run again soon.
const JOB_LEASE_MS: u64 = 1500;
const JOBS: usize = 200;
/// The jobs at the tail of the queue (jobs are claimed in submission order) are real
/// speech: one more than the cluster has workers, so C's worker runs one, long enough for
/// the kill to land in it. The others are wordless clips the engine is quick with.
const SPEECH_JOBS: usize = 4;
const TOKEN_RACERS: usize = 100;
const OWNER_PASSWORD: &str = "cluster suite passphrase";
/// What the speech fixture says, as transcribed with `format_text` (numbers as digits).
const SPEECH_WORDS: &str = "go forward 10 meters";

/// Where the cluster keeps uploaded audio: a bucket of the Garage node that
/// scripts/garage.sh starts (scripts/test.sh runs it), under a prefix of this run's own,
/// as a cluster's nodes share object storage in production. `objects_of` lists the bucket
/// through the S3 API directly, not through Hark.
struct AudioStorage {
    s3: S3Settings,
}

impl AudioStorage {
    fn s3() -> Self {
        Self {
            s3: hark_store::testing::s3_settings(hark_store::blobs::MIN_PART_SIZE),
        }
    }

    /// The storage settings of every process (`HARK_STORAGE__*`).
    fn node_env(&self) -> Vec<(String, String)> {
        let s3 = &self.s3;
        [
            ("HARK_STORAGE__KIND", "s3".to_string()),
            ("HARK_STORAGE__BUCKET", s3.bucket.clone()),
            ("HARK_STORAGE__ENDPOINT", s3.endpoint.clone()),
            ("HARK_STORAGE__REGION", s3.region.clone()),
            ("HARK_STORAGE__ACCESS_KEY_ID", s3.access_key_id.clone()),
            (
                "HARK_STORAGE__SECRET_ACCESS_KEY",
                s3.secret_access_key.expose().to_string(),
            ),
            ("HARK_STORAGE__PREFIX", s3.prefix.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The stored audio objects of `project`'s uploads.
    async fn objects_of(&self, project: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let s3 = &self.s3;
        let bucket = hark_store::testing::direct_s3_client(s3);
        let folder = object_store::path::Path::from(format!("{}/{project}", s3.prefix));
        bucket
            .list(Some(&folder))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("listing the bucket")
    }
}

/// Which part a process plays.
#[derive(Clone, Copy)]
enum Role {
    /// An API node without transcription workers.
    Api,
    /// An API node that also runs a transcription worker (the one `kill -9`ed).
    ApiWithWorker,
}

struct Cluster {
    install: Install,
    storage: AudioStorage,
    /// A, B and C.
    nodes: Vec<Server>,
    worker: Server,
    store: SqlStore,
    http: reqwest::Client,
}

/// The settings every process gets.
fn cluster_env(storage: &AudioStorage, workers: usize) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HARK_REDIS_URL", REDIS_URL.to_string()),
        ("HARK_RATE_LIMIT__REQUESTS", REST_BUDGET.to_string()),
        ("HARK_RATE_LIMIT__WINDOW_SECS", REST_WINDOW_SECS.to_string()),
        // Slowed down so that only the revocation bus can meet the bound.
        ("HARK_AUTH_EPOCH_POLL_MS", "60000".to_string()),
        ("HARK_JOB_LEASE_MS", JOB_LEASE_MS.to_string()),
        ("HARK_WORKERS", workers.to_string()),
        // One JSON object a line: the workers' events are read from the logs.
        ("HARK_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(storage.node_env());
    env
}

fn start_node(install: &Install, storage: &AudioStorage, role: Role) -> Server {
    let workers = match role {
        Role::Api => 0,
        Role::ApiWithWorker => 1,
    };
    let env = cluster_env(storage, workers);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    install.serve(&env)
}

fn start_worker(install: &Install, storage: &AudioStorage) -> Server {
    let env = cluster_env(storage, 2);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    install.worker(&[], &env)
}

impl Cluster {
    fn a(&self) -> &Server {
        &self.nodes[0]
    }
    fn b(&self) -> &Server {
        &self.nodes[1]
    }
    fn c(&self) -> &Server {
        &self.nodes[2]
    }

    /// Everything the processes logged, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, p) in ["A", "B", "C"].iter().zip(&self.nodes) {
            out.push_str(&format!("--- node {name} ---\n{}", p.log()));
        }
        out.push_str(&format!("--- worker ---\n{}", self.worker.log()));
        out
    }

    async fn usage(&self, account: &str) -> Vec<hark_store::UsageEvent> {
        let account = AccountId::parse(account).expect("account id");
        self.store
            .usage_events(account)
            .await
            .expect("usage events")
    }

    /// The usage events of `idempotency_key`, once no more arrive: waits for the first,
    /// then long enough for a second close or a second worker to have billed again.
    async fn billed(&self, account: &str, idempotency_key: &str) -> Vec<hark_store::UsageEvent> {
        let ours = |events: Vec<hark_store::UsageEvent>| -> Vec<_> {
            events
                .into_iter()
                .filter(|e| e.event.idempotency_key == idempotency_key)
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ours(self.usage(account).await).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        ours(self.usage(account).await)
    }

    async fn status(&self, node: &Server, key: &str) -> u16 {
        self.http
            .get(format!("{}/v2/transcript?limit=1", node.base_url))
            .header("authorization", key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {}: {e}", node.base_url))
            .status()
            .as_u16()
    }

    /// Polls `node` with `key` until it is refused; how long after `since` that was.
    async fn until_refused(&self, node: &Server, key: &str, since: Instant) -> Duration {
        loop {
            if self.status(node, key).await == 401 {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < BOUND * 10,
                "{} still accepts the revoked key after {:?}",
                node.base_url,
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A call that must answer `want`; its JSON body (`Null` when empty).
    async fn call(&self, req: reqwest::RequestBuilder, want: u16, what: &str) -> Value {
        let response = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, want, "{what} answered {status}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
        }
    }

    /// Signs the account's Owner in through `node` (management API session token).
    async fn sign_in(&self, node: &Server, email: &str) -> String {
        let v = self
            .call(
                self.http
                    .post(format!("{}/api/v1/auth/login", node.base_url))
                    .json(
                        &json!({"email": email, "password": OWNER_PASSWORD, "return_token": true}),
                    ),
                200,
                "sign-in",
            )
            .await;
        v["token"].as_str().expect("session token").to_string()
    }

    /// `POST /v2/upload` then `POST /v2/transcript` (with `options` besides `audio_url`)
    /// through `node`; the transcript id.
    async fn submit(&self, node: &Server, key: &str, audio: Vec<u8>, options: Value) -> String {
        let uploaded = self
            .call(
                self.http
                    .post(format!("{}/v2/upload", node.base_url))
                    .header("authorization", key)
                    .body(audio),
                200,
                "upload",
            )
            .await;
        let mut request = options;
        request["audio_url"] = uploaded["upload_url"].clone();
        let created = self
            .call(
                self.http
                    .post(format!("{}/v2/transcript", node.base_url))
                    .header("authorization", key)
                    .json(&request),
                200,
                "creating a transcript",
            )
            .await;
        created["id"].as_str().expect("transcript id").to_string()
    }

    /// Polls the transcript through `node` until it completed or failed.
    async fn finished(&self, node: &Server, key: &str, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let t = self
                .call(
                    self.http
                        .get(format!("{}/v2/transcript/{id}", node.base_url))
                        .header("authorization", key),
                    200,
                    "reading a transcript",
                )
                .await;
            if t["status"] == "completed" || t["status"] == "error" {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "transcript {id} not finished within {limit:?}: {t}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A 16 kHz mono 16-bit WAV file of `pcm` (s16le).
fn wav(pcm: &[u8]) -> Vec<u8> {
    let data_len = pcm.len() as u32;
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // format chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// "go forward ten meters" as s16le PCM at 16 kHz.
fn speech_pcm() -> Vec<u8> {
    let path = fixture_path("HARK_TEST_GOFORWARD_RAW");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// How long the wordless jobs' audio is: just over the shortest audio accepted (160 ms).
const BLIP_MS: i64 = 200;
/// The wordless jobs transcribe only their first 40 ms (`audio_end_at`): too short to
/// hold a word, so the engine answers without running the model (whose full 30 s window
/// would take seconds on a loaded machine), while the job still goes all the way
/// through upload, queue, decoding, completion and billing (for the whole file).
const BLIP_END_AT_MS: i64 = 40;

/// Silence of `BLIP_MS`.
fn blip_pcm() -> Vec<u8> {
    vec![0u8; BLIP_MS as usize * 32]
}

fn ws_url(node: &Server, query: &str) -> String {
    format!(
        "{}/v3/ws?sample_rate=16000{query}",
        node.base_url.replacen("http", "ws", 1)
    )
}

/// Opens `/v3/ws` on `node` with an API key; the session id from `Begin`.
async fn open_session(node: &Server, key: &str) -> (Ws, String) {
    let mut request = ws_url(node, "").into_client_request().expect("request");
    request
        .headers_mut()
        .insert("authorization", key.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    match first_answer(&mut ws).await {
        Opened(id) => (ws, id),
        Refused(code, reason) => panic!("session refused: {code} {reason}"),
    }
}

enum Answer {
    Opened(String),
    Refused(u16, String),
}
use Answer::{Opened, Refused};

/// The server's first word on a new session: `Begin` or a close.
async fn first_answer(ws: &mut Ws) -> Answer {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON message");
                if v["type"] == "Begin" {
                    return Opened(v["id"].as_str().expect("session id").to_string());
                }
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return Refused(u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("neither Begin nor a close frame: {other:?}"),
        }
    }
}

/// Reads until the server's close frame: its code and reason, and when it came.
async fn closed(ws: &mut Ws) -> (u16, String, Instant) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    Instant::now(),
                )
            }
            Ok(Some(Ok(_))) => {}
            other => {
                panic!("the session ended without a close frame, or not within 20 s: {other:?}")
            }
        }
    }
}

/// Sends `pcm` as 100 ms frames.
async fn send_audio(ws: &mut Ws, pcm: &[u8]) {
    for frame in pcm.chunks(3200) {
        ws.send(Message::Binary(frame.to_vec().into()))
            .await
            .expect("sending audio");
    }
}

/// A key revoked through A is refused by B and C within the bound, and the live session
/// of it that C holds ends (1008, with the reason) within the same bound, billed once.
async fn revocation_reaches_every_node(cl: &Cluster, owner: &Tenant, token: &str) {
    let keys_url = format!(
        "{}/api/v1/accounts/{}/projects/{}/keys",
        cl.a().base_url,
        owner.account_id,
        owner.project_id
    );
    let speech = speech_pcm();
    let second = &speech[..32_000];
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let created = cl
            .call(
                cl.http
                    .post(&keys_url)
                    .bearer_auth(token)
                    .json(&json!({"name": format!("revoked {round}")})),
                201,
                "creating a key",
            )
            .await;
        let key_id = created["id"].as_str().expect("key id");
        let key = created["key"].as_str().expect("key secret");
        for node in &cl.nodes {
            assert_eq!(
                cl.status(node, key).await,
                200,
                "a new key works everywhere"
            );
        }
        // In the first round C holds a live session of the key, with a second of speech.
        let mut session = if round == 0 {
            let (mut ws, id) = open_session(cl.c(), key).await;
            send_audio(&mut ws, second).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some((ws, id))
        } else {
            None
        };
        let started = Instant::now();
        cl.call(
            cl.http
                .delete(format!("{keys_url}/{key_id}"))
                .bearer_auth(token),
            200,
            "revoking through A",
        )
        .await;
        let ended = async {
            match session.as_mut() {
                Some((ws, _)) => Some(closed(ws).await),
                None => None,
            }
        };
        let (on_b, on_c, ended) = tokio::join!(
            cl.until_refused(cl.b(), key, started),
            cl.until_refused(cl.c(), key, started),
            ended
        );
        worst = worst.max(on_b).max(on_c);
        assert_eq!(cl.status(cl.a(), key).await, 401);
        if let (Some((code, reason, at)), Some((_, id))) = (ended, &session) {
            assert_eq!(code, 1008, "close reason {reason}");
            assert!(reason.contains("revoked"), "close reason {reason}");
            let lag = at - started;
            assert!(
                lag < BOUND,
                "C ended the session {lag:?} after the revocation"
            );
            let billed = cl.billed(&owner.account_id, &format!("stream:{id}")).await;
            assert_eq!(billed.len(), 1, "billed exactly once: {billed:#?}");
            let audio_ms = billed[0].event.audio_ms;
            assert!(
                (1..=1000).contains(&audio_ms),
                "billed {audio_ms} ms for the second of audio sent"
            );
        }
    }
    assert!(
        worst < BOUND,
        "slowest propagation to B or C: {worst:?}\n{}",
        cl.logs()
    );
}

/// 100 connections over the three nodes race to redeem one temporary token: one session
/// opens, every other connection is refused, and one session is billed.
async fn one_token_opens_one_session(cl: &Cluster, tenant: &Tenant) {
    let minted = cl
        .call(
            cl.http
                .get(format!(
                    "{}/v3/token?expires_in_seconds=120",
                    cl.a().base_url
                ))
                .header("authorization", &tenant.api_key),
            200,
            "minting a token",
        )
        .await;
    let token = minted["token"].as_str().expect("token").to_string();
    let start = Arc::new(tokio::sync::Barrier::new(TOKEN_RACERS));
    let racers: Vec<_> = (0..TOKEN_RACERS)
        .map(|i| {
            let url = ws_url(&cl.nodes[i % 3], &format!("&token={token}"));
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let (mut ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("websocket upgrade");
                let answer = first_answer(&mut ws).await;
                (ws, answer)
            })
        })
        .collect();
    let mut opened = Vec::new();
    let mut refusals: HashMap<(u16, String), usize> = HashMap::new();
    for racer in racers {
        let (ws, answer) = racer.await.expect("racer");
        match answer {
            Opened(id) => opened.push((ws, id)),
            Refused(code, reason) => *refusals.entry((code, reason)).or_default() += 1,
        }
    }
    assert_eq!(
        opened.len(),
        1,
        "one token opened {} sessions; refusals: {refusals:?}",
        opened.len()
    );
    let used = (
        1008,
        "Unauthorized Connection: Temporary token has already been used".to_string(),
    );
    assert_eq!(
        refusals,
        HashMap::from([(used, TOKEN_RACERS - 1)]),
        "every other connection is told the token was used"
    );
    let (mut ws, id) = opened.pop().expect("the session");
    send_audio(&mut ws, &speech_pcm()[..16_000]).await;
    ws.send(Message::Text(r#"{"type":"Terminate"}"#.into()))
        .await
        .expect("terminate");
    let (code, reason, _) = closed(&mut ws).await;
    assert_eq!(code, 1000, "{reason}");
    let billed = cl.billed(&tenant.account_id, &format!("stream:{id}")).await;
    assert_eq!(billed.len(), 1, "{billed:#?}");
    let streaming: Vec<_> = cl
        .usage(&tenant.account_id)
        .await
        .into_iter()
        .filter(|e| e.event.product == "streaming")
        .collect();
    assert_eq!(streaming.len(), 1, "one session was billed: {streaming:#?}");
}

/// The account's REST budget holds across the three nodes: of budget + 200 requests
/// spread over A, B and C, exactly the budget is answered.
async fn the_rest_budget_is_exact(cl: &Cluster, tenant: &Tenant) {
    let extra = 200;
    let statuses: Vec<u16> = futures::stream::iter(0..REST_BUDGET + extra)
        .map(|i| cl.status(&cl.nodes[i % 3], &tenant.api_key))
        .buffer_unordered(12)
        .collect()
        .await;
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    assert_eq!(
        counts,
        HashMap::from([(200, REST_BUDGET), (429, extra)]),
        "answers by status over three nodes sharing a budget of {REST_BUDGET}\n{}",
        cl.logs()
    );
}

/// What the workers logged about each transcript: (message, transcript, attempt).
fn job_events(log: &str) -> Vec<(String, String, Option<i64>)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| {
            let fields = &v["fields"];
            let message = fields["message"].as_str()?;
            if message != "transcribing" && message != "job finished" {
                return None;
            }
            Some((
                message.to_string(),
                fields["transcript"].as_str()?.to_string(),
                fields["attempt"].as_i64(),
            ))
        })
        .collect()
}

/// The transcripts a process started and had not finished.
fn unfinished(log: &str) -> HashSet<String> {
    let mut running = HashSet::new();
    for (message, id, _) in job_events(log) {
        if message == "transcribing" {
            running.insert(id);
        } else {
            running.remove(&id);
        }
    }
    running
}

/// 200 jobs submitted through all three nodes; C, which runs a worker, is `kill -9`ed
/// while it transcribes one. Every job completes exactly once (one finish in the logs,
/// one usage event) and those C was running are finished by the worker. C comes back
/// without workers.
async fn jobs_survive_a_killed_node(cl: &mut Cluster, tenant: &Tenant) {
    let speech = wav(&speech_pcm());
    let blip = wav(&blip_pcm());
    let shared: &Cluster = cl;
    let mut submitted: Vec<(String, bool)> = futures::stream::iter(SPEECH_JOBS..JOBS)
        .map(|i| {
            let audio = blip.clone();
            let node = &shared.nodes[i % 3];
            let key = tenant.api_key.as_str();
            let options = json!({"audio_end_at": BLIP_END_AT_MS});
            async move { (shared.submit(node, key, audio, options).await, false) }
        })
        .buffered(8)
        .collect()
        .await;
    // The speech goes last, so it is still queued or running when the watch below starts
    // (submitted first, it could all be done while the blips were still being sent).
    for i in 0..SPEECH_JOBS {
        let id = cl
            .submit(&cl.nodes[i % 3], &tenant.api_key, speech.clone(), json!({}))
            .await;
        submitted.push((id, true));
    }
    let speech_ids: HashSet<&str> = submitted
        .iter()
        .filter(|(_, s)| *s)
        .map(|(id, _)| id.as_str())
        .collect();

    // Kill C while it transcribes speech (a blip may be over before the signal lands).
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        if let Some(id) = unfinished(&cl.c().log())
            .into_iter()
            .find(|id| speech_ids.contains(id.as_str()))
        {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "C never ran a speech job\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cl.nodes[2].kill9();
    // What C wrote before it died is still in the pipe for a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c_log = cl.c().log();
    let interrupted = unfinished(&c_log);
    assert!(interrupted.contains(&victim), "{c_log}");

    // Everything completes, through the surviving nodes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = cl
            .call(
                cl.http
                    .get(format!("{}/v2/transcript?limit=200", cl.a().base_url))
                    .header("authorization", &tenant.api_key),
                200,
                "listing transcripts",
            )
            .await;
        let rows = list["transcripts"].as_array().expect("transcripts");
        assert_eq!(rows.len(), JOBS, "{list}");
        let failed: Vec<_> = rows.iter().filter(|t| t["status"] == "error").collect();
        assert!(failed.is_empty(), "failed jobs: {failed:?}\n{}", cl.logs());
        if rows.iter().all(|t| t["status"] == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all jobs completed within 120 s: {list}\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Each finished exactly once: once in the logs of C (until it died) and the worker ...
    let worker_events = job_events(&cl.worker.log());
    let mut finishes: HashMap<String, usize> = HashMap::new();
    for (message, id, _) in job_events(&c_log).into_iter().chain(worker_events.clone()) {
        if message == "job finished" {
            *finishes.entry(id).or_default() += 1;
        }
    }
    for (id, _) in &submitted {
        assert_eq!(
            finishes.get(id).copied().unwrap_or(0),
            1,
            "transcript {id} finished other than once\n{}",
            cl.logs()
        );
    }
    // ... where the worker ran again what C had been running.
    for id in &interrupted {
        assert!(
            worker_events
                .iter()
                .any(|(m, i, attempt)| m == "transcribing" && i == id && *attempt >= Some(2)),
            "the worker did not take over {id}\n{}",
            cl.worker.log()
        );
    }
    // ... and billed exactly once, for its audio.
    let usage: Vec<_> = cl
        .usage(&tenant.account_id)
        .await
        .into_iter()
        .filter(|e| e.event.product == "speech_to_text")
        .collect();
    let mut billed: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in &usage {
        billed
            .entry(e.event.idempotency_key.as_str())
            .or_default()
            .push(e.event.audio_ms);
    }
    assert_eq!(usage.len(), JOBS, "one usage event per job: {usage:#?}");
    let speech_ms = (speech_pcm().len() / 32) as i64;
    for (id, is_speech) in &submitted {
        let want = if *is_speech { speech_ms } else { BLIP_MS };
        let got = billed.get(format!("transcript:{id}").as_str());
        assert!(
            got.is_some_and(|ms| ms.len() == 1 && (ms[0] - want).abs() <= 1),
            "transcript {id}: billed {got:?}, want once {want} ms"
        );
    }
    // The speech was really transcribed, the interrupted job too.
    for id in &speech_ids {
        let t = cl
            .finished(cl.b(), &tenant.api_key, id, Duration::from_secs(5))
            .await;
        let text = t["text"].as_str().unwrap_or_default();
        assert_eq!(normalise(text), SPEECH_WORDS, "transcript {id}: {t}");
    }

    // C again, now an API node only: from here on the worker alone transcribes.
    let restarted = start_node(&cl.install, &cl.storage, Role::Api);
    cl.nodes[2] = restarted;
}

/// An upload through A is transcribed by the worker; its audio goes when its transcript,
/// its project, or its account is deleted (through B, B and C).
async fn uploads_go_with_what_owns_them(cl: &Cluster, owner: &Tenant, email: &str) {
    let audio = wav(&speech_pcm());
    let token = cl.sign_in(cl.a(), email).await;
    let account_url = format!("{}/api/v1/accounts/{}", cl.b().base_url, owner.account_id);

    // Transcribed by the worker (the API nodes run none), then read through another node.
    let transcribe = |project: String, key: String| {
        let audio = audio.clone();
        async move {
            let id = cl.submit(cl.a(), &key, audio, json!({})).await;
            let t = cl
                .finished(cl.b(), &key, &id, Duration::from_secs(120))
                .await;
            assert_eq!(t["status"], "completed", "{t}");
            assert_eq!(
                normalise(t["text"].as_str().unwrap_or_default()),
                SPEECH_WORDS
            );
            assert!(
                job_events(&cl.worker.log())
                    .iter()
                    .any(|(m, i, _)| m == "job finished" && *i == id),
                "the worker did not transcribe {id}\n{}",
                cl.logs()
            );
            assert_eq!(
                cl.storage.objects_of(&project).await.len(),
                1,
                "the upload is stored"
            );
            id
        }
    };
    let gone = |project: String, after: &'static str| async move {
        let left = cl.storage.objects_of(&project).await;
        assert!(left.is_empty(), "audio left after {after}: {left:?}");
    };

    // 1. Its transcript is deleted.
    let id = transcribe(owner.project_id.clone(), owner.api_key.clone()).await;
    cl.call(
        cl.http
            .delete(format!("{}/v2/transcript/{id}", cl.b().base_url))
            .header("authorization", &owner.api_key),
        200,
        "deleting the transcript",
    )
    .await;
    gone(owner.project_id.clone(), "deleting its transcript").await;

    // 2. Its project is deleted.
    let project = cl
        .call(
            cl.http
                .post(format!("{account_url}/projects"))
                .bearer_auth(&token)
                .json(&json!({"name": "doomed"})),
            201,
            "creating a project",
        )
        .await["id"]
        .as_str()
        .expect("project id")
        .to_string();
    let key = cl
        .call(
            cl.http
                .post(format!("{account_url}/projects/{project}/keys"))
                .bearer_auth(&token)
                .json(&json!({"name": "doomed"})),
            201,
            "creating a key",
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    transcribe(project.clone(), key).await;
    cl.call(
        cl.http
            .delete(format!("{account_url}/projects/{project}"))
            .bearer_auth(&token),
        204,
        "deleting the project",
    )
    .await;
    gone(project.clone(), "deleting its project").await;

    // 3. Its account is deleted (the Owner re-authenticates first), through C.
    transcribe(owner.project_id.clone(), owner.api_key.clone()).await;
    let on_c = format!("{}/api/v1", cl.c().base_url);
    cl.call(
        cl.http
            .post(format!("{on_c}/auth/reauth"))
            .bearer_auth(&token)
            .json(&json!({"password": OWNER_PASSWORD})),
        200,
        "re-authenticating",
    )
    .await;
    cl.call(
        cl.http
            .delete(format!("{on_c}/accounts/{}", owner.account_id))
            .bearer_auth(&token),
        204,
        "deleting the account",
    )
    .await;
    gone(owner.project_id.clone(), "deleting its account").await;
}

fn cluster_suite(database_url: Option<String>) {
    let database_url = database_url.expect("a PostgreSQL database");
    let install = Install::new(Some(database_url.clone()));
    // Accounts first: `admin init` also makes the master key all the processes share.
    let enterprise = ["--plan", "enterprise"];
    let revoker = install.admin_init_account("revoke@example.com", "revocation", &enterprise);
    let racer = install.admin_init_account("tokens@example.com", "tokens", &enterprise);
    let budget = install.admin_init_account("budget@example.com", "budget", &enterprise);
    let jobs = install.admin_init_account("jobs@example.com", "jobs", &enterprise);
    let storer = install.admin_init_account("storage@example.com", "storage", &enterprise);
    for email in ["revoke@example.com", "storage@example.com"] {
        install.set_password(email, OWNER_PASSWORD);
    }
    install.install_model();
    let storage = AudioStorage::s3();

    let started = Instant::now();
    let (nodes, worker) = std::thread::scope(|s| {
        let nodes: Vec<_> = [Role::Api, Role::Api, Role::ApiWithWorker]
            .map(|role| {
                let (install, storage) = (&install, &storage);
                s.spawn(move || start_node(install, storage, role))
            })
            .into_iter()
            .collect();
        let worker = s.spawn(|| start_worker(&install, &storage));
        (
            nodes
                .into_iter()
                .map(|n| n.join().expect("starting a node"))
                .collect::<Vec<_>>(),
            worker.join().expect("starting the worker"),
        )
    });
    eprintln!("cluster up in {:?}", started.elapsed());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = SqlStore::open(&database_url, clock)
            .await
            .expect("opening the database");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut cl = Cluster {
            install,
            storage,
            nodes,
            worker,
            store,
            http,
        };
        let token = cl.sign_in(cl.a(), "revoke@example.com").await;
        let timed = |name: &str, since: Instant| eprintln!("{name}: {:?}", since.elapsed());

        let t = Instant::now();
        revocation_reaches_every_node(&cl, &revoker, &token).await;
        timed("revocation", t);
        let t = Instant::now();
        one_token_opens_one_session(&cl, &racer).await;
        timed("token race", t);
        let t = Instant::now();
        the_rest_budget_is_exact(&cl, &budget).await;
        timed("REST budget", t);
        let t = Instant::now();
        jobs_survive_a_killed_node(&mut cl, &jobs).await;
        timed("jobs and kill -9", t);
        let t = Instant::now();
        uploads_go_with_what_owns_them(&cl, &storer, "storage@example.com").await;
        timed("uploads", t);

        cl.store.close().await;
    });
}

#[test]
fn three_api_nodes_and_a_worker_on_postgres_and_redis() {
    with_database(true, cluster_suite);
}
