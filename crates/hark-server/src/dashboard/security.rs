//! The dashboard's security layer, run on every dashboard request:
//! - finds the login session (the HttpOnly session cookie plus the CSRF cookie that
//!   must match the session's stored CSRF digest) and puts it in the request;
//! - refuses an unsafe request (POST...) sent from another site (`Sec-Fetch-Site:
//!   cross-site`, or an `Origin` other than the request's own host), and one without
//!   the right CSRF token: the session's token when signed in, or a signed-out
//!   visitor's pre-session cookie, taken from the form's hidden `csrf` field
//!   (`application/x-www-form-urlencoded`, or the first field of a
//!   `multipart/form-data` upload form) or the `X-CSRF-Token` header (scripts);
//! - sends the strict Content-Security-Policy, `nosniff`, `same-origin` referrers and,
//!   unless a handler said otherwise, `Cache-Control: no-store` (pages are personal,
//!   and some show secrets).

use super::error::DashError;
use crate::cookies;
use crate::manage::Caller;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_store::{LoginSession, User};
use subtle::ConstantTimeEq;

/// The name of the hidden form field holding the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// How long a signed-out visitor's CSRF cookie lives.
const PRE_SESSION_MAX_AGE_SECS: i64 = 12 * 3600;
/// The largest form body the CSRF check reads (forms are small; uploads are not forms
/// of this kind).
const MAX_FORM_BYTES: usize = 256 * 1024;
/// How much of a multipart form the CSRF check reads to find its leading `csrf` field.
const MULTIPART_HEAD_BYTES: usize = 16 * 1024;

/// A signed-in person, their session and the session's CSRF token (for forms).
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: User,
    pub session: LoginSession,
    pub csrf: String,
}

impl Signed {
    /// The caller as the management core takes it.
    pub fn caller(&self) -> Caller {
        Caller {
            user: self.user.clone(),
            session: self.session.clone(),
        }
    }
}

/// The CSRF token the page's forms carry.
#[derive(Debug, Clone)]
pub struct FormToken(pub String);

/// A handler argument: the signed-in person, or a redirect to the sign-in page.
#[derive(Debug, Clone)]
pub struct Me(pub Signed);

/// A handler argument: the signed-in person, if any.
#[derive(Debug, Clone)]
pub struct MaybeMe(pub Option<Signed>);

impl std::ops::Deref for Me {
    type Target = Signed;
    fn deref(&self) -> &Signed {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Me {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, DashError> {
        match parts.extensions.get::<Signed>() {
            Some(s) => Ok(Me(s.clone())),
            None => Err(DashError::SignIn {
                next: if parts.method == Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into())
                } else {
                    "/".into()
                },
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeMe {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, DashError> {
        Ok(MaybeMe(parts.extensions.get::<Signed>().cloned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FormToken {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, DashError> {
        Ok(parts
            .extensions
            .get::<FormToken>()
            .cloned()
            .unwrap_or(FormToken(String::new())))
    }
}

/// The policy of every dashboard response: nothing inline, nothing from elsewhere,
/// scripts may open WebSockets to this origin only.
pub fn content_security_policy(state: &AppState) -> String {
    let ws = state
        .public_base_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {ws}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// The login of the request's cookies, when the session is live and the CSRF cookie
/// belongs to it.
async fn resolve_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Signed>, DashError> {
    let Some(token) = cookies::read(headers, cookies::session_cookie_name(state)) else {
        return Ok(None);
    };
    let Some(csrf) = cookies::read(headers, cookies::csrf_cookie_name(state)) else {
        return Ok(None);
    };
    if !keys::is_well_formed(SecretKind::Session, token) {
        return Ok(None);
    }
    let Some(session) = state
        .store
        .session_by_digest(&SecretDigest::of(token).to_hex())
        .await?
    else {
        return Ok(None);
    };
    if session.expires_at <= state.clock.now_ms() {
        return Ok(None);
    }
    let csrf_ok = SecretDigest::from_hex(&session.csrf_digest)
        .is_some_and(|d| d.ct_eq(&SecretDigest::of(csrf)));
    if !csrf_ok {
        return Ok(None);
    }
    let Some(user) = state.store.get_user(session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(Signed {
        user,
        session,
        csrf: csrf.to_string(),
    }))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `Origin`, when sent, must name the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

/// Checks an unsafe request; returns its body (read when it is a form) for the handler.
async fn check_unsafe(
    parts: &Parts,
    body: Body,
    signed: Option<&Signed>,
    pre_session: Option<&str>,
) -> Result<Body, DashError> {
    let site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if site == Some("cross-site") || !same_origin(&parts.headers) {
        return Err(DashError::Csrf);
    }
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let header_token = parts
        .headers
        .get(crate::management::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (token, body) = if is_form {
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                DashError::Mgmt(crate::management::MgmtError::Invalid(
                    "the form is too large".into(),
                ))
            })?;
        let field = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned());
        (field.or(header_token), Body::from(bytes))
    } else if header_token.is_none() && is_multipart(&parts.headers) {
        multipart_token(&parts.headers, body).await
    } else {
        (header_token, body)
    };
    let token = token.unwrap_or_default();
    if token.is_empty() {
        return Err(DashError::Csrf);
    }
    let by_session = signed.is_some_and(|s| {
        SecretDigest::from_hex(&s.session.csrf_digest)
            .is_some_and(|d| d.ct_eq(&SecretDigest::of(&token)))
    });
    let by_pre_session =
        pre_session.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())));
    if by_session || by_pre_session {
        Ok(body)
    } else {
        Err(DashError::Csrf)
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"))
}

/// A multipart form's CSRF token: its first field must be `csrf` (the templates put it
/// first), so only the head of the body is read, and the whole body is handed on (an
/// upload is streamed by its handler, never buffered here).
async fn multipart_token(headers: &HeaderMap, body: Body) -> (Option<String>, Body) {
    let Some(boundary) = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
    else {
        return (None, body);
    };
    let mut stream = body.into_data_stream();
    let mut head: Vec<Bytes> = Vec::new();
    let mut seen = 0usize;
    let mut failure = None;
    while seen < MULTIPART_HEAD_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => {
                seen += chunk.len();
                head.push(chunk);
            }
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            None => break,
        }
    }
    let chunks = head.clone().into_iter().map(Ok::<Bytes, std::io::Error>);
    let mut form = multer::Multipart::new(futures::stream::iter(chunks), boundary);
    let token = match form.next_field().await {
        Ok(Some(field)) if field.name() == Some(CSRF_FIELD) => field.text().await.ok(),
        _ => None,
    };
    let whole = futures::stream::iter(head.into_iter().map(Ok))
        .chain(stream)
        .chain(futures::stream::iter(failure.map(Err)));
    (token, Body::from_stream(whole))
}

fn fresh_pre_session_token() -> String {
    let secret = keys::generate(SecretKind::TempToken);
    secret.expose().to_string()
}

/// The layer itself (see the module documentation).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let mut response = match guarded(&state, parts, body).await {
        Ok((req, minted)) => {
            let mut response = next.run(req).await;
            if let Some(token) = minted {
                if let Some(v) = cookies::set_cookie(
                    &state,
                    cookies::pre_session_cookie_name(&state),
                    &token,
                    true,
                    PRE_SESSION_MAX_AGE_SECS,
                ) {
                    response.headers_mut().append(SET_COOKIE, v);
                }
            }
            response
        }
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&state)) {
        headers.insert(CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Resolves the session and the form token, checks unsafe requests; the request to
/// run and a pre-session token to set as a cookie, if one was made.
async fn guarded(
    state: &AppState,
    mut parts: Parts,
    body: Body,
) -> Result<(Request, Option<String>), DashError> {
    let signed = resolve_session(state, &parts.headers).await?;
    let existing_pre = cookies::read(&parts.headers, cookies::pre_session_cookie_name(state))
        .filter(|v| keys::is_well_formed(SecretKind::TempToken, v))
        .map(str::to_string);
    let body = if is_safe(&parts.method) {
        body
    } else {
        check_unsafe(&parts, body, signed.as_ref(), existing_pre.as_deref()).await?
    };
    let (pre, minted) = match existing_pre {
        Some(p) => (p, None),
        None if signed.is_none() => {
            let t = fresh_pre_session_token();
            (t.clone(), Some(t))
        }
        None => (String::new(), None),
    };
    let form_token = match &signed {
        Some(s) => s.csrf.clone(),
        None => pre,
    };
    parts.extensions.insert(FormToken(form_token));
    if let Some(s) = signed {
        parts.extensions.insert(s);
    }
    Ok((Request::from_parts(parts, body), minted))
}
