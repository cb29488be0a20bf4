//! Hark's HTTP server: the AssemblyAI-compatible data plane, its authentication, the
//! transcription workers and the background tasks, over the store and speech engine.

// The transcript object is one large `json!` literal.
#![recursion_limit = "256"]

pub mod auth;
pub mod config;
pub mod control;
pub mod data_plane;
pub mod error;
pub mod mailer;
pub mod management;
pub mod params;
pub mod provisioning;
mod remote;
pub mod render;
pub mod streaming;
pub mod tls;
pub mod usage;
mod worker;

use crate::auth::{AccountRateLimiter, AuthCache};
use crate::config::Config;
use crate::error::ApiError;
use axum::extract::DefaultBodyLimit;
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

/// How often a node checks the store's auth epoch: the bound on how long a credential
/// change made elsewhere can go unseen.
pub const AUTH_EPOCH_INTERVAL: Duration = Duration::from_millis(250);

pub struct AppStateInner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub master_key: Arc<MasterKey>,
    pub engine: Option<Arc<dyn SpeechEngine>>,
    pub auth: AuthCache,
    pub rate_limiter: AccountRateLimiter,
    pub public_base_url: String,
    pub uploads_dir: PathBuf,
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
    std::fs::create_dir_all(&config.data_dir).map_err(io)?;
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

pub async fn open_store(config: &Config, clock: Arc<dyn Clock>) -> Result<SqlStore, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let prices = config
        .price_table()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let evaluation_credit = config
        .evaluation_credit()
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(SqlStore::open(&config.effective_database_url(), clock)
        .await?
        .with_prices(prices)
        .with_evaluation_credit(evaluation_credit)
        .with_currency(&config.billing.currency))
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
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_json))
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

/// A server started by [`start`].
pub struct RunningServer {
    pub addr: SocketAddr,
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
    let master_key = Arc::new(load_master_key(&config)?);
    let policy = config
        .outbound_policy()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let outbound = hark_outbound::OutboundClient::new(policy)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let mailer = mailer::SmtpMailer::from_config(&config.smtp)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let store = open_store(&config, clock.clone()).await?;
    let uploads_dir = config.data_dir.join("uploads");
    let tmp_dir = config.data_dir.join("tmp");
    for dir in [&uploads_dir, &tmp_dir] {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Io {
            path: dir.clone(),
            source,
        })?;
    }
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
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = AppState(Arc::new(AppStateInner {
        public_base_url: config.effective_public_base_url(Some(addr)),
        rate_limiter: AccountRateLimiter::new(
            config.rate_limit.requests,
            Duration::from_secs(config.rate_limit.window_secs),
        ),
        store: Arc::new(store),
        clock,
        master_key,
        engine,
        auth: AuthCache::new(),
        uploads_dir,
        tmp_dir,
        jobs_available: Notify::new(),
        outbound,
        node_id: uuid::Uuid::new_v4().to_string(),
        sessions: streaming::SessionTracker::default(),
        shutdown: shutdown_rx.clone(),
        config,
    }));
    let mut tasks = Vec::new();
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
    for i in 0..state.config.workers {
        let id = format!("{}-{}", uuid::Uuid::new_v4().simple(), i);
        tasks.push(tokio::spawn(worker::run_worker(
            state.clone(),
            id,
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(auth::watch_auth_epoch(
        state.clone(),
        AUTH_EPOCH_INTERVAL,
    )));
    tasks.push(tokio::spawn(control::serve_control(
        state.clone(),
        control::socket_path(&state.config.data_dir),
    )));
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
    let http = match tls {
        Some(tls_config) => {
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
        None => tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<tls::PeerAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }),
    };
    tracing::info!(%addr, base_url = %state.public_base_url, "hark listening");
    Ok(RunningServer {
        addr,
        state,
        tls: tls_files,
        shutdown,
        tasks,
        http,
    })
}

/// The data directory's upload folder for tests and tools.
pub fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}
