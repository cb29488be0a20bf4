//! TOTP multi-factor authentication: enrolment (sealed seed, provisioning URI),
//! confirmation with ten one-time recovery codes, second-factor checks with replay
//! refusal, and removal after re-authentication.

use super::principal::{require_recent_reauth, JsonBody, UserCtx};
use super::{MgmtError, MgmtResult};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hark_core::keys::{Secret, SecretDigest};
use hark_core::{totp, UserId};
use hark_store::{Actor, User};
use serde::Deserialize;
use serde_json::{json, Value};

/// The sealing context of a user's TOTP seed.
pub fn seed_context(user: UserId) -> String {
    format!("totp:{user}")
}

fn recovery_digest(code: &str) -> String {
    SecretDigest::of(&totp::normalize_recovery_code(code)).to_hex()
}

/// Checks a TOTP code (each step accepted once) or a recovery code (each used once).
/// `MfaRequired` when neither is given, `BadMfaCode` when the one given fails.
pub async fn check_second_factor(
    state: &AppState,
    user: &User,
    totp_code: Option<&Secret>,
    recovery_code: Option<&Secret>,
) -> MgmtResult<()> {
    if let Some(code) = totp_code {
        let record = state
            .store
            .totp(user.id)
            .await?
            .filter(|r| r.confirmed_at.is_some())
            .ok_or(MgmtError::BadMfaCode)?;
        let seed = state
            .master_key
            .open(&record.seed_sealed, &seed_context(user.id))
            .map_err(MgmtError::internal)?;
        let step = totp::verify(&seed, code.expose(), state.clock.now_ms())
            .ok_or(MgmtError::BadMfaCode)?;
        if !state.store.accept_totp_step(user.id, step).await? {
            return Err(MgmtError::BadMfaCode);
        }
        return Ok(());
    }
    if let Some(code) = recovery_code {
        if state
            .store
            .use_recovery_code(user.id, &recovery_digest(code.expose()))
            .await?
        {
            return Ok(());
        }
        return Err(MgmtError::BadMfaCode);
    }
    Err(MgmtError::MfaRequired)
}

/// `POST /api/v1/me/mfa/totp`: starts enrolment; the seed is shown here only.
pub async fn begin(State(state): State<AppState>, ctx: UserCtx) -> MgmtResult<Json<Value>> {
    let seed = totp::generate_seed();
    let sealed = state.master_key.seal(&seed, &seed_context(ctx.user.id));
    state.store.begin_totp(ctx.user.id, &sealed).await?;
    Ok(Json(json!({
        "secret": seed,
        "otpauth_uri": totp::provisioning_uri(&seed, "Hark", &ctx.user.email),
        "digits": totp::DIGITS,
        "period": totp::STEP_SECS,
    })))
}

#[derive(Deserialize)]
pub struct ConfirmRequest {
    pub code: Secret,
}

/// `POST /api/v1/me/mfa/totp/confirm`: the first valid code turns MFA on and returns
/// ten recovery codes (shown once, stored hashed).
pub async fn confirm(
    State(state): State<AppState>,
    ctx: UserCtx,
    JsonBody(req): JsonBody<ConfirmRequest>,
) -> MgmtResult<Json<Value>> {
    let record = state
        .store
        .totp(ctx.user.id)
        .await?
        .ok_or(MgmtError::Conflict(
            "start enrolment first (POST /api/v1/me/mfa/totp)".into(),
        ))?;
    if record.confirmed_at.is_some() {
        return Err(MgmtError::Conflict("MFA is already enabled".into()));
    }
    let seed = state
        .master_key
        .open(&record.seed_sealed, &seed_context(ctx.user.id))
        .map_err(MgmtError::internal)?;
    let step = totp::verify(&seed, req.code.expose(), state.clock.now_ms())
        .ok_or(MgmtError::BadMfaCode)?;
    let codes = totp::generate_recovery_codes();
    let digests: Vec<String> = codes.iter().map(|c| recovery_digest(c)).collect();
    if !state
        .store
        .confirm_totp(ctx.user.id, step, &digests, &Actor::User(ctx.user.id))
        .await?
    {
        return Err(MgmtError::Conflict("MFA is already enabled".into()));
    }
    Ok(Json(json!({"mfa_enabled": true, "recovery_codes": codes})))
}

/// `DELETE /api/v1/me/mfa/totp`: needs a recent re-authentication.
pub async fn disable(State(state): State<AppState>, ctx: UserCtx) -> MgmtResult<StatusCode> {
    require_recent_reauth(&state, &ctx)?;
    state
        .store
        .disable_totp(ctx.user.id, &Actor::User(ctx.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
