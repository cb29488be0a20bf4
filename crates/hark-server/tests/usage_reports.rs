//! Usage and spend reports through the running server (issue 11): known transcripts
//! and a streaming session on an injected clock give exact seconds and cost in every
//! grouping, granularity and filter, as JSON and CSV; a session counts only once it
//! closes; `as_of` never claims more than is there; bad parameters and permissions
//! answer in the management envelope. On SQLite and PostgreSQL.

mod common;
mod support;

use common::mgmt::{add_member, call, org, Answer};
use common::*;
use futures::{SinkExt, StreamExt};
use hark_core::clock::{Clock, ManualClock};
use hark_core::{Plan, Role};
use hark_server::config::PriceConfig;
use hark_store::{AccountStore, Actor};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// 2027-01-15T08:10:00Z.
const START_MS: i64 = 1_800_000_000_000 + 600_000;
const DAY: &str = "from=2027-01-15&to=2027-01-16";

both_databases!(
    reports_are_exact_in_every_grouping,
    report_parameters_and_permissions
);

/// Speech-to-text at 3.60 an hour is one micro-unit per millisecond of audio;
/// streaming at 1.80 an hour is one per two milliseconds of session.
async fn priced_server(db: Db, clock: Arc<ManualClock>) -> TestServer {
    TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock, |c| {
        c.billing.currency = "EUR".into();
        c.billing.prices = vec![
            PriceConfig {
                product: "speech_to_text".into(),
                model: "*".into(),
                per_hour: "3.60".into(),
                effective_from: None,
            },
            PriceConfig {
                product: "streaming".into(),
                model: "*".into(),
                per_hour: "1.80".into(),
                effective_from: Some("2020-01-01".into()),
            },
        ];
    })
    .await
}

async fn report(ts: &TestServer, token: &str, account: &str, query: &str) -> Answer {
    call(
        ts,
        "GET",
        &format!("/accounts/{account}/usage?{query}"),
        Some(token),
        None,
    )
    .await
}

/// The figures of one group (or bucket totals) as a comparable tuple.
fn figures(v: &Value) -> (f64, f64, i64, i64, String) {
    (
        v["audio_seconds"].as_f64().unwrap(),
        v["session_seconds"].as_f64().unwrap(),
        v["transcripts"].as_i64().unwrap(),
        v["sessions"].as_i64().unwrap(),
        v["cost"].as_str().unwrap().to_string(),
    )
}

/// Each group's figures, summed over the buckets.
/// audio seconds, session seconds, transcripts, sessions, cost.
type Figures = (f64, f64, i64, i64, String);

fn groups(v: &Value) -> Vec<(String, Figures)> {
    let mut out = Vec::new();
    for b in v["buckets"].as_array().unwrap() {
        for g in b["groups"].as_array().unwrap() {
            out.push((g["key"].as_str().unwrap().to_string(), figures(g)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The dashboard's Usage page for the same day, grouped by product: the same totals,
/// one stacked segment per product in the server-drawn chart, the table, and "Download
/// CSV" of the same query.
async fn dashboard_shows_the_report(ts: &TestServer, owner: &common::mgmt::Person, account: &str) {
    let cookie = format!("hark_session={}; hark_csrf={}", owner.token, owner.csrf);
    let page = ts
        .http
        .get(ts.url(&format!(
            "/accounts/{account}/usage?range=custom&from=2027-01-15&to=2027-01-16&granularity=day&group_by=product"
        )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.unwrap();
    for shown in [
        "0.0141 EUR",
        "<dd>4.4</dd>",
        "<dd>20</dd>",
        "<td>2027-01-15</td><td>speech_to_text</td><td>4.1</td><td>0</td><td>3</td><td>0</td><td>0.0041</td>",
        "<td>2027-01-15</td><td>streaming</td><td>0.3</td><td>20</td><td>0</td><td>1</td><td>0.01</td>",
        "Download CSV",
    ] {
        assert!(html.contains(shown), "the usage page lacks {shown}: {html}");
    }
    assert_eq!(html.matches("<rect ").count(), 2, "{html}");
    assert!(html.contains("class=\"s0\"") && html.contains("class=\"s1\""));
    assert!(!html.contains(" style="));
    let at = html.find("/api/v1/accounts/").expect("the CSV link");
    let end = at + html[at..].find('"').expect("end of link");
    let link = html[at..end].replace("&amp;", "&").replace("&#38;", "&");
    let csv = ts
        .http
        .get(ts.url(&link))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200, "{link}");
    let csv = csv.text().await.unwrap();
    let api = ts
        .http
        .get(ts.url(&format!(
            "/api/v1/accounts/{account}/usage.csv?from=2027-01-15&to=2027-01-16&granularity=day&group_by=product"
        )))
        .header("authorization", format!("Bearer {}", owner.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, api, "the page's CSV is the API's for the same query");
    // The project filter of the form narrows the report like the API's `project=`.
    let project = ts
        .store
        .list_projects(hark_core::AccountId::parse(account).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "second")
        .unwrap();
    let html = ts
        .http
        .get(ts.url(&format!(
            "/accounts/{account}/usage?range=custom&from=2027-01-15&to=2027-01-16&granularity=day&project={}",
            project.id
        )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<td>2027-01-15</td><td>All</td><td>1.9</td><td>0</td><td>1</td><td>0</td><td>0.0019</td>"),
        "{html}"
    );
}

async fn reports_are_exact_in_every_grouping(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = priced_server(db, clock.clone()).await;
    // Invoiced: usage is never refused for the balance it drains.
    let o = org(&ts, Plan::Contracted).await;
    let account = o.account.to_string();
    let (key1_id, key1) = ts.key(o.project, None).await;
    let p2 = ts
        .store
        .create_project(
            o.account,
            hark_server::provisioning::new_project(&ts.master_key(), "second"),
            &Actor::Operator,
        )
        .await
        .unwrap();
    let (key2_id, key2) = ts.key(p2.id, None).await;
    // Three words last 1.1 s, five 1.9 s (the scripted engine's word timings).
    for (key, words) in [
        (&key1, &["a", "b", "c"][..]),
        (&key1, &["d", "e", "f"][..]),
        (&key2, &["a", "b", "c", "d", "e"][..]),
    ] {
        let id = support::transcribe(&ts, key, words).await;
        assert_eq!(wait_done(&ts, key, &id).await["status"], "completed");
    }
    // A failed transcript is free.
    let url = support::upload(&ts, &key1, b"\0not a script".to_vec()).await;
    let failed = support::create(&ts, &key1, json!({"audio_url": url})).await;
    let id = failed["id"].as_str().unwrap();
    assert_eq!(wait_done(&ts, &key1, id).await["status"], "error");

    // A streaming session of 20 s (injected clock) with 0.3 s of audio: not counted
    // while open.
    let ws_url = format!(
        "{}/v3/ws?sample_rate=16000",
        ts.base.replacen("http", "ws", 1)
    );
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", key1.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    wait_for(&mut ws, "Begin").await;
    for _ in 0..3 {
        ws.send(Message::Binary(tone_100ms().into())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance_ms(20_000);
    let open = report(&ts, &o.owner.token, &account, DAY).await;
    assert_eq!(open.ok()["totals"]["sessions"], 0, "{}", open.text);
    ws.send(Message::Text(
        json!({"type": "Terminate"}).to_string().into(),
    ))
    .await
    .unwrap();
    wait_for(&mut ws, "Termination").await;
    let mut closed = None;
    for _ in 0..100 {
        let r = report(&ts, &o.owner.token, &account, DAY).await;
        if r.ok()["totals"]["sessions"] == 1 {
            closed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = closed.expect("the closed session shows in the report");
    let v = all.ok();
    // 4.1 s of transcripts (4 100 micro-units) and a 20 s session (10 000).
    assert_eq!(figures(&v["totals"]), (4.4, 20.0, 3, 1, "0.0141".into()));
    assert_eq!(v["totals"]["cost_micros"], 14_100);
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["granularity"], "day");
    assert_eq!(v["group_by"], Value::Null);
    assert_eq!(v["from"], "2027-01-15T00:00:00Z");
    assert_eq!(v["buckets"].as_array().unwrap().len(), 1);
    assert_eq!(v["buckets"][0]["start"], "2027-01-15T00:00:00Z");
    assert_eq!(v["buckets"][0]["end"], "2027-01-16T00:00:00Z");
    // The range reaches past now: complete only up to 5 s before the read.
    assert_eq!(
        v["as_of"],
        hark_server::manage::usage::ts(clock.now_ms() - 5_000).as_str()
    );
    // A range that ended before now is complete to its end.
    let past = report(
        &ts,
        &o.owner.token,
        &account,
        "from=2027-01-14&to=2027-01-15",
    )
    .await;
    assert_eq!(past.ok()["as_of"], "2027-01-15T00:00:00Z");
    assert_eq!(past.ok()["totals"]["cost_micros"], 0);

    let by = |g: &str| format!("{DAY}&group_by={g}");
    dashboard_shows_the_report(&ts, &o.owner, &account).await;
    let r = report(&ts, &o.owner.token, &account, &by("product")).await;
    assert_eq!(
        groups(r.ok()),
        vec![
            ("speech_to_text".into(), (4.1, 0.0, 3, 0, "0.0041".into())),
            ("streaming".into(), (0.3, 20.0, 0, 1, "0.01".into())),
        ]
    );
    let r = report(&ts, &o.owner.token, &account, &by("project")).await;
    let mut expected = vec![
        (o.project.to_string(), (2.5, 20.0, 2, 1, "0.0122".into())),
        (p2.id.to_string(), (1.9, 0.0, 1, 0, "0.0019".into())),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(groups(r.ok()), expected);
    let r = report(&ts, &o.owner.token, &account, &by("model")).await;
    assert_eq!(
        groups(r.ok()),
        vec![("whisper-tiny.en".into(), (4.4, 20.0, 3, 1, "0.0141".into()))]
    );
    // Filters: one key; both products named; a model that was never used.
    let r = report(
        &ts,
        &o.owner.token,
        &account,
        &format!(
            "{}&api_key={key2_id}&product=speech_to_text&product=streaming",
            by("api_key")
        ),
    )
    .await;
    assert_eq!(
        groups(r.ok()),
        vec![(key2_id.to_string(), (1.9, 0.0, 1, 0, "0.0019".into()))]
    );
    let r = report(
        &ts,
        &o.owner.token,
        &account,
        &format!("{}&project={}&product=streaming", by("api_key"), o.project),
    )
    .await;
    assert_eq!(
        groups(r.ok()),
        vec![(key1_id.to_string(), (0.3, 20.0, 0, 1, "0.01".into()))]
    );
    let r = report(
        &ts,
        &o.owner.token,
        &account,
        &format!("{DAY}&model=whisper-large"),
    )
    .await;
    assert_eq!(figures(&r.ok()["totals"]), (0.0, 0.0, 0, 0, "0.00".into()));

    // Hourly: 24 buckets, everything in the 08:00 one.
    let r = report(
        &ts,
        &o.owner.token,
        &account,
        &format!("{DAY}&granularity=hour"),
    )
    .await;
    let buckets = r.ok()["buckets"].as_array().unwrap().clone();
    assert_eq!(buckets.len(), 24);
    let busy: Vec<&Value> = buckets
        .iter()
        .filter(|b| b["totals"]["cost_micros"] != 0)
        .collect();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0]["start"], "2027-01-15T08:00:00Z");
    // Monthly: calendar months.
    let r = report(
        &ts,
        &o.owner.token,
        &account,
        "from=2027-01-01&to=2027-03-01&granularity=month",
    )
    .await;
    let v = r.ok();
    let months: Vec<(&str, &str, i64)> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap(),
                b["end"].as_str().unwrap(),
                b["totals"]["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        months,
        vec![
            ("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", 14_100),
            ("2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z", 0)
        ]
    );
    // A range reaching past now is complete only up to a few seconds ago.
    let r = report(&ts, &o.owner.token, &account, "").await;
    let as_of = r.ok()["as_of"].as_str().unwrap().to_string();
    assert_eq!(
        as_of,
        hark_server::manage::usage::ts(clock.now_ms() - 5_000)
    );

    // The CSV is the same query.
    let csv = call(
        &ts,
        "GET",
        &format!("/accounts/{account}/usage.csv?{}", by("product")),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        csv.text,
        "bucket_start,bucket_end,group,audio_seconds,session_seconds,transcripts,sessions,cost,currency\n\
         2027-01-15T00:00:00Z,2027-01-16T00:00:00Z,speech_to_text,4.1,0,3,0,0.0041,EUR\n\
         2027-01-15T00:00:00Z,2027-01-16T00:00:00Z,streaming,0.3,20,0,1,0.01,EUR\n"
    );
    ts.stop().await;
}

async fn report_parameters_and_permissions(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = priced_server(db, clock.clone()).await;
    let o = org(&ts, Plan::Payg).await;
    let account = o.account.to_string();
    for (query, needle) in [
        ("from=last-week", "ISO 8601"),
        ("from=2027-01-15T08:30:00Z", "whole hour"),
        ("granularity=fortnight", "granularity"),
        ("group_by=person", "group_by"),
        ("product=llm_gateway", "product"),
        ("from=2027-01-16&to=2027-01-15", "before"),
        ("from=2020-01-01&to=2027-01-01&granularity=hour", "buckets"),
        ("limit=5", "unknown parameter"),
    ] {
        for path in ["usage", "usage.csv"] {
            let r = call(
                &ts,
                "GET",
                &format!("/accounts/{account}/{path}?{query}"),
                Some(&o.owner.token),
                None,
            )
            .await;
            assert_eq!(r.status, 400, "{query}: {}", r.text);
            assert_eq!(r.code(), "invalid_request");
            assert!(
                r.body["error"].as_str().unwrap().contains(needle),
                "{query}: {}",
                r.text
            );
        }
    }
    // Readers view usage; strangers do not see the account.
    let reader = add_member(&ts, o.account, Role::Reader).await;
    assert_eq!(report(&ts, &reader.token, &account, DAY).await.status, 200);
    let csv = call(
        &ts,
        "GET",
        &format!("/accounts/{account}/usage.csv"),
        Some(&reader.token),
        None,
    )
    .await;
    assert_eq!(csv.status, 200);
    let stranger = org(&ts, Plan::Free).await;
    let r = report(&ts, &stranger.owner.token, &account, DAY).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = report(&ts, "", &account, DAY).await;
    assert_eq!(r.status, 401);
    ts.stop().await;
}

async fn wait_for(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 20 s"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended while waiting for {kind}: {other:?}"),
        }
    }
}

/// 100 ms of a loud 16 kHz s16le tone.
fn tone_100ms() -> Vec<u8> {
    (0..1_600)
        .flat_map(|i| {
            (((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 12_000.0) as i16)
                .to_le_bytes()
        })
        .collect()
}
