//! Usage and spend (issue 11) in the management core: reports (one query shape:
//! range, granularity, group-by, filters) answered from the hourly, daily and monthly
//! rollups, as typed results the JSON API, the CSV export and the dashboard all
//! render; the credit balance ([`balance`]), alerts ([`alerts`]) and monthly
//! statements ([`statement`]). Each operation runs the permission check itself;
//! nothing here knows HTTP.

pub mod alerts;
pub mod balance;
pub mod statement;

use super::views::Instant;
use super::{authorize, Caller, Error, Result};
use crate::AppState;
use hark_core::clock::Millis;
use hark_core::money::{format_amount, PRODUCTS};
use hark_core::AccountId;
use hark_core::Permission;
use hark_store::{RollupBucket, RollupGroup, RollupQuery, Store, UsageTotals, DAY_MS, HOUR_MS};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// How long a usage write may stay uncommitted after it stamps its time: a report
/// claims completeness (`as_of`) only up to this long before it read.
pub const WRITE_GRACE_MS: Millis = 5_000;
/// The most buckets one report may hold.
pub const MAX_BUCKETS: usize = 2_000;
/// The most values of one repeatable filter.
pub const MAX_FILTER_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Product,
    Model,
    Project,
    ApiKey,
    /// The operator's report over every account (not a query parameter).
    Account,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Product => "product",
            GroupBy::Model => "model",
            GroupBy::Project => "project",
            GroupBy::ApiKey => "api_key",
            GroupBy::Account => "account",
        }
    }
    fn rollup(self) -> RollupGroup {
        match self {
            GroupBy::Account => RollupGroup::Account,
            GroupBy::Product => RollupGroup::Product,
            GroupBy::Model => RollupGroup::Model,
            GroupBy::Project => RollupGroup::Project,
            GroupBy::ApiKey => RollupGroup::ApiKey,
        }
    }
}

/// A validated report query: `[from, to)` on whole UTC hours.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    pub from: Millis,
    pub to: Millis,
    pub granularity: Granularity,
    pub group_by: Option<GroupBy>,
    pub projects: Vec<String>,
    pub api_keys: Vec<String>,
    pub models: Vec<String>,
    pub products: Vec<String>,
}

impl ReportInput {
    /// Reads `from`, `to`, `granularity`, `group_by` and the repeatable filters
    /// `project`, `api_key`, `model`, `product` from query pairs. Defaults: `to` the
    /// end of the current hour, `from` 30 days earlier, granularity `day`.
    pub fn from_pairs(pairs: &[(String, String)], now: Millis) -> Result<Self> {
        let mut input = ReportInput {
            from: 0,
            to: 0,
            granularity: Granularity::Day,
            group_by: None,
            projects: Vec::new(),
            api_keys: Vec::new(),
            models: Vec::new(),
            products: Vec::new(),
        };
        let (mut from, mut to) = (None, None);
        let mut seen = std::collections::HashSet::new();
        for (key, value) in pairs {
            let single = |seen: &mut std::collections::HashSet<String>| {
                if seen.insert(key.clone()) {
                    Ok(())
                } else {
                    Err(invalid(format!("{key} is given more than once")))
                }
            };
            match key.as_str() {
                "from" => {
                    single(&mut seen)?;
                    from = Some(parse_hour_instant("from", value)?);
                }
                "to" => {
                    single(&mut seen)?;
                    to = Some(parse_hour_instant("to", value)?);
                }
                "granularity" => {
                    single(&mut seen)?;
                    input.granularity = match value.as_str() {
                        "hour" => Granularity::Hour,
                        "day" => Granularity::Day,
                        "month" => Granularity::Month,
                        _ => {
                            return Err(invalid(format!(
                                "granularity '{value}' is not one of hour, day, month"
                            )))
                        }
                    }
                }
                "group_by" => {
                    single(&mut seen)?;
                    input.group_by = Some(match value.as_str() {
                        "product" => GroupBy::Product,
                        "model" => GroupBy::Model,
                        "project" => GroupBy::Project,
                        "api_key" => GroupBy::ApiKey,
                        _ => {
                            return Err(invalid(format!(
                                "group_by '{value}' is not one of product, model, project, api_key"
                            )))
                        }
                    })
                }
                "project" => push_filter(&mut input.projects, key, value)?,
                "api_key" => push_filter(&mut input.api_keys, key, value)?,
                "model" => push_filter(&mut input.models, key, value)?,
                "product" => {
                    if !PRODUCTS.contains(&value.as_str()) {
                        return Err(invalid(format!(
                            "product '{value}' is not one of {}",
                            PRODUCTS.join(", ")
                        )));
                    }
                    push_filter(&mut input.products, key, value)?
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter '{key}' (expected from, to, granularity, group_by, project, api_key, model, product)"
                    )))
                }
            }
        }
        let end_of_hour = now - now.rem_euclid(HOUR_MS) + HOUR_MS;
        input.to = to.unwrap_or(end_of_hour);
        input.from = from.unwrap_or(input.to - 30 * DAY_MS);
        if input.from >= input.to {
            return Err(invalid("from must be before to".into()));
        }
        let buckets = bucket_starts(input.from, input.to, input.granularity).len();
        if buckets > MAX_BUCKETS {
            return Err(invalid(format!(
                "the range holds {buckets} {} buckets; at most {MAX_BUCKETS} (use a coarser granularity or a shorter range)",
                input.granularity.as_str()
            )));
        }
        Ok(input)
    }
}

fn invalid(message: String) -> Error {
    Error::Invalid(message)
}

/// An instant as RFC 3339 text (UTC).
pub fn ts(ms: Millis) -> String {
    Instant(ms).rfc3339()
}

pub fn opt_ts(ms: Option<Millis>) -> Option<String> {
    ms.map(ts)
}

fn push_filter(list: &mut Vec<String>, key: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(format!("{key} must not be empty")));
    }
    if list.len() >= MAX_FILTER_VALUES {
        return Err(invalid(format!(
            "at most {MAX_FILTER_VALUES} values of {key}"
        )));
    }
    if !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
    Ok(())
}

/// An RFC 3339 instant (any offset) or a `YYYY-MM-DD` date (UTC midnight).
pub fn parse_instant(text: &str) -> std::result::Result<Millis, String> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        Date::parse(
            text,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map(|d| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc())
    });
    match parsed {
        Ok(t) => Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis),
        Err(_) => Err(format!(
            "'{text}' is not an ISO 8601 UTC time such as 2026-11-01T00:00:00Z or a date such as 2026-11-01"
        )),
    }
}

fn parse_hour_instant(name: &str, text: &str) -> Result<Millis> {
    let ms = parse_instant(text).map_err(|e| invalid(format!("{name}: {e}")))?;
    if ms.rem_euclid(HOUR_MS) != 0 {
        return Err(invalid(format!(
            "{name} must fall on a whole hour (usage is kept per hour)"
        )));
    }
    Ok(ms)
}

/// The calendar bucket holding `ms`.
pub fn bucket_of(ms: Millis, granularity: Granularity) -> (Millis, Millis) {
    match granularity {
        Granularity::Hour => {
            let s = ms - ms.rem_euclid(HOUR_MS);
            (s, s + HOUR_MS)
        }
        Granularity::Day => {
            let s = ms - ms.rem_euclid(DAY_MS);
            (s, s + DAY_MS)
        }
        Granularity::Month => hark_core::clock::month_bounds(ms),
    }
}

/// Every bucket start that overlaps `[from, to)`.
fn bucket_starts(from: Millis, to: Millis, granularity: Granularity) -> Vec<Millis> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to && out.len() <= MAX_BUCKETS {
        let (start, end) = bucket_of(at, granularity);
        out.push(start);
        at = end;
    }
    out
}

/// Sums over one group (or everything) in a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures(pub UsageTotals);

impl Serialize for Figures {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = &self.0;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("audio_seconds", &seconds_json(t.audio_ms))?;
        m.serialize_entry("session_seconds", &seconds_json(t.session_ms))?;
        m.serialize_entry("transcripts", &t.transcripts)?;
        m.serialize_entry("sessions", &t.sessions)?;
        m.serialize_entry("cost", &format_amount(t.cost))?;
        m.serialize_entry("cost_micros", &t.cost)?;
        m.end()
    }
}

/// The JSON shape of [`Figures`] (its schema; the values are written by hand, exactly).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct FiguresShape {
    /// Seconds of audio transcribed or streamed (exact to the millisecond).
    audio_seconds: f64,
    /// Seconds of streaming session time (what streaming is billed by).
    session_seconds: f64,
    transcripts: i64,
    sessions: i64,
    /// The cost as exact decimal text in the report's currency.
    cost: String,
    /// The cost in micro-units of the currency.
    cost_micros: i64,
}

impl JsonSchema for Figures {
    fn schema_name() -> String {
        "UsageFigures".into()
    }
    fn json_schema(g: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        FiguresShape::json_schema(g)
    }
}

/// Milliseconds as a JSON number of seconds, written from the exact decimal text.
fn seconds_json(ms: i64) -> serde_json::Number {
    seconds_text(ms)
        .parse::<serde_json::Number>()
        .unwrap_or_else(|_| serde_json::Number::from(ms / 1000))
}

/// Milliseconds as exact decimal seconds (`12500` is `12.5`).
pub fn seconds_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let frac = format!("{:03}", abs % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", abs / 1000)
    } else {
        format!("{sign}{}.{frac}", abs / 1000)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GroupFigures {
    /// The product, model name, project id or API key id.
    pub key: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(rename = "UsageBucket")]
pub struct Bucket {
    /// The calendar bucket's start and end (the first and last may extend past the range).
    #[serde(serialize_with = "ser_ts")]
    #[schemars(with = "Instant")]
    pub start: Millis,
    #[serde(serialize_with = "ser_ts")]
    #[schemars(with = "Instant")]
    pub end: Millis,
    /// Non-empty groups, by key; empty when the report is not grouped.
    pub groups: Vec<GroupFigures>,
    pub totals: Figures,
}

/// A usage and spend report.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UsageReport {
    pub account_id: String,
    #[serde(serialize_with = "ser_ts")]
    #[schemars(with = "Instant")]
    pub from: Millis,
    #[serde(serialize_with = "ser_ts")]
    #[schemars(with = "Instant")]
    pub to: Millis,
    pub granularity: Granularity,
    #[schemars(schema_with = "group_by_schema")]
    pub group_by: Option<GroupBy>,
    pub currency: String,
    /// Usage up to this instant is all counted; later usage may still arrive.
    #[serde(serialize_with = "ser_ts")]
    #[schemars(with = "Instant")]
    pub as_of: Millis,
    pub buckets: Vec<Bucket>,
    pub totals: Figures,
}

fn group_by_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let mut schema = match super::views::string_schema(
        None,
        Some(&["product", "model", "project", "api_key", "account"]),
    ) {
        schemars::schema::Schema::Object(o) => o,
        other => return other,
    };
    schema
        .extensions
        .insert("nullable".into(), serde_json::Value::Bool(true));
    schema.into()
}

fn ser_ts<S: serde::Serializer>(ms: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&ts(*ms))
}

/// The usage query of the API: `?from=&to=&granularity=&group_by=` and the repeatable
/// filters (for the OpenAPI document; the handler reads the raw pairs so that a filter
/// may repeat, through [`ReportInput::from_pairs`]).
#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
pub struct UsageQuery {
    /// Start, inclusive: an ISO 8601 UTC time on a whole hour, or a date. Default: `to` minus 30 days.
    pub from: Option<String>,
    /// End, exclusive: same form. Default: the end of the current hour.
    pub to: Option<String>,
    /// `hour`, `day` (default) or `month` (UTC calendar buckets).
    pub granularity: Option<Granularity>,
    /// `product`, `model`, `project` or `api_key`; absent for totals only.
    pub group_by: Option<String>,
    /// Only this project id (repeatable).
    pub project: Option<String>,
    /// Only this API key id (repeatable).
    pub api_key: Option<String>,
    /// Only this model (repeatable).
    pub model: Option<String>,
    /// Only `speech_to_text` or `streaming` (repeatable).
    pub product: Option<String>,
}

/// The usage report of `account` for the raw query pairs: anyone in the account may
/// view usage (Readers too).
pub async fn account_report(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    pairs: &[(String, String)],
) -> Result<UsageReport> {
    let auth = authorize(state, caller, account, Permission::ViewUsage).await?;
    let input = ReportInput::from_pairs(pairs, state.clock.now_ms())?;
    report(state, auth.account.id, &input).await
}

/// The report of `account` for `input`, from the rollups (no permission check: the
/// caller made it).
async fn report(state: &AppState, account: AccountId, input: &ReportInput) -> Result<UsageReport> {
    // Read the clock before the data: whatever committed by then is in the rows.
    let read_at = state.clock.now_ms();
    build_report(
        state.store.as_ref(),
        &state.config.billing.currency,
        Some(account),
        input,
        read_at,
    )
    .await
}

/// The operator's report (`hark admin usage`): one account, deleted or not, or every
/// account grouped by account (`account` `None`).
pub async fn operator_report(
    store: &dyn Store,
    currency: &str,
    account: Option<AccountId>,
    input: &ReportInput,
    read_at: Millis,
) -> Result<UsageReport> {
    let mut input = input.clone();
    if account.is_none() {
        input.group_by = Some(GroupBy::Account);
    }
    build_report(store, currency, account, &input, read_at).await
}

async fn build_report(
    store: &dyn Store,
    currency: &str,
    account: Option<AccountId>,
    input: &ReportInput,
    read_at: Millis,
) -> Result<UsageReport> {
    let rows = store
        .usage_rollup(&RollupQuery {
            account,
            from: input.from,
            to: input.to,
            bucket: match input.granularity {
                Granularity::Hour => RollupBucket::Hour,
                Granularity::Day => RollupBucket::Day,
                Granularity::Month => RollupBucket::Month,
            },
            group_by: input.group_by.map(GroupBy::rollup),
            projects: input.projects.clone(),
            api_keys: input.api_keys.clone(),
            products: input.products.clone(),
            models: input.models.clone(),
        })
        .await?;
    let mut buckets: BTreeMap<Millis, (Millis, BTreeMap<String, UsageTotals>)> =
        bucket_starts(input.from, input.to, input.granularity)
            .into_iter()
            .map(|s| (s, (bucket_of(s, input.granularity).1, BTreeMap::new())))
            .collect();
    for row in rows {
        let (start, end) = bucket_of(row.bucket, input.granularity);
        let entry = buckets.entry(start).or_insert((end, BTreeMap::new()));
        entry.1.entry(row.group).or_default().add(&row.totals);
    }
    let mut totals = UsageTotals::default();
    let buckets = buckets
        .into_iter()
        .map(|(start, (end, groups))| {
            let mut bucket_totals = UsageTotals::default();
            for g in groups.values() {
                bucket_totals.add(g);
            }
            totals.add(&bucket_totals);
            Bucket {
                start,
                end,
                groups: if input.group_by.is_some() {
                    groups
                        .into_iter()
                        .map(|(key, t)| GroupFigures {
                            key,
                            figures: Figures(t),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                totals: Figures(bucket_totals),
            }
        })
        .collect();
    Ok(UsageReport {
        account_id: account.map(|a| a.to_string()).unwrap_or_else(|| "*".into()),
        from: input.from,
        to: input.to,
        granularity: input.granularity,
        group_by: input.group_by,
        currency: currency.to_string(),
        as_of: as_of(read_at, input.from, input.to),
        buckets,
        totals: Figures(totals),
    })
}

/// The instant up to which a report read at `read_at` over `[from, to)` is complete.
pub fn as_of(read_at: Millis, from: Millis, to: Millis) -> Millis {
    (read_at - WRITE_GRACE_MS).min(to).max(from)
}

/// The report as CSV: one row per bucket and group (per bucket when not grouped),
/// empty buckets included, amounts as exact decimal text.
pub fn report_csv(report: &UsageReport) -> String {
    let mut out = String::from(
        "bucket_start,bucket_end,group,audio_seconds,session_seconds,transcripts,sessions,cost,currency\n",
    );
    let mut line = |b: &Bucket, key: &str, f: &Figures| {
        let t = &f.0;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            ts(b.start),
            ts(b.end),
            csv_field(key),
            seconds_text(t.audio_ms),
            seconds_text(t.session_ms),
            t.transcripts,
            t.sessions,
            format_amount(t.cost),
            csv_field(&report.currency),
        ));
    };
    for b in &report.buckets {
        if report.group_by.is_some() {
            for g in &b.groups {
                line(b, &g.key, &g.figures);
            }
        } else {
            line(b, "", &b.totals);
        }
    }
    out
}

/// A CSV field, quoted when it holds a delimiter, and with a leading formula
/// character neutralised (spreadsheets would run it).
pub fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    const NOW: Millis = 1_800_000_000_000; // 2027-01-15T08:00:00Z

    #[test]
    fn parses_a_full_query() {
        let q = ReportInput::from_pairs(
            &pairs("from=2026-11-01&to=2026-12-01T00:00:00Z&granularity=hour&group_by=api_key&product=streaming&model=a&model=b&model=a"),
            NOW,
        )
        .unwrap();
        assert_eq!(q.from, parse_instant("2026-11-01T00:00:00Z").unwrap());
        assert_eq!(q.to - q.from, 30 * DAY_MS);
        assert_eq!(q.granularity, Granularity::Hour);
        assert_eq!(q.group_by, Some(GroupBy::ApiKey));
        assert_eq!(q.models, vec!["a", "b"]);
        assert_eq!(q.products, vec!["streaming"]);
    }

    #[test]
    fn refuses_bad_parameters_with_reasons() {
        for (q, needle) in [
            ("from=yesterday", "not an ISO 8601"),
            ("from=2026-11-01T00:30:00Z", "whole hour"),
            ("from=2026-11-02&to=2026-11-01", "before"),
            ("granularity=week", "granularity"),
            ("group_by=user", "group_by"),
            ("product=llm", "product"),
            ("colour=red", "unknown parameter"),
            ("from=2026-11-01&from=2026-11-02", "more than once"),
            ("from=2020-01-01&to=2026-01-01&granularity=hour", "buckets"),
            ("project=", "empty"),
        ] {
            let err = ReportInput::from_pairs(&pairs(q), NOW).unwrap_err();
            assert!(err.to_string().contains(needle), "{q}: {err}");
        }
    }

    #[test]
    fn month_buckets_follow_the_calendar() {
        let from = parse_instant("2026-12-15").unwrap();
        let to = parse_instant("2027-03-01").unwrap();
        let starts = bucket_starts(from, to, Granularity::Month);
        assert_eq!(
            starts,
            vec![
                parse_instant("2026-12-01").unwrap(),
                parse_instant("2027-01-01").unwrap(),
                parse_instant("2027-02-01").unwrap(),
            ]
        );
        assert_eq!(
            bucket_of(parse_instant("2027-02-10").unwrap(), Granularity::Month).1,
            to
        );
    }

    #[test]
    fn as_of_never_passes_the_read_or_the_range() {
        assert_eq!(as_of(NOW, 0, NOW + HOUR_MS), NOW - WRITE_GRACE_MS);
        assert_eq!(as_of(NOW, 0, NOW - DAY_MS), NOW - DAY_MS);
        assert_eq!(as_of(NOW, NOW, NOW + HOUR_MS), NOW);
    }

    #[test]
    fn seconds_and_csv_fields_are_exact_and_safe() {
        assert_eq!(seconds_text(12_500), "12.5");
        assert_eq!(seconds_text(1), "0.001");
        assert_eq!(seconds_text(3_000), "3");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
