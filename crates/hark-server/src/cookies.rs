//! The browser cookies of a login (session and CSRF) and of a signed-out visitor
//! (the pre-session CSRF cookie): their names and attributes, in one place for the
//! JSON API and the dashboard. Over TLS the names carry the `__Host-` prefix, which
//! browsers accept only with `Secure; Path=/` and no `Domain`, so no other host can
//! plant or shadow them.

use crate::AppState;
use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

/// Whether the server is reached over TLS (its public base URL is `https://`).
pub fn over_tls(state: &AppState) -> bool {
    state.public_base_url.starts_with("https://")
}

/// The HttpOnly cookie holding the login session token.
pub fn session_cookie_name(state: &AppState) -> &'static str {
    if over_tls(state) {
        "__Host-hark_session"
    } else {
        "hark_session"
    }
}

/// The script-readable cookie holding the session's CSRF token.
pub fn csrf_cookie_name(state: &AppState) -> &'static str {
    if over_tls(state) {
        "__Host-hark_csrf"
    } else {
        "hark_csrf"
    }
}

/// The HttpOnly cookie holding a signed-out visitor's CSRF token (sign-in, sign-up,
/// password and invite forms).
pub fn pre_session_cookie_name(state: &AppState) -> &'static str {
    if over_tls(state) {
        "__Host-hark_pre"
    } else {
        "hark_pre"
    }
}

/// A `Set-Cookie` value: `Path=/; SameSite=Strict`, `Secure` over TLS; `max_age` 0
/// deletes the cookie.
pub fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    http_only: bool,
    max_age_secs: i64,
) -> Option<HeaderValue> {
    let mut c = format!("{name}={value}; Path=/; SameSite=Strict; Max-Age={max_age_secs}");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if over_tls(state) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).ok()
}

/// The value of cookie `name` in the request headers, if any.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}
