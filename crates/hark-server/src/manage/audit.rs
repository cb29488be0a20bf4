//! The account's audit log for Owners and Admins (filters, cursor pagination, export
//! of every matching entry).

use super::views::{AuditEntryView, Page};
use super::{authorize, Caller, Error, Result, DEFAULT_PAGE, MAX_PAGE};
use crate::AppState;
use hark_core::{AccountId, Permission};
use hark_store::{Actor, AuditFilter};
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct AuditQuery {
    /// Entries whose action starts with this (e.g. `api_key.` or `member.remove`).
    pub action: Option<String>,
    /// Exact actor label (e.g. `user:<id>`, `operator`), or a member's email.
    pub actor: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    /// 1 to 200 (`MAX_PAGE`); 50 when absent.
    #[schemars(range(min = 1, max = 200))]
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

/// An actor filter given as an email names the member with that email
/// (`user:<id>`); an email of no member matches nothing.
async fn resolve_actor(
    state: &AppState,
    account: AccountId,
    query: &AuditQuery,
) -> Result<AuditQuery> {
    let mut q = query.clone();
    if let Some(actor) = q
        .actor
        .as_deref()
        .map(str::trim)
        .filter(|a| a.contains('@'))
    {
        let email = actor.to_lowercase();
        let member = state
            .store
            .member_list(account)
            .await?
            .into_iter()
            .find(|m| m.email.to_lowercase() == email);
        q.actor = Some(match member {
            Some(m) => Actor::User(m.user_id).label(),
            None => format!("email:{email}"),
        });
    }
    Ok(q)
}

/// One page of the audit log, oldest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Page<AuditEntryView>> {
    let auth = authorize(state, caller, account, Permission::ViewAuditLog).await?;
    let query = &resolve_actor(state, auth.account.id, query).await?;
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

/// A page of the audit log as a person reads it: the actors who are members of the
/// account named by their email.
#[derive(Debug)]
pub struct AuditPage {
    pub entries: Page<AuditEntryView>,
    /// Actor label (`user:<id>`) to the member's email.
    pub actor_emails: HashMap<String, String>,
}

/// [`list`], with the members' emails for the actors.
pub async fn browse(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    query: &AuditQuery,
) -> Result<AuditPage> {
    let entries = list(state, caller, account, query).await?;
    let actor_emails = state
        .store
        .member_list(account)
        .await?
        .into_iter()
        .map(|m| (Actor::User(m.user_id).label(), m.email))
        .collect();
    Ok(AuditPage {
        entries,
        actor_emails,
    })
}

/// The most entries one export holds; a query matching more is refused (narrow its
/// date range or action), so an export stays bounded in memory.
pub const MAX_EXPORT_ENTRIES: usize = 100_000;

/// Every entry matching the query (the limit and cursor ignored), oldest first,
/// fetched from the store a thousand at a time; at most [`MAX_EXPORT_ENTRIES`].
pub async fn export(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Vec<AuditEntryView>> {
    const BATCH: u32 = 1000;
    let auth = authorize(state, caller, account, Permission::ViewAuditLog).await?;
    let mut filter = resolve_actor(state, auth.account.id, query)
        .await?
        .filter(BATCH)?;
    let mut out = Vec::new();
    loop {
        let rows = state.store.audit_query(auth.account.id, &filter).await?;
        out.extend(rows.iter().map(AuditEntryView::from));
        if out.len() > MAX_EXPORT_ENTRIES {
            return Err(Error::Invalid(format!(
                "more than {MAX_EXPORT_ENTRIES} entries match: narrow the date range or the action"
            )));
        }
        match rows.last() {
            Some(last) if rows.len() == BATCH as usize => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok(out)
}

/// Entries as NDJSON: one JSON object per line.
pub fn to_ndjson(entries: &[AuditEntryView]) -> Result<String> {
    let mut out = String::new();
    for e in entries {
        out.push_str(&serde_json::to_string(e).map_err(Error::internal)?);
        out.push('\n');
    }
    Ok(out)
}

/// The CSV export's columns, in order.
pub const CSV_HEADER: [&str; 7] = [
    "seq",
    "created_at",
    "actor",
    "action",
    "target",
    "details",
    "hash",
];

/// Entries as CSV (RFC 4180: a header row, CRLF line ends, fields quoted when they hold
/// a comma, quote or line break, quotes doubled). A text field that a spreadsheet would
/// take for a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`.
pub fn to_csv(entries: &[AuditEntryView]) -> Result<String> {
    let mut out = String::new();
    push_csv_row(&mut out, CSV_HEADER.iter().map(|h| h.to_string()));
    for e in entries {
        let details = serde_json::to_string(&e.details).map_err(Error::internal)?;
        push_csv_row(
            &mut out,
            [
                e.seq.to_string(),
                e.created_at.rfc3339(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                details,
                e.hash.clone(),
            ]
            .into_iter(),
        );
    }
    Ok(out)
}

fn push_csv_row(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{field}")
        } else {
            field
        };
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::views::Instant;

    fn entry(actor: &str, details: serde_json::Value) -> AuditEntryView {
        AuditEntryView {
            seq: 7,
            actor: actor.into(),
            action: "project.rename".into(),
            target: "p".into(),
            details,
            created_at: Instant(0),
            hash: "h".into(),
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let csv = to_csv(&[
            entry("user:a", serde_json::json!({"name": "a,\"b\""})),
            entry("=cmd()", serde_json::json!(null)),
        ])
        .unwrap();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "seq,created_at,actor,action,target,details,hash");
        assert_eq!(
            lines[1],
            r#"7,1970-01-01T00:00:00Z,user:a,project.rename,p,"{""name"":""a,\""b\""""}",h"#
        );
        assert_eq!(
            lines[2],
            "7,1970-01-01T00:00:00Z,'=cmd(),project.rename,p,null,h"
        );
        assert_eq!(lines[3], "");
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let out = to_ndjson(&[
            entry("operator", serde_json::json!({})),
            entry("system", serde_json::json!(1)),
        ])
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["actor"], "system");
    }
}
