//! JSON handlers for a project's webhook signing secret and for deleting one of its
//! transcripts ([`crate::manage::webhooks`], [`crate::manage::transcripts`]).

use super::principal::JsonBody;
use super::MgmtResult;
use crate::manage::webhooks::{self as core, RotateSecretInput, WebhookSecret};
use crate::manage::{ids, transcripts, Caller};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

/// `GET .../projects/{project}/webhook-secret`: after re-authentication; audited.
pub async fn reveal(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
) -> MgmtResult<Json<WebhookSecret>> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    Ok(Json(core::reveal(&state, &caller, a, p).await?))
}

/// `POST .../projects/{project}/webhook-secret/rotate` (body `{}` for the default overlap).
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project)): Path<(String, String)>,
    JsonBody(input): JsonBody<RotateSecretInput>,
) -> MgmtResult<(StatusCode, Json<WebhookSecret>)> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    let rotated = core::rotate(&state, &caller, a, p, &input).await?;
    Ok((StatusCode::CREATED, Json(rotated)))
}

/// `DELETE .../projects/{project}/transcripts/{transcript}`.
pub async fn delete_transcript(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, project, transcript)): Path<(String, String, String)>,
) -> MgmtResult<StatusCode> {
    transcripts::delete(
        &state,
        &caller,
        ids::account(&account),
        ids::project(&project),
        ids::transcript(&transcript),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
