//! Monthly billing statements: for one UTC calendar month, the opening balance, line
//! items by product, model and project, the credits, and the closing balance, as the
//! data a JSON answer, a CSV file and a printable page need. A closed month's
//! statement is frozen the first time it is generated and never changes.
//! Owners and Admins only (the billing permission); the operator's CLI reads them too.

use super::ts;
use super::{csv_field, seconds_text, WRITE_GRACE_MS};
use crate::manage::{authorize, Caller};
use crate::manage::{Error, Result};
use crate::AppState;
use hark_core::clock::{month_bounds, Millis};
use hark_core::money::{format_amount, STREAMING};
use hark_core::{AccountId, Permission};
use hark_store::{RollupBucket, RollupQuery, Store};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    pub product: String,
    pub model: String,
    pub project_id: String,
    /// The project's name when the statement was made (absent once deleted).
    pub project_name: Option<String>,
    /// What is billed: `audio_hour` (speech-to-text) or `session_hour` (streaming).
    pub unit: String,
    /// Billed seconds (audio or session), exact decimal text.
    pub quantity_seconds: String,
    pub transcripts: i64,
    pub sessions: i64,
    pub amount: String,
    pub amount_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreditLine {
    pub created_at: String,
    pub kind: String,
    pub note: String,
    pub amount: String,
    pub amount_micros: i64,
}

/// One month's statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Statement {
    pub account_id: String,
    pub account_name: Option<String>,
    /// `YYYY-MM`.
    pub month: String,
    pub period_start: String,
    pub period_end: String,
    /// `closed` (final, frozen) or `open` (the month is not over; figures grow).
    pub status: String,
    pub currency: String,
    pub opening_balance: String,
    pub line_items: Vec<LineItem>,
    pub usage_total: String,
    pub credits: Vec<CreditLine>,
    pub credits_total: String,
    pub closing_balance: String,
}

/// A statement as served: the frozen (or provisional) document, and where it is billed.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedStatement {
    pub statement: Statement,
    /// The statement exactly as stored (JSON), byte-identical on every request.
    pub document: String,
    /// The Owner's email (looked up when shown; none once the account is deleted).
    pub billing_email: Option<String>,
}

/// The months with a statement, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatementMonths {
    /// `YYYY-MM`.
    pub months: Vec<String>,
}

/// A statement as the API answers it (`statement` exactly as frozen).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatementDocument {
    /// The Owner's email, looked up when shown (absent once the account is deleted).
    pub billing_email: Option<String>,
    pub statement: Statement,
}

/// The months the caller's account has statements for (Owners and Admins).
pub async fn account_months(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
) -> Result<StatementMonths> {
    let auth = authorize(state, caller, account, Permission::ManageBilling).await?;
    Ok(StatementMonths {
        months: months(state.store.as_ref(), auth.account.id, state.clock.now_ms()).await?,
    })
}

/// The statement of `month` (`YYYY-MM`) of the caller's account (Owners and Admins).
pub async fn account_statement(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    month: &str,
) -> Result<IssuedStatement> {
    let auth = authorize(state, caller, account, Permission::ManageBilling).await?;
    let start = parse_month(month)?;
    statement(
        state.store.as_ref(),
        &state.config.billing.currency,
        auth.account.id,
        start,
        state.clock.now_ms(),
    )
    .await
}

/// Parses `YYYY-MM` to the month's start.
pub fn parse_month(text: &str) -> Result<Millis> {
    let bad = || Error::Invalid(format!("'{text}' is not a month such as 2026-11"));
    let (y, m) = text.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, 1).map_err(|_| bad())?;
    let at = time::PrimitiveDateTime::new(date, time::Time::MIDNIGHT).assume_utc();
    Ok((at.unix_timestamp_nanos() / 1_000_000) as Millis)
}

fn month_label(start: Millis) -> String {
    let t = hark_core::clock::from_millis(start);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// The statement of the month starting at `month_start`; frozen when closed.
pub async fn statement(
    store: &dyn Store,
    currency: &str,
    account: AccountId,
    month_start: Millis,
    now: Millis,
) -> Result<IssuedStatement> {
    let (start, end) = month_bounds(month_start);
    if start != month_start {
        return Err(Error::Invalid("a statement covers a whole month".into()));
    }
    if start > now {
        return Err(Error::Invalid("that month has not begun".into()));
    }
    let billing_email = store.owner_email(account).await?;
    let closed = end + WRITE_GRACE_MS <= now;
    if closed {
        if let Some(document) = store.frozen_statement(account, start).await? {
            return issued(document, billing_email);
        }
    }
    let account_row = store.get_account(account).await?;
    let projects: HashMap<String, String> = match &account_row {
        Some(_) => store
            .list_projects(account)
            .await?
            .into_iter()
            .map(|p| (p.id.to_string(), p.name))
            .collect(),
        None => HashMap::new(),
    };
    let before = store
        .usage_rollup(&RollupQuery {
            account: Some(account),
            from: 0,
            to: start,
            // Whole months: read from the monthly rollup.
            bucket: RollupBucket::Month,
            group_by: None,
            projects: vec![],
            api_keys: vec![],
            products: vec![],
            models: vec![],
        })
        .await?;
    let cost_before: i64 = before.iter().map(|r| r.totals.cost).sum();
    let credits = store.credits(account).await?;
    let credits_before: i64 = credits
        .iter()
        .filter(|c| c.created_at < start)
        .map(|c| c.amount)
        .sum();
    let opening = credits_before - cost_before;
    let lines = store.usage_lines(account, start, end).await?;
    let usage_total: i64 = lines.iter().map(|l| l.totals.cost).sum();
    let month_credits: Vec<CreditLine> = credits
        .iter()
        .filter(|c| c.created_at >= start && c.created_at < end)
        .map(|c| CreditLine {
            created_at: ts(c.created_at),
            kind: c.kind.clone(),
            note: c.note.clone(),
            amount: format_amount(c.amount),
            amount_micros: c.amount,
        })
        .collect();
    let credits_total: i64 = month_credits.iter().map(|c| c.amount_micros).sum();
    let statement = Statement {
        account_id: account.to_string(),
        account_name: account_row.map(|a| a.name),
        month: month_label(start),
        period_start: ts(start),
        period_end: ts(end),
        status: if closed { "closed" } else { "open" }.into(),
        currency: currency.to_string(),
        opening_balance: format_amount(opening),
        line_items: lines
            .iter()
            .map(|l| {
                let streaming = l.product == STREAMING;
                LineItem {
                    product: l.product.clone(),
                    model: l.model.clone(),
                    project_id: l.project_id.clone(),
                    project_name: projects.get(&l.project_id).cloned(),
                    unit: if streaming {
                        "session_hour"
                    } else {
                        "audio_hour"
                    }
                    .into(),
                    quantity_seconds: seconds_text(if streaming {
                        l.totals.session_ms
                    } else {
                        l.totals.audio_ms
                    }),
                    transcripts: l.totals.transcripts,
                    sessions: l.totals.sessions,
                    amount: format_amount(l.totals.cost),
                    amount_micros: l.totals.cost,
                }
            })
            .collect(),
        usage_total: format_amount(usage_total),
        credits: month_credits,
        credits_total: format_amount(credits_total),
        closing_balance: format_amount(opening + credits_total - usage_total),
    };
    let document = serde_json::to_string(&statement).map_err(Error::internal)?;
    let document = if closed {
        // Of two first generations racing, both answer with the one stored.
        store.freeze_statement(account, start, &document).await?
    } else {
        document
    };
    issued(document, billing_email)
}

fn issued(document: String, billing_email: Option<String>) -> Result<IssuedStatement> {
    let statement: Statement = serde_json::from_str(&document).map_err(Error::internal)?;
    Ok(IssuedStatement {
        statement,
        document,
        billing_email,
    })
}

/// The months an account can have statements for: from its first usage or credit
/// (or creation) to the current month, newest first.
pub async fn months(store: &dyn Store, account: AccountId, now: Millis) -> Result<Vec<String>> {
    let mut first = store
        .get_account(account)
        .await?
        .map(|a| a.created_at)
        .unwrap_or(now);
    if let Some(c) = store.credits(account).await?.first() {
        first = first.min(c.created_at);
    }
    let mut out = Vec::new();
    let mut at = month_bounds(now).0;
    let stop = month_bounds(first).0;
    while at >= stop && out.len() < 600 {
        out.push(month_label(at));
        at = month_bounds(at - 1).0;
    }
    Ok(out)
}

/// The statement as CSV: line items, credits and totals in one table.
pub fn statement_csv(issued: &IssuedStatement) -> String {
    let s = &issued.statement;
    let mut out = String::from(
        "section,product,model,project_id,project_name,unit,quantity_seconds,transcripts,sessions,date,note,amount,currency\n",
    );
    let cur = csv_field(&s.currency);
    for l in &s.line_items {
        out.push_str(&format!(
            "usage,{},{},{},{},{},{},{},{},,,{},{cur}\n",
            csv_field(&l.product),
            csv_field(&l.model),
            csv_field(&l.project_id),
            csv_field(l.project_name.as_deref().unwrap_or("")),
            l.unit,
            l.quantity_seconds,
            l.transcripts,
            l.sessions,
            l.amount
        ));
    }
    for c in &s.credits {
        out.push_str(&format!(
            "credit,,,,,,,,,{},{},{},{cur}\n",
            c.created_at,
            csv_field(&format!("{}: {}", c.kind, c.note)),
            c.amount
        ));
    }
    for (label, amount) in [
        ("opening_balance", &s.opening_balance),
        ("usage_total", &s.usage_total),
        ("credits_total", &s.credits_total),
        ("closing_balance", &s.closing_balance),
    ] {
        out.push_str(&format!("{label},,,,,,,,,,{},{amount},{cur}\n", s.month));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        assert_eq!(
            parse_month("2027-01").unwrap(),
            super::super::parse_instant("2027-01-01").unwrap()
        );
        for bad in ["2027-13", "2027-1", "27-01", "2027/01", "january"] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
        assert_eq!(month_label(parse_month("2026-11").unwrap()), "2026-11");
    }
}
