//! JSON handlers for signing in and the signed-in person: login (cookies for browsers,
//! a bearer token for scripts that ask), logout, re-authentication, profile, password
//! change and account switching. The rules are in [`crate::manage::sessions`].

use super::principal::{ClientAddr, JsonBody};
use super::{MgmtError, MgmtResult};
use crate::cookies::{csrf_cookie_name, session_cookie_name};
use crate::manage::sessions::{self as core, LoginInput, PasswordChange, ReauthInput};
use crate::manage::views::{Instant, LoginResult, Profile, Reauthenticated};
use crate::manage::{ids, Caller, SESSION_TTL_MS};
use crate::AppState;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, schemars::JsonSchema)]
pub struct LoginRequest {
    #[serde(flatten)]
    pub input: LoginInput,
    /// Scripts set this to get the session token in the body (for `Authorization:
    /// Bearer`); browsers leave it out, so page scripts never see the token and the
    /// HttpOnly cookie is the only copy.
    #[serde(default)]
    pub return_token: bool,
}

fn cookie_header(
    state: &AppState,
    name: &str,
    value: &str,
    http_only: bool,
    max_age: i64,
) -> MgmtResult<HeaderValue> {
    let mut c = format!("{name}={value}; Path=/; SameSite=Strict; Max-Age={max_age}");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if state.public_base_url.starts_with("https://") {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).map_err(MgmtError::internal)
}

/// The `Set-Cookie` values of a new session (session token HttpOnly, CSRF token
/// readable by page scripts), or of its end when `values` is `None`.
pub fn session_cookies(
    state: &AppState,
    values: Option<(&str, &str)>,
) -> MgmtResult<[HeaderValue; 2]> {
    let (token, csrf, max_age) = match values {
        Some((t, c)) => (t, c, SESSION_TTL_MS / 1000),
        None => ("", "", 0),
    };
    Ok([
        cookie_header(state, session_cookie_name(state), token, true, max_age)?,
        cookie_header(state, csrf_cookie_name(state), csrf, false, max_age)?,
    ])
}

/// `POST /api/v1/auth/login`.
pub async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    JsonBody(req): JsonBody<LoginRequest>,
) -> MgmtResult<Response> {
    let new = core::login(&state, &req.input, addr.0).await?;
    let cookies = session_cookies(&state, Some((new.token.expose(), new.csrf.expose())))?;
    let body = LoginResult {
        profile: new.profile,
        csrf_token: new.csrf.expose().to_string(),
        session_id: new.session.id,
        expires_at: Instant(new.session.expires_at),
        token: req.return_token.then(|| new.token.expose().to_string()),
    };
    let mut response = Json(body).into_response();
    for c in cookies {
        response.headers_mut().append(SET_COOKIE, c);
    }
    Ok(response)
}

/// `POST /api/v1/auth/logout`: ends this session and clears the cookies.
pub async fn logout(State(state): State<AppState>, caller: Caller) -> MgmtResult<Response> {
    core::logout(&state, &caller).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for c in session_cookies(&state, None)? {
        response.headers_mut().append(SET_COOKIE, c);
    }
    Ok(response)
}

/// `POST /api/v1/auth/reauth`.
pub async fn reauth(
    State(state): State<AppState>,
    addr: ClientAddr,
    caller: Caller,
    JsonBody(req): JsonBody<ReauthInput>,
) -> MgmtResult<Json<Reauthenticated>> {
    Ok(Json(core::reauth(&state, &caller, &req, addr.0).await?))
}

/// `GET /api/v1/me`.
pub async fn me(State(state): State<AppState>, caller: Caller) -> MgmtResult<Json<Profile>> {
    Ok(Json(
        core::profile(
            &state,
            &caller.user,
            caller.session.signed_in_with,
            caller.session.current_account,
        )
        .await?,
    ))
}

/// `POST /api/v1/me/password`.
pub async fn change_password(
    State(state): State<AppState>,
    addr: ClientAddr,
    caller: Caller,
    JsonBody(req): JsonBody<PasswordChange>,
) -> MgmtResult<StatusCode> {
    core::change_password(&state, &caller, &req, addr.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SwitchAccount {
    pub account_id: String,
}

/// `POST /api/v1/me/account`.
pub async fn switch_account(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<SwitchAccount>,
) -> MgmtResult<Json<Profile>> {
    Ok(Json(
        core::switch_account(&state, &caller, ids::account(&req.account_id)).await?,
    ))
}
