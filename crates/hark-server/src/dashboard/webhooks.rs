//! A project's Webhooks page: the signing secret's rotation state for every member;
//! for Owners and Admins the secret itself after entering the password again (audited)
//! and "Rotate" with an overlap during which deliveries carry signatures under both
//! the new and the former secret.

use super::error::{human_message, status_of};
use super::transcripts::{pick_project, project_choices, when, PickQuery, ProjectChoice};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::projects::get_project;
use crate::manage::sessions::{self, ReauthInput};
use crate::manage::webhooks::{self as core, RotateSecretInput, WebhookSecret, MAX_OVERLAP_SECS};
use crate::manage::{authorize, ids, Caller};
use crate::management::principal::ClientAddr;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use hark_core::plan::role_allows;
use hark_core::Permission;
use serde::Deserialize;

/// A secret on the page: the current one, or the former one during an overlap.
pub struct ShownSecret {
    pub label: &'static str,
    pub element_id: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
pub struct WebhooksPage {
    pub chrome: Chrome,
    pub project_name: String,
    pub projects: Vec<ProjectChoice>,
    pub picker_action: String,
    pub rotated_at: Option<String>,
    pub previous_until: Option<String>,
    pub reveal_action: Option<String>,
    pub rotate_action: Option<String>,
    pub default_overlap_hours: i64,
    pub max_overlap_hours: i64,
    pub secrets: Vec<ShownSecret>,
    pub just_rotated: bool,
    pub error: Option<String>,
}

async fn render(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    project: &str,
    shown: Option<(&WebhookSecret, bool)>,
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
    let p = get_project(state, &caller, auth.account.id, ids::project(project)).await?;
    let status = core::status(state, &caller, auth.account.id, p.id).await?;
    let base = format!("/accounts/{}/projects/{}/webhooks", auth.account.id, p.id);
    let mut secrets = Vec::new();
    if let Some((s, _)) = shown {
        secrets.push(ShownSecret {
            label: "Signing secret",
            element_id: "secret-current",
            value: s.secret.clone(),
        });
        if let Some(prev) = &s.previous_secret {
            secrets.push(ShownSecret {
                label: "Former secret (still signing during the overlap)",
                element_id: "secret-previous",
                value: prev.clone(),
            });
        }
    }
    let page = WebhooksPage {
        chrome: Chrome::signed_in(state, me, token, "Webhooks")
            .await?
            .in_account(&auth.account, auth.role, "/webhooks"),
        project_name: p.name.clone(),
        projects: project_choices(state, me, account, &p.id.to_string()).await?,
        picker_action: format!("/accounts/{}/webhooks", auth.account.id),
        rotated_at: status.rotated_at.map(when),
        previous_until: status.previous_valid_until.map(when),
        reveal_action: role_allows(auth.role, Permission::RevealApiKeys)
            .then(|| format!("{base}/reveal")),
        rotate_action: role_allows(auth.role, Permission::ManageProjects)
            .then(|| format!("{base}/rotate")),
        default_overlap_hours: state
            .config
            .webhook_secret_overlap_secs
            .clamp(0, MAX_OVERLAP_SECS)
            / 3600,
        max_overlap_hours: MAX_OVERLAP_SECS / 3600,
        secrets,
        just_rotated: shown.is_some_and(|(_, rotated)| rotated),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/webhooks`.
pub async fn section(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<PickQuery>,
) -> DashResult<Response> {
    pick_project(
        &state,
        &me,
        &token,
        &account,
        "webhooks",
        q.project.as_deref(),
    )
    .await
}

/// `GET /accounts/{account}/projects/{project}/webhooks`.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
) -> DashResult<Response> {
    let html = render(&state, &me, &token, &account, &project, None, None).await?;
    Ok(Html(html).into_response())
}

#[derive(Deserialize)]
pub struct RevealForm {
    pub password: Secret,
}

#[derive(Deserialize)]
pub struct RotateForm {
    pub password: Secret,
    /// Whole hours; empty: the server's default.
    #[serde(default)]
    pub overlap_hours: String,
}

/// Re-authenticates with the password: `Ok(None)` with the caller whose window is
/// open, or `Ok(Some(response))` with the page again and the reason.
async fn reauthenticate(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    addr: &ClientAddr,
    (account, project): (&str, &str),
    password: Secret,
) -> DashResult<Result<Caller, Response>> {
    let input = ReauthInput {
        password: Some(password),
        totp_code: None,
    };
    let mut caller = me.caller();
    match sessions::reauth(state, &caller, &input, addr.0).await {
        Ok(_) => {}
        Err(
            e @ (MgmtError::WrongPassword
            | MgmtError::BadCredentials
            | MgmtError::Invalid(_)
            | MgmtError::Throttled { .. }),
        ) => {
            let html = render(
                state,
                me,
                token,
                account,
                project,
                None,
                Some(human_message(&e)),
            )
            .await?;
            return Ok(Err((status_of(&e), Html(html)).into_response()));
        }
        Err(e) => return Err(e.into()),
    }
    // The re-authentication just stored this instant on the session.
    caller.session.reauth_at = Some(state.clock.now_ms());
    Ok(Ok(caller))
}

/// `POST .../webhooks/reveal`: the password again, then the secret (audited).
pub async fn reveal(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Form(form): Form<RevealForm>,
) -> DashResult<Response> {
    // Refused before the password is even looked at when the role may not.
    authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::RevealApiKeys,
    )
    .await?;
    let caller = match reauthenticate(
        &state,
        &me,
        &token,
        &addr,
        (&account, &project),
        form.password,
    )
    .await?
    {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    let secret = core::reveal(
        &state,
        &caller,
        ids::account(&account),
        ids::project(&project),
    )
    .await?;
    let html = render(
        &state,
        &me,
        &token,
        &account,
        &project,
        Some((&secret, false)),
        None,
    )
    .await?;
    Ok(Html(html).into_response())
}

/// `POST .../webhooks/rotate`: the password again, then a new secret; the former
/// one keeps signing for the overlap.
pub async fn rotate(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Form(form): Form<RotateForm>,
) -> DashResult<Response> {
    authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::ManageProjects,
    )
    .await?;
    let overlap_seconds = match form.overlap_hours.trim() {
        "" => None,
        h => match h.parse::<i64>() {
            Ok(h) if h >= 0 => Some(h.saturating_mul(3600)),
            _ => {
                let e = MgmtError::Invalid("the overlap must be a whole number of hours".into());
                let html = render(
                    &state,
                    &me,
                    &token,
                    &account,
                    &project,
                    None,
                    Some(human_message(&e)),
                )
                .await?;
                return Ok((status_of(&e), Html(html)).into_response());
            }
        },
    };
    let caller = match reauthenticate(
        &state,
        &me,
        &token,
        &addr,
        (&account, &project),
        form.password,
    )
    .await?
    {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    let input = RotateSecretInput { overlap_seconds };
    match core::rotate(
        &state,
        &caller,
        ids::account(&account),
        ids::project(&project),
        &input,
    )
    .await
    {
        Ok(secret) => {
            let html = render(
                &state,
                &me,
                &token,
                &account,
                &project,
                Some((&secret, true)),
                None,
            )
            .await?;
            Ok(Html(html).into_response())
        }
        Err(e @ MgmtError::Invalid(_)) => {
            let html = render(
                &state,
                &me,
                &token,
                &account,
                &project,
                None,
                Some(human_message(&e)),
            )
            .await?;
            Ok((status_of(&e), Html(html)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
