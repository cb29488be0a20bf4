//! The start page, the account switcher and an account's overview (the shell the
//! account pages extend).

use super::error::see_other;
use super::{Chrome, DashResult, FormToken, MaybeMe, Me};
use crate::manage::onboarding::signup_open;
use crate::manage::{authorize, ids};
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::{AccountId, Permission};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "accounts.html")]
pub struct AccountsPage {
    pub chrome: Chrome,
    pub signup_open: bool,
}

/// `GET /`: straight into the current (or only) account; the list when there are
/// several and none is chosen; the sign-in page when signed out.
pub async fn home(State(state): State<AppState>, MaybeMe(me): MaybeMe) -> DashResult<Response> {
    let Some(me) = me else {
        return Ok(see_other("/signin"));
    };
    let accounts = state.store.accounts_of_user(me.user.id).await?;
    let current = me
        .session
        .current_account
        .filter(|c| accounts.iter().any(|a| a.account_id == *c));
    match (current, accounts.as_slice()) {
        (Some(c), _) => Ok(see_other(&format!("/accounts/{c}"))),
        (None, [only]) => Ok(see_other(&format!("/accounts/{}", only.account_id))),
        _ => Ok(see_other("/accounts")),
    }
}

/// `GET /accounts`: every account of the person, to pick one.
pub async fn list(State(state): State<AppState>, me: Me, token: FormToken) -> DashResult<Response> {
    let page = AccountsPage {
        chrome: Chrome::signed_in(&state, &me, &token, "Your accounts").await?,
        signup_open: signup_open(&state),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct SwitchForm {
    pub account_id: String,
}

/// `POST /accounts/switch`: the session's current account becomes this one.
pub async fn switch(
    State(state): State<AppState>,
    me: Me,
    Form(form): Form<SwitchForm>,
) -> DashResult<Response> {
    let id = AccountId::parse(&form.account_id).ok_or(MgmtError::NotFound("account"))?;
    if state.store.role_of(id, me.user.id).await?.is_none() {
        return Err(MgmtError::NotFound("account").into());
    }
    state.store.set_session_account(me.session.id, id).await?;
    Ok(see_other(&format!("/accounts/{id}")))
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub name: String,
    pub plan: &'static str,
    pub role: &'static str,
    pub require_mfa: bool,
    pub projects: usize,
    pub max_projects: u32,
    pub members: usize,
    pub max_members: u32,
    pub max_api_keys: u32,
}

/// `GET /accounts/{account}`: the account at a glance.
pub async fn overview(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> DashResult<Response> {
    let auth = authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::ViewProjects,
    )
    .await?;
    if me.session.current_account != Some(auth.account.id) {
        state
            .store
            .set_session_account(me.session.id, auth.account.id)
            .await?;
    }
    let projects = state.store.list_projects(auth.account.id).await?.len();
    let members = state.store.member_list(auth.account.id).await?.len();
    let a = &auth.account;
    let page = OverviewPage {
        chrome: Chrome::signed_in(&state, &me, &token, &a.name)
            .await?
            .in_account(a, auth.role, "")
            .with_notice(q.notice.as_deref()),
        name: a.name.clone(),
        plan: a.plan.as_str(),
        role: auth.role.as_str(),
        require_mfa: a.require_mfa,
        projects,
        max_projects: a.limits.projects,
        members,
        max_members: a.limits.members,
        max_api_keys: a.limits.api_keys,
    };
    Ok(Html(page.render()?).into_response())
}
