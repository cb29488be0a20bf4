//! The Account page: name, plan, limits and the Owner's billing email; rename; and
//! "Delete Account" (sole member, password again, typing the account's name).

use super::accounts::NoticeQuery;
use super::error::see_other;
use super::forms::{on_form, reauth_with_password, ConfirmPage};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::accounts::{self as core, AccountUpdate};
use crate::manage::{authorize, confirm_name, ids};
use crate::management::principal::ClientAddr;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use hark_core::plan::role_allows;
use hark_core::Permission;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub chrome: Chrome,
    pub base: String,
    pub name: String,
    pub plan: &'static str,
    pub projects: u32,
    pub api_keys: u32,
    pub members: u32,
    pub concurrent_jobs: u32,
    pub streams_per_minute: u32,
    /// Shown to those who may see billing.
    pub billing_email: Option<String>,
    pub can_rename: bool,
    pub can_delete: bool,
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
    let caller = me.caller();
    let auth = authorize(
        state,
        &caller,
        ids::account(account),
        Permission::ViewProjects,
    )
    .await?;
    let billing_email = if role_allows(auth.role, Permission::ManageBilling) {
        core::billing(state, &caller, auth.account.id)
            .await?
            .billing_email
    } else {
        None
    };
    let l = auth.account.limits;
    let page = AccountPage {
        chrome: Chrome::signed_in(state, me, token, "Account")
            .await?
            .in_account(&auth.account, auth.role, "/settings")
            .with_notice(notice),
        base: format!("/accounts/{}", auth.account.id),
        name: auth.account.name.clone(),
        plan: auth.account.plan.as_str(),
        projects: l.projects,
        api_keys: l.api_keys,
        members: l.members,
        concurrent_jobs: l.concurrent_jobs,
        streams_per_minute: l.streaming_sessions_per_minute,
        billing_email,
        can_rename: role_allows(auth.role, Permission::ManageSettings),
        can_delete: role_allows(auth.role, Permission::DeleteAccount),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/settings`.
pub async fn page(
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
pub struct RenameForm {
    #[serde(default)]
    pub name: String,
}

/// `POST /accounts/{account}/settings`: rename.
pub async fn rename(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<RenameForm>,
) -> DashResult<Response> {
    let update = AccountUpdate {
        name: Some(form.name),
        require_mfa: None,
    };
    match core::update_account(&state, &me.caller(), ids::account(&account), &update).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/settings?notice=settings_saved"
        ))),
        Err(e) => {
            let (status, message) = on_form(e)?;
            let html = render(&state, &me, &token, &account, None, Some(message)).await?;
            Ok((status, Html(html)).into_response())
        }
    }
}

async fn delete_confirmation(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    error: Option<String>,
) -> DashResult<ConfirmPage> {
    let auth = authorize(
        state,
        &me.caller(),
        ids::account(account),
        Permission::DeleteAccount,
    )
    .await?;
    Ok(ConfirmPage {
        chrome: Chrome::signed_in(state, me, token, "Delete Account")
            .await?
            .in_account(&auth.account, auth.role, "/settings"),
        heading: format!("Delete the account {}?", auth.account.name),
        consequences: "Every project, API key, transcript and uploaded file of this account is deleted, and its keys stop working at once. Only the sole member of an account can delete it: remove the other members first.".into(),
        action: format!("/accounts/{}/delete", auth.account.id),
        button: "Delete Account".into(),
        type_name: Some(auth.account.name.clone()),
        ask_password: true,
        back: format!("/accounts/{}/settings", auth.account.id),
        error,
    })
}

/// `GET /accounts/{account}/delete`: "Delete Account" asks for the name and password.
pub async fn delete_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
) -> DashResult<Response> {
    delete_confirmation(&state, &me, &token, &account, None)
        .await?
        .respond(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    pub confirm_name: String,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// `POST /accounts/{account}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<DeleteForm>,
) -> DashResult<Response> {
    let id = ids::account(&account);
    let auth = authorize(&state, &me.caller(), id, Permission::DeleteAccount).await?;
    let deleted = async {
        confirm_name(&auth.account.name, &form.confirm_name)?;
        if form.password.as_ref().is_none_or(|p| p.expose().is_empty()) {
            return Err(MgmtError::ReauthRequired);
        }
        let caller = reauth_with_password(&state, addr, &me, form.password).await?;
        core::delete_account(&state, &caller, id).await
    }
    .await;
    match deleted {
        Ok(()) => Ok(see_other("/accounts?notice=account_deleted")),
        Err(e) => {
            let (status, message) = on_form(e)?;
            delete_confirmation(&state, &me, &token, &account, Some(message))
                .await?
                .respond(status)
        }
    }
}
