//! Sign-in: login (throttled per email and per client address, without revealing
//! whether an email exists), logout, re-authentication, the caller's profile,
//! password change and account switching.

use super::principal::{ClientAddr, JsonBody, UserCtx};
use super::{mfa, ts, MgmtError, MgmtResult};
use super::{FAILURE_WINDOW_MS, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_EMAIL};
use super::SESSION_TTL_MS;
use crate::cookies::{csrf_cookie_name, session_cookie_name};
use crate::AppState;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{password, AccountId, LoginSessionId};
use hark_store::{normalize_email, Actor, NewSession, User};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: Secret,
    #[serde(default)]
    pub totp_code: Option<Secret>,
    #[serde(default)]
    pub recovery_code: Option<Secret>,
    /// Scripts set this to get the session token in the body (for `Authorization:
    /// Bearer`); browsers leave it out, so page scripts never see the token and the
    /// HttpOnly cookie is the only copy.
    #[serde(default)]
    pub return_token: bool,
}

fn email_subject(email: &str) -> String {
    format!("email:{}", normalize_email(email))
}

fn addr_subject(addr: &ClientAddr) -> Option<String> {
    addr.0.map(|a| format!("addr:{a}"))
}

/// Refuses when the email or the address has too many recent failures.
async fn check_throttle(state: &AppState, email: &str, addr: &ClientAddr) -> MgmtResult<()> {
    let since = state.clock.now_ms() - FAILURE_WINDOW_MS;
    let retry = (FAILURE_WINDOW_MS / 1000) as u64;
    if state
        .store
        .login_failures_since(&email_subject(email), since)
        .await?
        >= MAX_FAILURES_PER_EMAIL
    {
        return Err(MgmtError::Throttled {
            retry_after_secs: retry,
        });
    }
    if let Some(subject) = addr_subject(addr) {
        if state.store.login_failures_since(&subject, since).await? >= MAX_FAILURES_PER_ADDRESS {
            return Err(MgmtError::Throttled {
                retry_after_secs: retry,
            });
        }
    }
    Ok(())
}

async fn record_failure(
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

/// Verifies a password off the async threads (Argon2 is deliberately slow).
pub async fn password_matches(user: Option<&User>, given: &Secret) -> MgmtResult<bool> {
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
    .map_err(MgmtError::internal)
}

pub async fn hash_password(given: &Secret) -> MgmtResult<String> {
    password::validate(given.expose()).map_err(|e| MgmtError::Invalid(e.to_string()))?;
    let given = given.clone();
    tokio::task::spawn_blocking(move || password::hash(given.expose()))
        .await
        .map_err(MgmtError::internal)?
        .map_err(MgmtError::internal)
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

async fn profile(state: &AppState, user: &User, current: Option<AccountId>) -> MgmtResult<Value> {
    let accounts = state.store.accounts_of_user(user.id).await?;
    let enrollment_required = !user.mfa_enabled && accounts.iter().any(|a| a.require_mfa);
    Ok(json!({
        "user": {"id": user.id, "email": user.email, "mfa_enabled": user.mfa_enabled, "created_at": ts(user.created_at)},
        "accounts": accounts.iter().map(|a| json!({
            "id": a.account_id, "name": a.account_name, "role": a.role.as_str(), "require_mfa": a.require_mfa,
        })).collect::<Vec<_>>(),
        "current_account_id": current.filter(|c| accounts.iter().any(|a| a.account_id == *c))
            .or_else(|| accounts.first().map(|a| a.account_id)),
        "mfa_enrollment_required": enrollment_required,
    }))
}

/// `POST /api/v1/auth/login`: a fresh session (never one the client chose), as an
/// HttpOnly cookie plus a CSRF cookie, and as a bearer token in the body.
pub async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    JsonBody(req): JsonBody<LoginRequest>,
) -> MgmtResult<Response> {
    check_throttle(&state, &req.email, &addr).await?;
    let user = state.store.user_by_email(&req.email).await?;
    if !password_matches(user.as_ref(), &req.password).await? {
        record_failure(&state, &req.email, &addr, user.as_ref(), "bad_credentials").await?;
        return Err(MgmtError::BadCredentials);
    }
    let Some(user) = user else {
        return Err(MgmtError::BadCredentials);
    };
    if user.mfa_enabled {
        match mfa::check_second_factor(
            &state,
            &user,
            req.totp_code.as_ref(),
            req.recovery_code.as_ref(),
        )
        .await
        {
            Ok(()) => {}
            Err(MgmtError::BadMfaCode) => {
                record_failure(&state, &req.email, &addr, Some(&user), "bad_mfa_code").await?;
                return Err(MgmtError::BadMfaCode);
            }
            Err(e) => return Err(e),
        }
    }
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
            &email_subject(&req.email),
        )
        .await?;
    let mut body = profile(&state, &user, first_account).await?;
    if req.return_token {
        body["token"] = json!(token.expose());
    }
    body["csrf_token"] = json!(csrf.expose());
    body["session_id"] = json!(session.id);
    body["expires_at"] = json!(ts(session.expires_at));
    let max_age = SESSION_TTL_MS / 1000;
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        cookie_header(&state, session_cookie_name(&state), token.expose(), true, max_age)?,
    );
    headers.append(
        SET_COOKIE,
        cookie_header(&state, csrf_cookie_name(&state), csrf.expose(), false, max_age)?,
    );
    Ok(response)
}

/// `POST /api/v1/auth/logout`: ends this session and clears the cookies.
pub async fn logout(State(state): State<AppState>, ctx: UserCtx) -> MgmtResult<Response> {
    state
        .store
        .delete_session(ctx.session.id, &Actor::User(ctx.user.id))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        cookie_header(&state, session_cookie_name(&state), "", true, 0)?,
    );
    headers.append(
        SET_COOKIE,
        cookie_header(&state, csrf_cookie_name(&state), "", false, 0)?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct ReauthRequest {
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub totp_code: Option<Secret>,
}

/// `POST /api/v1/auth/reauth`: re-enter the password or a TOTP code, opening the
/// short window in which sensitive actions (reveal, account deletion, MFA removal) work.
pub async fn reauth(
    State(state): State<AppState>,
    addr: ClientAddr,
    ctx: UserCtx,
    JsonBody(req): JsonBody<ReauthRequest>,
) -> MgmtResult<Json<Value>> {
    check_throttle(&state, &ctx.user.email, &addr).await?;
    let ok = match (&req.password, &req.totp_code) {
        (Some(p), _) => password_matches(Some(&ctx.user), p).await?,
        (None, Some(code)) if ctx.user.mfa_enabled => {
            mfa::check_second_factor(&state, &ctx.user, Some(code), None)
                .await
                .is_ok()
        }
        _ => {
            return Err(MgmtError::Invalid(
                "send password, or totp_code if MFA is enabled".into(),
            ))
        }
    };
    if !ok {
        record_failure(
            &state,
            &ctx.user.email,
            &addr,
            Some(&ctx.user),
            "bad_reauth",
        )
        .await?;
        return Err(MgmtError::BadCredentials);
    }
    let now = state.clock.now_ms();
    state.store.set_session_reauth(ctx.session.id, now).await?;
    Ok(Json(
        json!({"reauthenticated_at": ts(now), "valid_until": ts(now + super::REAUTH_WINDOW_MS)}),
    ))
}

/// `GET /api/v1/me`: the caller, their accounts with roles, and the current account.
pub async fn me(State(state): State<AppState>, ctx: UserCtx) -> MgmtResult<Json<Value>> {
    Ok(Json(
        profile(&state, &ctx.user, ctx.session.current_account).await?,
    ))
}

#[derive(Deserialize)]
pub struct PasswordChange {
    pub current_password: Secret,
    pub new_password: Secret,
}

/// `POST /api/v1/me/password`: ends every other session of the user.
pub async fn change_password(
    State(state): State<AppState>,
    addr: ClientAddr,
    ctx: UserCtx,
    JsonBody(req): JsonBody<PasswordChange>,
) -> MgmtResult<StatusCode> {
    check_throttle(&state, &ctx.user.email, &addr).await?;
    if !password_matches(Some(&ctx.user), &req.current_password).await? {
        record_failure(
            &state,
            &ctx.user.email,
            &addr,
            Some(&ctx.user),
            "bad_password_change",
        )
        .await?;
        return Err(MgmtError::BadCredentials);
    }
    let hash = hash_password(&req.new_password).await?;
    state
        .store
        .set_password(
            ctx.user.id,
            &hash,
            Some(ctx.session.id),
            &Actor::User(ctx.user.id),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SwitchAccount {
    pub account_id: String,
}

/// `POST /api/v1/me/account`: switch the session's current account.
pub async fn switch_account(
    State(state): State<AppState>,
    ctx: UserCtx,
    JsonBody(req): JsonBody<SwitchAccount>,
) -> MgmtResult<Json<Value>> {
    let id = AccountId::parse(&req.account_id).ok_or(MgmtError::NotFound("account"))?;
    if state.store.role_of(id, ctx.user.id).await?.is_none() {
        return Err(MgmtError::NotFound("account"));
    }
    state.store.set_session_account(ctx.session.id, id).await?;
    Ok(Json(profile(&state, &ctx.user, Some(id)).await?))
}
