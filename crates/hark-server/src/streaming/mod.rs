//! Streaming v3: `GET /v3/token` (single-use temporary tokens), the `/v3/ws` upgrade,
//! the registry of this process's live sessions (ended at once when their credential
//! is revoked) and their background upkeep (this process's lease, closing the sessions
//! of processes that died).

pub mod params;
mod session;

use crate::auth::ApiPrincipal;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hark_core::clock::Millis;
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::StreamTokenId;
use hark_core::{AccountId, ApiKeyId, ProjectId, StreamSessionId};
use hark_store::{ApiKeyRecord, CredentialChange, NewStreamToken, OpenedStreamSession};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

/// `expires_in_seconds` bounds (reference 5.1).
pub const TOKEN_EXPIRY_RANGE: (i64, i64) = (1, 600);
/// `max_session_duration_seconds` bounds and default (reference 5.1).
pub const SESSION_CAP_RANGE: (i64, i64) = (60, 10_800);

/// The only query parameters of `GET /v3/token`; any other is refused.
const TOKEN_PARAMS: [&str; 2] = ["expires_in_seconds", "max_session_duration_seconds"];

/// The query string as name → value (the last of repeated names wins).
pub fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn integer_param(
    query: &HashMap<String, String>,
    name: &str,
    (min, max): (i64, i64),
) -> Result<Option<i64>, ApiError> {
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be an integer between {min} and {max}"
        ))),
    }
}

/// The checked query of `GET /v3/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParams {
    /// Seconds until the token expires unused.
    pub expires_in: i64,
    /// The longest session the token may open, in seconds.
    pub session_cap: i64,
}

/// Parses and checks the raw query string of `GET /v3/token`.
pub fn token_params(raw: Option<&str>) -> Result<TokenParams, ApiError> {
    let query = query_map(raw);
    if let Some(unknown) = query.keys().find(|k| !TOKEN_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Unknown query parameter '{unknown}': /v3/token takes {}",
            TOKEN_PARAMS.join(" and ")
        )));
    }
    let expires_in = integer_param(&query, "expires_in_seconds", TOKEN_EXPIRY_RANGE)?
        .ok_or_else(|| ApiError::bad_request("expires_in_seconds is required"))?;
    let session_cap = integer_param(&query, "max_session_duration_seconds", SESSION_CAP_RANGE)?
        .unwrap_or(SESSION_CAP_RANGE.1);
    Ok(TokenParams {
        expires_in,
        session_cap,
    })
}

/// `GET /v3/token`: mints a temporary token for one streaming session.
pub async fn token(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    ApiError::check_balance(&who)?;
    let TokenParams {
        expires_in,
        session_cap,
    } = token_params(raw.as_deref())?;
    let secret = keys::generate(SecretKind::TempToken);
    state
        .store
        .create_stream_token(NewStreamToken {
            id: StreamTokenId::new(),
            digest_hex: SecretDigest::of(secret.expose()).to_hex(),
            account_id: who.account_id,
            project_id: who.project_id,
            api_key_id: who.key_id,
            expires_at: state.clock.now_ms() + expires_in * 1000,
            max_session_secs: session_cap,
        })
        .await?;
    Ok(Json(json!({
        "token": secret.expose(),
        "expires_in_seconds": expires_in,
    })))
}

/// `GET /v3/ws`: upgrades, then authenticates and runs the session over the socket,
/// so every refusal reaches the client as a documented close code.
pub async fn ws(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    client: crate::management::principal::ClientAddr,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => return ApiError::bad_request(
            "/v3/ws is a WebSocket endpoint: connect with a WebSocket client (wss://host/v3/ws)",
        )
        .into_response(),
    };
    let query = query_map(raw.as_deref());
    let credential = session::presented_credential(&headers, &query);
    upgrade
        // Small buffers: most sessions are idle most of the time (they grow as needed).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20)
        .on_upgrade(move |socket| session::run(state, socket, query, credential, client.0))
}

/// What a live session's credential allows now: sessions end as soon as it turns
/// `Revoked`, and when `key_expires_at` passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    Valid { key_expires_at: Option<Millis> },
    Revoked(String),
}

impl Standing {
    /// The standing of a session's key as stored now (`None`: the key row is gone).
    fn of(record: Option<&ApiKeyRecord>, change: CredentialChange, now: Millis) -> Self {
        match record {
            None => Self::Revoked(
                match change {
                    CredentialChange::Project(_) => "the project was deleted",
                    CredentialChange::Account(_) => "the account was deleted",
                    _ => "the API key, its project or its account was deleted",
                }
                .into(),
            ),
            Some(r) if r.revoked_at.is_some() => Self::Revoked("the API key was revoked".into()),
            Some(r) if r.expires_at.is_some_and(|e| e <= now) => {
                Self::Revoked("the API key expired".into())
            }
            Some(r) => Self::Valid {
                key_expires_at: r.expires_at,
            },
        }
    }
}

struct LiveEntry {
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
    standing: Arc<watch::Sender<Standing>>,
}

impl LiveEntry {
    fn concerned_by(&self, change: CredentialChange) -> bool {
        match change {
            CredentialChange::Key(k) => k == self.key,
            CredentialChange::Project(p) => p == self.project,
            CredentialChange::Account(a) => a == self.account,
            CredentialChange::User(_) => false,
            CredentialChange::All => true,
        }
    }
}

/// This process's live sessions: counted so shutdown can wait for them to end and
/// bill, and registered by credential so a revocation ends them at once.
#[derive(Default)]
pub struct SessionTracker {
    live: AtomicUsize,
    ended: Notify,
    registry: Mutex<HashMap<StreamSessionId, LiveEntry>>,
}

pub(crate) struct TrackedSession<'a> {
    tracker: &'a SessionTracker,
    id: StreamSessionId,
}

impl SessionTracker {
    /// Registers an opened session; its standing starts valid (the caller checks it).
    pub(crate) fn enter(
        &self,
        opened: &OpenedStreamSession,
    ) -> (TrackedSession<'_>, Arc<watch::Sender<Standing>>) {
        crate::telemetry::live_sessions(self.live.fetch_add(1, Ordering::SeqCst) + 1);
        let standing = Arc::new(watch::Sender::new(Standing::Valid {
            key_expires_at: None,
        }));
        if let Ok(mut map) = self.registry.lock() {
            map.insert(
                opened.id,
                LiveEntry {
                    account: opened.account_id,
                    project: opened.project_id,
                    key: opened.api_key_id,
                    standing: standing.clone(),
                },
            );
        }
        (
            TrackedSession {
                tracker: self,
                id: opened.id,
            },
            standing,
        )
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until no session is live, or `limit` passes.
    pub async fn drained(&self, limit: Duration) {
        let wait = async {
            loop {
                let ended = self.ended.notified();
                if self.live() == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// The keys of the live sessions `change` concerns, with their standings.
    fn concerned(
        &self,
        change: CredentialChange,
    ) -> HashMap<ApiKeyId, Vec<Arc<watch::Sender<Standing>>>> {
        let mut by_key: HashMap<ApiKeyId, Vec<_>> = HashMap::new();
        if let Ok(map) = self.registry.lock() {
            for entry in map.values().filter(|e| e.concerned_by(change)) {
                by_key
                    .entry(entry.key)
                    .or_default()
                    .push(entry.standing.clone());
            }
        }
        by_key
    }
}

impl Drop for TrackedSession<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.tracker.registry.lock() {
            map.remove(&self.id);
        }
        let was = self.tracker.live.fetch_sub(1, Ordering::SeqCst);
        crate::telemetry::live_sessions(was.saturating_sub(1));
        self.tracker.ended.notify_waiters();
    }
}

/// Re-reads the keys of the live sessions a credential change concerns and tells each
/// session its standing; a session whose key is gone, revoked or expired ends (1008).
pub(crate) async fn recheck_sessions(state: &AppState, change: CredentialChange) {
    for (key, standings) in state.sessions.concerned(change) {
        let standing = match state.store.get_api_key(key).await {
            Ok(record) => Standing::of(record.as_ref(), change, state.clock.now_ms()),
            Err(e) => {
                // Unknown is not revoked: the next change or poll checks again.
                tracing::warn!(error = %e, "could not recheck a live session's key");
                continue;
            }
        };
        for sender in standings {
            sender.send_if_modified(|now| {
                let changed = *now != standing;
                if changed {
                    *now = standing.clone();
                }
                changed
            });
        }
    }
}

/// Follows the revocation bus: each change drops the cached keys it concerns and
/// ends the live sessions it revokes; a missed stretch counts as a change of everything.
pub async fn follow_credential_changes(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let bus = state.store.credential_bus();
    let mut changes = bus.subscribe();
    loop {
        let change = tokio::select! {
            received = changes.recv() => match received {
                Ok(heard) => {
                    if let Some(at) = heard.committed_at {
                        let lag = (state.clock.now_ms() - at).max(0) as u64;
                        crate::telemetry::revocation_lag(Duration::from_millis(lag));
                    }
                    heard.change
                }
                Err(broadcast::error::RecvError::Lagged(_)) => CredentialChange::All,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        state.auth.forget(change);
        let state = state.clone();
        // Off the bus loop: a slow recheck must not delay the next cache drop.
        tokio::spawn(async move { recheck_sessions(&state, change).await });
    }
}

/// Renews this process's lease and closes the sessions of processes that died.
pub async fn upkeep(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let lease = Duration::from_secs(state.config.streaming.node_lease_secs.max(3));
    let mut ticker = tokio::time::interval(lease / 3);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = state
            .store
            .heartbeat_stream_node(&state.node_id, lease.as_millis() as i64)
            .await
        {
            tracing::warn!(error = %e, "could not renew the streaming lease");
        }
        match state.store.reap_stream_sessions(&state.node_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "closed sessions of a stopped process"),
            Err(e) => tracing::warn!(error = %e, "could not close lost sessions"),
        }
    }
}
