//! JSON handlers for projects, their transcripts and their API keys
//! ([`crate::manage::projects`]).

use super::principal::{JsonBody, QueryParams};
use super::MgmtResult;
use crate::manage::projects::{self as core, KeyInput, KeyUpdate, ProjectInput, RotateInput};
use crate::manage::views::{
    ApiKeyView, ListedApiKey, NewApiKey, Page, ProjectView, RevealedKey, Rotation,
    TranscriptSummary,
};
use crate::manage::{ids, Caller, PageQuery};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

/// `GET .../projects`.
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<ProjectView>>> {
    Ok(Json(
        core::list_projects(&state, &caller, ids::account(&account), &page).await?,
    ))
}

/// `POST .../projects`.
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<ProjectInput>,
) -> MgmtResult<(StatusCode, Json<ProjectView>)> {
    let project = core::create_project(&state, &caller, ids::account(&account), &req).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET .../projects/{project}`.
pub async fn get_project(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
) -> MgmtResult<Json<ProjectView>> {
    Ok(Json(
        core::get_project(
            &state,
            &caller,
            ids::account(&account),
            ids::project(&project),
        )
        .await?,
    ))
}

/// `PATCH .../projects/{project}`: rename.
pub async fn rename_project(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
    JsonBody(req): JsonBody<ProjectInput>,
) -> MgmtResult<Json<ProjectView>> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    Ok(Json(
        core::rename_project(&state, &caller, a, p, &req).await?,
    ))
}

/// `DELETE .../projects/{project}`.
pub async fn delete_project(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    core::delete_project(
        &state,
        &caller,
        ids::account(&account),
        ids::project(&project),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../projects/{project}/transcripts`: newest first.
pub async fn list_transcripts(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<TranscriptSummary>>> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    Ok(Json(
        core::list_transcripts(&state, &caller, a, p, &page).await?,
    ))
}

/// `GET .../projects/{project}/keys`.
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<ListedApiKey>>> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    Ok(Json(core::list_keys(&state, &caller, a, p, &page).await?))
}

/// `POST .../projects/{project}/keys`: the secret is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
    JsonBody(req): JsonBody<KeyInput>,
) -> MgmtResult<(StatusCode, Json<NewApiKey>)> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    let key = core::create_key(&state, &caller, a, p, &req).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// `DELETE .../keys/{key}`: revoked.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project, key)): Path<(String, String, String)>,
) -> MgmtResult<Json<ApiKeyView>> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    Ok(Json(core::revoke_key(&state, &caller, a, p, k).await?))
}

/// `PATCH .../keys/{key}`: rename and/or change scopes.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project, key)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<KeyUpdate>,
) -> MgmtResult<Json<ApiKeyView>> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    Ok(Json(
        core::update_key(&state, &caller, a, p, k, &req).await?,
    ))
}

/// `POST .../keys/{key}/reveal`.
pub async fn reveal_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project, key)): Path<(String, String, String)>,
) -> MgmtResult<Json<RevealedKey>> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    Ok(Json(core::reveal_key(&state, &caller, a, p, k).await?))
}

/// `POST .../keys/{key}/rotate`.
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project, key)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<RotateInput>,
) -> MgmtResult<(StatusCode, Json<Rotation>)> {
    let (a, p, k) = (
        ids::account(&account),
        ids::project(&project),
        ids::api_key(&key),
    );
    let rotation = core::rotate_key(&state, &caller, a, p, k, &req).await?;
    Ok((StatusCode::CREATED, Json(rotation)))
}
