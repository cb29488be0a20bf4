//! The account's audit log for Owners and Admins (filters, cursor pagination, NDJSON
//! export).

use super::principal::{authorize, QueryParams, UserCtx};
use super::{ts, MgmtError, MgmtResult, DEFAULT_PAGE, MAX_PAGE};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hark_core::Permission;
use hark_store::{AuditEntry, AuditFilter};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Entries whose action starts with this (e.g. `api_key.` or `member.remove`).
    pub action: Option<String>,
    /// Exact actor label (e.g. `user:<id>`, `operator`).
    pub actor: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    pub limit: Option<u32>,
    /// The `seq` after which to continue.
    pub cursor: Option<String>,
}

impl AuditQuery {
    fn filter(&self, limit: u32) -> MgmtResult<AuditFilter> {
        let after_seq = match &self.cursor {
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| MgmtError::Invalid("cursor is not valid".into()))?,
            ),
            None => None,
        };
        if self.action.as_ref().is_some_and(|a| a.len() > 100) {
            return Err(MgmtError::Invalid("action filter is too long".into()));
        }
        Ok(AuditFilter {
            action_prefix: self.action.clone().filter(|a| !a.is_empty()),
            actor: self.actor.clone().filter(|a| !a.is_empty()),
            since: self.since,
            until: self.until,
            after_seq,
            limit,
        })
    }
}

fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq, "actor": e.actor, "action": e.action, "target": e.target,
        "details": e.details, "created_at": ts(e.created_at), "hash": e.hash,
    })
}

/// `GET /api/v1/accounts/{account}/audit`.
pub async fn list(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewAuditLog).await?;
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(MgmtError::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )))
        }
    };
    let mut rows = state
        .store
        .audit_query(auth.account.id, &q.filter(limit + 1)?)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(json!({
        "data": rows.iter().map(entry_json).collect::<Vec<_>>(),
        "has_more": has_more,
        "next_cursor": next_cursor,
    })))
}

/// `GET /api/v1/accounts/{account}/audit/export`: every matching entry as NDJSON.
pub async fn export(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> MgmtResult<Response> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewAuditLog).await?;
    let mut filter = q.filter(1000)?;
    let mut out = String::new();
    loop {
        let rows = state.store.audit_query(auth.account.id, &filter).await?;
        for e in &rows {
            out.push_str(&entry_json(e).to_string());
            out.push('\n');
        }
        match rows.last() {
            Some(last) if rows.len() == 1000 => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}
