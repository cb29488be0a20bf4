//! Signing in and the signed-in person: login (throttled per email and per client
//! address, without revealing whether an email exists), the session behind a presented
//! token, logout, re-authentication, the profile, password change and account switching.

use super::views::{AccountMembership, Instant, Profile, Reauthenticated, UserView};
use super::{mfa, Caller, Error, Result};
use super::{FAILURE_WINDOW_MS, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_EMAIL};
use super::{REAUTH_WINDOW_MS, SESSION_TTL_MS};
use crate::AppState;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::LoginSessionId;
use hark_core::{password, AccountId};
use hark_store::{normalize_email, LoginSession, NewSession, User};
use serde::Deserialize;
use std::net::IpAddr;

/// What a person types to sign in.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct LoginInput {
    pub email: String,
    #[schemars(with = "String")]
    pub password: Secret,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub totp_code: Option<Secret>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub recovery_code: Option<Secret>,
}

/// A login session just opened, with its two secrets (shown to the client once: the
/// session token as an HttpOnly cookie or a bearer token, the CSRF token for forms).
#[derive(Debug)]
pub struct NewLogin {
    pub session: LoginSession,
    pub token: Secret,
    pub csrf: Secret,
    pub profile: Profile,
}

fn email_subject(email: &str) -> String {
    format!("email:{}", normalize_email(email))
}

fn addr_subject(addr: Option<IpAddr>) -> Option<String> {
    addr.map(|a| format!("addr:{a}"))
}

/// Refuses when the email or the address has too many recent failures.
async fn check_throttle(state: &AppState, email: &str, addr: Option<IpAddr>) -> Result<()> {
    let since = state.clock.now_ms() - FAILURE_WINDOW_MS;
    let retry = (FAILURE_WINDOW_MS / 1000) as u64;
    if state
        .store
        .login_failures_since(&email_subject(email), since)
        .await?
        >= MAX_FAILURES_PER_EMAIL
    {
        return Err(Error::Throttled {
            retry_after_secs: retry,
        });
    }
    if let Some(subject) = addr_subject(addr) {
        if state.store.login_failures_since(&subject, since).await? >= MAX_FAILURES_PER_ADDRESS {
            return Err(Error::Throttled {
                retry_after_secs: retry,
            });
        }
    }
    Ok(())
}

async fn record_failure(
    state: &AppState,
    email: &str,
    addr: Option<IpAddr>,
    user: Option<&User>,
    reason: &str,
) -> Result<()> {
    let mut subjects = vec![email_subject(email)];
    subjects.extend(addr_subject(addr));
    state
        .store
        .record_login_failure(&subjects, user.map(|u| u.id), reason)
        .await?;
    Ok(())
}

/// Verifies a password off the async threads (Argon2 is deliberately slow); a missing
/// user costs the same time as a wrong password.
pub async fn password_matches(user: Option<&User>, given: &Secret) -> Result<bool> {
    let given = given.clone();
    let stored = user.and_then(|u| u.password_hash.clone());
    tokio::task::spawn_blocking(move || match stored {
        Some(hash) => password::verify(given.expose(), &hash),
        None => {
            password::dummy_verify(given.expose());
            false
        }
    })
    .await
    .map_err(Error::internal)
}

/// Checks the password rules and hashes it (Argon2id) off the async threads.
pub async fn hash_password(given: &Secret) -> Result<String> {
    password::validate(given.expose()).map_err(|e| Error::Invalid(e.to_string()))?;
    let given = given.clone();
    tokio::task::spawn_blocking(move || password::hash(given.expose()))
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
}

/// The caller's profile, with `current` as the current account when they belong to it
/// (else their first account).
pub async fn profile(state: &AppState, user: &User, current: Option<AccountId>) -> Result<Profile> {
    let accounts = state.store.accounts_of_user(user.id).await?;
    let mfa_enrollment_required = !user.mfa_enabled && accounts.iter().any(|a| a.require_mfa);
    let current_account_id = current
        .filter(|c| accounts.iter().any(|a| a.account_id == *c))
        .or_else(|| accounts.first().map(|a| a.account_id));
    Ok(Profile {
        user: UserView {
            id: user.id,
            email: user.email.clone(),
            mfa_enabled: user.mfa_enabled,
            created_at: Instant(user.created_at),
        },
        accounts: accounts.iter().map(AccountMembership::from).collect(),
        current_account_id,
        mfa_enrollment_required,
    })
}

/// Signs a person in: throttle, password, second factor when enrolled, then a fresh
/// session (never one the client chose) in their first account.
pub async fn login(state: &AppState, input: &LoginInput, addr: Option<IpAddr>) -> Result<NewLogin> {
    check_throttle(state, &input.email, addr).await?;
    let user = state.store.user_by_email(&input.email).await?;
    if !password_matches(user.as_ref(), &input.password).await? {
        record_failure(state, &input.email, addr, user.as_ref(), "bad_credentials").await?;
        return Err(Error::BadCredentials);
    }
    let Some(user) = user else {
        return Err(Error::BadCredentials);
    };
    if user.mfa_enabled {
        match mfa::check_second_factor(
            state,
            &user,
            input.totp_code.as_ref(),
            input.recovery_code.as_ref(),
        )
        .await
        {
            Ok(()) => {}
            Err(Error::BadMfaCode) => {
                record_failure(state, &input.email, addr, Some(&user), "bad_mfa_code").await?;
                return Err(Error::BadMfaCode);
            }
            Err(e) => return Err(e),
        }
    }
    open_session(state, &user, &email_subject(&input.email)).await
}

/// Opens a login session for a person whose identity was just proven (by a login, or
/// by a single-use link they followed); `audit_subject` names how in the audit log.
pub async fn open_session(state: &AppState, user: &User, audit_subject: &str) -> Result<NewLogin> {
    let token = keys::generate(SecretKind::Session);
    let csrf = keys::generate(SecretKind::Session);
    let first_account = state
        .store
        .accounts_of_user(user.id)
        .await?
        .first()
        .map(|a| a.account_id);
    let session = state
        .store
        .create_session(
            NewSession {
                id: LoginSessionId::new(),
                user_id: user.id,
                digest_hex: SecretDigest::of(token.expose()).to_hex(),
                csrf_digest_hex: SecretDigest::of(csrf.expose()).to_hex(),
                current_account: first_account,
                expires_at: state.clock.now_ms() + SESSION_TTL_MS,
            },
            audit_subject,
        )
        .await?;
    let profile = profile(state, user, first_account).await?;
    Ok(NewLogin {
        session,
        token,
        csrf,
        profile,
    })
}

/// The live session behind a presented session token, and its person.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller> {
    if !keys::is_well_formed(SecretKind::Session, token) {
        return Err(Error::Unauthenticated);
    }
    let session = state
        .store
        .session_by_digest(&SecretDigest::of(token).to_hex())
        .await?
        .ok_or(Error::Unauthenticated)?;
    if session.expires_at <= state.clock.now_ms() {
        return Err(Error::Unauthenticated);
    }
    let user = state
        .store
        .get_user(session.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(Caller { user, session })
}

/// Whether `presented` is this session's CSRF token (constant-time comparison).
pub fn csrf_matches(caller: &Caller, presented: &str) -> bool {
    !presented.is_empty()
        && SecretDigest::from_hex(&caller.session.csrf_digest)
            .is_some_and(|expected| expected.ct_eq(&SecretDigest::of(presented)))
}

/// Ends the caller's session.
pub async fn logout(state: &AppState, caller: &Caller) -> Result<()> {
    state
        .store
        .delete_session(caller.session.id, &caller.actor())
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct ReauthInput {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<Secret>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub totp_code: Option<Secret>,
}

/// Re-entering the password or a TOTP code opens the short window in which sensitive
/// actions (reveal, account deletion, MFA removal) work.
pub async fn reauth(
    state: &AppState,
    caller: &Caller,
    input: &ReauthInput,
    addr: Option<IpAddr>,
) -> Result<Reauthenticated> {
    check_throttle(state, &caller.user.email, addr).await?;
    let ok = match (&input.password, &input.totp_code) {
        (Some(p), _) => password_matches(Some(&caller.user), p).await?,
        (None, Some(code)) if caller.user.mfa_enabled => {
            mfa::check_second_factor(state, &caller.user, Some(code), None)
                .await
                .is_ok()
        }
        _ => {
            return Err(Error::Invalid(
                "send password, or totp_code if MFA is enabled".into(),
            ))
        }
    };
    if !ok {
        record_failure(
            state,
            &caller.user.email,
            addr,
            Some(&caller.user),
            "bad_reauth",
        )
        .await?;
        return Err(Error::BadCredentials);
    }
    let now = state.clock.now_ms();
    state
        .store
        .set_session_reauth(caller.session.id, now)
        .await?;
    Ok(Reauthenticated {
        reauthenticated_at: Instant(now),
        valid_until: Instant(now + REAUTH_WINDOW_MS),
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct PasswordChange {
    #[schemars(with = "String")]
    pub current_password: Secret,
    #[schemars(with = "String")]
    pub new_password: Secret,
}

/// Changes the caller's password; every other session of theirs ends.
pub async fn change_password(
    state: &AppState,
    caller: &Caller,
    input: &PasswordChange,
    addr: Option<IpAddr>,
) -> Result<()> {
    check_throttle(state, &caller.user.email, addr).await?;
    if !password_matches(Some(&caller.user), &input.current_password).await? {
        record_failure(
            state,
            &caller.user.email,
            addr,
            Some(&caller.user),
            "bad_password_change",
        )
        .await?;
        return Err(Error::BadCredentials);
    }
    let hash = hash_password(&input.new_password).await?;
    state
        .store
        .set_password(
            caller.user.id,
            &hash,
            Some(caller.session.id),
            &caller.actor(),
        )
        .await?;
    Ok(())
}

/// Makes `account` (one the caller belongs to) the session's current account.
pub async fn switch_account(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
) -> Result<Profile> {
    if state
        .store
        .role_of(account, caller.user.id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("account"));
    }
    state
        .store
        .set_session_account(caller.session.id, account)
        .await?;
    profile(state, &caller.user, Some(account)).await
}
