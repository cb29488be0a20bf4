//! Projects and their API keys and transcripts: create, rename and delete projects
//! (deletion revokes their keys at once and removes transcripts and upload files);
//! create, list (masked, with traffic), reveal (after re-authentication, audited),
//! revoke and rotate keys with a grace period; optional expiry and scopes.

use super::views::{
    round_secs, ApiKeyView, ListedApiKey, NewApiKey, Page, ProjectView, RevealedKey, Rotation,
    Traffic, TranscriptSummary,
};
use super::{authorize, require_recent_reauth, validate_name, Authorized, Caller, Error, Result};
use super::{PageQuery, MAX_ROTATION_GRACE_SECS};
use crate::provisioning;
use crate::AppState;
use hark_core::scope::Scope;
use hark_core::{AccountId, ApiKeyId, Permission, ProjectId, TranscriptId};
use hark_store::{ApiKeyRecord, Project, TranscriptQuery};
use serde::Deserialize;

/// The project `project` of the authorised account (another account's answers as missing).
pub(super) async fn project_in(
    state: &AppState,
    auth: &Authorized,
    project: ProjectId,
) -> Result<Project> {
    state
        .store
        .get_project(project)
        .await?
        .filter(|p| p.account_id == auth.account.id)
        .ok_or(Error::NotFound("project"))
}

async fn key_in(state: &AppState, project: &Project, key: ApiKeyId) -> Result<ApiKeyRecord> {
    state
        .store
        .get_api_key(key)
        .await?
        .filter(|k| k.project_id == project.id)
        .ok_or(Error::NotFound("API key"))
}

pub async fn list_projects(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    page: &PageQuery,
) -> Result<Page<ProjectView>> {
    let auth = authorize(state, caller, account, Permission::ViewProjects).await?;
    let projects = state.store.list_projects(auth.account.id).await?;
    page.page(projects.iter().map(ProjectView::from).collect(), |p| {
        p.id.to_string()
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ProjectInput {
    pub name: String,
}

/// Creates a project within the plan's project limit (checked atomically by the store).
pub async fn create_project(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    input: &ProjectInput,
) -> Result<ProjectView> {
    let auth = authorize(state, caller, account, Permission::ManageProjects).await?;
    validate_name(&input.name)?;
    let project = state
        .store
        .create_project(
            auth.account.id,
            provisioning::new_project(&state.master_key, input.name.trim()),
            &caller.actor(),
        )
        .await?;
    Ok(ProjectView::from(&project))
}

pub async fn get_project(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
) -> Result<ProjectView> {
    let auth = authorize(state, caller, account, Permission::ViewProjects).await?;
    Ok(ProjectView::from(&project_in(state, &auth, project).await?))
}

pub async fn rename_project(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    input: &ProjectInput,
) -> Result<ProjectView> {
    let auth = authorize(state, caller, account, Permission::ManageProjects).await?;
    validate_name(&input.name)?;
    let p = project_in(state, &auth, project).await?;
    let renamed = state
        .store
        .rename_project(p.id, input.name.trim(), &caller.actor())
        .await?;
    Ok(ProjectView::from(&renamed))
}

/// Deletes a project: its keys stop working at once; its transcripts, uploads and
/// their files are deleted.
pub async fn delete_project(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageProjects).await?;
    let p = project_in(state, &auth, project).await?;
    let deleted = state.store.delete_project(p.id, &caller.actor()).await?;
    state.auth.clear();
    crate::uploads::remove_objects(state, &deleted.upload_paths, &[p.id.to_string()]).await;
    Ok(())
}

/// A project's transcripts, newest first; the cursor is the last transcript id seen.
pub async fn list_transcripts(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    page: &PageQuery,
) -> Result<Page<TranscriptSummary>> {
    let auth = authorize(state, caller, account, Permission::ViewTranscripts).await?;
    let p = project_in(state, &auth, project).await?;
    let limit = page.limit()?;
    let before = match &page.cursor {
        Some(c) => Some(
            TranscriptId::parse(c).ok_or_else(|| Error::Invalid("cursor is not valid".into()))?,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_transcripts(
            p.id,
            &TranscriptQuery {
                limit: limit as u32 + 1,
                before_id: before,
                ..TranscriptQuery::default()
            },
        )
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(Page {
        data: rows.iter().map(TranscriptSummary::from).collect(),
        has_more,
        next_cursor,
    })
}

/// A project's keys, masked, with creator, last use, expiry and traffic.
pub async fn list_keys(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    page: &PageQuery,
) -> Result<Page<ListedApiKey>> {
    let auth = authorize(state, caller, account, Permission::ViewApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    // Pending last-use notes are written first so the list is current.
    state.auth.flush_last_used(state.store.as_ref()).await;
    let now = state.clock.now_ms();
    let traffic = state.store.key_traffic(p.id).await?;
    let keys = state.store.list_api_keys(p.id).await?;
    let items = keys
        .iter()
        .map(|k| {
            let t = traffic.get(&k.id).copied().unwrap_or_default();
            ListedApiKey {
                key: ApiKeyView::new(k, now),
                traffic: Traffic {
                    transcripts: t.transcripts,
                    audio_seconds: round_secs(t.audio_seconds),
                },
            }
        })
        .collect();
    page.page(items, |k| k.key.id.to_string())
}

/// One key of the project, masked (without its traffic).
pub async fn key_view(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<ApiKeyView> {
    let auth = authorize(state, caller, account, Permission::ViewApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    let k = key_in(state, &p, key).await?;
    Ok(ApiKeyView::new(&k, state.clock.now_ms()))
}

/// One key of the project, masked, with its traffic.
pub async fn get_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<ListedApiKey> {
    let auth = authorize(state, caller, account, Permission::ViewApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    state.auth.flush_last_used(state.store.as_ref()).await;
    let k = key_in(state, &p, key).await?;
    let t = state
        .store
        .key_traffic(p.id)
        .await?
        .get(&k.id)
        .copied()
        .unwrap_or_default();
    Ok(ListedApiKey {
        key: ApiKeyView::new(&k, state.clock.now_ms()),
        traffic: Traffic {
            transcripts: t.transcripts,
            audio_seconds: round_secs(t.audio_seconds),
        },
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct KeyInput {
    pub name: String,
    /// 60 s to 10 years; none means the key never expires.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    /// Least privilege; empty means every scope.
    #[serde(default)]
    #[schemars(schema_with = "crate::manage::views::scopes_schema")]
    pub scopes: Vec<Scope>,
}

fn expiry_ms(secs: Option<i64>) -> Result<Option<i64>> {
    match secs {
        None => Ok(None),
        Some(s) if (60..=10 * 365 * 86_400).contains(&s) => Ok(Some(s * 1000)),
        Some(_) => Err(Error::Invalid(
            "expires_in_seconds must be between 60 and 315360000".into(),
        )),
    }
}

/// Creates a key within the plan's key limit; its secret is in this result only.
pub async fn create_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    input: &KeyInput,
) -> Result<NewApiKey> {
    let auth = authorize(state, caller, account, Permission::ManageApiKeys).await?;
    validate_name(&input.name)?;
    let expires = expiry_ms(input.expires_in_seconds)?;
    let p = project_in(state, &auth, project).await?;
    let (record, secret) = provisioning::issue_scoped_api_key(
        state.store.as_ref(),
        &state.master_key,
        state.clock.as_ref(),
        p.id,
        input.name.trim(),
        expires,
        &input.scopes,
        &caller.actor(),
    )
    .await?;
    Ok(NewApiKey {
        key: ApiKeyView::new(&record, state.clock.now_ms()),
        secret: secret.expose().to_string(),
    })
}

/// Revokes a key: the very next request with it is refused.
pub async fn revoke_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<ApiKeyView> {
    let auth = authorize(state, caller, account, Permission::ManageApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    let k = key_in(state, &p, key).await?;
    let revoked = state.store.revoke_api_key(k.id, &caller.actor()).await?;
    state.auth.clear();
    Ok(ApiKeyView::new(&revoked, state.clock.now_ms()))
}

/// Reveals a key's secret: Owner/Admin, within minutes of re-authentication; every
/// reveal is audited.
pub async fn reveal_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<RevealedKey> {
    let auth = authorize(state, caller, account, Permission::RevealApiKeys).await?;
    require_recent_reauth(state, caller)?;
    let p = project_in(state, &auth, project).await?;
    let k = key_in(state, &p, key).await?;
    let sealed = state.store.reveal_api_key(k.id, &caller.actor()).await?;
    let secret = state
        .master_key
        .open(&sealed, &k.id.to_string())
        .map_err(Error::internal)?;
    Ok(RevealedKey {
        id: k.id,
        key: secret,
    })
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct KeyUpdate {
    #[serde(default)]
    pub name: Option<String>,
    /// The key's new scopes (empty means every scope); absent leaves them as they are.
    #[serde(default)]
    #[schemars(schema_with = "crate::manage::views::optional_scopes_schema")]
    pub scopes: Option<Vec<Scope>>,
}

/// Renames a key and/or changes its scopes; narrowed scopes hold from the very next
/// request.
pub async fn update_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
    input: &KeyUpdate,
) -> Result<ApiKeyView> {
    let auth = authorize(state, caller, account, Permission::ManageApiKeys).await?;
    if let Some(name) = &input.name {
        validate_name(name)?;
    }
    let p = project_in(state, &auth, project).await?;
    let k = key_in(state, &p, key).await?;
    let updated = state
        .store
        .update_api_key(
            k.id,
            input.name.as_deref().map(str::trim),
            input.scopes.as_deref(),
            &caller.actor(),
        )
        .await?;
    state.auth.clear();
    Ok(ApiKeyView::new(&updated, state.clock.now_ms()))
}

/// Deletes a key that no longer works (revoke it first); what it did stays in the
/// transcripts, usage and audit log under its id.
pub async fn delete_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    let k = key_in(state, &p, key).await?;
    state.store.delete_api_key(k.id, &caller.actor()).await?;
    state.auth.clear();
    Ok(())
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct RotateInput {
    /// How long the old key keeps working: 0 to 86400 s.
    pub grace_seconds: i64,
    /// The new key's name (default: the old key's).
    #[serde(default)]
    pub name: Option<String>,
}

/// Rotates a key: a new key now; the old one works for the grace period and then
/// expires.
pub async fn rotate_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
    input: &RotateInput,
) -> Result<Rotation> {
    let auth = authorize(state, caller, account, Permission::ManageApiKeys).await?;
    if !(0..=MAX_ROTATION_GRACE_SECS).contains(&input.grace_seconds) {
        return Err(Error::Invalid(format!(
            "grace_seconds must be between 0 and {MAX_ROTATION_GRACE_SECS}"
        )));
    }
    if let Some(name) = &input.name {
        validate_name(name)?;
    }
    let p = project_in(state, &auth, project).await?;
    let old = key_in(state, &p, key).await?;
    let actor = caller.actor();
    // The successor keeps the original's expiry: rotating must not turn a key made to
    // expire into one that never does. (The store refuses a key already expired.)
    let remaining_ms = old.expires_at.map(|at| (at - state.clock.now_ms()).max(1));
    let (new, secret) = provisioning::new_api_key(
        &state.master_key,
        state.clock.as_ref(),
        p.id,
        input.name.as_deref().map(str::trim).unwrap_or(&old.name),
        remaining_ms,
        &old.scopes,
        &actor,
    );
    let (old_rec, new_rec) = state
        .store
        .rotate_api_key(old.id, new, input.grace_seconds * 1000, &actor)
        .await?;
    state.auth.clear();
    let now = state.clock.now_ms();
    Ok(Rotation {
        old: ApiKeyView::new(&old_rec, now),
        new: NewApiKey {
            key: ApiKeyView::new(&new_rec, now),
            secret: secret.expose().to_string(),
        },
    })
}
