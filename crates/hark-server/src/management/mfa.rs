//! JSON handlers for TOTP enrolment, confirmation and removal ([`crate::manage::mfa`]).

use super::principal::JsonBody;
use super::MgmtResult;
use crate::manage::mfa::{self as core, ConfirmInput};
use crate::manage::views::{RecoveryCodes, TotpEnrolment};
use crate::manage::Caller;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

/// `POST /api/v1/me/mfa/totp`.
pub async fn begin(
    State(state): State<AppState>,
    caller: Caller,
) -> MgmtResult<Json<TotpEnrolment>> {
    Ok(Json(core::begin(&state, &caller).await?))
}

/// `POST /api/v1/me/mfa/totp/confirm`.
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<ConfirmInput>,
) -> MgmtResult<Json<RecoveryCodes>> {
    Ok(Json(core::confirm(&state, &caller, &req).await?))
}

/// `DELETE /api/v1/me/mfa/totp`.
pub async fn disable(State(state): State<AppState>, caller: Caller) -> MgmtResult<StatusCode> {
    core::disable(&state, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
