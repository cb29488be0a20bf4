//! The API Keys page of a project: every key masked with its creator, dates, scopes,
//! status and traffic; "Create new API key" (shown once, with "Copy"); a key's own page
//! to rename it, change its scopes and rotate it; "Copy" of an existing key after
//! re-authentication; "Revoke" and delete behind a confirmation.

use super::accounts::NoticeQuery;
use super::error::see_other;
use super::forms::{duration, on_form, reauth_with_password, when, when_or, ConfirmPage};
use super::projects::chosen;
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::projects::{self as core, KeyInput, KeyUpdate, RotateInput};
use crate::manage::views::{ApiKeyView, KeyStatus, ListedApiKey};
use crate::manage::{authorize, ids, require_recent_reauth, Authorized, PageQuery};
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
use hark_core::scope::Scope;
use hark_core::Permission;
use serde::Deserialize;
use std::collections::HashMap;

/// Keys per page of the list.
const KEYS_PER_PAGE: u32 = 50;

pub struct ProjectChoice {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub masked: String,
    pub creator: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub scopes: String,
    pub status: &'static str,
    pub live: bool,
    pub traffic: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    pub chrome: Chrome,
    pub base: String,
    pub projects: Vec<ProjectChoice>,
    /// `/accounts/{a}/projects/{p}` of the chosen project, when there is one.
    pub project_base: Option<String>,
    pub project_id: String,
    pub project_name: String,
    pub keys: Vec<KeyRow>,
    pub next: Option<String>,
    pub max_keys: u32,
    pub can_manage: bool,
    pub can_reveal: bool,
    pub error: Option<String>,
}

/// Who made each of `labels` (audit actor labels), as people know them: the person's
/// email, "Operator", or the label itself. Only the few creators on the page are looked
/// up, not every member of the account.
async fn creators<'a>(
    state: &AppState,
    labels: impl Iterator<Item = &'a str>,
) -> DashResult<HashMap<String, String>> {
    let mut names = HashMap::new();
    for label in labels {
        if names.contains_key(label) {
            continue;
        }
        let name = match label
            .strip_prefix("user:")
            .and_then(hark_core::UserId::parse)
        {
            Some(id) => match state.store.get_user(id).await? {
                Some(u) => u.email,
                None => "a former member".to_string(),
            },
            None if label == "operator" => "Operator".to_string(),
            None => label.to_string(),
        };
        names.insert(label.to_string(), name);
    }
    Ok(names)
}

fn creator_name(names: &HashMap<String, String>, label: &str) -> String {
    names
        .get(label)
        .cloned()
        .unwrap_or_else(|| label.to_string())
}

fn scopes_text(scopes: &[Scope]) -> String {
    if scopes.is_empty() {
        "All".into()
    } else {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn status_text(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "Active",
        KeyStatus::Rotating => "Rotating (grace period)",
        KeyStatus::Expired => "Expired",
        KeyStatus::Revoked => "Revoked",
    }
}

fn row(k: &ListedApiKey, names: &HashMap<String, String>) -> KeyRow {
    let v = &k.key;
    KeyRow {
        id: v.id.to_string(),
        name: v.name.clone(),
        masked: v.masked_key.clone(),
        creator: creator_name(names, &v.created_by),
        created: when(v.created_at.0),
        last_used: when_or(v.last_used_at.map(|i| i.0), "Never"),
        expires: when_or(v.expires_at.map(|i| i.0), "Never"),
        scopes: scopes_text(&v.scopes),
        status: status_text(v.status),
        live: matches!(v.status, KeyStatus::Active | KeyStatus::Rotating),
        traffic: format!(
            "{} transcript{}, {}",
            k.traffic.transcripts,
            if k.traffic.transcripts == 1 { "" } else { "s" },
            duration(k.traffic.audio_seconds)
        ),
    }
}

#[derive(Deserialize, Default)]
pub struct KeysQuery {
    pub project: Option<String>,
    pub after: Option<String>,
    pub notice: Option<String>,
}

async fn render_list(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    q: &KeysQuery,
    error: Option<String>,
) -> DashResult<String> {
    let caller = me.caller();
    let auth = authorize(
        state,
        &caller,
        ids::account(account),
        Permission::ViewApiKeys,
    )
    .await?;
    let (projects, project) = chosen(state, me, auth.account.id, q.project.as_deref()).await?;
    let base = format!("/accounts/{}", auth.account.id);
    let mut keys = Vec::new();
    let mut next = None;
    if let Some(p) = project {
        let page = PageQuery {
            limit: Some(KEYS_PER_PAGE),
            cursor: q.after.clone(),
        };
        let listed = core::list_keys(state, &caller, auth.account.id, p, &page).await?;
        let names = creators(state, listed.data.iter().map(|k| k.key.created_by.as_str())).await?;
        keys = listed.data.iter().map(|k| row(k, &names)).collect();
        next = listed
            .next_cursor
            .map(|c| format!("{base}/keys?project={p}&after={c}"));
    }
    let chosen_name = projects
        .iter()
        .find(|x| Some(x.id) == project)
        .map(|x| x.name.clone())
        .unwrap_or_default();
    let page = KeysPage {
        chrome: Chrome::signed_in(state, me, token, "API Keys")
            .await?
            .in_account(&auth.account, auth.role, "/keys")
            .with_notice(q.notice.as_deref()),
        project_base: project.map(|p| format!("{base}/projects/{p}")),
        project_id: project.map(|p| p.to_string()).unwrap_or_default(),
        project_name: chosen_name,
        projects: projects
            .iter()
            .map(|x| ProjectChoice {
                id: x.id.to_string(),
                name: x.name.clone(),
                selected: Some(x.id) == project,
            })
            .collect(),
        base,
        keys,
        next,
        max_keys: auth.account.limits.api_keys,
        can_manage: role_allows(auth.role, Permission::ManageApiKeys),
        can_reveal: role_allows(auth.role, Permission::RevealApiKeys),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/keys?project=`: the "API Keys" tab.
pub async fn list(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<KeysQuery>,
) -> DashResult<Response> {
    let html = render_list(&state, &me, &token, &account, &q, None).await?;
    Ok(Html(html).into_response())
}

/// The three scope checkboxes (HTML forms repeat a name for several boxes, which
/// plain form decoding does not take, so each scope has its own field).
#[derive(Deserialize, Default)]
pub struct ScopeBoxes {
    pub scope_transcripts_read: Option<String>,
    pub scope_transcripts_write: Option<String>,
    pub scope_streaming: Option<String>,
}

impl ScopeBoxes {
    /// The ticked scopes; none ticked (or all) means every scope.
    fn scopes(&self) -> Vec<Scope> {
        let ticked = [
            (Scope::TranscriptsRead, &self.scope_transcripts_read),
            (Scope::TranscriptsWrite, &self.scope_transcripts_write),
            (Scope::Streaming, &self.scope_streaming),
        ];
        let chosen: Vec<Scope> = ticked
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(s, _)| *s)
            .collect();
        if chosen.len() == Scope::ALL.len() {
            Vec::new()
        } else {
            chosen
        }
    }
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub name: String,
    /// Seconds until expiry; empty means never.
    #[serde(default)]
    pub expires_in: String,
    #[serde(flatten)]
    pub scopes: ScopeBoxes,
}

/// A key's secret on a page of its own: just made, rotated, or revealed.
#[derive(Template)]
#[template(path = "key_secret.html")]
pub struct SecretPage {
    pub chrome: Chrome,
    pub heading: String,
    pub explanation: String,
    pub key_name: String,
    pub secret: String,
    pub back: String,
}

async fn secret_page(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    auth: &Authorized,
    (heading, explanation): (&str, &str),
    key: &ApiKeyView,
    secret: String,
) -> DashResult<Response> {
    let page = SecretPage {
        chrome: Chrome::signed_in(state, me, token, heading)
            .await?
            .in_account(&auth.account, auth.role, "/keys"),
        heading: heading.to_string(),
        explanation: explanation.to_string(),
        key_name: key.name.clone(),
        secret,
        back: format!(
            "/accounts/{}/keys?project={}",
            auth.account.id, key.project_id
        ),
    };
    Ok(Html(page.render()?).into_response())
}

/// `POST /accounts/{account}/projects/{project}/keys`: "Create new API key".
pub async fn create(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Form(form): Form<CreateForm>,
) -> DashResult<Response> {
    let caller = me.caller();
    let (a, p) = (ids::account(&account), ids::project(&project));
    let expires_in_seconds = match form.expires_in.trim() {
        "" => Ok(None),
        s => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| MgmtError::Invalid("choose when the key expires".into())),
    };
    let made = match expires_in_seconds {
        Ok(expires_in_seconds) => {
            let input = KeyInput {
                name: form.name,
                expires_in_seconds,
                scopes: form.scopes.scopes(),
            };
            core::create_key(&state, &caller, a, p, &input).await
        }
        Err(e) => Err(e),
    };
    match made {
        Ok(new) => {
            let auth = authorize(&state, &caller, a, Permission::ManageApiKeys).await?;
            secret_page(
                &state,
                &me,
                &token,
                &auth,
                (
                    "Your new API key",
                    "Copy it now and keep it somewhere safe: send it as the Authorization header. Owners and Admins can show it again after entering their password.",
                ),
                &new.key,
                new.secret,
            )
            .await
        }
        Err(e) => {
            let (status, message) = on_form(e)?;
            let q = KeysQuery {
                project: Some(project),
                ..KeysQuery::default()
            };
            let html = render_list(&state, &me, &token, &account, &q, Some(message)).await?;
            Ok((status, Html(html)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "key.html")]
pub struct KeyPage {
    pub chrome: Chrome,
    pub base: String,
    pub key_base: String,
    pub key: KeyRow,
    pub read: bool,
    pub write: bool,
    pub streaming: bool,
    pub can_manage: bool,
    pub can_reveal: bool,
    pub error: Option<String>,
}

async fn render_key(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    (account, project, key): (&str, &str, &str),
    notice: Option<&str>,
    error: Option<String>,
) -> DashResult<String> {
    let caller = me.caller();
    let auth = authorize(
        state,
        &caller,
        ids::account(account),
        Permission::ViewApiKeys,
    )
    .await?;
    let found = core::get_key(
        state,
        &caller,
        auth.account.id,
        ids::project(project),
        ids::api_key(key),
    )
    .await?;
    let names = creators(state, std::iter::once(found.key.created_by.as_str())).await?;
    let scopes = &found.key.scopes;
    let has = |s: Scope| scopes.is_empty() || scopes.contains(&s);
    let page = KeyPage {
        chrome: Chrome::signed_in(state, me, token, &found.key.name)
            .await?
            .in_account(&auth.account, auth.role, "/keys")
            .with_notice(notice),
        base: format!("/accounts/{}", auth.account.id),
        key_base: format!(
            "/accounts/{}/projects/{}/keys/{}",
            auth.account.id, found.key.project_id, found.key.id
        ),
        read: has(Scope::TranscriptsRead),
        write: has(Scope::TranscriptsWrite),
        streaming: has(Scope::Streaming),
        key: row(&found, &names),
        can_manage: role_allows(auth.role, Permission::ManageApiKeys),
        can_reveal: role_allows(auth.role, Permission::RevealApiKeys),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/projects/{project}/keys/{key}`: one key, its settings.
pub async fn show(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
    Query(q): Query<NoticeQuery>,
) -> DashResult<Response> {
    let html = render_key(
        &state,
        &me,
        &token,
        (&account, &project, &key),
        q.notice.as_deref(),
        None,
    )
    .await?;
    Ok(Html(html).into_response())
}

async fn key_form_failed(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    path: (&str, &str, &str),
    e: MgmtError,
) -> DashResult<Response> {
    let (status, message) = on_form(e)?;
    let html = render_key(state, me, token, path, None, Some(message)).await?;
    Ok((status, Html(html)).into_response())
}

#[derive(Deserialize)]
pub struct EditForm {
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub scopes: ScopeBoxes,
}

/// `POST .../keys/{key}/edit`: rename and scopes.
pub async fn edit(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
    Form(form): Form<EditForm>,
) -> DashResult<Response> {
    let input = KeyUpdate {
        name: Some(form.name),
        scopes: Some(form.scopes.scopes()),
    };
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    match core::update_key(&state, &me.caller(), a, p, k, &input).await {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/projects/{project}/keys/{key}?notice=settings_saved"
        ))),
        Err(e) => key_form_failed(&state, &me, &token, (&account, &project, &key), e).await,
    }
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    pub grace_seconds: String,
}

/// `POST .../keys/{key}/rotate`: a new key now, the old one for the grace period.
pub async fn rotate(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
    Form(form): Form<RotateForm>,
) -> DashResult<Response> {
    let caller = me.caller();
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    let rotated = match form.grace_seconds.trim().parse::<i64>() {
        Ok(grace_seconds) => {
            let input = RotateInput {
                grace_seconds,
                name: None,
            };
            core::rotate_key(&state, &caller, a, p, k, &input).await
        }
        Err(_) => Err(MgmtError::Invalid(
            "choose how long the old key keeps working".into(),
        )),
    };
    match rotated {
        Ok(rotation) => {
            let auth = authorize(&state, &caller, a, Permission::ManageApiKeys).await?;
            let until = when_or(rotation.old.expires_at.map(|i| i.0), "now");
            let explanation = format!(
                "The old key ({}) keeps working until {until}. Copy the new key now and keep it somewhere safe.",
                rotation.old.masked_key
            );
            secret_page(
                &state,
                &me,
                &token,
                &auth,
                ("Your rotated API key", &explanation),
                &rotation.new.key,
                rotation.new.secret,
            )
            .await
        }
        Err(e) => key_form_failed(&state, &me, &token, (&account, &project, &key), e).await,
    }
}

#[derive(Template)]
#[template(path = "key_reveal.html")]
pub struct RevealPage {
    pub chrome: Chrome,
    pub action: String,
    pub key_name: String,
    pub masked: String,
    pub ask_password: bool,
    pub back: String,
    pub error: Option<String>,
}

async fn reveal_form(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    (account, project, key): (&str, &str, &str),
    error: Option<String>,
) -> DashResult<String> {
    let caller = me.caller();
    let auth = authorize(
        state,
        &caller,
        ids::account(account),
        Permission::RevealApiKeys,
    )
    .await?;
    let record = core::key_view(
        state,
        &caller,
        auth.account.id,
        ids::project(project),
        ids::api_key(key),
    )
    .await?;
    let page = RevealPage {
        chrome: Chrome::signed_in(state, me, token, "Copy API key")
            .await?
            .in_account(&auth.account, auth.role, "/keys"),
        action: format!(
            "/accounts/{}/projects/{}/keys/{}/reveal",
            auth.account.id, record.project_id, record.id
        ),
        key_name: record.name,
        masked: record.masked_key,
        ask_password: require_recent_reauth(state, &caller).is_err(),
        back: format!(
            "/accounts/{}/keys?project={}",
            auth.account.id, record.project_id
        ),
        error,
    };
    Ok(page.render()?)
}

/// `GET .../keys/{key}/reveal`: "Copy" asks for the password first.
pub async fn reveal_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
) -> DashResult<Response> {
    let html = reveal_form(&state, &me, &token, (&account, &project, &key), None).await?;
    Ok(Html(html).into_response())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub password: Option<Secret>,
}

/// `POST .../keys/{key}/reveal`: re-authenticate, then show the key (audited).
pub async fn reveal(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
    Form(form): Form<PasswordForm>,
) -> DashResult<Response> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    let revealed = match reauth_with_password(&state, addr, &me, form.password).await {
        Ok(caller) => core::reveal_key(&state, &caller, a, p, k)
            .await
            .map(|r| (caller, r)),
        Err(e) => Err(e),
    };
    match revealed {
        Ok((caller, revealed)) => {
            let auth = authorize(&state, &caller, a, Permission::RevealApiKeys).await?;
            let view = core::key_view(&state, &caller, a, p, revealed.id).await?;
            secret_page(
                &state,
                &me,
                &token,
                &auth,
                (
                    "Copy API key",
                    "Showing a key is recorded in the audit log.",
                ),
                &view,
                revealed.key,
            )
            .await
        }
        Err(e) => {
            let (status, message) = on_form(e)?;
            let html = reveal_form(
                &state,
                &me,
                &token,
                (&account, &project, &key),
                Some(message),
            )
            .await?;
            Ok((status, Html(html)).into_response())
        }
    }
}

/// Revoke or delete: which one a confirmation is for.
#[derive(Clone, Copy)]
enum Ending {
    Revoke,
    Delete,
}

async fn ending_page(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    (account, project, key): (&str, &str, &str),
    ending: Ending,
    error: Option<String>,
) -> DashResult<ConfirmPage> {
    let caller = me.caller();
    let auth = authorize(
        state,
        &caller,
        ids::account(account),
        Permission::ManageApiKeys,
    )
    .await?;
    let record = core::key_view(
        state,
        &caller,
        auth.account.id,
        ids::project(project),
        ids::api_key(key),
    )
    .await?;
    let (heading, consequences, verb, button) = match ending {
        Ending::Revoke => (
            format!("Revoke the API key {}?", record.name),
            format!("The key {} stops working with the very next request, on every node. Transcripts it made stay.", record.masked_key),
            "revoke",
            "Revoke",
        ),
        Ending::Delete => (
            format!("Delete the API key {}?", record.name),
            format!("The key {} no longer works; deleting removes it from this list. Its transcripts, usage and audit entries keep its id.", record.masked_key),
            "delete",
            "Delete key",
        ),
    };
    Ok(ConfirmPage {
        chrome: Chrome::signed_in(state, me, token, button)
            .await?
            .in_account(&auth.account, auth.role, "/keys"),
        heading,
        consequences,
        action: format!(
            "/accounts/{}/projects/{}/keys/{}/{verb}",
            auth.account.id, record.project_id, record.id
        ),
        button: button.into(),
        type_name: None,
        ask_password: false,
        back: format!(
            "/accounts/{}/keys?project={}",
            auth.account.id, record.project_id
        ),
        error,
    })
}

/// `GET .../keys/{key}/revoke`: the confirmation.
pub async fn revoke_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
) -> DashResult<Response> {
    ending_page(
        &state,
        &me,
        &token,
        (&account, &project, &key),
        Ending::Revoke,
        None,
    )
    .await?
    .respond(StatusCode::OK)
}

/// `POST .../keys/{key}/revoke`: "Revoke".
pub async fn revoke(
    State(state): State<AppState>,
    me: Me,
    Path((account, project, key)): Path<(String, String, String)>,
) -> DashResult<Response> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    core::revoke_key(&state, &me.caller(), a, p, k).await?;
    Ok(see_other(&format!(
        "/accounts/{account}/keys?project={project}&notice=key_revoked"
    )))
}

/// `GET .../keys/{key}/delete`: the confirmation.
pub async fn delete_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
) -> DashResult<Response> {
    ending_page(
        &state,
        &me,
        &token,
        (&account, &project, &key),
        Ending::Delete,
        None,
    )
    .await?
    .respond(StatusCode::OK)
}

/// `POST .../keys/{key}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, key)): Path<(String, String, String)>,
) -> DashResult<Response> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    match core::delete_key(&state, &me.caller(), a, p, k).await {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/keys?project={project}&notice=key_deleted"
        ))),
        Err(e) => {
            let (status, message) = on_form(e)?;
            ending_page(
                &state,
                &me,
                &token,
                (&account, &project, &key),
                Ending::Delete,
                Some(message),
            )
            .await?
            .respond(status)
        }
    }
}
