//! The Alerts page: every member sees the account's alerts (kind, threshold, scope,
//! webhook, when it last fired); Owners and Admins create them (balance below, this
//! month's spend above, one project's or key's audio hours in a day above), change a
//! threshold or webhook, and delete them. Alerts mail the Owners and Admins.

use super::error::see_other;
use super::forms::on_form;
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::usage::alerts::{self as core, AlertInput, AlertUpdate, AlertView};
use crate::manage::{authorize, ids};
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::plan::role_allows;
use hark_core::Permission;
use serde::Deserialize;

pub struct AlertRow {
    pub id: String,
    pub what: String,
    pub threshold: String,
    pub webhook: String,
    pub last_fired: String,
}

pub struct ScopeChoice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
pub struct AlertsPage {
    pub chrome: Chrome,
    pub base: String,
    pub alerts: Vec<AlertRow>,
    pub scopes: Vec<ScopeChoice>,
    pub can_manage: bool,
    pub error: Option<String>,
}

fn describe(a: &AlertView, project_names: &[(String, String)]) -> String {
    let scope = match (&a.project_id, &a.api_key_id) {
        (Some(p), _) => {
            let name = project_names
                .iter()
                .find(|(id, _)| id == p)
                .map(|(_, n)| n.as_str())
                .unwrap_or(p.as_str());
            format!(" (project {name})")
        }
        (None, Some(k)) => format!(" (API key {k})"),
        _ => String::new(),
    };
    let kind = match a.kind {
        "balance_below" => "Balance falls below",
        "month_spend_above" => "This month's spend passes",
        "daily_audio_above" => "Audio hours in a day pass",
        other => other,
    };
    format!("{kind}{scope}")
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
    let auth = authorize(state, &caller, ids::account(account), Permission::ViewUsage).await?;
    let alerts = core::list(state, &caller, auth.account.id).await?;
    let projects: Vec<(String, String)> = state
        .store
        .list_projects(auth.account.id)
        .await?
        .into_iter()
        .map(|p| (p.id.to_string(), p.name))
        .collect();
    let page = AlertsPage {
        chrome: Chrome::signed_in(state, me, token, "Alerts")
            .await?
            .in_account(&auth.account, auth.role, "/alerts")
            .with_notice(notice),
        base: format!("/accounts/{}", auth.account.id),
        alerts: alerts
            .iter()
            .map(|a| AlertRow {
                id: a.id.clone(),
                what: describe(a, &projects),
                threshold: match (&a.currency, a.kind) {
                    (_, "daily_audio_above") => format!("{} h", a.threshold),
                    (Some(c), _) => format!("{} {c}", a.threshold),
                    (None, _) => a.threshold.clone(),
                },
                webhook: a.webhook_url.clone().unwrap_or_default(),
                last_fired: match &a.last_fired_at {
                    Some(at) if a.fired_this_period => format!("{at} (waits for the next period)"),
                    Some(at) => at.clone(),
                    None => "Never".into(),
                },
            })
            .collect(),
        scopes: projects
            .iter()
            .map(|(id, name)| ScopeChoice {
                value: id.clone(),
                label: name.clone(),
            })
            .collect(),
        can_manage: role_allows(auth.role, Permission::ManageAlerts),
        error,
    };
    Ok(page.render()?)
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// `GET /accounts/{account}/alerts`.
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

async fn failed(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    e: MgmtError,
) -> DashResult<Response> {
    let (status, message) = on_form(e)?;
    let html = render(state, me, token, account, None, Some(message)).await?;
    Ok((status, Html(html)).into_response())
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub threshold: String,
    /// For daily audio: the project watched.
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub webhook_url: String,
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `POST /accounts/{account}/alerts`.
pub async fn create(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<CreateForm>,
) -> DashResult<Response> {
    let daily = form.kind == "daily_audio_above";
    let input = AlertInput {
        kind: form.kind,
        threshold: form.threshold.trim().to_string(),
        project_id: if daily {
            non_empty(form.project_id)
        } else {
            None
        },
        api_key_id: None,
        webhook_url: non_empty(form.webhook_url),
    };
    match core::create(&state, &me.caller(), ids::account(&account), input).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/alerts?notice=alert_saved"
        ))),
        Err(e) => failed(&state, &me, &token, &account, e).await,
    }
}

#[derive(Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    pub threshold: String,
    #[serde(default)]
    pub webhook_url: String,
}

/// `POST /accounts/{account}/alerts/{id}/edit`: a new threshold re-arms the alert; an
/// empty webhook removes it.
pub async fn update(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, id)): Path<(String, String)>,
    Form(form): Form<UpdateForm>,
) -> DashResult<Response> {
    let input = AlertUpdate {
        threshold: non_empty(form.threshold),
        webhook_url: Some(non_empty(form.webhook_url)),
    };
    match core::update(&state, &me.caller(), ids::account(&account), &id, input).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/alerts?notice=alert_saved"
        ))),
        Err(e) => failed(&state, &me, &token, &account, e).await,
    }
}

/// `POST /accounts/{account}/alerts/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, id)): Path<(String, String)>,
) -> DashResult<Response> {
    match core::delete(&state, &me.caller(), ids::account(&account), &id).await {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/alerts?notice=alert_deleted"
        ))),
        Err(e) => failed(&state, &me, &token, &account, e).await,
    }
}
