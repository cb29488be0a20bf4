//! Usage-report latency over 10 million generated usage events (bench/usage/run.sh).
//!
//! Generates EVENTS usage events of one account (the worst case for one report: every
//! event is in it) spread over DAYS days, PROJECTS projects with KEYS keys each,
//! both products and MODELS models, and aggregates them into the hourly rollups with
//! the same GROUP BY the migration uses (what the per-event upserts add up to; the
//! conformance suite checks that equality), then the hourly rows into the daily and
//! monthly rollups (which the per-event upserts keep in the same transaction; the
//! conformance suite checks that they agree). Raw events are generated inside the
//! database and aggregated on the fly: reports never read them. Then it runs each
//! report shape ITERATIONS times through the same core function the API calls and
//! prints p50/p95/p99 per shape.
//!
//! Usage: usage_bench <database-url> [events]

use hark_core::clock::{Clock, SystemClock};
use hark_core::AccountId;
use hark_server::manage::usage::{operator_report, ReportInput};
use hark_store::{Backend, SqlStore};
use std::sync::Arc;
use std::time::Instant;

const DAYS: i64 = 90;
const PROJECTS: i64 = 5;
const KEYS: i64 = 4;
const MODELS: i64 = 3;
const ITERATIONS: usize = 200;
const HOUR: i64 = 3_600_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: usage_bench <database-url> [events]")?;
    let events: i64 = args
        .next()
        .map(|e| e.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = SqlStore::open(&url, clock.clone()).await?;
    let now = clock.now_ms();
    let end = now - now.rem_euclid(HOUR) + HOUR;
    let start = end - DAYS * 24 * HOUR;
    let account = AccountId::new();
    let t = Instant::now();
    generate(&store, account, events, start).await?;
    // As autovacuum (PostgreSQL: statistics and the visibility map) or `PRAGMA
    // optimize` (SQLite) would in a running system.
    let analyze = match store.backend() {
        Backend::Postgres => "VACUUM ANALYZE",
        Backend::Sqlite => "ANALYZE",
    };
    sqlx::query(analyze).execute(store.pool()).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_hourly WHERE account_id = $1")
        .bind(account.to_string())
        .fetch_one(store.pool())
        .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(transcripts + sessions) AS BIGINT) FROM usage_hourly WHERE account_id = $1",
    )
    .bind(account.to_string())
    .fetch_one(store.pool())
    .await?;
    let mut coarse = Vec::new();
    for table in ["usage_daily", "usage_monthly"] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE account_id = $1"
        ))
        .bind(account.to_string())
        .fetch_one(store.pool())
        .await?;
        coarse.push(n);
    }
    println!(
        "backend {:?}: {total} events in {rows} hourly, {} daily and {} monthly rollup rows, generated in {:.1} s",
        store.backend(),
        coarse[0],
        coarse[1],
        t.elapsed().as_secs_f64()
    );
    if total != events {
        return Err(format!("generated {total} events, expected {events}").into());
    }
    let iso = |ms: i64| hark_server::manage::usage::ts(ms);
    let shapes = [
        (
            "last 24 h by hour, no grouping",
            format!(
                "from={}&to={}&granularity=hour",
                iso(end - 24 * HOUR),
                iso(end)
            ),
        ),
        (
            "last 7 days by hour, by API key",
            format!(
                "from={}&to={}&granularity=hour&group_by=api_key",
                iso(end - 7 * 24 * HOUR),
                iso(end)
            ),
        ),
        (
            "last 30 days by day, by model",
            format!(
                "from={}&to={}&granularity=day&group_by=model",
                iso(end - 30 * 24 * HOUR),
                iso(end)
            ),
        ),
        (
            "last 30 days by day, by project, filtered to 2 projects",
            format!(
                "from={}&to={}&granularity=day&group_by=project&project=p0&project=p1",
                iso(end - 30 * 24 * HOUR),
                iso(end)
            ),
        ),
        (
            "90 days by month, by product",
            format!(
                "from={}&to={}&granularity=month&group_by=product",
                iso(start),
                iso(end)
            ),
        ),
    ];
    for (name, query) in shapes {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let input = ReportInput::from_pairs(&pairs, now).map_err(|e| e.to_string())?;
        let mut times = Vec::with_capacity(ITERATIONS);
        let mut cost = 0;
        for _ in 0..ITERATIONS {
            let t = Instant::now();
            let report = operator_report(&store, "USD", Some(account), &input, now)
                .await
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cost = report.totals.0.cost;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).saturating_sub(1)];
        println!(
            "{name:<58} p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  (cost {cost})",
            pct(0.50),
            pct(0.95),
            pct(0.99)
        );
    }
    store.close().await;
    Ok(())
}

/// Event `n` (0-based): hour `n % hours`, project `n % P`, key, product and model by
/// further digits, audio 1..600 s. Aggregated straight into `usage_hourly`.
async fn generate(
    store: &SqlStore,
    account: AccountId,
    events: i64,
    start: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let hours = DAYS * 24;
    let series = match store.backend() {
        Backend::Postgres => "SELECT n FROM generate_series(0, $2 - 1) AS g(n)".to_string(),
        Backend::Sqlite => "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n + 1 < $2) SELECT n FROM g".to_string(),
    };
    // Per event: hour h, project p, key k (within the project), product, model m,
    // audio_ms a; streaming events bill a session 20% longer than their audio.
    let sql = format!(
        "INSERT INTO usage_hourly (account_id, hour_start, project_id, api_key_id, product, model, \
         audio_ms, session_ms, transcripts, sessions, cost) \
         SELECT $1, hour_start, project_id, api_key_id, product, model, \
         CAST(SUM(audio_ms) AS BIGINT), CAST(SUM(session_ms) AS BIGINT), \
         CAST(SUM(1 - streaming) AS BIGINT), CAST(SUM(streaming) AS BIGINT), CAST(SUM(cost) AS BIGINT) FROM ( \
           SELECT $3 + (n % {hours}) * 3600000 AS hour_start, \
             'p' || CAST((n / {hours}) % {PROJECTS} AS TEXT) AS project_id, \
             'p' || CAST((n / {hours}) % {PROJECTS} AS TEXT) || 'k' || CAST((n / ({hours} * {PROJECTS})) % {KEYS} AS TEXT) AS api_key_id, \
             CASE WHEN n % 7 = 0 THEN 'streaming' ELSE 'speech_to_text' END AS product, \
             CASE WHEN n % 7 = 0 THEN 1 ELSE 0 END AS streaming, \
             'model-' || CAST((n / ({hours} * {PROJECTS} * {KEYS})) % {MODELS} AS TEXT) AS model, \
             1000 * (1 + n % 600) AS audio_ms, \
             CASE WHEN n % 7 = 0 THEN 1200 * (1 + n % 600) ELSE 0 END AS session_ms, \
             (150000 * 1000 * (1 + n % 600) + 1800000) / 3600000 AS cost \
           FROM ({series}) AS s \
         ) AS e GROUP BY hour_start, project_id, api_key_id, product, model"
    );
    sqlx::query(&sql)
        .bind(account.to_string())
        .bind(events)
        .bind(start)
        .execute(store.pool())
        .await?;
    let month = match store.backend() {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM date_trunc('month', to_timestamp(hour_start / 1000.0) AT TIME ZONE 'UTC')) AS BIGINT) * 1000",
        Backend::Sqlite => "CAST(strftime('%s', hour_start / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000",
    };
    for (table, column, bucket) in [
        (
            "usage_daily",
            "day_start",
            "hour_start - (hour_start % 86400000)",
        ),
        ("usage_monthly", "month_start", month),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {table} (account_id, {column}, project_id, api_key_id, product, model, \
             audio_ms, session_ms, transcripts, sessions, cost) \
             SELECT account_id, {bucket}, project_id, api_key_id, product, model, \
             CAST(SUM(audio_ms) AS BIGINT), CAST(SUM(session_ms) AS BIGINT), CAST(SUM(transcripts) AS BIGINT), \
             CAST(SUM(sessions) AS BIGINT), CAST(SUM(cost) AS BIGINT) \
             FROM usage_hourly WHERE account_id = $1 \
             GROUP BY account_id, {bucket}, project_id, api_key_id, product, model"
        ))
        .bind(account.to_string())
        .execute(store.pool())
        .await?;
    }
    Ok(())
}
