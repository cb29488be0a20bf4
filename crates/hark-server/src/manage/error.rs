//! The one error of the management core. Each front door renders it its own way (the
//! JSON API as `{"error", "code"}` with a status, the dashboard as a message on the
//! page); `Internal` causes are logged there and never shown.

use hark_core::{Permission, Role};
use hark_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required: log in (POST /api/v1/auth/login)")]
    Unauthenticated,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("this user has MFA enabled: send totp_code or recovery_code")]
    MfaRequired,
    #[error("the TOTP code is wrong (check the clock of the device that makes the codes), or the recovery code is wrong or was already used")]
    BadMfaCode,
    #[error("this TOTP code was already used: each code works once; wait for the next code (a new one every 30 seconds)")]
    TotpCodeUsed,
    /// A signed-in person's password did not match (re-authentication, password change,
    /// an invite accepted by an existing user).
    #[error("the password is wrong")]
    WrongPassword,
    #[error("too many failed logins; try again later")]
    Throttled { retry_after_secs: u64 },
    #[error("missing or invalid CSRF token (send the hark_csrf cookie value in the X-CSRF-Token header)")]
    Csrf,
    #[error("your role ({role}) does not have the permission '{permission}'", role = .role.as_str(), permission = .permission.as_str())]
    Forbidden { permission: Permission, role: Role },
    #[error("this account requires MFA for all members: enrol a TOTP factor first (POST /api/v1/me/mfa/totp)")]
    MfaEnrollmentRequired,
    /// The person has MFA, but this session signed in without it (with a password
    /// alone, before they enrolled or before Hark recorded how sessions sign in).
    #[error("this account requires MFA for all members and this session signed in without a TOTP code: sign in again with your code (POST /api/v1/auth/login with totp_code)")]
    MfaSignInRequired,
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

impl Error {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }

    /// The stable machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "unauthenticated",
            Error::BadCredentials => "invalid_credentials",
            Error::MfaRequired => "mfa_required",
            Error::BadMfaCode | Error::TotpCodeUsed => "invalid_mfa_code",
            Error::WrongPassword => "invalid_credentials",
            Error::Throttled { .. } => "login_throttled",
            Error::Csrf => "csrf_failed",
            Error::Forbidden { .. } => "permission_denied",
            Error::MfaEnrollmentRequired => "mfa_enrollment_required",
            Error::MfaSignInRequired => "mfa_sign_in_required",
            Error::ReauthRequired => "reauth_required",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Invalid(_) => "invalid_request",
            Error::Conflict(_) => "conflict",
            Error::LimitReached(_) => "limit_reached",
            Error::Internal(_) => "internal_error",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Error::NotFound(what),
            StoreError::LimitReached { .. } => Error::LimitReached(e.to_string()),
            StoreError::Conflict(msg) => Error::Conflict(msg),
            other => Error::internal(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
