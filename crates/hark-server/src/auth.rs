//! Authentication of data-plane requests by project API key, with a cache of verified
//! keys that every credential change invalidates (through the revocation bus, with the
//! auth epoch poll as fallback) and a per-client-address budget of lookups of unknown
//! keys (`unknown_key_budget`), then the per-account rate limit (`rate_limit`).

use crate::error::ApiError;
use crate::unknown_key_budget::UnknownKeyBudget;
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use hark_core::clock::{Clock, Millis};
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::scope::Scope;
use hark_core::ApiKeyId;
use hark_store::{CredentialChange, KeyPrincipal, Store};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Above this many cached keys the cache starts over, bounding its memory.
const MAX_CACHED_KEYS: usize = 100_000;
/// `last_used_at` is written at most this often per key.
const LAST_USED_RESOLUTION_MS: Millis = 1_000;
/// How long a well-formed key the database did not know is answered from memory.
const UNKNOWN_TTL_MS: Millis = 5_000;
/// Above this many remembered unknown keys that memory starts over.
const MAX_UNKNOWN_KEYS: usize = 10_000;

/// Digests of well-formed keys the database did not know, each with when it stops
/// counting, valid only while the revocation bus has heard nothing since they were
/// read (`heard`): any credential change, a key's creation included, forgets them all.
#[derive(Default)]
struct UnknownKeys {
    heard: u64,
    until: HashMap<[u8; 32], Millis>,
}

struct CachedKey {
    principal: KeyPrincipal,
    last_used_noted: AtomicI64,
}

/// Verified keys by digest, and briefly the digests of unknown ones. Only keys that
/// verified enter the main cache, so unknown keys cannot fill it; any credential
/// change clears it (locally at once, and on every node through the store's auth
/// epoch). Unknown digests are remembered for a few seconds in a separate bounded map
/// so a flood of one unknown key costs no database query each; creating a key is
/// published on the revocation bus, and an unknown answer is only used while the bus
/// has heard nothing since it was read, so a new key works at once. Distinct unknown
/// keys are bounded per client address by `unknown_budget`: past it, a key the cache
/// cannot answer is refused (429) without a query.
pub struct AuthCache {
    entries: RwLock<HashMap<[u8; 32], Arc<CachedKey>>>,
    unknown: Mutex<UnknownKeys>,
    unknown_budget: UnknownKeyBudget,
    generation: AtomicU64,
    pending_last_used: Mutex<HashMap<ApiKeyId, Millis>>,
}

impl AuthCache {
    pub fn new(unknown_budget: UnknownKeyBudget) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            unknown: Mutex::default(),
            unknown_budget,
            generation: AtomicU64::new(0),
            pending_last_used: Mutex::default(),
        }
    }

    /// Forgets every cached key.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.forget_unknown();
        if let Ok(mut map) = self.entries.write() {
            map.clear();
        }
    }

    /// Forgets the cached keys a credential change concerns.
    pub fn forget(&self, change: CredentialChange) {
        // Bumped first: a lookup already under way must not cache what it read.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.forget_unknown();
        let Ok(mut map) = self.entries.write() else {
            return;
        };
        let keep = |e: &Arc<CachedKey>| -> bool {
            let who = &e.principal;
            match change {
                CredentialChange::Key(k) => who.key_id != k,
                CredentialChange::Project(p) => who.project_id != p,
                CredentialChange::Account(a) => who.account_id != a,
                CredentialChange::User(_) => true,
                CredentialChange::All => false,
            }
        };
        if change == CredentialChange::All {
            map.clear();
        } else {
            map.retain(|_, e| keep(e));
        }
    }

    fn forget_unknown(&self) {
        if let Ok(mut unknown) = self.unknown.lock() {
            unknown.until.clear();
        }
    }

    /// Whether `digest` was found unknown recently, with no credential change heard since.
    fn known_unknown(&self, digest: &[u8; 32], heard: u64, now: Millis) -> bool {
        let Ok(mut unknown) = self.unknown.lock() else {
            return false;
        };
        if unknown.heard != heard {
            unknown.heard = heard;
            unknown.until.clear();
            return false;
        }
        match unknown.until.get(digest) {
            Some(&until) if now < until => true,
            Some(_) => {
                unknown.until.remove(digest);
                false
            }
            None => false,
        }
    }

    /// Remembers that `digest` was unknown when the bus had heard `heard` changes.
    fn note_unknown(&self, digest: [u8; 32], heard: u64, now: Millis) {
        let Ok(mut unknown) = self.unknown.lock() else {
            return;
        };
        if unknown.heard != heard {
            // A change was heard while we read: what we read may be stale already.
            return;
        }
        if unknown.until.len() >= MAX_UNKNOWN_KEYS {
            unknown.until.retain(|_, until| now < *until);
            if unknown.until.len() >= MAX_UNKNOWN_KEYS {
                unknown.until.clear();
            }
        }
        unknown.until.insert(digest, now + UNKNOWN_TTL_MS);
    }

    /// The principal of a presented key, or `Unauthorized`; `TooManyRequests` (without
    /// a database query) when the key is not cached and `client` has spent its budget
    /// of unknown keys.
    pub async fn verify(
        &self,
        presented: &str,
        client: Option<IpAddr>,
        store: &dyn Store,
        clock: &dyn Clock,
    ) -> Result<KeyPrincipal, ApiError> {
        if !keys::is_well_formed(SecretKind::ApiKey, presented) {
            crate::telemetry::auth_failure(if presented.is_empty() {
                "missing"
            } else {
                "malformed"
            });
            return Err(ApiError::Unauthorized);
        }
        let digest = SecretDigest::of(presented);
        let now = clock.now_ms();
        // A node that may be missing credential changes (its bus listener is down) reads
        // every key from the database until it hears them again.
        let bus = store.credential_bus();
        let trusted = bus.is_connected();
        // Read before the lookup: a change heard during it voids an unknown answer.
        let heard = bus.heard();
        if trusted && self.known_unknown(&digest.0, heard, now) {
            crate::telemetry::key_cache("unknown_hit");
            crate::telemetry::auth_failure("unknown");
            return Err(ApiError::Unauthorized);
        }
        let cached = if trusted {
            self.entries
                .read()
                .ok()
                .and_then(|m| m.get(&digest.0).cloned())
        } else {
            None
        };
        let entry = match cached {
            Some(entry) => {
                crate::telemetry::key_cache("hit");
                entry
            }
            None => {
                crate::telemetry::key_cache(if trusted { "miss" } else { "untrusted" });
                let charge = self.unknown_budget.charge(client, now).map_err(|retry| {
                    crate::telemetry::auth_failure("rate_limited");
                    ApiError::TooManyRequests {
                        retry_after_secs: retry,
                    }
                })?;
                let generation = self.generation.load(Ordering::SeqCst);
                let found = store
                    .principal_by_digest(&digest.to_hex())
                    .await
                    .inspect_err(|_| crate::telemetry::database_error())?;
                let principal = match found {
                    Some(principal) => {
                        if let Some(charge) = charge {
                            self.unknown_budget.refund(charge);
                        }
                        principal
                    }
                    None => {
                        if trusted {
                            self.note_unknown(digest.0, heard, now);
                        }
                        crate::telemetry::auth_failure("unknown");
                        return Err(ApiError::Unauthorized);
                    }
                };
                let entry = Arc::new(CachedKey {
                    principal,
                    last_used_noted: AtomicI64::new(0),
                });
                if let Ok(mut map) = self.entries.write() {
                    // A change that landed while we read must not be undone by caching.
                    if trusted && self.generation.load(Ordering::SeqCst) == generation {
                        if map.len() >= MAX_CACHED_KEYS {
                            map.clear();
                        }
                        map.insert(digest.0, entry.clone());
                    }
                }
                entry
            }
        };
        if !entry.principal.is_usable_at(now) {
            crate::telemetry::auth_failure("revoked_or_expired");
            return Err(ApiError::Unauthorized);
        }
        if now - entry.last_used_noted.load(Ordering::Relaxed) >= LAST_USED_RESOLUTION_MS {
            entry.last_used_noted.store(now, Ordering::Relaxed);
            if let Ok(mut pending) = self.pending_last_used.lock() {
                pending.insert(entry.principal.key_id, now);
            }
        }
        Ok(entry.principal.clone())
    }

    /// Writes the noted `last_used_at` times.
    pub async fn flush_last_used(&self, store: &dyn Store) {
        let uses: Vec<(ApiKeyId, Millis)> = match self.pending_last_used.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if !uses.is_empty() {
            if let Err(e) = store.touch_last_used(&uses).await {
                tracing::warn!(error = %e, "could not record key use");
            }
        }
    }
}

impl Default for AuthCache {
    /// The cache with the default budget of unknown keys.
    fn default() -> Self {
        let limits = crate::config::RateLimitConfig::default();
        Self::new(UnknownKeyBudget::new(
            limits.unknown_keys_per_address,
            limits.unknown_keys_window_secs,
        ))
    }
}

/// The client address of a request, when the server knows it (it serves with
/// `ConnectInfo`; requests built in unit tests carry none).
pub fn client_address(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<crate::tls::PeerAddr>>()
        .map(|c| c.0 .0.ip())
}

/// Watches the store's auth epoch, the fallback of the revocation bus: a change it
/// sees (say, one whose notification was lost) counts as a change of everything.
pub async fn watch_auth_epoch(state: AppState, interval: Duration) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match state.store.auth_epoch().await {
            Ok(epoch) => {
                if last.is_some_and(|l| l != epoch) {
                    state.auth.clear();
                    state.store.credential_bus().publish(CredentialChange::All);
                }
                last = Some(epoch);
            }
            Err(e) => {
                // Without the epoch we cannot know the cache is fresh: stop trusting it.
                tracing::warn!(error = %e, "auth epoch unavailable; clearing key cache");
                state.auth.clear();
                last = None;
            }
        }
        state.auth.flush_last_used(state.store.as_ref()).await;
    }
}

/// `GET /health`: open to load balancers; when an `Authorization` header is present the
/// key in it is checked (a rotation runbook verifies a new key this way before revoking
/// the old one), answering 401 with the data plane's usual body unless it is usable.
/// Names the region and node that answered.
pub async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
    client: crate::management::principal::ClientAddr,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if headers.contains_key(AUTHORIZATION) {
        state
            .auth
            .verify(
                presented_key(&headers),
                client.0,
                state.store.as_ref(),
                state.clock.as_ref(),
            )
            .await?;
    }
    Ok(axum::Json(serde_json::json!({
        "status": "ok",
        "region": state.config.region,
        "node": state.node_id,
        "api_base_url": state.public_base_url,
    })))
}

/// The caller of a data-plane route: a usable API key of some project.
#[derive(Debug, Clone)]
pub struct ApiPrincipal(pub KeyPrincipal);

/// The key in an `Authorization` header: raw as AssemblyAI sends it, or after `Bearer `.
pub fn presented_key(headers: &HeaderMap) -> &str {
    let raw = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => raw,
    }
}

impl FromRequestParts<AppState> for ApiPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = state
            .auth
            .verify(
                presented_key(&parts.headers),
                client_address(&parts.extensions),
                state.store.as_ref(),
                state.clock.as_ref(),
            )
            .await?;
        admit(state, &principal, &parts.method, parts.uri.path()).await?;
        Ok(ApiPrincipal(principal))
    }
}

/// What a usable key must pass before a data-plane request runs: the key's scopes for
/// the route (least privilege) and the account's rate limit. The extractor above and
/// the dashboard playground (acting as a chosen key) both call it.
pub async fn admit(
    state: &AppState,
    principal: &KeyPrincipal,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    // Least privilege: a scoped key may only read or only write transcripts.
    if path.starts_with("/v2/") {
        let needed = if *method == Method::GET || *method == Method::HEAD {
            Scope::TranscriptsRead
        } else {
            Scope::TranscriptsWrite
        };
        if !principal.allows(needed) {
            crate::telemetry::auth_failure("scope");
            return Err(ApiError::MissingScope(needed.as_str()));
        }
    } else if path.starts_with("/v3/") && !principal.allows(Scope::Streaming) {
        crate::telemetry::auth_failure("scope");
        return Err(ApiError::MissingScope(Scope::Streaming.as_str()));
    }
    state
        .rate_limiter
        .check(principal.account_id)
        .await
        .inspect_err(|_| crate::telemetry::auth_failure("rate_limited"))?;
    Ok(())
}
