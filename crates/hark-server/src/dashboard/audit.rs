//! An account's Audit log: filters by action, actor and date range (all in the URL, a
//! GET form), cursor pages, and the same filtered query downloaded as NDJSON or CSV.

use super::transcripts::when;
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::audit::{self as core, AuditQuery};
use crate::manage::{authorize, ids, Error};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use hark_core::Permission;
use serde::Deserialize;
use time::macros::format_description;

/// The page's query: what the filter form sends.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditForm {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub actor: String,
    /// `YYYY-MM-DD`, from the start of that day (UTC).
    #[serde(default)]
    pub since: String,
    /// `YYYY-MM-DD`, to the end of that day (UTC).
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub cursor: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

fn day_start(field: &str, raw: &str) -> Result<Option<i64>, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let date = time::Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .map_err(|_| Error::Invalid(format!("{field} must be a date such as 2026-01-31")))?;
    let at = date.midnight().assume_utc().unix_timestamp() * 1000;
    Ok(Some(at))
}

impl AuditForm {
    /// The core's query: dates to Unix milliseconds (the `until` day included).
    pub fn query(&self) -> Result<AuditQuery, Error> {
        let trim = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(AuditQuery {
            action: trim(&self.action),
            actor: trim(&self.actor),
            since: day_start("From", &self.since)?,
            until: day_start("To", &self.until)?.map(|d| d + DAY_MS),
            limit: None,
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }

    /// The query string of these filters (without the cursor).
    fn filters(&self) -> String {
        self.query_string(false)
    }

    fn query_string(&self, with_cursor: bool) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("action", self.action.as_str()),
            ("actor", self.actor.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
        ] {
            if !value.trim().is_empty() {
                out.append_pair(name, value.trim());
            }
        }
        if let (true, Some(c)) = (with_cursor, &self.cursor) {
            out.append_pair("cursor", c);
        }
        out.finish()
    }
}

pub struct EntryRow {
    pub seq: i64,
    pub when: String,
    pub actor: String,
    pub actor_href: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPageView {
    pub chrome: Chrome,
    pub action: String,
    pub form: AuditForm,
    pub rows: Vec<EntryRow>,
    pub error: Option<String>,
    pub first_href: Option<String>,
    pub next_href: Option<String>,
    pub ndjson_href: String,
    pub csv_href: String,
}

/// Actions a filter can start from (the datalist of the action field).
pub const ACTION_HINTS: &[&str] = &[
    "account.",
    "api_key.",
    "api_key.reveal",
    "member.",
    "invite.",
    "project.",
    "transcript.delete",
    "user.",
    "user.login",
    "webhook_secret.",
];

/// `GET /accounts/{account}/audit`.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(form): Query<AuditForm>,
) -> DashResult<Response> {
    let auth = authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::ViewAuditLog,
    )
    .await?;
    let base = format!("/accounts/{}/audit", auth.account.id);
    let filters = form.filters();
    let with = |path: &str| {
        if filters.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{filters}")
        }
    };
    let (rows, next, error) = match form.query() {
        Err(e) => (Vec::new(), None, Some(super::error::human_message(&e))),
        Ok(q) => {
            let got = core::browse(&state, &me.caller(), auth.account.id, &q).await;
            match got {
                Err(e @ Error::Invalid(_)) => {
                    (Vec::new(), None, Some(super::error::human_message(&e)))
                }
                Err(e) => return Err(e.into()),
                Ok(p) => {
                    let rows = p
                        .entries
                        .data
                        .iter()
                        .map(|e| EntryRow {
                            seq: e.seq,
                            when: when(e.created_at),
                            actor: p
                                .actor_emails
                                .get(&e.actor)
                                .cloned()
                                .unwrap_or_else(|| e.actor.clone()),
                            actor_href: {
                                let mut f = form.clone();
                                f.actor = e.actor.clone();
                                format!("{base}?{}", f.filters())
                            },
                            action: e.action.clone(),
                            target: e.target.clone(),
                            details: if e.details.is_null() {
                                String::new()
                            } else {
                                e.details.to_string()
                            },
                        })
                        .collect();
                    let next = p.entries.next_cursor.map(|c| {
                        let mut f = form.clone();
                        f.cursor = Some(c);
                        format!("{base}?{}", f.query_string(true))
                    });
                    (rows, next, None)
                }
            }
        }
    };
    let view = AuditPageView {
        chrome: Chrome::signed_in(&state, &me, &token, "Audit log")
            .await?
            .in_account(&auth.account, auth.role, "/audit"),
        action: base.clone(),
        first_href: form.cursor.as_ref().map(|_| with(&base)),
        next_href: next,
        ndjson_href: with(&format!("{base}/export.ndjson")),
        csv_href: with(&format!("{base}/export.csv")),
        form,
        rows,
        error,
    };
    Ok(Html(view.render()?).into_response())
}

async fn export(
    state: &AppState,
    me: &Me,
    account: &str,
    form: &AuditForm,
) -> DashResult<Vec<crate::manage::views::AuditEntryView>> {
    let mut q = form.query()?;
    q.cursor = None;
    Ok(core::export(state, &me.caller(), ids::account(account), &q).await?)
}

fn attachment(account: &str, ext: &str, content_type: &str, body: String) -> Response {
    (
        [
            (CONTENT_TYPE, content_type.to_string()),
            (
                CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"audit-{}.{ext}\"",
                    ids::account(account)
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /accounts/{account}/audit/export.ndjson`: every entry the filters match.
pub async fn export_ndjson(
    State(state): State<AppState>,
    me: Me,
    Path(account): Path<String>,
    Query(form): Query<AuditForm>,
) -> DashResult<Response> {
    let entries = export(&state, &me, &account, &form).await?;
    let body = core::to_ndjson(&entries)?;
    Ok(attachment(&account, "ndjson", "application/x-ndjson", body))
}

/// `GET /accounts/{account}/audit/export.csv`: the same as CSV.
pub async fn export_csv(
    State(state): State<AppState>,
    me: Me,
    Path(account): Path<String>,
    Query(form): Query<AuditForm>,
) -> DashResult<Response> {
    let entries = export(&state, &me, &account, &form).await?;
    let body = core::to_csv(&entries)?;
    Ok(attachment(&account, "csv", "text/csv; charset=utf-8", body))
}

impl AuditPageView {
    fn action_hints() -> &'static [&'static str] {
        ACTION_HINTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days() {
        let f = AuditForm {
            since: "2026-01-31".into(),
            until: "2026-01-31".into(),
            ..AuditForm::default()
        };
        let q = f.query().unwrap();
        assert_eq!(q.since, Some(1_769_817_600_000));
        assert_eq!(q.until, Some(1_769_817_600_000 + DAY_MS));
        let bad = AuditForm {
            since: "31/01/2026".into(),
            ..AuditForm::default()
        };
        assert!(bad.query().is_err());
    }
}
