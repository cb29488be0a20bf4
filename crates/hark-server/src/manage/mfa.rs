//! TOTP multi-factor authentication: enrolment and its confirmation (both after a
//! recent re-authentication; confirming ends the person's other sessions) with a sealed
//! seed, a provisioning URI and ten one-time recovery codes, second-factor checks with
//! replay refusal, and removal after re-authentication.

use super::views::{RecoveryCodes, TotpEnrolment};
use super::{require_recent_reauth, Caller, Error, Result};
use crate::AppState;
use hark_core::keys::{Secret, SecretDigest};
use hark_core::{totp, UserId};
use hark_store::User;
use serde::Deserialize;

/// The sealing context of a user's TOTP seed.
pub fn seed_context(user: UserId) -> String {
    format!("totp:{user}")
}

/// How a recovery code is stored: keyed under the master key (HMAC-SHA256), bound to
/// its user, so a copy of the database alone cannot be searched for the short codes.
fn recovery_digest(state: &AppState, user: UserId, code: &str) -> String {
    state.master_key.keyed_digest(
        &format!("recovery:{user}"),
        &totp::normalize_recovery_code(code),
    )
}

/// How recovery codes issued before keyed digests were stored (plain SHA-256): still
/// accepted, each once, until used or replaced by a new enrolment.
fn legacy_recovery_digest(code: &str) -> String {
    SecretDigest::of(&totp::normalize_recovery_code(code)).to_hex()
}

/// Checks a TOTP code (each step accepted once) or a recovery code (each used once).
/// `MfaRequired` when neither is given, `BadMfaCode` when the one given fails.
pub async fn check_second_factor(
    state: &AppState,
    user: &User,
    totp_code: Option<&Secret>,
    recovery_code: Option<&Secret>,
) -> Result<()> {
    if let Some(code) = totp_code {
        let record = state
            .store
            .totp(user.id)
            .await?
            .filter(|r| r.confirmed_at.is_some())
            .ok_or(Error::BadMfaCode)?;
        let seed = state
            .master_key
            .open(&record.seed_sealed, &seed_context(user.id))
            .map_err(Error::internal)?;
        let step =
            totp::verify(&seed, code.expose(), state.clock.now_ms()).ok_or(Error::BadMfaCode)?;
        if !state.store.accept_totp_step(user.id, step).await? {
            return Err(Error::TotpCodeUsed);
        }
        return Ok(());
    }
    if let Some(code) = recovery_code {
        for digest in [
            recovery_digest(state, user.id, code.expose()),
            legacy_recovery_digest(code.expose()),
        ] {
            if state.store.use_recovery_code(user.id, &digest).await? {
                return Ok(());
            }
        }
        return Err(Error::BadMfaCode);
    }
    Err(Error::MfaRequired)
}

/// Starts (or restarts) TOTP enrolment; the seed is shown here only. Needs a recent
/// re-authentication: whoever holds a stolen session must not be able to bind their
/// own authenticator to the person (and sign everyone else out with it).
pub async fn begin(state: &AppState, caller: &Caller) -> Result<TotpEnrolment> {
    require_recent_reauth(state, caller)?;
    let seed = totp::generate_seed();
    let sealed = state.master_key.seal(&seed, &seed_context(caller.user.id));
    state.store.begin_totp(caller.user.id, &sealed).await?;
    Ok(TotpEnrolment {
        otpauth_uri: totp::provisioning_uri(&seed, "Hark", &caller.user.email),
        secret: seed,
        digits: totp::DIGITS,
        period: totp::STEP_SECS,
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ConfirmInput {
    #[schemars(with = "String")]
    pub code: Secret,
}

/// The first valid code turns MFA on and returns ten recovery codes (shown once,
/// stored as keyed digests). Needs a recent re-authentication too (a pending seed can
/// be read again on the enrolment page). Every other session of the person ends, so
/// none signed in without the new factor lives on; this one stays and from now on
/// counts as signed in with MFA.
pub async fn confirm(
    state: &AppState,
    caller: &Caller,
    input: &ConfirmInput,
) -> Result<RecoveryCodes> {
    require_recent_reauth(state, caller)?;
    let user = caller.user.id;
    let record = state.store.totp(user).await?.ok_or(Error::Conflict(
        "start enrolment first (POST /api/v1/me/mfa/totp)".into(),
    ))?;
    if record.confirmed_at.is_some() {
        return Err(Error::Conflict("MFA is already enabled".into()));
    }
    let seed = state
        .master_key
        .open(&record.seed_sealed, &seed_context(user))
        .map_err(Error::internal)?;
    let step =
        totp::verify(&seed, input.code.expose(), state.clock.now_ms()).ok_or(Error::BadMfaCode)?;
    let codes = totp::generate_recovery_codes();
    let digests: Vec<String> = codes
        .iter()
        .map(|c| recovery_digest(state, user, c))
        .collect();
    let other_sessions_ended = state
        .store
        .confirm_totp(user, step, &digests, caller.session.id, &caller.actor())
        .await?
        .ok_or_else(|| Error::Conflict("MFA is already enabled".into()))?;
    Ok(RecoveryCodes {
        mfa_enabled: true,
        recovery_codes: codes,
        next_code_at: super::Instant((step + 1) * totp::STEP_SECS * 1000),
        other_sessions_ended,
        note: format!(
            "This code is now used: sign in with the next code your app shows (a new one every 30 seconds). Keep the recovery codes safe; each works once. {}",
            signed_out_note(other_sessions_ended)
        ),
    })
}

/// What a person is told about their other sessions when MFA goes on.
pub fn signed_out_note(ended: u64) -> String {
    match ended {
        0 => "You had no other sessions; this one stays signed in.".into(),
        1 => "Your 1 other session was signed out; this one stays signed in.".into(),
        n => format!("Your {n} other sessions were signed out; this one stays signed in."),
    }
}

/// Turns MFA off; needs a recent re-authentication.
pub async fn disable(state: &AppState, caller: &Caller) -> Result<()> {
    require_recent_reauth(state, caller)?;
    state
        .store
        .disable_totp(caller.user.id, &caller.actor())
        .await?;
    Ok(())
}
