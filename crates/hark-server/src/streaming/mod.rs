//! Streaming v3: `GET /v3/token` (single-use temporary tokens), the `/v3/ws` upgrade,
//! and the background upkeep of live sessions (this process's lease, closing the
//! sessions of processes that died).

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
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::StreamTokenId;
use hark_store::NewStreamToken;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// `expires_in_seconds` bounds (reference 5.1).
pub const TOKEN_EXPIRY_RANGE: (i64, i64) = (1, 600);
/// `max_session_duration_seconds` bounds and default (reference 5.1).
pub const SESSION_CAP_RANGE: (i64, i64) = (60, 10_800);

/// The query string as name → value (the last of repeated names wins).
pub(crate) fn query_map(raw: Option<&str>) -> HashMap<String, String> {
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

/// `GET /v3/token`: mints a temporary token for one streaming session.
pub async fn token(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    ApiError::check_balance(&who)?;
    let query = query_map(raw.as_deref());
    let expires_in = integer_param(&query, "expires_in_seconds", TOKEN_EXPIRY_RANGE)?
        .ok_or_else(|| ApiError::bad_request("expires_in_seconds is required"))?;
    let session_cap = integer_param(&query, "max_session_duration_seconds", SESSION_CAP_RANGE)?
        .unwrap_or(SESSION_CAP_RANGE.1);
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
        .on_upgrade(move |socket| session::run(state, socket, query, credential))
}

/// Counts live sessions so shutdown can wait for them to end and bill.
#[derive(Default)]
pub struct SessionTracker {
    live: AtomicUsize,
    ended: Notify,
}

pub(crate) struct TrackedSession<'a>(&'a SessionTracker);

impl SessionTracker {
    pub(crate) fn enter(&self) -> TrackedSession<'_> {
        self.live.fetch_add(1, Ordering::SeqCst);
        TrackedSession(self)
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
}

impl Drop for TrackedSession<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
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
