//! What the account pages share: dates as people read them, which core errors a form
//! shows beside its fields (and which become an error page), re-authentication from a
//! password field, and the one confirmation page of every destructive action.

use super::error::{human_message, status_of};
use super::{Chrome, DashError, DashResult, Me};
use crate::manage::sessions::{self, ReauthInput};
use crate::manage::Caller;
use crate::management::principal::ClientAddr;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hark_core::keys::Secret;

/// `2026-11-30 05:12 UTC`: minutes are enough on a page; the JSON API has the instant.
pub fn when(ms: i64) -> String {
    let t = hark_core::clock::from_millis(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `when`, or the word for "none yet".
pub fn when_or(ms: Option<i64>, none: &str) -> String {
    ms.map(when).unwrap_or_else(|| none.to_string())
}

/// Audio or session time as people read it: `42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as i64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A core error the person can fix on the same form (a wrong password, a name too
/// long, a limit reached, ...): its text and status. Anything else is an error page.
pub fn on_form(e: MgmtError) -> Result<(StatusCode, String), DashError> {
    match e {
        MgmtError::Invalid(_)
        | MgmtError::Conflict(_)
        | MgmtError::LimitReached(_)
        | MgmtError::WrongPassword
        | MgmtError::BadCredentials
        | MgmtError::ReauthRequired
        | MgmtError::Throttled { .. } => Ok((status_of(&e), human_message(&e))),
        e => Err(e.into()),
    }
}

/// Re-authenticates with the password typed into a form (throttled like sign-in); the
/// returned caller carries the fresh re-authentication instant.
pub async fn reauth_with_password(
    state: &AppState,
    addr: ClientAddr,
    me: &Me,
    password: Option<Secret>,
) -> Result<Caller, MgmtError> {
    let mut caller = me.caller();
    let Some(password) = password.filter(|p| !p.expose().is_empty()) else {
        // No password typed: fine while the last re-authentication is recent.
        return Ok(caller);
    };
    let input = ReauthInput {
        password: Some(password),
        totp_code: None,
    };
    sessions::reauth(state, &caller, &input, addr.0).await?;
    caller.session.reauth_at = Some(state.clock.now_ms());
    Ok(caller)
}

/// The confirmation every destructive action goes through ("This cannot be undone").
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub heading: String,
    /// What will happen, in full.
    pub consequences: String,
    pub action: String,
    pub button: String,
    /// When set, the person types this name to confirm.
    pub type_name: Option<String>,
    pub ask_password: bool,
    pub back: String,
    pub error: Option<String>,
}

impl ConfirmPage {
    pub fn respond(self, status: StatusCode) -> DashResult<Response> {
        Ok((status, Html(self.render()?)).into_response())
    }
}
