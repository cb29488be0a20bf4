//! The one HTTP error envelope, `{"error": "..."}`, with AssemblyAI's texts where they
//! exist. Server faults are logged with their cause and shown only as a generic text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub const AUTH_ERROR: &str = "Authentication error, API token missing/invalid";
pub const TRANSCRIPT_NOT_FOUND: &str = "Transcript lookup error, transcript id not found";
pub const UPLOAD_FORBIDDEN: &str = "Cannot access uploaded file";
/// AssemblyAI's text for a prepaid account whose credit balance is below zero.
pub const BALANCE_NEGATIVE: &str =
    "Your current account balance is negative. Please top up to continue using the API.";
/// An upload refused because the server's disk (or its quota there) is full.
pub const STORAGE_FULL: &str =
    "Upload failed: the server is out of storage space. Nothing was stored; please try again later.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{AUTH_ERROR}")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{TRANSCRIPT_NOT_FOUND}")]
    TranscriptNotFound,
    #[error("{UPLOAD_FORBIDDEN}")]
    UploadForbidden,
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("Upload timed out: the body sent nothing for {0} seconds")]
    UploadTimedOut(u64),
    #[error("This API key's scopes do not allow {0}")]
    MissingScope(&'static str),
    #[error("Too Many Requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{BALANCE_NEGATIVE}")]
    BalanceNegative,
    /// The server's storage is full: nothing was kept, the client may retry later.
    #[error("{STORAGE_FULL}")]
    StorageFull,
    #[error("Internal Server Error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// A server fault; `cause` goes to the log, never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// A failed file operation on the server's storage: out of space (or over a disk
    /// quota) is the client's to know, as 507 [`ApiError::StorageFull`], and is logged
    /// as a warning; anything else is a server fault.
    pub fn storage(cause: std::io::Error) -> Self {
        use std::io::ErrorKind;
        if matches!(
            cause.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            tracing::warn!(error = %cause, "storage full; upload refused");
            ApiError::StorageFull
        } else {
            ApiError::internal(cause)
        }
    }

    /// A failed operation on the audio storage: a local file system's refusal is judged
    /// as [`ApiError::storage`] does; anything else (the object store) is a server fault.
    pub fn blob(cause: hark_store::blobs::BlobError) -> Self {
        match cause {
            hark_store::blobs::BlobError::Io(e) => ApiError::storage(e),
            other => ApiError::internal(other),
        }
    }

    /// Refuses new work of a prepaid account with a negative balance (the flag comes
    /// with the cached key: no query).
    pub fn check_balance(who: &hark_store::KeyPrincipal) -> Result<(), ApiError> {
        if who.balance_blocked {
            Err(ApiError::BalanceNegative)
        } else {
            Ok(())
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) | ApiError::TranscriptNotFound | ApiError::BalanceNegative => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UploadForbidden | ApiError::MissingScope(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UploadTimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<hark_store::StoreError> for ApiError {
    fn from(e: hark_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let status = self.status();
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
