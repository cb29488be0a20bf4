//! TOTP enrolment as a page shows it: the pending (unconfirmed) seed of a person,
//! so the enrolment page can be shown again (POST, redirect, GET) until confirmed.

use super::mfa::seed_context;
use super::{Error, Result};
use crate::AppState;
use hark_core::totp;
use hark_store::User;

/// An enrolment waiting for its first code.
pub struct PendingTotp {
    /// The base32 seed, for typing into an app by hand.
    pub secret: String,
    /// The `otpauth://` URI the QR code holds.
    pub uri: String,
}

/// The person's started, unconfirmed enrolment, if any.
pub async fn pending_totp(state: &AppState, user: &User) -> Result<Option<PendingTotp>> {
    let Some(record) = state.store.totp(user.id).await? else {
        return Ok(None);
    };
    if record.confirmed_at.is_some() {
        return Ok(None);
    }
    let secret = state
        .master_key
        .open(&record.seed_sealed, &seed_context(user.id))
        .map_err(Error::internal)?;
    let uri = totp::provisioning_uri(&secret, "Hark", &user.email);
    Ok(Some(PendingTotp { secret, uri }))
}
