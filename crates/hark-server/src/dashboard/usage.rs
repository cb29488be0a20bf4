//! The Usage page: usage and spend of the account over a range (presets or custom),
//! by hour, day or month, grouped and filtered as the reports API allows, drawn as a
//! stacked bar chart (SVG made here, on the server) with the same figures in a table
//! under it and "Download CSV" of the same query. Every choice lives in the URL.

use super::forms::{duration, when};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::usage::{account_report, seconds_text, Bucket, UsageReport};
use crate::manage::{authorize, ids};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use hark_core::money::{format_amount, PRODUCTS};
use hark_core::Permission;
use std::collections::BTreeMap;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The chart's drawing area, in SVG user units.
const CHART_W: f64 = 720.0;
const CHART_H: f64 = 220.0;
/// Distinct series colours (classes `.s0`..`.s7` in app.css); more groups share them.
const SERIES: usize = 8;

/// The range presets, as (value, label).
const PRESETS: [(&str, &str); 6] = [
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("this_month", "This month"),
    ("last_month", "Last month"),
    ("custom", "Custom"),
];

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn choices(options: &[(&str, &str)], current: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|(v, l)| Choice {
            value: v.to_string(),
            label: l.to_string(),
            selected: *v == current,
        })
        .collect()
}

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub class: String,
    pub title: String,
}

pub struct Legend {
    pub class: String,
    pub label: String,
}

pub struct Row {
    pub bucket: String,
    pub group: String,
    pub audio: String,
    pub session: String,
    pub transcripts: i64,
    pub sessions: i64,
    pub cost: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
pub struct UsagePage {
    pub chrome: Chrome,
    pub action: String,
    pub ranges: Vec<Choice>,
    pub granularities: Vec<Choice>,
    pub groupings: Vec<Choice>,
    pub products: Vec<Choice>,
    pub projects: Vec<Choice>,
    pub custom: bool,
    pub from_date: String,
    pub to_date: String,
    pub updated: String,
    pub currency: String,
    pub total_cost: String,
    pub total_audio: String,
    pub total_session: String,
    pub bars: Vec<Bar>,
    pub legend: Vec<Legend>,
    pub axis_max: String,
    pub rows: Vec<Row>,
    pub csv: String,
    pub error: Option<String>,
}

/// Start of the UTC month of `ms`, and of the month `offset` months later.
fn month_start(ms: i64, offset: i32) -> i64 {
    let t = hark_core::clock::from_millis(ms);
    let months = t.year() * 12 + i32::from(u8::from(t.month())) - 1 + offset;
    let (year, month) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let month = time::Month::try_from(month as u8).unwrap_or(time::Month::January);
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(ms)
}

fn date_text(ms: i64) -> String {
    let t = hark_core::clock::from_millis(ms);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The page's query turned into the reports API's: the preset becomes `from`/`to`
/// (custom ranges pass their dates through); the rest is passed as it is.
fn report_pairs(query: &[(String, String)], now: i64) -> (String, Vec<(String, String)>) {
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let range = get("range").unwrap_or("30d").to_string();
    let end_of_hour = now - now.rem_euclid(HOUR_MS) + HOUR_MS;
    let span = match range.as_str() {
        "24h" => Some((end_of_hour - DAY_MS, end_of_hour)),
        "7d" => Some((end_of_hour - 7 * DAY_MS, end_of_hour)),
        "this_month" => Some((month_start(now, 0), month_start(now, 1))),
        "last_month" => Some((month_start(now, -1), month_start(now, 0))),
        "custom" => None,
        _ => Some((end_of_hour - 30 * DAY_MS, end_of_hour)),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    match span {
        Some((from, to)) => {
            pairs.push(("from".into(), crate::manage::usage::ts(from)));
            pairs.push(("to".into(), crate::manage::usage::ts(to)));
        }
        None => {
            for k in ["from", "to"] {
                if let Some(v) = get(k).filter(|v| !v.is_empty()) {
                    pairs.push((k.into(), v.into()));
                }
            }
        }
    }
    for (k, v) in query {
        let passed = matches!(
            k.as_str(),
            "granularity" | "group_by" | "project" | "api_key" | "model" | "product"
        );
        if passed && !v.is_empty() {
            pairs.push((k.clone(), v.clone()));
        }
    }
    (range, pairs)
}

fn bucket_label(b: &Bucket, granularity: &str) -> String {
    let text = when(b.start);
    match granularity {
        "hour" => text,
        "day" => text[..10].to_string(),
        _ => text[..7].to_string(),
    }
}

/// The stacked bars: one column per bucket, one segment per group, heights by cost
/// (or by seconds when nothing cost anything).
fn chart(report: &UsageReport, granularity: &str) -> (Vec<Bar>, Vec<Legend>, String) {
    let by_cost = report.totals.0.cost > 0;
    let value = |f: &crate::manage::usage::Figures| -> i64 {
        if by_cost {
            f.0.cost
        } else {
            f.0.audio_ms + f.0.session_ms
        }
    };
    let mut series: BTreeMap<String, usize> = BTreeMap::new();
    for b in &report.buckets {
        for g in &b.groups {
            let next = series.len();
            series.entry(g.key.clone()).or_insert(next);
        }
    }
    let max = report
        .buckets
        .iter()
        .map(|b| value(&b.totals))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = report.buckets.len().max(1) as f64;
    let slot = CHART_W / n;
    let width = (slot * 0.8).max(1.0);
    let mut bars = Vec::new();
    for (i, b) in report.buckets.iter().enumerate() {
        let x = i as f64 * slot + (slot - width) / 2.0;
        let mut top = CHART_H;
        let segments: Vec<(String, i64, usize)> = if b.groups.is_empty() {
            vec![("Total".into(), value(&b.totals), 0)]
        } else {
            b.groups
                .iter()
                .map(|g| (g.key.clone(), value(&g.figures), series[&g.key]))
                .collect()
        };
        for (key, v, s) in segments {
            if v <= 0 {
                continue;
            }
            let h = v as f64 / max as f64 * CHART_H;
            top -= h;
            let shown = if by_cost {
                format!("{} {}", format_amount(v), report.currency)
            } else {
                duration(v as f64 / 1000.0)
            };
            bars.push(Bar {
                x: format!("{x:.1}"),
                y: format!("{top:.1}"),
                w: format!("{width:.1}"),
                h: format!("{h:.1}"),
                class: format!("s{}", s % SERIES),
                title: format!("{}: {key}, {shown}", bucket_label(b, granularity)),
            });
        }
    }
    let mut legend: Vec<(usize, String)> = series.into_iter().map(|(k, i)| (i, k)).collect();
    legend.sort();
    let legend = legend
        .into_iter()
        .map(|(i, label)| Legend {
            class: format!("s{}", i % SERIES),
            label,
        })
        .collect();
    let axis_max = if by_cost {
        format!("{} {}", format_amount(max), report.currency)
    } else {
        duration(max as f64 / 1000.0)
    };
    (bars, legend, axis_max)
}

/// `GET /accounts/{account}/usage`: every role may view usage.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> DashResult<Response> {
    let caller = me.caller();
    let auth = authorize(
        &state,
        &caller,
        ids::account(&account),
        Permission::ViewUsage,
    )
    .await?;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (range, pairs) = report_pairs(&query, state.clock.now_ms());
    let granularity = {
        let g = get("granularity");
        if g.is_empty() {
            if range == "24h" {
                "hour".to_string()
            } else {
                "day".to_string()
            }
        } else {
            g
        }
    };
    let mut pairs = pairs;
    if !pairs.iter().any(|(k, _)| k == "granularity") {
        pairs.push(("granularity".into(), granularity.clone()));
    }
    let csv_query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    let chrome = Chrome::signed_in(&state, &me, &token, "Usage")
        .await?
        .in_account(&auth.account, auth.role, "/usage");
    let base = format!("/accounts/{}", auth.account.id);
    let mut page = UsagePage {
        chrome,
        action: format!("{base}/usage"),
        ranges: choices(&PRESETS, &range),
        granularities: choices(
            &[
                ("hour", "By hour"),
                ("day", "By day"),
                ("month", "By month"),
            ],
            &granularity,
        ),
        groupings: choices(
            &[
                ("", "No grouping"),
                ("product", "Product"),
                ("model", "Model"),
                ("project", "Project"),
                ("api_key", "API key"),
            ],
            &get("group_by"),
        ),
        products: {
            let mut p = vec![("", "All products")];
            p.extend(PRODUCTS.iter().map(|p| (*p, *p)));
            choices(&p, &get("product"))
        },
        projects: {
            let listed: Vec<(String, String)> = state
                .store
                .list_projects(auth.account.id)
                .await?
                .into_iter()
                .map(|p| (p.id.to_string(), p.name))
                .collect();
            let mut p: Vec<(&str, &str)> = vec![("", "All projects")];
            p.extend(listed.iter().map(|(id, name)| (id.as_str(), name.as_str())));
            choices(&p, &get("project"))
        },
        custom: range == "custom",
        from_date: get("from"),
        to_date: get("to"),
        updated: String::new(),
        currency: String::new(),
        total_cost: String::new(),
        total_audio: String::new(),
        total_session: String::new(),
        bars: Vec::new(),
        legend: Vec::new(),
        axis_max: String::new(),
        rows: Vec::new(),
        csv: format!("/api/v1/accounts/{}/usage.csv?{csv_query}", auth.account.id),
        error: None,
    };
    match account_report(&state, &caller, auth.account.id, &pairs).await {
        Ok(report) => {
            if !page.custom {
                page.from_date = date_text(report.from);
                page.to_date = date_text(report.to);
            }
            page.updated = when(report.as_of);
            page.currency = report.currency.clone();
            page.total_cost = format_amount(report.totals.0.cost);
            page.total_audio = seconds_text(report.totals.0.audio_ms);
            page.total_session = seconds_text(report.totals.0.session_ms);
            let (bars, legend, axis_max) = chart(&report, &granularity);
            page.bars = bars;
            page.legend = legend;
            page.axis_max = axis_max;
            for b in &report.buckets {
                let label = bucket_label(b, &granularity);
                let groups: Vec<(String, &crate::manage::usage::Figures)> = if b.groups.is_empty() {
                    vec![("All".into(), &b.totals)]
                } else {
                    b.groups
                        .iter()
                        .map(|g| (g.key.clone(), &g.figures))
                        .collect()
                };
                for (group, f) in groups {
                    if f.0.transcripts == 0 && f.0.sessions == 0 && f.0.cost == 0 {
                        continue;
                    }
                    page.rows.push(Row {
                        bucket: label.clone(),
                        group,
                        audio: seconds_text(f.0.audio_ms),
                        session: seconds_text(f.0.session_ms),
                        transcripts: f.0.transcripts,
                        sessions: f.0.sessions,
                        cost: format_amount(f.0.cost),
                    });
                }
            }
        }
        Err(e) => {
            let (status, message) = super::forms::on_form(e)?;
            page.error = Some(message);
            return Ok((status, Html(page.render()?)).into_response());
        }
    }
    Ok(Html(page.render()?).into_response())
}
