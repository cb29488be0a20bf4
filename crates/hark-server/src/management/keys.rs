//! Projects and their API keys: create, rename and delete projects (deletion revokes
//! keys at once and removes transcripts and upload files); create, list (masked),
//! reveal (after re-authentication, audited), revoke and rotate keys with a grace
//! period; optional expiry and scopes.

use super::accounts::{remove_files, validate_name};
use super::principal::{
    authorize, require_recent_reauth, Authorized, JsonBody, QueryParams, UserCtx,
};
use super::{opt_ts, ts, MgmtError, MgmtResult, PageQuery, MAX_ROTATION_GRACE_SECS};
use crate::provisioning;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hark_core::scope::Scope;
use hark_core::{ApiKeyId, Permission, ProjectId};
use hark_store::{Actor, ApiKeyRecord, Project, TranscriptQuery};
use serde::Deserialize;
use serde_json::{json, Value};

fn project_json(p: &Project) -> Value {
    json!({"id": p.id, "account_id": p.account_id, "name": p.name, "created_at": ts(p.created_at)})
}

fn key_status(k: &ApiKeyRecord, now: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if k.replaced_by.is_some() {
        "rotating"
    } else {
        "active"
    }
}

pub fn key_json(k: &ApiKeyRecord, now: i64) -> Value {
    json!({
        "id": k.id,
        "project_id": k.project_id,
        "name": k.name,
        "masked_key": k.masked,
        "created_by": k.created_by,
        "created_at": ts(k.created_at),
        "last_used_at": opt_ts(k.last_used_at),
        "expires_at": opt_ts(k.expires_at),
        "revoked_at": opt_ts(k.revoked_at),
        "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "replaced_by": k.replaced_by,
        "status": key_status(k, now),
    })
}

/// The project `project` of the authorised account (another account's answers as missing).
async fn project_in(state: &AppState, auth: &Authorized, project: &str) -> MgmtResult<Project> {
    let id = ProjectId::parse(project).ok_or(MgmtError::NotFound("project"))?;
    state
        .store
        .get_project(id)
        .await?
        .filter(|p| p.account_id == auth.account.id)
        .ok_or(MgmtError::NotFound("project"))
}

async fn key_in(state: &AppState, project: &Project, key: &str) -> MgmtResult<ApiKeyRecord> {
    let id = ApiKeyId::parse(key).ok_or(MgmtError::NotFound("API key"))?;
    state
        .store
        .get_api_key(id)
        .await?
        .filter(|k| k.project_id == project.id)
        .ok_or(MgmtError::NotFound("API key"))
}

/// `GET .../projects`.
pub async fn list_projects(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewProjects).await?;
    let items: Vec<Value> = state
        .store
        .list_projects(auth.account.id)
        .await?
        .iter()
        .map(project_json)
        .collect();
    Ok(Json(json!(page.page(items, |v| v["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())?)))
}

#[derive(Deserialize)]
pub struct ProjectRequest {
    pub name: String,
}

/// `POST .../projects`: within the plan's project limit (checked atomically).
pub async fn create_project(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<ProjectRequest>,
) -> MgmtResult<(StatusCode, Json<Value>)> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageProjects).await?;
    validate_name(&req.name)?;
    let project = state
        .store
        .create_project(
            auth.account.id,
            provisioning::new_project(&state.master_key, req.name.trim()),
            &Actor::User(ctx.user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(project_json(&project))))
}

/// `GET .../projects/{project}`.
pub async fn get_project(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewProjects).await?;
    Ok(Json(project_json(
        &project_in(&state, &auth, &project).await?,
    )))
}

/// `PATCH .../projects/{project}`: rename.
pub async fn rename_project(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
    JsonBody(req): JsonBody<ProjectRequest>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageProjects).await?;
    validate_name(&req.name)?;
    let p = project_in(&state, &auth, &project).await?;
    let renamed = state
        .store
        .rename_project(p.id, req.name.trim(), &Actor::User(ctx.user.id))
        .await?;
    Ok(Json(project_json(&renamed)))
}

/// `DELETE .../projects/{project}`: its keys stop working at once; its transcripts,
/// uploads and their files are deleted.
pub async fn delete_project(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageProjects).await?;
    let p = project_in(&state, &auth, &project).await?;
    let deleted = state
        .store
        .delete_project(p.id, &Actor::User(ctx.user.id))
        .await?;
    state.auth.clear();
    remove_files(
        &state,
        &deleted.upload_paths,
        &[state.uploads_dir.join(p.id.to_string())],
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../projects/{project}/transcripts`: newest first, `?limit=&cursor=`.
pub async fn list_transcripts(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewTranscripts).await?;
    let p = project_in(&state, &auth, &project).await?;
    let limit = page.limit()?;
    let before = match &page.cursor {
        Some(c) => Some(
            hark_core::TranscriptId::parse(c)
                .ok_or_else(|| MgmtError::Invalid("cursor is not valid".into()))?,
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
    let data: Vec<Value> = rows
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "status": t.status.as_str(), "audio_url": t.audio_url,
                "audio_duration": t.audio_duration, "created_at": ts(t.created_at),
                "completed_at": opt_ts(t.completed_at), "api_key_id": t.api_key_id,
            })
        })
        .collect();
    Ok(Json(
        json!({"data": data, "has_more": has_more, "next_cursor": next_cursor}),
    ))
}

/// `GET .../projects/{project}/keys`: masked, with creator, use and expiry.
pub async fn list_keys(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewApiKeys).await?;
    let p = project_in(&state, &auth, &project).await?;
    // Pending last-use notes are written first so the list is current.
    state.auth.flush_last_used(state.store.as_ref()).await;
    let now = state.clock.now_ms();
    let traffic = state.store.key_traffic(p.id).await?;
    let items: Vec<Value> = state
        .store
        .list_api_keys(p.id)
        .await?
        .iter()
        .map(|k| {
            let t = traffic.get(&k.id).copied().unwrap_or_default();
            let mut v = key_json(k, now);
            v["traffic"] = json!({"transcripts": t.transcripts, "audio_seconds": t.audio_seconds});
            v
        })
        .collect();
    Ok(Json(json!(page.page(items, |v| v["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())?)))
}

#[derive(Deserialize)]
pub struct KeyRequest {
    pub name: String,
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

fn expiry_ms(secs: Option<i64>) -> MgmtResult<Option<i64>> {
    match secs {
        None => Ok(None),
        Some(s) if (60..=10 * 365 * 86_400).contains(&s) => Ok(Some(s * 1000)),
        Some(_) => Err(MgmtError::Invalid(
            "expires_in_seconds must be between 60 and 315360000".into(),
        )),
    }
}

/// `POST .../projects/{project}/keys`: the secret is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project)): Path<(String, String)>,
    JsonBody(req): JsonBody<KeyRequest>,
) -> MgmtResult<(StatusCode, Json<Value>)> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageApiKeys).await?;
    validate_name(&req.name)?;
    let expires = expiry_ms(req.expires_in_seconds)?;
    let p = project_in(&state, &auth, &project).await?;
    let (record, secret) = provisioning::issue_scoped_api_key(
        state.store.as_ref(),
        &state.master_key,
        state.clock.as_ref(),
        p.id,
        req.name.trim(),
        expires,
        &req.scopes,
        &Actor::User(ctx.user.id),
    )
    .await?;
    let mut body = key_json(&record, state.clock.now_ms());
    body["key"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

/// `DELETE .../keys/{key}`: revoked; the very next request with it is refused.
pub async fn revoke_key(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project, key)): Path<(String, String, String)>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageApiKeys).await?;
    let p = project_in(&state, &auth, &project).await?;
    let k = key_in(&state, &p, &key).await?;
    let revoked = state
        .store
        .revoke_api_key(k.id, &Actor::User(ctx.user.id))
        .await?;
    state.auth.clear();
    Ok(Json(key_json(&revoked, state.clock.now_ms())))
}

/// `POST .../keys/{key}/reveal`: Owner/Admin, within minutes of re-authentication;
/// every reveal is audited.
pub async fn reveal_key(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project, key)): Path<(String, String, String)>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::RevealApiKeys).await?;
    require_recent_reauth(&state, &ctx)?;
    let p = project_in(&state, &auth, &project).await?;
    let k = key_in(&state, &p, &key).await?;
    let sealed = state
        .store
        .reveal_api_key(k.id, &Actor::User(ctx.user.id))
        .await?;
    let secret = state
        .master_key
        .open(&sealed, &k.id.to_string())
        .map_err(MgmtError::internal)?;
    Ok(Json(json!({"id": k.id, "key": secret})))
}

#[derive(Deserialize)]
pub struct RotateRequest {
    pub grace_seconds: i64,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST .../keys/{key}/rotate`: a new key now; the old one works for the grace period
/// (0 to 24 h) and then expires.
pub async fn rotate_key(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, project, key)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<RotateRequest>,
) -> MgmtResult<(StatusCode, Json<Value>)> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageApiKeys).await?;
    if !(0..=MAX_ROTATION_GRACE_SECS).contains(&req.grace_seconds) {
        return Err(MgmtError::Invalid(format!(
            "grace_seconds must be between 0 and {MAX_ROTATION_GRACE_SECS}"
        )));
    }
    if let Some(name) = &req.name {
        validate_name(name)?;
    }
    let p = project_in(&state, &auth, &project).await?;
    let old = key_in(&state, &p, &key).await?;
    let actor = Actor::User(ctx.user.id);
    let (new, secret) = provisioning::new_api_key(
        &state.master_key,
        state.clock.as_ref(),
        p.id,
        req.name.as_deref().map(str::trim).unwrap_or(&old.name),
        None,
        &old.scopes,
        &actor,
    );
    let (old_rec, new_rec) = state
        .store
        .rotate_api_key(old.id, new, req.grace_seconds * 1000, &actor)
        .await?;
    state.auth.clear();
    let now = state.clock.now_ms();
    let mut new_json = key_json(&new_rec, now);
    new_json["key"] = json!(secret.expose());
    Ok((
        StatusCode::CREATED,
        Json(json!({"old": key_json(&old_rec, now), "new": new_json})),
    ))
}
