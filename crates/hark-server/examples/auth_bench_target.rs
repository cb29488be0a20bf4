//! Target process of the authentication benchmark (`bench/auth/run.sh`).
//!
//! Boots the real server (`hark_server::start`, SQLite in a temporary directory, no
//! transcription workers, a rate limit far above what the benchmark sends) and, on a
//! second port of the same process and over the same `AppState`, a router whose
//! `GET /v2/transcript/{id}` does the handler's work for a fixed, pre-resolved
//! `KeyPrincipal`: no `Authorization` header is read, no key is checked, no rate
//! limiter is consulted. Both routers carry the same layers, so the only difference
//! between the two endpoints is the `ApiPrincipal` extractor.
//!
//! It provisions one account and key, creates one transcript through the HTTP API
//! (upload, then `POST /v2/transcript`), optionally completes it with a synthetic
//! result of `HARK_BENCH_WORDS` words (default 0: the transcript stays `queued`, the
//! smallest response and so the case where authentication weighs most), prints one
//! JSON line and serves until SIGINT/SIGTERM.
//!
//! Environment:
//! - `HARK_BENCH_WORKER_THREADS`: tokio worker threads (default: available CPUs).
//! - `HARK_BENCH_WORDS`: words in the completed transcript (default 0 = queued).

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use hark_core::clock::{Clock, SystemClock};
use hark_core::keys::SecretDigest;
use hark_core::speech::{Transcription, Word};
use hark_core::{AccountId, Plan, UserId};
use hark_server::config::Config;
use hark_server::error::ApiResult;
use hark_server::AppState;
use hark_store::{Actor, JobOutcome, KeyPrincipal, NewAccount, NewUsageEvent};
use serde_json::{json, Value};
use std::sync::Arc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let threads = std::env::var("HARK_BENCH_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let words = std::env::var("HARK_BENCH_WORDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run(threads, words))
}

/// What `data_plane::get` does once the caller is known.
async fn transcript_json(state: &AppState, who: &KeyPrincipal, id: &str) -> ApiResult<Value> {
    hark_server::data_plane::transcript_json(state, who, id).await
}

/// `GET /v2/transcript/{id}` without authentication.
async fn unauthenticated_get(
    State((state, who)): State<(AppState, Arc<KeyPrincipal>)>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(transcript_json(&state, &who, &id).await?))
}

/// The same layers as `hark_server::router`, around the one unauthenticated route.
fn unauthenticated_router(state: AppState, who: KeyPrincipal) -> Router {
    let max_json = state.config.max_json_bytes;
    Router::new()
        .route("/v2/transcript/{id}", get(unauthenticated_get))
        .layer(DefaultBodyLimit::max(max_json))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state((state, Arc::new(who)))
}

async fn run(threads: usize, words: usize) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().join("data"),
        bind: "127.0.0.1:0".into(),
        workers: 0,
        rate_limit: hark_server::config::RateLimitConfig {
            // ~3.3 million requests a second sustained, a billion in a burst: the
            // limiter is consulted on every request but never refuses.
            requests: 1_000_000_000,
            window_secs: 300,
            ..Default::default()
        },
        ..Config::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = hark_server::start(config.clone(), None, clock.clone()).await?;
    let state = server.state.clone();
    let base = state.public_base_url.clone();

    // One account (default project) and one key, as the operator CLI would make them.
    let master_key = hark_server::load_master_key(&config)?;
    let boot = state
        .store
        .create_account(
            NewAccount {
                id: AccountId::new(),
                name: "Auth benchmark".into(),
                plan: Plan::Free,
                owner_id: UserId::new(),
                owner_email: "bench@hark.invalid".into(),
                project: hark_server::provisioning::new_project(&master_key, "default"),
            },
            &Actor::Operator,
        )
        .await?;
    let bench_store = hark_server::open_store(&config, clock.clone()).await?;
    let (_, secret) = hark_server::provisioning::issue_api_key(
        &bench_store,
        &master_key,
        clock.as_ref(),
        boot.project.id,
        "auth benchmark",
        None,
        &Actor::Operator,
    )
    .await?;
    let key = secret.into_inner();
    let principal = state
        .store
        .principal_by_digest(&SecretDigest::of(&key).to_hex())
        .await?
        .ok_or("the new key does not resolve")?;

    // One transcript, created the way a client creates it.
    let http = reqwest::Client::new();
    let mut audio = b"\0HARK-AUTH-BENCH\n".to_vec();
    audio.resize(4096, 0);
    let upload: Value = http
        .post(format!("{base}/v2/upload"))
        .header("authorization", &key)
        .body(audio)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let created: Value = http
        .post(format!("{base}/v2/transcript"))
        .header("authorization", &key)
        .json(&json!({ "audio_url": upload["upload_url"] }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let transcript_id = created["id"]
        .as_str()
        .ok_or("no transcript id in the create response")?
        .to_string();

    if words > 0 {
        complete_transcript(&bench_store, &principal, words).await?;
    }
    bench_store.close().await;

    // The unauthenticated twin, on its own port, over the same state.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let noauth_base = format!("http://{}", listener.local_addr()?);
    let app = unauthenticated_router(state.clone(), principal);
    let twin = tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "{}",
        json!({
            "auth_base": base,
            "noauth_base": noauth_base,
            "key": key,
            "transcript_id": transcript_id,
            "auth_url": format!("{base}/v2/transcript/{transcript_id}"),
            "noauth_url": format!("{noauth_base}/v2/transcript/{transcript_id}"),
            "worker_threads": threads,
            "words": words,
            "pid": std::process::id(),
        })
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    twin.abort();
    server.shutdown().await;
    drop(dir);
    Ok(())
}

/// Completes the only queued job with a synthetic result of `words` words, through
/// the store's job API as a worker would, so the GET renders a full transcript.
async fn complete_transcript(
    store: &hark_store::SqlStore,
    who: &KeyPrincipal,
    words: usize,
) -> Result<(), Error> {
    use hark_store::JobStore;
    let job = store
        .claim_job("auth-bench", 60_000)
        .await?
        .ok_or("no queued job to complete")?;
    let vocabulary = [
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
    ];
    let words: Vec<Word> = (0..words)
        .map(|i| Word {
            text: vocabulary[i % vocabulary.len()].to_string(),
            start: i as u64 * 400,
            end: i as u64 * 400 + 300,
            confidence: 0.9,
        })
        .collect();
    let duration = words.last().map_or(0.0, |w| w.end as f64 / 1000.0);
    let result = Transcription {
        text: hark_core::views::plain_text(&words),
        words,
        confidence: 0.9,
        audio_duration_secs: duration,
        language_code: Some("en".into()),
        language_confidence: None,
        model: "whisper-tiny.en".into(),
    };
    let outcome = JobOutcome::Completed {
        result_json: serde_json::to_string(&result)?,
        speech_model_used: result.model.clone(),
        audio_duration: duration,
        usage: NewUsageEvent {
            idempotency_key: format!("auth-bench-{}", job.job_id),
            account_id: who.account_id,
            project_id: who.project_id,
            api_key_id: who.key_id,
            product: hark_core::money::SPEECH_TO_TEXT.into(),
            model: result.model.clone(),
            audio_ms: (duration * 1000.0).round() as i64,
            session_ms: None,
        },
    };
    if !store
        .finish_job(&job.job_id, "auth-bench", outcome, None)
        .await?
    {
        return Err("could not complete the benchmark transcript".into());
    }
    Ok(())
}
