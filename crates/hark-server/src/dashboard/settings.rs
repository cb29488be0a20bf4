//! An account's Security page: "Require MFA for all members".

use super::accounts::NoticeQuery;
use super::error::{human_message, see_other, status_of};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::accounts::{update_account, AccountUpdate};
use crate::manage::{authorize, ids};
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::Permission;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub chrome: Chrome,
    pub action: String,
    pub require_mfa: bool,
    pub own_mfa: bool,
    pub error: Option<String>,
}

async fn render(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    notice: Option<&str>,
    error: Option<String>,
) -> DashResult<String> {
    let auth = authorize(
        state,
        &me.caller(),
        ids::account(account),
        Permission::ManageSettings,
    )
    .await?;
    let page = SecurityPage {
        chrome: Chrome::signed_in(state, me, token, "Security")
            .await?
            .in_account(&auth.account, auth.role, "/security")
            .with_notice(notice),
        action: format!("/accounts/{}/security", auth.account.id),
        require_mfa: auth.account.require_mfa,
        own_mfa: me.user.mfa_enabled,
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/security`.
pub async fn security(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> DashResult<Response> {
    let html = render(&state, &me, &token, &account, q.notice.as_deref(), None).await?;
    Ok(Html(html).into_response())
}

#[derive(Deserialize)]
pub struct RequireMfaForm {
    /// A checkbox: present when ticked.
    #[serde(default)]
    pub require_mfa: Option<String>,
}

/// `POST /accounts/{account}/security`.
pub async fn set_require_mfa(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<RequireMfaForm>,
) -> DashResult<Response> {
    let update = AccountUpdate {
        name: None,
        require_mfa: Some(form.require_mfa.is_some()),
    };
    match update_account(&state, &me.caller(), ids::account(&account), &update).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/security?notice=settings_saved"
        ))),
        Err(e @ MgmtError::Conflict(_)) => {
            let status = status_of(&e);
            let html = render(&state, &me, &token, &account, None, Some(human_message(&e))).await?;
            Ok((status, Html(html)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
