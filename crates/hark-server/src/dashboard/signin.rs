//! Sign in (email and password, then a TOTP or recovery code when the person has
//! MFA) and sign out.

use super::error::{human_message, see_other, status_of};
use super::{safe_next, Chrome, DashResult, FormToken, MaybeMe, Me};
use crate::cookies;
use crate::manage::onboarding::signup_open;
use crate::manage::sessions::{self, NewLogin};
use crate::manage::signin::{self, SignIn};
use crate::manage::SESSION_TTL_MS;
use crate::management::principal::ClientAddr;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage {
    pub chrome: Chrome,
    pub email: String,
    pub next: String,
    pub error: Option<String>,
    pub signup_open: bool,
}

#[derive(Template)]
#[template(path = "signin_code.html")]
pub struct CodePage {
    pub chrome: Chrome,
    pub ticket: String,
    pub next: String,
    pub error: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInQuery {
    pub next: Option<String>,
    pub notice: Option<String>,
}

/// `GET /signin`.
pub async fn page(
    State(state): State<AppState>,
    MaybeMe(me): MaybeMe,
    token: FormToken,
    Query(q): Query<SignInQuery>,
) -> DashResult<Response> {
    let next = safe_next(q.next.as_deref());
    if me.is_some() {
        return Ok(see_other(&next));
    }
    let page = SignInPage {
        chrome: Chrome::public("Sign in")
            .with_token(&token)
            .with_notice(q.notice.as_deref()),
        email: String::new(),
        next,
        error: None,
        signup_open: signup_open(&state),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    pub email: String,
    pub password: Secret,
    #[serde(default)]
    pub next: Option<String>,
}

/// The `Set-Cookie` headers of a new login.
pub fn login_cookies(
    state: &AppState,
    login: &NewLogin,
) -> Vec<(axum::http::HeaderName, axum::http::HeaderValue)> {
    let max_age = SESSION_TTL_MS / 1000;
    [
        cookies::set_cookie(
            state,
            cookies::session_cookie_name(state),
            login.token.expose(),
            true,
            max_age,
        ),
        cookies::set_cookie(
            state,
            cookies::csrf_cookie_name(state),
            login.csrf.expose(),
            false,
            max_age,
        ),
    ]
    .into_iter()
    .flatten()
    .map(|v| (SET_COOKIE, v))
    .collect()
}

/// Where a new login goes: MFA enrolment first when an account of theirs requires it.
pub async fn signed_in_redirect(
    state: &AppState,
    login: &NewLogin,
    next: &str,
) -> DashResult<Response> {
    let to = if login.profile.mfa_enrollment_required {
        "/profile/mfa?required=1".to_string()
    } else {
        next.to_string()
    };
    let mut response = see_other(&to);
    for (k, v) in login_cookies(state, login) {
        response.headers_mut().append(k, v);
    }
    Ok(response)
}

/// The sign-in form again with a message (and the status the JSON API would give).
fn refused(
    state: &AppState,
    token: &FormToken,
    email: String,
    next: String,
    e: &MgmtError,
) -> DashResult<Response> {
    let page = SignInPage {
        chrome: Chrome::public("Sign in").with_token(token),
        email,
        next,
        error: Some(human_message(e)),
        signup_open: signup_open(state),
    };
    Ok((status_of(e), Html(page.render()?)).into_response())
}

/// `POST /signin`.
pub async fn submit(
    State(state): State<AppState>,
    addr: ClientAddr,
    token: FormToken,
    Form(form): Form<SignInForm>,
) -> DashResult<Response> {
    let next = safe_next(form.next.as_deref());
    match signin::sign_in(&state, &form.email, &form.password, addr.0).await {
        Ok(SignIn::Done(login)) => signed_in_redirect(&state, &login, &next).await,
        Ok(SignIn::SecondFactor { ticket }) => {
            let page = CodePage {
                chrome: Chrome::public("Two-factor authentication").with_token(&token),
                ticket,
                next,
                error: None,
            };
            Ok(Html(page.render()?).into_response())
        }
        Err(
            e @ (MgmtError::BadCredentials | MgmtError::Throttled { .. } | MgmtError::Invalid(_)),
        ) => refused(&state, &token, form.email, next, &e),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    pub ticket: String,
    pub code: Secret,
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /signin/code`: the second step.
pub async fn submit_code(
    State(state): State<AppState>,
    addr: ClientAddr,
    token: FormToken,
    Form(form): Form<CodeForm>,
) -> DashResult<Response> {
    let next = safe_next(form.next.as_deref());
    match signin::second_factor(&state, &form.ticket, &form.code, addr.0).await {
        Ok(login) => signed_in_redirect(&state, &login, &next).await,
        Err(e @ (MgmtError::BadMfaCode | MgmtError::MfaRequired)) => {
            let page = CodePage {
                chrome: Chrome::public("Two-factor authentication").with_token(&token),
                ticket: form.ticket,
                next,
                error: Some(human_message(&e)),
            };
            Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response())
        }
        Err(e @ (MgmtError::Throttled { .. } | MgmtError::Invalid(_))) => {
            refused(&state, &token, String::new(), next, &e)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /signout`: ends the session and clears the cookies.
pub async fn sign_out(State(state): State<AppState>, me: Me) -> DashResult<Response> {
    sessions::logout(&state, &me.caller()).await?;
    let mut response = see_other("/signin?notice=signed_out");
    for name in [
        cookies::session_cookie_name(&state),
        cookies::csrf_cookie_name(&state),
    ] {
        if let Some(v) = cookies::set_cookie(&state, name, "", name.contains("session"), 0) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// Signs in the Owner of an account just created in the browser (first-run setup or
/// sign-up) and takes them into it. A brand-new person has no failed sign-ins to clear.
pub async fn welcome_new_owner(
    state: &AppState,
    boot: &hark_store::Bootstrap,
) -> DashResult<Response> {
    let user = state
        .store
        .get_user(boot.owner)
        .await?
        .ok_or(MgmtError::NotFound("user"))?;
    let login = crate::manage::sessions::open_session(
        state,
        &user,
        "new_owner",
        hark_store::SignInMethod::Password,
    )
    .await?;
    signed_in_redirect(
        state,
        &login,
        &format!("/accounts/{}?notice=welcome", boot.account.id),
    )
    .await
}
