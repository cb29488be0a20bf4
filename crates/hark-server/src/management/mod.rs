//! The management API under `/api/v1/`: the JSON front door of the management core
//! ([`crate::manage`]). Handlers only translate: extract the caller, the path ids and
//! the body, call the core, and answer its typed result as JSON (or its error in the
//! `{"error": ..., "code": ...}` envelope). The route table in [`openapi`] mounts the
//! handlers and generates the OpenAPI document from the same types.

pub mod accounts;
pub mod audit;
pub mod body;
pub mod error;
pub mod keys;
pub mod mfa;
pub mod openapi;
pub mod principal;
pub mod sessions;
pub mod usage;
pub mod webhooks;

use crate::AppState;
use axum::Router;

pub use crate::manage::{Page, PageQuery};
pub use error::{MgmtError, MgmtResult};

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
