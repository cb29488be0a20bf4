//! Self-service sign-up, when the operator set `signup = "open"`: a new account on
//! the Free plan with its Owner and a default project. Otherwise the page does not
//! exist.

use super::error::{human_message, status_of};
use super::signin::welcome_new_owner;
use super::{Chrome, DashError, DashResult, FormToken};
use crate::manage::links::FirstAccount;
use crate::manage::onboarding::{self as signup, signup_open};
use crate::management::MgmtError;
use crate::AppState;

/// How the new session's audit entry says the person proved who they are.
use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    pub chrome: Chrome,
    pub name: String,
    pub email: String,
    pub account_name: String,
    pub error: Option<String>,
}

/// `GET /signup`.
pub async fn page(State(state): State<AppState>, token: FormToken) -> DashResult<Response> {
    if !signup_open(&state) {
        return Err(DashError::NotFound);
    }
    let page = SignUpPage {
        chrome: Chrome::public("Sign up").with_token(&token),
        name: String::new(),
        email: String::new(),
        account_name: String::new(),
        error: None,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct SignUpForm {
    pub name: String,
    pub email: String,
    pub password: Secret,
    pub account_name: String,
}

/// `POST /signup`.
pub async fn submit(
    State(state): State<AppState>,
    token: FormToken,
    Form(form): Form<SignUpForm>,
) -> DashResult<Response> {
    if !signup_open(&state) {
        return Err(DashError::NotFound);
    }
    let input = FirstAccount {
        name: form.name,
        email: form.email,
        password: form.password,
        account_name: form.account_name,
    };
    match signup::sign_up(&state, &input).await {
        Ok(boot) => welcome_new_owner(&state, &boot).await,
        Err(e @ (MgmtError::Invalid(_) | MgmtError::Conflict(_))) => {
            let page = SignUpPage {
                chrome: Chrome::public("Sign up").with_token(&token),
                name: input.name,
                email: input.email,
                account_name: input.account_name,
                error: Some(human_message(&e)),
            };
            Ok((status_of(&e), Html(page.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
