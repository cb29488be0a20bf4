//! Signing in and the signed-in person: login (throttled per email and per client
//! address, without revealing whether an email exists), the session behind a presented
//! token, logout, re-authentication, the profile, password change and account switching.

use super::views::{AccountMembership, Instant, Profile, Reauthenticated, UserView};
use super::MAX_FAILURES_PER_PAIR;
use super::{mfa, Caller, Error, Result};
use super::{FAILURE_WINDOW_MS, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_EMAIL};
use super::{REAUTH_WINDOW_MS, SESSION_TTL_MS};
use crate::client_addr::address_key;
use crate::AppState;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::LoginSessionId;
use hark_core::{password, AccountId};
use hark_store::{normalize_email, LoginSession, NewSession, SignInMethod, User};
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

/// The longest email kept in a throttle subject or an audit entry: unauthenticated
/// requests must not be able to grow the audit log with long strings.
const MAX_EMAIL_CHARS: usize = 254;

/// The normalised email, bounded in length.
fn bounded_email(email: &str) -> String {
    normalize_email(email)
        .chars()
        .take(MAX_EMAIL_CHARS)
        .collect()
}

/// What one sign-in attempt counts against, with each subject's limit per window:
/// the email *and* address pair (so a stranger elsewhere cannot lock a person out),
/// the address alone (password spraying), and the email alone with a much higher
/// limit (guessing spread over many addresses).
fn throttle_subjects(email: &str, addr: Option<IpAddr>) -> Vec<(String, i64)> {
    let email = bounded_email(email);
    let mut subjects = Vec::with_capacity(3);
    match addr.map(address_key) {
        Some(a) => {
            subjects.push((format!("pair:{email}|{a}"), MAX_FAILURES_PER_PAIR));
            subjects.push((format!("addr:{a}"), MAX_FAILURES_PER_ADDRESS));
        }
        // Unknown address (never the case on a socket): the pair degenerates to the email.
        None => subjects.push((format!("pair:{email}|"), MAX_FAILURES_PER_PAIR)),
    }
    subjects.push((format!("email:{email}"), MAX_FAILURES_PER_EMAIL));
    subjects
}

/// One counted guess at a credential: taken before the credential is checked, so
/// any number of concurrent guesses still get at most the limit evaluated.
struct Attempt {
    counted: hark_store::LoginAttempt,
    subjects: Vec<String>,
}

impl Attempt {
    /// Counts the attempt, or refuses it when a subject has used up its limit.
    async fn begin(state: &AppState, email: &str, addr: Option<IpAddr>) -> Result<Attempt> {
        let subjects = throttle_subjects(email, addr);
        let since = state.clock.now_ms() - FAILURE_WINDOW_MS;
        match state.store.begin_login_attempt(&subjects, since).await? {
            Some(counted) => Ok(Attempt {
                counted,
                subjects: subjects.into_iter().map(|(s, _)| s).collect(),
            }),
            None => Err(Error::Throttled {
                retry_after_secs: (FAILURE_WINDOW_MS / 1000) as u64,
            }),
        }
    }

    /// The credential was right (or nothing was guessed): the attempt does not count.
    async fn forgive(self, state: &AppState) -> Result<()> {
        state.store.forgive_login_attempt(&self.counted).await?;
        Ok(())
    }

    /// The credential was wrong: the attempt stays counted and is audited.
    async fn failed(self, state: &AppState, user: Option<&User>, reason: &str) -> Result<()> {
        state
            .store
            .audit_login_failure(&self.subjects, user.map(|u| u.id), reason)
            .await?;
        Ok(())
    }

    fn pair_subject(&self) -> &str {
        self.subjects
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }
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

/// The profile of a person in one of their sessions (how it signed in decides whether
/// it must sign in again with MFA), with `current` as the current account when they
/// belong to it (else their first account).
pub async fn profile(
    state: &AppState,
    user: &User,
    signed_in_with: SignInMethod,
    current: Option<AccountId>,
) -> Result<Profile> {
    let accounts = state.store.accounts_of_user(user.id).await?;
    let some_account_requires_mfa = accounts.iter().any(|a| a.require_mfa);
    let mfa_enrollment_required = !user.mfa_enabled && some_account_requires_mfa;
    let mfa_sign_in_required =
        user.mfa_enabled && signed_in_with != SignInMethod::Mfa && some_account_requires_mfa;
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
        mfa_sign_in_required,
    })
}

/// Signs a person in: throttle, password, second factor when enrolled, then a fresh
/// session (never one the client chose) in their first account.
pub async fn login(state: &AppState, input: &LoginInput, addr: Option<IpAddr>) -> Result<NewLogin> {
    let attempt = Attempt::begin(state, &input.email, addr).await?;
    let user = state.store.user_by_email(&input.email).await?;
    if !password_matches(user.as_ref(), &input.password).await? {
        attempt
            .failed(state, user.as_ref(), "bad_credentials")
            .await?;
        return Err(Error::BadCredentials);
    }
    let Some(user) = user else {
        attempt.failed(state, None, "bad_credentials").await?;
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
            Err(e @ (Error::BadMfaCode | Error::TotpCodeUsed)) => {
                attempt.failed(state, Some(&user), "bad_mfa_code").await?;
                return Err(e);
            }
            Err(e) => {
                // The password was right and no code was sent yet: not a guess.
                attempt.forgive(state).await?;
                return Err(e);
            }
        }
    }
    let pair = attempt.pair_subject().to_string();
    attempt.forgive(state).await?;
    // A person with MFA got here only through their second factor.
    let method = if user.mfa_enabled {
        SignInMethod::Mfa
    } else {
        SignInMethod::Password
    };
    open_session(state, &user, &pair, method).await
}

/// Opens a login session for a person whose identity was just proven (by a login, or
/// by a single-use link they followed, which counts as a password alone); the earlier
/// failures of `throttle_subject` (the email and address pair that just proved itself)
/// are cleared.
pub async fn open_session(
    state: &AppState,
    user: &User,
    throttle_subject: &str,
    signed_in_with: SignInMethod,
) -> Result<NewLogin> {
    let token = keys::generate(SecretKind::Session);
    let csrf = keys::generate(SecretKind::Csrf);
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
                signed_in_with,
            },
            throttle_subject,
        )
        .await?;
    let profile = profile(state, user, signed_in_with, first_account).await?;
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

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReauthInput {
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub totp_code: Option<Secret>,
}

/// `password`, or `totp_code` (a person with MFA): at least one of them, each a
/// non-empty string.
impl schemars::JsonSchema for ReauthInput {
    fn schema_name() -> String {
        "ReauthInput".into()
    }
    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "password": {"type": "string", "minLength": 1},
                "totp_code": {"type": "string", "minLength": 1},
            },
            "anyOf": [{"required": ["password"]}, {"required": ["totp_code"]}],
        });
        serde_json::from_value(schema).unwrap_or(schemars::schema::Schema::Bool(true))
    }
}

/// Re-entering the password or a TOTP code opens the short window in which sensitive
/// actions (reveal, account deletion, MFA removal) work.
pub async fn reauth(
    state: &AppState,
    caller: &Caller,
    input: &ReauthInput,
    addr: Option<IpAddr>,
) -> Result<Reauthenticated> {
    let attempt = Attempt::begin(state, &caller.user.email, addr).await?;
    let refusal = match (&input.password, &input.totp_code) {
        (Some(p), _) => {
            (!password_matches(Some(&caller.user), p).await?).then_some(Error::WrongPassword)
        }
        (None, Some(code)) if caller.user.mfa_enabled => {
            match mfa::check_second_factor(state, &caller.user, Some(code), None).await {
                Ok(()) => None,
                Err(e @ (Error::BadMfaCode | Error::TotpCodeUsed)) => Some(e),
                Err(e) => return Err(e),
            }
        }
        // Without MFA there is no code that could be right: a failed re-authentication.
        (None, Some(_)) => Some(Error::BadMfaCode),
        (None, None) => {
            attempt.forgive(state).await?;
            return Err(Error::Invalid(
                "send password, or totp_code if MFA is enabled".into(),
            ));
        }
    };
    if let Some(refusal) = refusal {
        attempt
            .failed(state, Some(&caller.user), "bad_reauth")
            .await?;
        return Err(refusal);
    }
    attempt.forgive(state).await?;
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
    let attempt = Attempt::begin(state, &caller.user.email, addr).await?;
    if !password_matches(Some(&caller.user), &input.current_password).await? {
        attempt
            .failed(state, Some(&caller.user), "bad_password_change")
            .await?;
        return Err(Error::WrongPassword);
    }
    attempt.forgive(state).await?;
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
    profile(
        state,
        &caller.user,
        caller.session.signed_in_with,
        Some(account),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_subjects_pair_the_email_with_the_address_and_bound_the_email() {
        let addr: IpAddr = "192.0.2.7".parse().expect("v4");
        let long = format!("{}@Example.com", "X".repeat(10_000));
        let subjects = throttle_subjects(&long, Some(addr));
        let names: Vec<&str> = subjects.iter().map(|(s, _)| s.as_str()).collect();
        assert!(names[0].starts_with("pair:xxx") && names[0].ends_with("|192.0.2.7"));
        assert_eq!(names[1], "addr:192.0.2.7");
        assert!(names.iter().all(|s| s.len() <= MAX_EMAIL_CHARS + 64));
        assert_eq!(subjects[0].1, MAX_FAILURES_PER_PAIR);
    }
}
