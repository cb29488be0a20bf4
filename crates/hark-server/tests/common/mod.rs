//! Integration-test harness: boots the real server on port 0 over a fresh SQLite or
//! PostgreSQL database and provisions accounts, projects and keys for tests.
#![allow(dead_code)]

pub mod browser;
pub mod mgmt;

use hark_core::clock::{Clock, SystemClock};
use hark_core::speech::{
    SpeechEngine, SpeechError, SpeechStream, StreamEvent, StreamingConfig, StreamingUpdate,
    TranscribeRequest, Transcription, Turn, Word,
};
use hark_core::{AccountId, ApiKeyId, Plan, ProjectId, UserId};
use hark_server::config::Config;
use hark_server::RunningServer;
use hark_store::testing::TestDatabase;
use hark_store::{AccountStore, Actor, KeyStore, NewAccount, SqlStore};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub store: SqlStore,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

pub struct Tenant {
    pub account: AccountId,
    pub project: ProjectId,
    pub key: String,
    pub key_id: ApiKeyId,
}

impl TestServer {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, None, |_| {}).await
    }

    pub async fn start_with(
        db: Db,
        engine: Option<Arc<dyn SpeechEngine>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with_clock(db, engine, Arc::new(SystemClock), tweak).await
    }

    /// As [`start_with`], on an injected clock (e.g. a `ManualClock`) for expiry tests.
    pub async fn start_with_clock(
        db: Db,
        engine: Option<Arc<dyn SpeechEngine>>,
        clock: Arc<dyn Clock>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = match db {
            Db::Sqlite => TestDatabase::sqlite().await,
            Db::Postgres => TestDatabase::postgres().await,
        };
        let mut config = Config {
            data_dir: dir.path().join("data"),
            database_url: database.url.clone(),
            bind: "127.0.0.1:0".into(),
            ..Config::default()
        };
        tweak(&mut config);
        let server = hark_server::start(config.clone(), engine, clock.clone())
            .await
            .expect("server starts");
        let base = server.state.public_base_url.clone();
        let store = SqlStore::open(&database.url, clock.clone())
            .await
            .expect("store");
        Self {
            server: Some(server),
            base,
            store,
            config,
            clock,
            http: reqwest::Client::new(),
            db: Some(database),
            _dir: dir,
        }
    }

    /// Another node on this server's database (same master key, own data directory),
    /// with its own store handle; dropping the database stays with `self`.
    pub async fn start_peer(
        &self,
        engine: Option<Arc<dyn SpeechEngine>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = if self.config.master_key.is_empty() {
            std::fs::read_to_string(self.config.data_dir.join("master.key"))
                .expect("first node's master key")
        } else {
            self.config.master_key.expose().to_string()
        };
        let mut config = Config {
            data_dir: dir.path().join("data"),
            master_key: hark_core::keys::Secret::new(key.trim().to_string()),
            ..self.config.clone()
        };
        tweak(&mut config);
        let server = hark_server::start(config.clone(), engine, self.clock.clone())
            .await
            .expect("peer starts");
        let base = server.state.public_base_url.clone();
        let store = SqlStore::open(&config.database_url, self.clock.clone())
            .await
            .expect("store");
        Self {
            server: Some(server),
            base,
            store,
            config,
            clock: self.clock.clone(),
            http: reqwest::Client::new(),
            db: None,
            _dir: dir,
        }
    }

    /// The JSON body of an unauthenticated `GET path`, whatever its status.
    #[allow(dead_code)]
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect(path)
            .json()
            .await
            .expect("json")
    }

    /// The body of `GET /ready` (what is up: database, model, storage, listener).
    #[allow(dead_code)]
    pub async fn ready_report(&self) -> serde_json::Value {
        self.get_json("/ready").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn master_key(&self) -> hark_core::seal::MasterKey {
        hark_server::load_master_key(&self.config).expect("master key")
    }

    /// A PAYG tenant with credit. PAYG is prepaid: once usage takes the balance below
    /// zero, new work is refused (usage_billing.rs tests that); tests of other things
    /// that do several transcripts or sessions start with money in the account.
    pub async fn funded_tenant(&self) -> Tenant {
        use hark_store::{BillingStore, CreditKind};
        let t = self.tenant(Plan::Payg).await;
        self.store
            .grant_credit(
                t.account,
                100_000_000,
                CreditKind::Operator,
                "test credit",
                &hark_store::Actor::Operator,
            )
            .await
            .expect("credit");
        t
    }

    /// A new account (Owner, default project, one key) on `plan`.
    pub async fn tenant(&self, plan: Plan) -> Tenant {
        let mk = self.master_key();
        let account = AccountId::new();
        let boot = self
            .store
            .create_account(
                NewAccount {
                    id: account,
                    name: "Test".into(),
                    plan,
                    owner_id: UserId::new(),
                    owner_email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                    project: hark_server::provisioning::new_project(&mk, "default"),
                },
                &Actor::Operator,
            )
            .await
            .expect("account");
        let (record, secret) = self.key(boot.project.id, None).await;
        Tenant {
            account,
            project: boot.project.id,
            key: secret,
            key_id: record,
        }
    }

    /// A new key in `project`, optionally expiring after `expires_in_ms`.
    pub async fn key(&self, project: ProjectId, expires_in_ms: Option<i64>) -> (ApiKeyId, String) {
        let (record, secret) = hark_server::provisioning::issue_api_key(
            &self.store,
            &self.master_key(),
            self.clock.as_ref(),
            project,
            "test key",
            expires_in_ms,
            &Actor::Operator,
        )
        .await
        .expect("key");
        (record.id, secret.into_inner())
    }

    /// A second project in the tenant's account, with its own key.
    pub async fn second_project(&self, tenant: &Tenant) -> (ProjectId, String) {
        let mut o = hark_core::plan::LimitOverrides::default();
        o.set("projects=10").expect("override");
        o.set("api_keys=50").expect("override");
        self.store
            .set_plan(tenant.account, Plan::Enterprise, o, &Actor::Operator)
            .await
            .expect("plan");
        let p = self
            .store
            .create_project(
                tenant.account,
                hark_server::provisioning::new_project(&self.master_key(), "second"),
                &Actor::Operator,
            )
            .await
            .expect("project");
        let (_, key) = self.key(p.id, None).await;
        (p.id, key)
    }

    /// Revokes a key the way the operator CLI does (store, then the control socket).
    pub async fn revoke(&self, key: ApiKeyId) {
        self.store
            .revoke_api_key(key, &Actor::Operator)
            .await
            .expect("revoke");
        hark_server::control::notify_credentials_changed(&self.config.data_dir).await;
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.store.close().await;
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}

/// A test double of the speech engine: the "audio" file holds the words to return,
/// one per line as `text start_ms end_ms`. Lets API tests know the exact transcript.
pub struct ScriptedEngine;

impl SpeechEngine for ScriptedEngine {
    fn models(&self) -> Vec<String> {
        vec!["whisper-tiny.en".into()]
    }

    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError> {
        let text = std::fs::read_to_string(&request.path)
            .map_err(|_| SpeechError::NotAudio("unknown".into()))?;
        if !text.starts_with(SCRIPT_MAGIC) {
            return Err(SpeechError::NotAudio("text/plain".into()));
        }
        let mut words = Vec::new();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() != 3 {
                return Err(SpeechError::Engine(format!("bad script line {line}")));
            }
            words.push(Word {
                text: parts[0].to_string(),
                start: parts[1]
                    .parse()
                    .map_err(|_| SpeechError::Engine("start".into()))?,
                end: parts[2]
                    .parse()
                    .map_err(|_| SpeechError::Engine("end".into()))?,
                confidence: 0.9,
            });
        }
        if words.is_empty() {
            return Err(SpeechError::TooShort);
        }
        let duration = words.last().map(|w| w.end as f64 / 1000.0).unwrap_or(0.0);
        Ok(Transcription {
            text: hark_core::views::plain_text(&words),
            words,
            confidence: 0.9,
            audio_duration_secs: duration,
            language_code: Some("en".into()),
            language_confidence: None,
            model: request.model.clone(),
        })
    }

    fn open_stream(
        self: Arc<Self>,
        model: &str,
        config: StreamingConfig,
    ) -> Result<Box<dyn SpeechStream>, SpeechError> {
        if !self.models().iter().any(|m| m == model) {
            return Err(SpeechError::NoModel(model.into()));
        }
        Ok(Box::new(ScriptedStream {
            config,
            ..ScriptedStream::default()
        }))
    }
}

/// The streaming test double: each burst of loud audio (a tone) is one word, named
/// `w<N>` in session order; a partial turn follows every word, and a turn ends after
/// `min_turn_silence_ms` of quiet, on ForceEndpoint, or at the end of the stream.
#[derive(Default)]
pub struct ScriptedStream {
    config: StreamingConfig,
    samples: u64,
    word_start: Option<u64>,
    words: Vec<Word>,
    words_total: u32,
    silence_samples: u64,
    turn_order: u32,
}

impl ScriptedStream {
    fn ms(samples: u64) -> u64 {
        samples * 1000 / 16_000
    }

    fn turn(&self, eot: f64) -> Turn {
        Turn {
            turn_order: self.turn_order,
            text: hark_core::views::plain_text(&self.words),
            words: self.words.clone(),
            start_ms: self.words.first().map_or(0, |w| w.start),
            end_ms: self.words.last().map_or(0, |w| w.end),
            confidence: 0.9,
            end_of_turn_confidence: eot,
        }
    }

    fn end_turn(&mut self) -> Vec<StreamEvent> {
        if let Some(start) = self.word_start.take() {
            self.close_word(start);
        }
        if self.words.is_empty() {
            return Vec::new();
        }
        let turn = self.turn(1.0);
        self.words.clear();
        self.turn_order += 1;
        vec![StreamEvent::Final(turn)]
    }

    fn close_word(&mut self, start: u64) {
        self.words_total += 1;
        self.words.push(Word {
            text: format!("w{}", self.words_total),
            start: Self::ms(start),
            end: Self::ms(self.samples),
            confidence: 0.9,
        });
    }
}

impl SpeechStream for ScriptedStream {
    fn push_audio(&mut self, pcm: &[f32]) -> Result<Vec<StreamEvent>, SpeechError> {
        let mut events = Vec::new();
        for frame in pcm.chunks(320) {
            let level = frame.iter().map(|s| s.abs()).sum::<f32>() / frame.len() as f32;
            let loud = level > 0.05;
            if loud {
                self.silence_samples = 0;
                if self.word_start.is_none() {
                    self.word_start = Some(self.samples);
                }
            }
            self.samples += frame.len() as u64;
            if !loud {
                self.silence_samples += frame.len() as u64;
                if let Some(start) = self.word_start.take() {
                    self.close_word(start);
                    events.push(StreamEvent::Partial(self.turn(0.2)));
                }
                if !self.words.is_empty()
                    && Self::ms(self.silence_samples) >= self.config.min_turn_silence_ms
                {
                    events.extend(self.end_turn());
                }
            }
        }
        Ok(events)
    }

    fn force_endpoint(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(self.end_turn())
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(self.end_turn())
    }

    fn update(&mut self, update: &StreamingUpdate) {
        self.config.apply(update);
    }

    fn audio_ms(&self) -> u64 {
        Self::ms(self.samples)
    }
}

/// Starts every script. Binary (a NUL byte), so the upload check, which refuses
/// recognisable non-audio such as text, lets it through as it would unknown audio.
pub const SCRIPT_MAGIC: &str = "\0HARK-SCRIPT\n";

/// A script the ScriptedEngine reads: words 400 ms apart.
pub fn script(words: &[&str]) -> Vec<u8> {
    let mut s = String::from(SCRIPT_MAGIC);
    for (i, w) in words.iter().enumerate() {
        s.push_str(&format!("{w} {} {}\n", i * 400, i * 400 + 300));
    }
    s.into_bytes()
}

/// Polls a transcript until it leaves queued/processing.
pub async fn wait_done(ts: &TestServer, key: &str, id: &str) -> serde_json::Value {
    for _ in 0..600 {
        let v: serde_json::Value = ts
            .http
            .get(ts.url(&format!("/v2/transcript/{id}")))
            .header("authorization", key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if v["status"] == "completed" || v["status"] == "error" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("transcript {id} did not finish");
}

/// Declares each listed async test fn once per database.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::common::Db::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::common::Db::Postgres).await } )* }
    };
}
