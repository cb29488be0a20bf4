//! The management API under `/api/v1/`: people and sessions, MFA, accounts, members
//! and invites, projects, API keys and the audit log, as JSON with the
//! `{"error": ..., "code": ...}` envelope. Every account-scoped action goes through
//! [`hark_core::plan::role_allows`].

pub mod accounts;
pub mod audit;
pub mod error;
pub mod keys;
pub mod mfa;
pub mod openapi;
pub mod principal;
pub mod sessions;

use crate::AppState;
use axum::Router;
use serde::{Deserialize, Serialize};

pub use error::{MgmtError, MgmtResult};

/// How long a login session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// How recent a password or TOTP re-entry must be for sensitive actions.
pub const REAUTH_WINDOW_MS: i64 = 5 * 60_000;
/// Failed logins per email (and per client address) in the window before refusing.
pub const MAX_FAILURES_PER_EMAIL: i64 = 5;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
pub const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// How long an invite stays valid.
pub const INVITE_TTL_MS: i64 = 7 * 86_400_000;
/// The longest grace period of a rotated key.
pub const MAX_ROTATION_GRACE_SECS: i64 = 86_400;

pub const SESSION_COOKIE: &str = "hark_session";
pub const CSRF_COOKIE: &str = "hark_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The routes, to be nested under `/api/v1`: mounted from the same table the
/// OpenAPI document is generated from.
pub fn routes() -> Router<AppState> {
    openapi::endpoints()
        .into_iter()
        .fold(Router::new(), |r, (e, handler)| r.route(e.path, handler))
        .fallback(|| async { MgmtError::NotFound("route") })
        .method_not_allowed_fallback(|| async { MgmtError::MethodNotAllowed })
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of a list: `next_cursor` is set when more follow.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

impl PageQuery {
    pub fn limit(&self) -> MgmtResult<usize> {
        match self.limit {
            None => Ok(DEFAULT_PAGE as usize),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
            Some(_) => Err(MgmtError::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            ))),
        }
    }

    /// Pages `items` (sorted by the unique `key`) after the cursor.
    pub fn page<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> String) -> MgmtResult<Page<T>> {
        let limit = self.limit()?;
        items.sort_by_key(|a| key(a));
        if let Some(cursor) = &self.cursor {
            items.retain(|i| key(i).as_str() > cursor.as_str());
        }
        let has_more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if has_more {
            items.last().map(&key)
        } else {
            None
        };
        Ok(Page {
            data: items,
            has_more,
            next_cursor,
        })
    }
}

/// Milliseconds as an RFC 3339 UTC string.
pub fn ts(ms: i64) -> String {
    hark_core::clock::from_millis(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn opt_ts(ms: Option<i64>) -> Option<String> {
    ms.map(ts)
}
