//! Hark's HTTP server: the AssemblyAI-compatible data plane, its authentication, the
//! transcription workers and the background tasks, over the store and speech engine.

// The transcript object is one large `json!` literal.
#![recursion_limit = "256"]

pub mod auth;
pub mod client_addr;
pub mod config;
pub mod control;
pub mod cookies;
pub mod dashboard;
pub mod data_plane;
pub mod error;
pub mod mailer;
pub mod manage;
pub mod management;
pub mod params;
pub mod provisioning;
pub mod rate_limit;
mod remote;
pub mod render;
pub mod streaming;
pub mod telemetry;
pub mod tls;
pub mod unknown_key_budget;
pub mod uploads;
mod worker;

#[cfg(test)]
mod proptests;

use crate::auth::AuthCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::rate_limit::AccountRateLimiter;
use crate::unknown_key_budget::UnknownKeyBudget;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use hark_core::clock::Clock;
use hark_core::seal::MasterKey;
use hark_core::speech::SpeechEngine;
use hark_store::{SqlStore, Store};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

pub struct AppStateInner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub master_key: Arc<MasterKey>,
    pub engine: Option<Arc<dyn SpeechEngine>>,
    pub auth: AuthCache,
    pub rate_limiter: AccountRateLimiter,
    pub public_base_url: String,
    /// Where uploaded audio is stored (`[storage]`).
    pub blobs: Arc<dyn hark_store::blobs::BlobStore>,
    /// Scratch files on this node: downloaded `audio_url`s and objects copied out of
    /// shared storage for the decoder, each removed after its job.
    pub tmp_dir: PathBuf,
    pub jobs_available: Notify,
    pub outbound: hark_outbound::OutboundClient,
    /// This process's identity in the streaming session lease.
    pub node_id: String,
    pub sessions: streaming::SessionTracker,
    /// Flips to true when the server begins to stop.
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    /// The installed model for a request's `speech_models` (first one that maps to an
    /// installed model), or the default when none is named.
    pub fn resolve_model(&self, requested: &[String]) -> Result<String, ApiError> {
        let installed = self.engine.as_ref().map(|e| e.models()).unwrap_or_default();
        if requested.is_empty() {
            return Ok(self.config.models.default.clone());
        }
        let candidates: Vec<String> = requested
            .iter()
            .map(|m| self.config.resolve_model(m))
            .collect();
        if installed.is_empty() {
            // Nothing installed: accept, and the job reports that no model is installed.
            return Ok(candidates
                .into_iter()
                .next()
                .unwrap_or_else(|| self.config.models.default.clone()));
        }
        candidates.into_iter().find(|m| installed.contains(m)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "None of the requested speech_models ({}) is available on this server; installed: {}",
                requested.join(", "),
                installed.join(", ")
            ))
        })
    }
}

/// How often the models directory is scanned for models installed or removed while
/// the server runs; requests read the list kept in memory.
const MODEL_RESCAN: Duration = Duration::from_secs(30);

/// Rescans the installed models every [`MODEL_RESCAN`] (off the async runtime).
async fn rescan_models(engine: Arc<dyn SpeechEngine>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(MODEL_RESCAN);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let engine = engine.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || engine.refresh_models()).await {
            tracing::warn!(error = %e, "could not rescan the installed models");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] hark_store::StoreError),
}

/// Loads the master key from configuration, or from `<data_dir>/master.key`, creating
/// that file (mode 0600) on first start.
pub fn load_master_key(config: &Config) -> Result<MasterKey, StartError> {
    if !config.master_key.is_empty() {
        return MasterKey::from_hex(config.master_key.expose())
            .map_err(|e| StartError::Config(e.to_string()));
    }
    let path = config.data_dir.join("master.key");
    let io = |source| StartError::Io {
        path: path.clone(),
        source,
    };
    private_dir(&config.data_dir).map_err(io)?;
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut file) => file
                .write_all(MasterKey::generate_hex().as_bytes())
                .map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    MasterKey::from_hex(&text).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))
}

/// What the master-key check value seals.
const MASTER_KEY_CHECK: &str = "hark master key check v1";
const MASTER_KEY_CHECK_CONTEXT: &str = "cluster:master_key_check";

/// Refuses to start a node whose master key differs from the one the cluster's first
/// node sealed its check value with: it could neither reveal nor verify what the
/// others sealed, nor they what it seals.
pub async fn check_master_key(store: &dyn Store, master_key: &MasterKey) -> Result<(), StartError> {
    let proposed = master_key.seal(MASTER_KEY_CHECK, MASTER_KEY_CHECK_CONTEXT);
    let stored = store.master_key_check(&proposed).await?;
    match master_key.open(&stored, MASTER_KEY_CHECK_CONTEXT) {
        Ok(text) if text == MASTER_KEY_CHECK => Ok(()),
        _ => Err(StartError::Config(
            "this node's master key cannot open the database's master-key check value: every node \
             on one database must use the same master key (master_key / HARK_MASTER_KEY_FILE, or \
             the same <data_dir>/master.key); refusing to start"
                .into(),
        )),
    }
}

pub async fn open_store(config: &Config, clock: Arc<dyn Clock>) -> Result<SqlStore, StartError> {
    private_dir(&config.data_dir).map_err(|source| StartError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let prices = config
        .price_table()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let evaluation_credit = config
        .evaluation_credit()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let url = config.effective_database_url();
    let store = SqlStore::open(&url, clock)
        .await?
        .with_prices(prices)
        .with_evaluation_credit(evaluation_credit)
        .with_currency(&config.billing.currency);
    // A SQLite database (and its journal files) is readable by this user only.
    if let Some(file) = url.strip_prefix("sqlite://") {
        let file = file.split('?').next().unwrap_or(file);
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{file}{suffix}"));
            if path.exists() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| StartError::Io { path, source })?;
            }
        }
    }
    Ok(store)
}

pub fn router(state: AppState) -> Router {
    let max_json = state.config.max_json_bytes;
    Router::new()
        .route("/v2/upload", post(data_plane::upload))
        .route(
            "/v2/transcript",
            post(data_plane::create).get(data_plane::list),
        )
        .route(
            "/v2/transcript/{id}",
            get(data_plane::get).delete(data_plane::delete),
        )
        .route("/v2/transcript/{id}/sentences", get(data_plane::sentences))
        .route(
            "/v2/transcript/{id}/paragraphs",
            get(data_plane::paragraphs),
        )
        .route(
            "/v2/transcript/{id}/word-search",
            get(data_plane::word_search),
        )
        .route("/v2/transcript/{id}/{format}", get(data_plane::subtitles))
        .route("/v3/token", get(streaming::token))
        .route("/v3/ws", get(streaming::ws))
        .nest("/api/v1", management::routes())
        .merge(dashboard::router(state.clone()))
        .route("/health", get(auth::health))
        .route("/ready", get(ready))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_json))
        .layer(axum::middleware::from_fn(telemetry::track_requests))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                // The path only: query strings can carry secrets (`/v3/ws?token=…`,
                // `webhook_auth_header_value=…`), and logs must never hold them.
                |request: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                },
            ),
        )
        .with_state(state)
}

/// `GET /ready`: 200 when this node can serve: the database answers, the audio storage
/// answers, a speech model is loaded, and the revocation listener is up (else its key
/// cache is not trusted and every request costs a database read); 503 naming what is
/// missing.
async fn ready(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let database = match state.store.auth_epoch().await {
        Ok(_) => true,
        Err(e) => {
            telemetry::database_error();
            tracing::warn!(error = %e, "readiness: database unreachable");
            false
        }
    };
    let storage = match state.blobs.check().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, storage = %state.blobs.describe(), "readiness: audio storage unreachable");
            false
        }
    };
    let model = state
        .engine
        .as_ref()
        .is_some_and(|e| !e.models().is_empty());
    let listener = state.store.credential_bus().is_connected();
    let ok = database && storage && model && listener;
    let status = if ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({
            "status": if ok { "ready" } else { "not ready" },
            "database": database,
            "storage": storage,
            "model_loaded": model,
            "revocation_listener": listener,
        })),
    )
        .into_response()
}

/// Samples the gauges that are read rather than counted: the job queue's depth and
/// whether the revocation listener is up.
async fn sample_gauges(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match state.store.queued_jobs().await {
            Ok(n) => telemetry::jobs_queued(n),
            Err(e) => {
                telemetry::database_error();
                tracing::warn!(error = %e, "could not count queued jobs");
            }
        }
        telemetry::bus_connected(state.store.credential_bus().is_connected());
        if let Some(handle) = telemetry::handle() {
            // Folds recorded histogram samples into their buckets.
            handle.run_upkeep();
        }
    }
}

/// Serves `/metrics` on its own listener, apart from the API.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(|| async { telemetry::handle().map(|h| h.render()).unwrap_or_default() }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// A server started by [`start`].
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `metrics_bind` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    /// The certificate and key in use when serving TLS.
    pub tls: Option<tls::TlsFiles>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets in-flight ones and running jobs finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        // Live streaming sessions end (and bill) on their own once told to stop.
        self.state.sessions.drained(Duration::from_secs(35)).await;
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Waits until the HTTP server ends (it runs until shutdown).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.http.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the store, binds the listener and starts the HTTP server, workers and
/// background tasks.
pub async fn start(
    config: Config,
    engine: Option<Arc<dyn SpeechEngine>>,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    start_node(config, engine, clock, Role::Serve).await
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API (REST, streaming, management) and, with `workers > 0`, transcription.
    Serve,
    /// Transcription workers only (with the webhook and mail senders): no HTTP
    /// listener, so speech can scale apart from the API.
    Worker,
}

/// Starts a transcription-only node (`hark worker`); its `addr` is unspecified.
pub async fn start_worker(
    config: Config,
    engine: Option<Arc<dyn SpeechEngine>>,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    start_node(config, engine, clock, Role::Worker).await
}

async fn start_node(
    config: Config,
    engine: Option<Arc<dyn SpeechEngine>>,
    clock: Arc<dyn Clock>,
    role: Role,
) -> Result<RunningServer, StartError> {
    let master_key = Arc::new(load_master_key(&config)?);
    // Settings only, so a bad `redis_url` is refused before anything is opened.
    let redis_url = config.redis_url.expose();
    let rate_limiter = AccountRateLimiter::new(
        config.rate_limit.requests,
        Duration::from_secs(config.rate_limit.window_secs),
        (!redis_url.is_empty()).then_some(redis_url),
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let policy = config
        .outbound_policy()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let outbound = hark_outbound::OutboundClient::new(policy)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let mailer = mailer::SmtpMailer::from_config(&config.smtp)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let store = open_store(&config, clock.clone()).await?;
    check_master_key(&store, &master_key).await?;
    let tmp_dir = config.data_dir.join("tmp");
    private_dir(&tmp_dir).map_err(|source| StartError::Io {
        path: tmp_dir.clone(),
        source,
    })?;
    let blobs = uploads::open_storage(&config)?;
    uploads::check_storage(blobs.as_ref()).await?;
    let serving = role == Role::Serve;
    if serving {
        // Before the listener accepts anything, so no upload of this node is in flight.
        uploads::sweep_at_start(&store, blobs.as_ref(), clock.now_ms()).await;
    }
    let (tls_files, tls, listener, addr) = if serving {
        let tls_files = tls::resolve_files(&config)?;
        let tls = tls_files.as_ref().map(tls::server_config).transpose()?;
        let listener = tokio::net::TcpListener::bind(&config.bind)
            .await
            .map_err(|source| StartError::Io {
                path: PathBuf::from(&config.bind),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Io {
            path: PathBuf::from(&config.bind),
            source,
        })?;
        (tls_files, tls, Some(listener), addr)
    } else {
        (None, None, None, SocketAddr::from(([0, 0, 0, 0], 0)))
    };
    if rate_limiter.is_shared() {
        tracing::info!(
            requests = config.rate_limit.requests,
            window_secs = config.rate_limit.window_secs,
            "REST rate limit shared by all nodes through Redis"
        );
    } else {
        tracing::info!(
            requests = config.rate_limit.requests,
            window_secs = config.rate_limit.window_secs,
            "REST rate limit is per node (set redis_url to share it across nodes)"
        );
    }
    let metrics_listener = if config.metrics_bind.is_empty() {
        None
    } else {
        telemetry::handle();
        let listener = tokio::net::TcpListener::bind(&config.metrics_bind)
            .await
            .map_err(|source| StartError::Io {
                path: PathBuf::from(&config.metrics_bind),
                source,
            })?;
        Some(listener)
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = AppState(Arc::new(AppStateInner {
        public_base_url: config.effective_public_base_url(serving.then_some(addr)),
        rate_limiter,
        store: Arc::new(store),
        clock,
        master_key,
        engine,
        auth: AuthCache::new(UnknownKeyBudget::new(
            config.rate_limit.unknown_keys_per_address,
            config.rate_limit.unknown_keys_window_secs,
        )),
        blobs,
        tmp_dir,
        jobs_available: Notify::new(),
        outbound,
        node_id: uuid::Uuid::new_v4().to_string(),
        sessions: streaming::SessionTracker::default(),
        shutdown: shutdown_rx.clone(),
        config,
    }));
    let mut tasks = Vec::new();
    if let Some(listener) = metrics_listener {
        tasks.push(tokio::spawn(sample_gauges(
            state.clone(),
            shutdown_rx.clone(),
        )));
        let stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve_metrics(listener, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }));
    }
    if serving {
        // Registered before the first session opens, so no other node takes this one's
        // sessions for lost.
        state
            .store
            .heartbeat_stream_node(
                &state.node_id,
                (state.config.streaming.node_lease_secs.max(3) * 1000) as i64,
            )
            .await?;
        tasks.push(tokio::spawn(streaming::upkeep(
            state.clone(),
            shutdown_rx.clone(),
        )));
    }
    if let Some(engine) = state.engine.clone() {
        tasks.push(tokio::spawn(rescan_models(engine, shutdown_rx.clone())));
    }
    if serving {
        tasks.push(tokio::spawn(uploads::expire(
            state.clone(),
            shutdown_rx.clone(),
        )));
    }
    for i in 0..state.config.workers {
        let id = format!("{}-{}", uuid::Uuid::new_v4().simple(), i);
        tasks.push(tokio::spawn(worker::run_worker(
            state.clone(),
            id,
            shutdown_rx.clone(),
        )));
    }
    // Only a serving node caches credentials and holds live sessions.
    if serving {
        tasks.push(tokio::spawn(streaming::follow_credential_changes(
            state.clone(),
            shutdown_rx.clone(),
        )));
        let listening = state.store.clone();
        tasks.push(tokio::spawn(async move {
            listening.listen_for_credential_changes().await
        }));
        tasks.push(tokio::spawn(auth::watch_auth_epoch(
            state.clone(),
            Duration::from_millis(state.config.auth_epoch_poll_ms.max(10)),
        )));
        tasks.push(tokio::spawn(control::serve_control(
            state.clone(),
            control::socket_path(&state.config.data_dir),
        )));
    }
    let sender = hark_outbound::WebhookSender::new(
        state.store.clone(),
        state.outbound.clone(),
        state.master_key.clone(),
        state.clock.clone(),
        Arc::new(hark_outbound::StoreSigningSecrets {
            store: state.store.clone(),
            master_key: state.master_key.clone(),
        }),
        hark_outbound::WebhookConfig::default(),
    );
    if let Some(mailer) = mailer {
        tasks.push(tokio::spawn(mailer::run_outbox_sender(
            state.store.clone(),
            mailer,
            Duration::from_secs(state.config.smtp.interval_secs.max(1)),
            shutdown_rx.clone(),
        )));
    }
    let mut webhook_stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(sender.run(async move {
        let _ = webhook_stop.wait_for(|stop| *stop).await;
    })));
    let app = router(state.clone());
    let mut rx = shutdown_rx.clone();
    let stopped = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = match (listener, tls) {
        (None, _) => tokio::spawn(async move {
            // A worker: nothing to serve, it runs until told to stop.
            stopped.await;
            Ok(())
        }),
        (Some(listener), Some(tls_config)) => {
            let listener =
                tls::TlsListener::new(listener, tls_config).map_err(|source| StartError::Io {
                    path: PathBuf::from(&state.config.bind),
                    source,
                })?;
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<tls::PeerAddr>(),
                )
                .with_graceful_shutdown(stopped)
                .await
            })
        }
        (Some(listener), None) => tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<tls::PeerAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }),
    };
    if serving {
        tracing::info!(%addr, base_url = %state.public_base_url, region = %state.config.region, node = %state.node_id, "hark listening");
    } else {
        tracing::info!(workers = state.config.workers, region = %state.config.region, node = %state.node_id, "hark worker running");
    }
    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        tls: tls_files,
        shutdown,
        tasks,
        http,
    })
}

/// Creates `dir` (and missing parents) readable by this user only (0700): the data
/// directory holds the database, the master key and customers' audio.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The data directory's upload folder for tests and tools.
pub fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}
