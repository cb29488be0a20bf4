//! Self-service sign-up (only with `signup = "open"`) and invite acceptance from the
//! mailed link.

use super::accounts::{accept_invite, AcceptInput};
use super::links::{new_account, validate_new_owner, FirstAccount};
use super::sessions::hash_password;
use super::{validate_name, Error, Result};
use crate::config::SignupMode;
use crate::AppState;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{AccountId, Plan, Role, UserId};
use hark_store::{Bootstrap, User};

/// Whether the sign-up page exists.
pub fn signup_open(state: &AppState) -> bool {
    state.config.signup == SignupMode::Open
}

/// A new account on the Free plan with its Owner (a new user) and a default project.
pub async fn sign_up(state: &AppState, input: &FirstAccount) -> Result<Bootstrap> {
    if !signup_open(state) {
        return Err(Error::NotFound("sign-up"));
    }
    validate_new_owner(input)?;
    let hash = hash_password(&input.password).await?;
    let boot = state
        .store
        .create_account_with_owner(new_account(state, input, Plan::Free), &hash)
        .await?;
    state.store.set_user_name(boot.owner, &input.name).await?;
    Ok(boot)
}

/// A pending invite as its page shows it.
#[derive(Debug, Clone)]
pub struct InviteView {
    pub account_id: AccountId,
    pub account_name: String,
    pub email: String,
    pub role: Role,
    /// The invited email already belongs to a user (who signs in to accept).
    pub existing_user: bool,
}

fn invite_digest(token: &str) -> Result<String> {
    // Invite tokens carry their own prefix; those mailed before it existed still work.
    if !keys::is_well_formed_or_legacy(SecretKind::Invite, token) {
        return Err(Error::NotFound("invite"));
    }
    Ok(SecretDigest::of(token).to_hex())
}

/// The pending, unexpired invite of this token.
pub async fn invite_view(state: &AppState, token: &str) -> Result<InviteView> {
    let invite = state
        .store
        .invite_by_digest(&invite_digest(token)?)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > state.clock.now_ms())
        .ok_or(Error::NotFound("invite"))?;
    let account = state
        .store
        .get_account(invite.account_id)
        .await?
        .ok_or(Error::NotFound("invite"))?;
    let existing_user = state.store.user_by_email(&invite.email).await?.is_some();
    Ok(InviteView {
        account_id: account.id,
        account_name: account.name,
        email: invite.email,
        role: invite.role,
        existing_user,
    })
}

/// A new person accepts: the invite's email becomes a user with this name and
/// password (the rules of the JSON API's accept, which this calls).
pub async fn accept_as_new_user(
    state: &AppState,
    token: &str,
    name: &str,
    password: &Secret,
) -> Result<(AccountId, UserId)> {
    let view = invite_view(state, token).await?;
    if view.existing_user {
        return Err(Error::Conflict(
            "this email already has a login: sign in to accept".into(),
        ));
    }
    validate_name(name)?;
    let accepted = accept_invite(
        state,
        &AcceptInput {
            token: Secret::new(token),
            password: password.clone(),
        },
    )
    .await?;
    state.store.set_user_name(accepted.user_id, name).await?;
    Ok((view.account_id, accepted.user_id))
}

/// A signed-in person accepts an invite sent to their own email.
pub async fn accept_signed_in(state: &AppState, user: &User, token: &str) -> Result<AccountId> {
    let view = invite_view(state, token).await?;
    if hark_store::normalize_email(&view.email) != user.email {
        return Err(Error::Conflict(format!(
            "this invite is for {}; sign out and sign in as that person to accept it",
            view.email
        )));
    }
    let accepted = state
        .store
        .accept_invite(&invite_digest(token)?, (UserId::new(), String::new()))
        .await?;
    Ok(accepted.account_id)
}
