//! Errors of the management API: one envelope `{"error": ..., "code": ...}` (plus
//! `permission` on a 403 for a missing permission). Server faults are logged with
//! their cause and shown only as a generic text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hark_core::{Permission, Role};
use hark_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    #[error("authentication required: log in (POST /api/v1/auth/login)")]
    Unauthenticated,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("this user has MFA enabled: send totp_code or recovery_code")]
    MfaRequired,
    #[error("the TOTP or recovery code is invalid or was already used")]
    BadMfaCode,
    #[error("too many failed logins; try again later")]
    Throttled { retry_after_secs: u64 },
    #[error("missing or invalid CSRF token (send the hark_csrf cookie value in the X-CSRF-Token header)")]
    Csrf,
    #[error("your role ({role}) does not have the permission '{permission}'", role = .role.as_str(), permission = .permission.as_str())]
    Forbidden { permission: Permission, role: Role },
    #[error("this account requires MFA for all members: enrol a TOTP factor first (POST /api/v1/me/mfa/totp)")]
    MfaEnrollmentRequired,
    #[error("re-enter your password or a TOTP code first (POST /api/v1/auth/reauth)")]
    ReauthRequired,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    LimitReached(String),
    #[error("Internal Server Error")]
    Internal(String),
}

impl MgmtError {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        MgmtError::Internal(cause.to_string())
    }

    pub fn code(&self) -> &'static str {
        match self {
            MgmtError::Unauthenticated => "unauthenticated",
            MgmtError::BadCredentials => "invalid_credentials",
            MgmtError::MfaRequired => "mfa_required",
            MgmtError::BadMfaCode => "invalid_mfa_code",
            MgmtError::Throttled { .. } => "login_throttled",
            MgmtError::Csrf => "csrf_failed",
            MgmtError::Forbidden { .. } => "permission_denied",
            MgmtError::MfaEnrollmentRequired => "mfa_enrollment_required",
            MgmtError::ReauthRequired => "reauth_required",
            MgmtError::NotFound(_) => "not_found",
            MgmtError::MethodNotAllowed => "method_not_allowed",
            MgmtError::Invalid(_) => "invalid_request",
            MgmtError::Conflict(_) => "conflict",
            MgmtError::LimitReached(_) => "limit_reached",
            MgmtError::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            MgmtError::Unauthenticated
            | MgmtError::BadCredentials
            | MgmtError::MfaRequired
            | MgmtError::BadMfaCode => StatusCode::UNAUTHORIZED,
            MgmtError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            MgmtError::Csrf
            | MgmtError::Forbidden { .. }
            | MgmtError::MfaEnrollmentRequired
            | MgmtError::ReauthRequired => StatusCode::FORBIDDEN,
            MgmtError::NotFound(_) => StatusCode::NOT_FOUND,
            MgmtError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            MgmtError::Invalid(_) => StatusCode::BAD_REQUEST,
            MgmtError::Conflict(_) | MgmtError::LimitReached(_) => StatusCode::CONFLICT,
            MgmtError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for MgmtError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => MgmtError::NotFound(what),
            StoreError::LimitReached { .. } => MgmtError::LimitReached(e.to_string()),
            StoreError::Conflict(msg) => MgmtError::Conflict(msg),
            other => MgmtError::internal(other),
        }
    }
}

impl IntoResponse for MgmtError {
    fn into_response(self) -> Response {
        if let MgmtError::Internal(cause) = &self {
            tracing::error!(%cause, "management request failed");
        }
        let mut body = json!({ "error": self.to_string(), "code": self.code() });
        if let MgmtError::Forbidden { permission, .. } = &self {
            body["permission"] = json!(permission.as_str());
        }
        let mut response = (self.status(), Json(body)).into_response();
        if let MgmtError::Throttled { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub type MgmtResult<T> = Result<T, MgmtError>;
