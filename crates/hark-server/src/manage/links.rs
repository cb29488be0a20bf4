//! One-time links: the first-run setup link `hark serve` prints while no account
//! exists, the set-password link `hark admin init` prints for its Owner, and the
//! password reset link mailed by "Forgot password". The token is shown once (printed
//! or mailed) and stored as a digest; the store makes each link work once.

use super::sessions::hash_password;
use super::{valid_email, validate_name, Error, Result};
use crate::AppState;
use hark_core::clock::Clock;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{AccountId, Plan, UserId};
use hark_store::{Bootstrap, LinkPurpose, LinkStore, Mail, NewAccount, NewAuthLink, StoreResult};

/// How long a mailed reset link works.
pub const RESET_TTL_MS: i64 = 3_600_000;
/// How long the set-password link of `hark admin init` works.
pub const SET_PASSWORD_TTL_MS: i64 = 7 * 86_400_000;

/// The dashboard page a link opens.
pub fn setup_url(base_url: &str, token: &Secret) -> String {
    format!(
        "{}/setup/{}",
        base_url.trim_end_matches('/'),
        token.expose()
    )
}

pub fn password_url(base_url: &str, token: &Secret) -> String {
    format!(
        "{}/password/{}",
        base_url.trim_end_matches('/'),
        token.expose()
    )
}

fn digest(token: &str) -> String {
    SecretDigest::of(token).to_hex()
}

/// While the database holds no account: a new setup link (valid until used). Every
/// start prints its own; whichever is used first creates the account, and from then
/// on none works.
pub async fn first_run_link(state: &AppState) -> Result<Option<String>> {
    if state.store.account_count().await? > 0 {
        return Ok(None);
    }
    let token = keys::generate(SecretKind::SetupLink);
    state
        .store
        .create_auth_link(
            NewAuthLink {
                purpose: LinkPurpose::Setup,
                user_id: None,
                digest_hex: digest(token.expose()),
                expires_at: None,
            },
            None,
        )
        .await?;
    Ok(Some(setup_url(&state.public_base_url, &token)))
}

/// A set-password link for `user` (the Owner `hark admin init` made), for the
/// operator to print.
pub async fn issue_set_password_link(
    store: &dyn LinkStore,
    clock: &dyn Clock,
    base_url: &str,
    user: UserId,
) -> StoreResult<String> {
    let token = keys::generate(SecretKind::PasswordReset);
    store
        .create_auth_link(
            NewAuthLink {
                purpose: LinkPurpose::SetPassword,
                user_id: Some(user),
                digest_hex: digest(token.expose()),
                expires_at: Some(clock.now_ms() + SET_PASSWORD_TTL_MS),
            },
            None,
        )
        .await?;
    Ok(password_url(base_url, &token))
}

/// "Forgot password": mails a reset link when the email belongs to a user, and does
/// the same visible nothing otherwise (the page never says whether an email exists).
pub async fn request_password_reset(state: &AppState, email: &str) -> Result<()> {
    let Some(user) = state.store.user_by_email(email).await? else {
        return Ok(());
    };
    let token = keys::generate(SecretKind::PasswordReset);
    let url = password_url(&state.public_base_url, &token);
    let mail = Mail {
        to: user.email.clone(),
        subject: "Reset your Hark password".into(),
        body: format!(
            "Someone asked to reset the password of {} on Hark.\n\nChoose a new password within an hour: {url}\n\nIf it was not you, ignore this mail; your password stays as it is.\n",
            user.email
        ),
    };
    state
        .store
        .create_auth_link(
            NewAuthLink {
                purpose: LinkPurpose::PasswordReset,
                user_id: Some(user.id),
                digest_hex: digest(token.expose()),
                expires_at: Some(state.clock.now_ms() + RESET_TTL_MS),
            },
            Some(mail),
        )
        .await?;
    Ok(())
}

/// What an open link is for, and whose it is.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub purpose: LinkPurpose,
    /// The email of the user a password link belongs to.
    pub email: Option<String>,
}

/// A usable link of one of `purposes`; `NotFound("link")` for anything else (unknown,
/// used, expired), all alike.
pub async fn open_link(
    state: &AppState,
    token: &str,
    purposes: &[LinkPurpose],
) -> Result<LinkView> {
    // Setup links and password links carry their own prefixes; the purpose is checked
    // against the stored link below.
    if !keys::is_well_formed(SecretKind::SetupLink, token)
        && !keys::is_well_formed(SecretKind::PasswordReset, token)
    {
        return Err(Error::NotFound("link"));
    }
    let link = state
        .store
        .auth_link(&digest(token))
        .await?
        .filter(|l| purposes.contains(&l.purpose) && l.usable(state.clock.now_ms()))
        .ok_or(Error::NotFound("link"))?;
    let email = match link.user_id {
        Some(u) => state.store.get_user(u).await?.map(|u| u.email),
        None => None,
    };
    Ok(LinkView {
        purpose: link.purpose,
        email,
    })
}

/// Sets the password through a set-password or reset link; every session of the
/// user ends.
pub async fn set_password_with_link(
    state: &AppState,
    token: &str,
    password: &Secret,
) -> Result<UserId> {
    let view = open_link(
        state,
        token,
        &[LinkPurpose::SetPassword, LinkPurpose::PasswordReset],
    )
    .await?;
    let hash = hash_password(password).await?;
    Ok(state
        .store
        .use_password_link(&digest(token), view.purpose, &hash)
        .await?)
}

/// What the first person enters on the setup page.
#[derive(Debug, Clone)]
pub struct FirstAccount {
    pub name: String,
    pub email: String,
    pub password: Secret,
    pub account_name: String,
}

/// Validates a new account's owner fields (shared by setup and sign-up).
pub fn validate_new_owner(input: &FirstAccount) -> Result<()> {
    if !valid_email(&input.email) {
        return Err(Error::Invalid("email is not a valid address".into()));
    }
    validate_name(&input.name)
        .map_err(|_| Error::Invalid("name must be 1 to 100 printable characters".into()))?;
    validate_name(&input.account_name)
        .map_err(|_| Error::Invalid("account name must be 1 to 100 printable characters".into()))?;
    Ok(())
}

/// The new account's stored form: Free plan, a default project.
pub fn new_account(state: &AppState, input: &FirstAccount, plan: Plan) -> NewAccount {
    NewAccount {
        id: AccountId::new(),
        name: input.account_name.trim().to_string(),
        plan,
        owner_id: UserId::new(),
        owner_email: input.email.trim().to_string(),
        project: crate::provisioning::new_project(&state.master_key, "Default project"),
    }
}

/// Uses the setup link: the first account, its Owner with this password, and a
/// default project.
pub async fn complete_setup(
    state: &AppState,
    token: &str,
    input: &FirstAccount,
) -> Result<Bootstrap> {
    open_link(state, token, &[LinkPurpose::Setup]).await?;
    validate_new_owner(input)?;
    let hash = hash_password(&input.password).await?;
    let boot = state
        .store
        .use_setup_link(&digest(token), new_account(state, input, Plan::Free), &hash)
        .await?;
    state.store.set_user_name(boot.owner, &input.name).await?;
    Ok(boot)
}
