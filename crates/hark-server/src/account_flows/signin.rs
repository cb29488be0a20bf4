//! Signing in with email and password, then a TOTP or recovery code when the person
//! has MFA: throttled per email and per client address (the same limits as the JSON
//! login), never revealing whether an email exists, and ending in a fresh session.
//! Between the two steps the browser carries a short-lived ticket sealed under the
//! master key, so nothing about a half-finished sign-in is stored.

use crate::management::mfa::check_second_factor;
use crate::management::principal::ClientAddr;
use crate::management::sessions::password_matches;
use crate::management::{
    MgmtError, MgmtResult, FAILURE_WINDOW_MS, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_EMAIL,
    SESSION_TTL_MS,
};
use crate::AppState;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{LoginSessionId, UserId};
use hark_store::{normalize_email, Actor, LoginSession, NewSession, User};
use serde::{Deserialize, Serialize};

/// How long the second step may follow the first.
pub const TICKET_TTL_MS: i64 = 5 * 60_000;
const TICKET_CONTEXT: &str = "dashboard-sign-in-second-factor";

/// A new login: the session and its two secrets, for the cookies (never stored).
pub struct Login {
    pub user: User,
    pub session: LoginSession,
    pub token: Secret,
    pub csrf: Secret,
}

/// The outcome of the password step.
pub enum SignIn {
    Done(Login),
    /// The password was right and the person has MFA: ask for a code with this ticket.
    SecondFactor { ticket: String },
}

#[derive(Serialize, Deserialize)]
struct Ticket {
    user: UserId,
    email: String,
    expires_at: i64,
}

fn email_subject(email: &str) -> String {
    format!("email:{}", normalize_email(email))
}

fn addr_subject(addr: &ClientAddr) -> Option<String> {
    addr.0.map(|a| format!("addr:{a}"))
}

/// Refuses when the email or the address has too many recent failures.
pub async fn check_throttle(state: &AppState, email: &str, addr: &ClientAddr) -> MgmtResult<()> {
    let since = state.clock.now_ms() - FAILURE_WINDOW_MS;
    let throttled = MgmtError::Throttled {
        retry_after_secs: (FAILURE_WINDOW_MS / 1000) as u64,
    };
    if state
        .store
        .login_failures_since(&email_subject(email), since)
        .await?
        >= MAX_FAILURES_PER_EMAIL
    {
        return Err(throttled);
    }
    if let Some(subject) = addr_subject(addr) {
        if state.store.login_failures_since(&subject, since).await? >= MAX_FAILURES_PER_ADDRESS {
            return Err(throttled);
        }
    }
    Ok(())
}

/// Records a failed attempt against the email and the address.
pub async fn record_failure(
    state: &AppState,
    email: &str,
    addr: &ClientAddr,
    user: Option<&User>,
    reason: &str,
) -> MgmtResult<()> {
    let mut subjects = vec![email_subject(email)];
    subjects.extend(addr_subject(addr));
    state
        .store
        .record_login_failure(&subjects, user.map(|u| u.id), reason)
        .await?;
    Ok(())
}

/// The password step.
pub async fn sign_in(
    state: &AppState,
    addr: &ClientAddr,
    email: &str,
    password: &Secret,
) -> MgmtResult<SignIn> {
    check_throttle(state, email, addr).await?;
    let user = state.store.user_by_email(email).await?;
    if !password_matches(user.as_ref(), password).await? {
        record_failure(state, email, addr, user.as_ref(), "bad_credentials").await?;
        return Err(MgmtError::BadCredentials);
    }
    let Some(user) = user else {
        return Err(MgmtError::BadCredentials);
    };
    if user.mfa_enabled {
        let ticket = Ticket {
            user: user.id,
            email: user.email.clone(),
            expires_at: state.clock.now_ms() + TICKET_TTL_MS,
        };
        let json = serde_json::to_string(&ticket).map_err(MgmtError::internal)?;
        return Ok(SignIn::SecondFactor {
            ticket: state.master_key.seal(&json, TICKET_CONTEXT),
        });
    }
    Ok(SignIn::Done(open_session(state, &user).await?))
}

/// The second step: a TOTP code (six digits) or a recovery code, with the ticket of
/// the password step.
pub async fn second_factor(
    state: &AppState,
    addr: &ClientAddr,
    ticket: &str,
    code: &Secret,
) -> MgmtResult<Login> {
    let ticket: Ticket = state
        .master_key
        .open(ticket, TICKET_CONTEXT)
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .filter(|t: &Ticket| t.expires_at > state.clock.now_ms())
        .ok_or_else(|| {
            MgmtError::Invalid("this sign-in has expired: enter your email and password again".into())
        })?;
    check_throttle(state, &ticket.email, addr).await?;
    let user = state
        .store
        .get_user(ticket.user)
        .await?
        .ok_or(MgmtError::BadCredentials)?;
    let given = code.expose().trim();
    let is_totp = given.len() == hark_core::totp::DIGITS as usize
        && given.chars().all(|c| c.is_ascii_digit());
    let checked = if is_totp {
        check_second_factor(state, &user, Some(&Secret::new(given)), None).await
    } else {
        check_second_factor(state, &user, None, Some(&Secret::new(given))).await
    };
    match checked {
        Ok(()) => Ok(open_session(state, &user).await?),
        Err(MgmtError::BadMfaCode) | Err(MgmtError::MfaRequired) => {
            record_failure(state, &ticket.email, addr, Some(&user), "bad_mfa_code").await?;
            Err(MgmtError::BadMfaCode)
        }
        Err(e) => Err(e),
    }
}

/// A fresh session for a person who just proved who they are (never a token the
/// client chose), starting in their first account.
pub async fn open_session(state: &AppState, user: &User) -> MgmtResult<Login> {
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
            &email_subject(&user.email),
        )
        .await?;
    Ok(Login {
        user: user.clone(),
        session,
        token,
        csrf,
    })
}

/// Ends a session.
pub async fn sign_out(state: &AppState, user: &User, session: &LoginSession) -> MgmtResult<()> {
    state
        .store
        .delete_session(session.id, &Actor::User(user.id))
        .await?;
    Ok(())
}
