//! The Projects page: the account's projects against the plan ("2 of 2 projects"),
//! create, rename, and delete after typing the project's name.

use super::accounts::NoticeQuery;
use super::error::see_other;
use super::forms::{on_form, when, ConfirmPage};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::projects::{self as core, ProjectInput};
use crate::manage::{authorize, confirm_name, ids, PageQuery, MAX_PAGE};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::plan::role_allows;
use hark_core::Permission;
use serde::Deserialize;

pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "projects.html")]
pub struct ProjectsPage {
    pub chrome: Chrome,
    pub base: String,
    pub projects: Vec<ProjectRow>,
    pub max_projects: u32,
    pub can_manage: bool,
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
        Permission::ViewProjects,
    )
    .await?;
    let mut projects = state.store.list_projects(auth.account.id).await?;
    projects.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0)));
    let page = ProjectsPage {
        chrome: Chrome::signed_in(state, me, token, "Projects")
            .await?
            .in_account(&auth.account, auth.role, "/projects")
            .with_notice(notice),
        base: format!("/accounts/{}", auth.account.id),
        projects: projects
            .iter()
            .map(|p| ProjectRow {
                id: p.id.to_string(),
                name: p.name.clone(),
                created: when(p.created_at),
            })
            .collect(),
        max_projects: auth.account.limits.projects,
        can_manage: role_allows(auth.role, Permission::ManageProjects),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/projects`.
pub async fn list(
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
pub struct NameForm {
    #[serde(default)]
    pub name: String,
}

async fn form_failed(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    e: crate::management::MgmtError,
) -> DashResult<Response> {
    let (status, message) = on_form(e)?;
    let html = render(state, me, token, account, None, Some(message)).await?;
    Ok((status, Html(html)).into_response())
}

/// `POST /accounts/{account}/projects`: "Create".
pub async fn create(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<NameForm>,
) -> DashResult<Response> {
    let input = ProjectInput { name: form.name };
    match core::create_project(&state, &me.caller(), ids::account(&account), &input).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/projects?notice=project_created"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}

/// `POST /accounts/{account}/projects/{project}/rename`.
pub async fn rename(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Form(form): Form<NameForm>,
) -> DashResult<Response> {
    let input = ProjectInput { name: form.name };
    let (a, p) = (ids::account(&account), ids::project(&project));
    match core::rename_project(&state, &me.caller(), a, p, &input).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/projects?notice=project_renamed"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}

async fn confirm_page(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    project: &str,
    error: Option<String>,
) -> DashResult<ConfirmPage> {
    let caller = me.caller();
    let (a, p) = (ids::account(account), ids::project(project));
    let auth = authorize(state, &caller, a, Permission::ManageProjects).await?;
    let project = core::get_project(state, &caller, a, p).await?;
    Ok(ConfirmPage {
        chrome: Chrome::signed_in(state, me, token, "Delete project")
            .await?
            .in_account(&auth.account, auth.role, "/projects"),
        heading: format!("Delete the project {}?", project.name),
        consequences:
            "Its API keys stop working at once, and its transcripts and uploaded files are deleted."
                .into(),
        action: format!(
            "/accounts/{}/projects/{}/delete",
            auth.account.id, project.id
        ),
        button: "Delete project".into(),
        type_name: Some(project.name),
        ask_password: false,
        back: format!("/accounts/{}/projects", auth.account.id),
        error,
    })
}

/// `GET /accounts/{account}/projects/{project}/delete`: the confirmation.
pub async fn delete_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
) -> DashResult<Response> {
    confirm_page(&state, &me, &token, &account, &project, None)
        .await?
        .respond(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct TypedNameForm {
    #[serde(default)]
    pub confirm_name: String,
}

/// `POST /accounts/{account}/projects/{project}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Form(form): Form<TypedNameForm>,
) -> DashResult<Response> {
    let caller = me.caller();
    let (a, p) = (ids::account(&account), ids::project(&project));
    let target = core::get_project(&state, &caller, a, p).await?;
    let result = match confirm_name(&target.name, &form.confirm_name) {
        Ok(()) => core::delete_project(&state, &caller, a, p).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/projects?notice=project_deleted"
        ))),
        Err(e) => {
            let (status, message) = on_form(e)?;
            confirm_page(&state, &me, &token, &account, &project, Some(message))
                .await?
                .respond(status)
        }
    }
}

/// The project a project-scoped page shows: the one named in `?project=`, else the
/// first by name. `None` when the account has no project.
pub async fn chosen(
    state: &AppState,
    me: &Me,
    account: hark_core::AccountId,
    wanted: Option<&str>,
) -> DashResult<(
    Vec<crate::manage::views::ProjectView>,
    Option<hark_core::ProjectId>,
)> {
    let page = PageQuery {
        limit: Some(MAX_PAGE),
        cursor: None,
    };
    let mut projects = core::list_projects(state, &me.caller(), account, &page)
        .await?
        .data;
    projects.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0)));
    let chosen = wanted
        .and_then(|w| projects.iter().find(|p| p.id.to_string() == w))
        .or_else(|| projects.first())
        .map(|p| p.id);
    Ok((projects, chosen))
}
