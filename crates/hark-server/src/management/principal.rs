//! Who is calling the management API: a login session presented as a bearer token
//! (`Authorization: Bearer hark_ses_...`, for scripts) or as the `hark_session`
//! cookie (browsers, with a double-submit CSRF token on unsafe methods); and the
//! one place an account-scoped action is authorised.

use super::{MgmtError, MgmtResult, CSRF_HEADER, REAUTH_WINDOW_MS};
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::Method;
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::plan::role_allows;
use hark_core::{AccountId, Permission, Role};
use hark_store::{Account, LoginSession, User};
use serde::de::DeserializeOwned;
use std::net::IpAddr;

/// A signed-in person and their session.
#[derive(Debug, Clone)]
pub struct UserCtx {
    pub user: User,
    pub session: LoginSession,
    pub via_cookie: bool,
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The presented session token and whether it came from the cookie.
fn session_token<'a>(parts: &'a Parts, state: &AppState) -> Option<(&'a str, bool)> {
    let auth = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(auth) = auth {
        return match auth.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some((rest.trim(), false))
            }
            _ => Some((auth, false)),
        };
    }
    cookie(parts, crate::cookies::session_cookie_name(state)).map(|c| (c, true))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for UserCtx {
    type Rejection = MgmtError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> MgmtResult<Self> {
        let (token, via_cookie) = session_token(parts, state).ok_or(MgmtError::Unauthenticated)?;
        if !keys::is_well_formed(SecretKind::Session, token) {
            return Err(MgmtError::Unauthenticated);
        }
        let session = state
            .store
            .session_by_digest(&SecretDigest::of(token).to_hex())
            .await?
            .ok_or(MgmtError::Unauthenticated)?;
        if session.expires_at <= state.clock.now_ms() {
            return Err(MgmtError::Unauthenticated);
        }
        if via_cookie && !is_safe(&parts.method) {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expected = SecretDigest::from_hex(&session.csrf_digest);
            let ok = expected.is_some_and(|e| e.ct_eq(&SecretDigest::of(presented)));
            if presented.is_empty() || !ok {
                return Err(MgmtError::Csrf);
            }
        }
        let user = state
            .store
            .get_user(session.user_id)
            .await?
            .ok_or(MgmtError::Unauthenticated)?;
        Ok(UserCtx {
            user,
            session,
            via_cookie,
        })
    }
}

/// The caller's network address (for login throttling), when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = MgmtError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> MgmtResult<Self> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<crate::tls::PeerAddr>>()
                .map(|c| c.0 .0.ip()),
        ))
    }
}

/// A JSON body whose rejection speaks the management envelope.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = MgmtError;

    async fn from_request(req: Request, state: &S) -> MgmtResult<Self> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(MgmtError::Invalid(rejection.body_text())),
        }
    }
}

/// Query parameters whose rejection speaks the management envelope.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = MgmtError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> MgmtResult<Self> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(rejection) => Err(MgmtError::Invalid(rejection.body_text())),
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
/// account answers as missing), must have MFA if the account requires it, and their
/// role must allow `permission` (else a 403 naming it).
pub async fn authorize(
    state: &AppState,
    ctx: &UserCtx,
    account: &str,
    permission: Permission,
) -> MgmtResult<Authorized> {
    let id = AccountId::parse(account).ok_or(MgmtError::NotFound("account"))?;
    let role = state
        .store
        .role_of(id, ctx.user.id)
        .await?
        .ok_or(MgmtError::NotFound("account"))?;
    let account = state
        .store
        .get_account(id)
        .await?
        .ok_or(MgmtError::NotFound("account"))?;
    if account.require_mfa && !ctx.user.mfa_enabled {
        return Err(MgmtError::MfaEnrollmentRequired);
    }
    if !role_allows(role, permission) {
        return Err(MgmtError::Forbidden { permission, role });
    }
    Ok(Authorized { account, role })
}

/// Sensitive actions need a password or TOTP re-entry within the last few minutes.
pub fn require_recent_reauth(state: &AppState, ctx: &UserCtx) -> MgmtResult<()> {
    let now = state.clock.now_ms();
    match ctx.session.reauth_at {
        Some(at) if now - at <= REAUTH_WINDOW_MS && at <= now => Ok(()),
        _ => Err(MgmtError::ReauthRequired),
    }
}
