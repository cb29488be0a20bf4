//! First run: the setup link `hark serve` prints while no account exists opens this
//! page, where the first person creates the first account and becomes its Owner.

use super::error::{human_message, status_of};
use super::signin::welcome_new_owner;
use super::{Chrome, DashError, DashResult, FormToken};
use crate::manage::links::{self, FirstAccount};
use crate::management::MgmtError;
use crate::AppState;

/// How the new session's audit entry says the person proved who they are.
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use hark_store::LinkPurpose;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    pub chrome: Chrome,
    pub action: String,
    pub name: String,
    pub email: String,
    pub account_name: String,
    pub error: Option<String>,
}

fn link_gone() -> DashError {
    DashError::Mgmt(MgmtError::Invalid(
        "This setup link was already used. Sign in instead.".into(),
    ))
}

/// `GET /setup/{token}`.
pub async fn page(
    State(state): State<AppState>,
    token: FormToken,
    Path(link): Path<String>,
) -> DashResult<Response> {
    links::open_link(&state, &link, &[LinkPurpose::Setup])
        .await
        .map_err(|_| link_gone())?;
    let page = SetupPage {
        chrome: Chrome::public("Set up Hark").with_token(&token),
        action: format!("/setup/{link}"),
        name: String::new(),
        email: String::new(),
        account_name: String::new(),
        error: None,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct SetupForm {
    pub name: String,
    pub email: String,
    pub password: Secret,
    pub account_name: String,
}

/// `POST /setup/{token}`: creates the account and signs its Owner in.
pub async fn submit(
    State(state): State<AppState>,
    token: FormToken,
    Path(link): Path<String>,
    Form(form): Form<SetupForm>,
) -> DashResult<Response> {
    let input = FirstAccount {
        name: form.name,
        email: form.email,
        password: form.password,
        account_name: form.account_name,
    };
    match links::complete_setup(&state, &link, &input).await {
        Ok(boot) => welcome_new_owner(&state, &boot).await,
        Err(e @ MgmtError::Invalid(_)) => {
            let page = SetupPage {
                chrome: Chrome::public("Set up Hark").with_token(&token),
                action: format!("/setup/{link}"),
                name: input.name,
                email: input.email,
                account_name: input.account_name,
                error: Some(human_message(&e)),
            };
            Ok((status_of(&e), Html(page.render()?)).into_response())
        }
        Err(MgmtError::NotFound(_) | MgmtError::Conflict(_)) => Err(link_gone()),
        Err(e) => Err(e.into()),
    }
}
