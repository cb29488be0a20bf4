//! How the management API answers an error of the core: one envelope
//! `{"error": ..., "code": ...}` (plus `permission` on a 403 for a missing permission)
//! with its HTTP status. Server faults are logged with their cause and shown only as a
//! generic text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

pub use crate::manage::Error as MgmtError;

pub type MgmtResult<T> = Result<T, MgmtError>;

/// The body of every error answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    pub error: String,
    /// A stable machine-readable code (`permission_denied`, `not_found`, ...).
    pub code: &'static str,
    /// The missing permission, on a `permission_denied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<&'static str>,
}

/// The HTTP status of a core error.
pub fn status(e: &MgmtError) -> StatusCode {
    match e {
        MgmtError::Unauthenticated
        | MgmtError::BadCredentials
        | MgmtError::MfaRequired
        | MgmtError::BadMfaCode
        | MgmtError::TotpCodeUsed
        | MgmtError::WrongPassword => StatusCode::UNAUTHORIZED,
        MgmtError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        MgmtError::Csrf
        | MgmtError::Forbidden { .. }
        | MgmtError::MfaEnrollmentRequired
        | MgmtError::MfaSignInRequired
        | MgmtError::ReauthRequired => StatusCode::FORBIDDEN,
        MgmtError::NotFound(_) => StatusCode::NOT_FOUND,
        MgmtError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        MgmtError::Invalid(_) => StatusCode::BAD_REQUEST,
        MgmtError::Conflict(_) | MgmtError::LimitReached(_) => StatusCode::CONFLICT,
        MgmtError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for MgmtError {
    fn into_response(self) -> Response {
        if let MgmtError::Internal(cause) = &self {
            tracing::error!(%cause, "management request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            permission: match &self {
                MgmtError::Forbidden { permission, .. } => Some(permission.as_str()),
                _ => None,
            },
        };
        let mut response = (status(&self), Json(body)).into_response();
        if let MgmtError::Throttled { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
