//! Who is calling the management API: a login session presented as a bearer token
//! (`Authorization: Bearer hark_ses_...`, for scripts) or as the `hark_session` cookie
//! (browsers, with a double-submit CSRF token on unsafe methods); and the extractors
//! whose rejections speak the management envelope.

use super::{MgmtError, MgmtResult, CSRF_HEADER};
use crate::manage::{self, Caller};
use crate::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::Method;
use serde::de::DeserializeOwned;
use std::net::IpAddr;

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    crate::cookies::read(&parts.headers, name)
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = MgmtError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> MgmtResult<Self> {
        let (token, via_cookie) = session_token(parts, state).ok_or(MgmtError::Unauthenticated)?;
        let caller = manage::sessions::authenticate(state, token).await?;
        if via_cookie && !is_safe(&parts.method) {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !manage::sessions::csrf_matches(&caller, presented) {
                return Err(MgmtError::Csrf);
            }
        }
        Ok(caller)
    }
}

/// The caller's network address (for login throttling), when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = MgmtError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> MgmtResult<Self> {
        Ok(ClientAddr(crate::auth::client_address(&parts.extensions)))
    }
}

/// A JSON body whose rejection speaks the management envelope.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + schemars::JsonSchema, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = MgmtError;

    /// Any body that parses as JSON, whatever its content type (see [`super::body`]);
    /// except that a request without credentials (sign-in, invite acceptance) may not
    /// use the content types a cross-site HTML form can send, so another site cannot
    /// sign a visitor into an account of its choosing.
    async fn from_request(req: Request, state: &S) -> MgmtResult<Self> {
        let has_credentials = req.headers().contains_key(AUTHORIZATION)
            || req.headers().get_all(COOKIE).iter().any(|v| {
                v.to_str()
                    // Either name of the session cookie (`__Host-` prefixed over TLS).
                    .is_ok_and(|c| c.contains("hark_session="))
            });
        let form_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|t| {
                matches!(
                    t.as_str(),
                    "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
                )
            });
        if form_type && !has_credentials {
            return Err(MgmtError::Invalid(
                "send this body as JSON with Content-Type: application/json (form content types are refused where no session is sent)".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                    MgmtError::Invalid("the body is too large".into())
                }
                _ => MgmtError::Invalid("the body could not be read".into()),
            })?;
        super::body::parse(&bytes).map(JsonBody)
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
