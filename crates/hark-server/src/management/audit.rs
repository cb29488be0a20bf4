//! JSON handlers for the audit log (a page, or every entry as NDJSON)
//! ([`crate::manage::audit`]).

use super::principal::QueryParams;
use super::MgmtResult;
use crate::manage::audit::{self as core, AuditQuery};
use crate::manage::views::{AuditEntryView, Page};
use crate::manage::{ids, Caller};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// `GET /api/v1/accounts/{account}/audit`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> MgmtResult<Json<Page<AuditEntryView>>> {
    Ok(Json(
        core::list(&state, &caller, ids::account(&account), &q).await?,
    ))
}

/// `GET /api/v1/accounts/{account}/audit/export`: every matching entry as NDJSON.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> MgmtResult<Response> {
    let entries = core::export(&state, &caller, ids::account(&account), &q).await?;
    let out = core::to_ndjson(&entries)?;
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}
