//! "Forgot password" (a reset link by mail) and the page a password link opens (a
//! mailed reset, or the set-password link `hark admin init` prints).

use super::error::{human_message, see_other, status_of};
use super::{Chrome, DashError, DashResult, FormToken};
use crate::manage::links;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use hark_store::LinkPurpose;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage {
    pub chrome: Chrome,
    pub error: Option<String>,
}

/// `GET /forgot-password`.
pub async fn forgot_page(token: FormToken) -> DashResult<Response> {
    let page = ForgotPage {
        chrome: Chrome::public("Forgot password").with_token(&token),
        error: None,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct ForgotForm {
    pub email: String,
}

/// `POST /forgot-password`: the same answer whether or not the email has a login.
pub async fn forgot_submit(
    State(state): State<AppState>,
    token: FormToken,
    Form(form): Form<ForgotForm>,
) -> DashResult<Response> {
    if !crate::manage::valid_email(&form.email) {
        let page = ForgotPage {
            chrome: Chrome::public("Forgot password").with_token(&token),
            error: Some("Enter the email address you sign in with.".into()),
        };
        return Ok((axum::http::StatusCode::BAD_REQUEST, Html(page.render()?)).into_response());
    }
    links::request_password_reset(&state, &form.email).await?;
    Ok(see_other("/signin?notice=reset_sent"))
}

#[derive(Template)]
#[template(path = "password_link.html")]
pub struct LinkPage {
    pub chrome: Chrome,
    pub heading: &'static str,
    pub email: String,
    pub action: String,
    pub error: Option<String>,
}

const PASSWORD_PURPOSES: &[LinkPurpose] = &[LinkPurpose::SetPassword, LinkPurpose::PasswordReset];

fn heading(purpose: LinkPurpose) -> &'static str {
    match purpose {
        LinkPurpose::SetPassword => "Set your password",
        _ => "Choose a new password",
    }
}

fn link_gone() -> DashError {
    DashError::Mgmt(MgmtError::Invalid(
        "This link was already used or has expired. Ask for a new one from the sign-in page."
            .into(),
    ))
}

/// `GET /password/{token}`.
pub async fn link_page(
    State(state): State<AppState>,
    token: FormToken,
    Path(link): Path<String>,
) -> DashResult<Response> {
    let view = links::open_link(&state, &link, PASSWORD_PURPOSES)
        .await
        .map_err(|_| link_gone())?;
    let page = LinkPage {
        chrome: Chrome::public(heading(view.purpose)).with_token(&token),
        heading: heading(view.purpose),
        email: view.email.unwrap_or_default(),
        action: format!("/password/{link}"),
        error: None,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    pub password: Secret,
}

/// `POST /password/{token}`: sets the password, ends every session of the person, and
/// sends them to sign in with it.
pub async fn link_submit(
    State(state): State<AppState>,
    token: FormToken,
    Path(link): Path<String>,
    Form(form): Form<NewPasswordForm>,
) -> DashResult<Response> {
    let view = links::open_link(&state, &link, PASSWORD_PURPOSES)
        .await
        .map_err(|_| link_gone())?;
    match links::set_password_with_link(&state, &link, &form.password).await {
        Ok(_) => Ok(see_other("/signin?notice=password_set")),
        Err(e @ MgmtError::Invalid(_)) => {
            let page = LinkPage {
                chrome: Chrome::public(heading(view.purpose)).with_token(&token),
                heading: heading(view.purpose),
                email: view.email.unwrap_or_default(),
                action: format!("/password/{link}"),
                error: Some(human_message(&e)),
            };
            Ok((status_of(&e), Html(page.render()?)).into_response())
        }
        Err(MgmtError::NotFound(_)) => Err(link_gone()),
        Err(e) => Err(e.into()),
    }
}
