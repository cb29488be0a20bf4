//! The account's audit log for Owners and Admins (filters, cursor pagination, export
//! of every matching entry).

use super::views::{AuditEntryView, Page};
use super::{authorize, Caller, Error, Result, DEFAULT_PAGE, MAX_PAGE};
use crate::AppState;
use hark_core::{AccountId, Permission};
use hark_store::AuditFilter;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
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
    fn filter(&self, limit: u32) -> Result<AuditFilter> {
        let after_seq = match &self.cursor {
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| Error::Invalid("cursor is not valid".into()))?,
            ),
            None => None,
        };
        if self.action.as_ref().is_some_and(|a| a.len() > 100) {
            return Err(Error::Invalid("action filter is too long".into()));
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

/// One page of the audit log, oldest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Page<AuditEntryView>> {
    let auth = authorize(state, caller, account, Permission::ViewAuditLog).await?;
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(Error::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )))
        }
    };
    let mut rows = state
        .store
        .audit_query(auth.account.id, &query.filter(limit + 1)?)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Page {
        data: rows.iter().map(AuditEntryView::from).collect(),
        has_more,
        next_cursor,
    })
}

/// Every entry matching the query (the limit and cursor ignored), oldest first,
/// fetched from the store a thousand at a time.
pub async fn export(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Vec<AuditEntryView>> {
    const BATCH: u32 = 1000;
    let auth = authorize(state, caller, account, Permission::ViewAuditLog).await?;
    let mut filter = query.filter(BATCH)?;
    let mut out = Vec::new();
    loop {
        let rows = state.store.audit_query(auth.account.id, &filter).await?;
        out.extend(rows.iter().map(AuditEntryView::from));
        match rows.last() {
            Some(last) if rows.len() == BATCH as usize => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok(out)
}
