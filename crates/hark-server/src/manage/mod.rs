//! The management core: every account-management rule (the one permission check, plan
//! limits, re-authentication, audit written in the store transaction of the change) as
//! transport-free operations with typed inputs and typed results ([`views`]). The JSON
//! API under `/api/v1` (`crate::management`) and the HTML dashboard are two front doors
//! that translate requests into these calls and render what they return; neither holds
//! a rule of its own. Nothing here knows HTTP.

pub mod accounts;
pub mod audit;
pub mod enrolment;
pub mod error;
pub mod links;
pub mod mfa;
pub mod onboarding;
pub mod playground;
pub mod projects;
pub mod sessions;
pub mod signin;
pub mod transcripts;
pub mod usage;
pub mod views;
pub mod webhooks;

use crate::AppState;
use hark_core::plan::role_allows;
use hark_core::{AccountId, Permission, Role};
use hark_store::{Account, Actor, LoginSession, SignInMethod, User};
use serde::Deserialize;

pub use error::{Error, Result};
pub use views::{Instant, Page};

/// How long a login session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// How recent a password or TOTP re-entry must be for sensitive actions.
pub const REAUTH_WINDOW_MS: i64 = 5 * 60_000;
/// Counted sign-in attempts in the window before refusing: per email and client address
/// pair, per address, and per email from anywhere (high, so that a stranger cannot
/// lock a person out, yet guessing spread over many addresses stays bounded).
pub const MAX_FAILURES_PER_PAIR: i64 = 5;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
pub const MAX_FAILURES_PER_EMAIL: i64 = 100;
pub const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// How long an invite stays valid.
pub const INVITE_TTL_MS: i64 = 7 * 86_400_000;
/// The longest grace period of a rotated key.
pub const MAX_ROTATION_GRACE_SECS: i64 = 86_400;
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// A signed-in person acting through one of their login sessions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub session: LoginSession,
}

impl Caller {
    /// The audit actor for what this person does.
    pub fn actor(&self) -> Actor {
        Actor::User(self.user.id)
    }

    /// Whether this session passes an account's "Require MFA": the person has a
    /// confirmed factor *and* this session signed in with it (a session opened with a
    /// password alone, say before the person enrolled, does not).
    pub fn signed_in_with_mfa(&self) -> bool {
        self.user.mfa_enabled && self.session.signed_in_with == SignInMethod::Mfa
    }

    /// What an account that requires MFA tells this session, if it may not pass.
    pub fn mfa_refusal(&self) -> Option<Error> {
        if !self.user.mfa_enabled {
            Some(Error::MfaEnrollmentRequired)
        } else if !self.signed_in_with_mfa() {
            Some(Error::MfaSignInRequired)
        } else {
            None
        }
    }
}

/// An account the caller may act on, with their role in it.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub account: Account,
    pub role: Role,
}

/// The one gate of every account-scoped action: the caller must be a member (else the
/// account answers as missing), must have MFA and have signed this session in with it
/// if the account requires MFA, and their role must allow `permission` (else a refusal
/// naming it).
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    permission: Permission,
) -> Result<Authorized> {
    let role = state
        .store
        .role_of(account, caller.user.id)
        .await?
        .ok_or(Error::NotFound("account"))?;
    let account = state
        .store
        .get_account(account)
        .await?
        .ok_or(Error::NotFound("account"))?;
    if account.require_mfa {
        if let Some(refusal) = caller.mfa_refusal() {
            return Err(refusal);
        }
    }
    if !role_allows(role, permission) {
        return Err(Error::Forbidden { permission, role });
    }
    Ok(Authorized { account, role })
}

/// Sensitive actions need a password or TOTP re-entry within the last few minutes.
pub fn require_recent_reauth(state: &AppState, caller: &Caller) -> Result<()> {
    let now = state.clock.now_ms();
    match caller.session.reauth_at {
        Some(at) if now - at <= REAUTH_WINDOW_MS && at <= now => Ok(()),
        _ => Err(Error::ReauthRequired),
    }
}

/// Ids as the front doors receive them (path segments, form fields). A malformed id
/// becomes the nil id, which names nothing: it then answers exactly as a missing
/// object does, and only after the permission check, like any other missing object.
pub mod ids {
    use hark_core::{AccountId, ApiKeyId, InviteId, ProjectId, TranscriptId, UserId};
    use uuid::Uuid;

    pub fn account(raw: &str) -> AccountId {
        AccountId::parse(raw).unwrap_or(AccountId(Uuid::nil()))
    }
    pub fn project(raw: &str) -> ProjectId {
        ProjectId::parse(raw).unwrap_or(ProjectId(Uuid::nil()))
    }
    pub fn api_key(raw: &str) -> ApiKeyId {
        ApiKeyId::parse(raw).unwrap_or(ApiKeyId(Uuid::nil()))
    }
    pub fn user(raw: &str) -> UserId {
        UserId::parse(raw).unwrap_or(UserId(Uuid::nil()))
    }
    pub fn invite(raw: &str) -> InviteId {
        InviteId::parse(raw).unwrap_or(InviteId(Uuid::nil()))
    }
    pub fn transcript(raw: &str) -> TranscriptId {
        TranscriptId::parse(raw).unwrap_or(TranscriptId(Uuid::nil()))
    }
}

/// Email addresses people type into forms: trimmed, with an `@`, no spaces.
pub fn valid_email(email: &str) -> bool {
    let email = email.trim();
    !email.is_empty()
        && email.len() <= 254
        && email.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A display name of an account, project or key: 1 to 100 printable characters.
pub fn validate_name(name: &str) -> Result<()> {
    let n = name.trim().chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(())
}

/// A destructive action confirmed by typing the name of what it destroys (a project,
/// the account): the typed text must be that name, ignoring surrounding spaces.
pub fn confirm_name(expected: &str, typed: &str) -> Result<()> {
    if typed.trim() == expected.trim() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "type \"{}\" exactly to confirm",
            expected.trim()
        )))
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct PageQuery {
    /// 1 to 200 (`MAX_PAGE`); 50 when absent.
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<usize> {
        match self.limit {
            None => Ok(DEFAULT_PAGE as usize),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
            Some(_) => Err(Error::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            ))),
        }
    }

    /// Pages `items` (sorted by the unique `key`) after the cursor.
    pub fn page<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> String) -> Result<Page<T>> {
        let limit = self.limit()?;
        items.sort_by_key(|a| key(a));
        if let Some(cursor) = &self.cursor {
            items.retain(|i| key(i).as_str() > cursor.as_str());
        }
        let has_more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if has_more {
            items.last().map(&key)
        } else {
            None
        };
        Ok(Page {
            data: items,
            has_more,
            next_cursor,
        })
    }
}
