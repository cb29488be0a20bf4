//! Credit balance, alerts and statements through the running server (issue 11): a
//! prepaid account with a negative balance is refused with AssemblyAI's texts on
//! REST and streaming until a credit; invoiced plans never are; alerts mail once and
//! post one signed webhook; Readers view usage and alerts but cannot touch alerts or
//! billing; a closed month's statement is byte-identical after later usage.

mod common;
mod support;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::mgmt::{add_member, call, org, Answer};
use common::*;
use futures::StreamExt;
use hark_core::clock::{Clock, ManualClock};
use hark_core::{Plan, Role};
use hark_server::config::PriceConfig;
use hark_store::{AccountStore, Actor, BillingStore, CreditKind, ManageStore, MemberStore};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const NEGATIVE: &str =
    "Your current account balance is negative. Please top up to continue using the API.";
/// 2027-01-15T08:10:00Z.
const START_MS: i64 = 1_800_000_000_000 + 600_000;

both_databases!(
    negative_balance_refuses_until_a_credit,
    alerts_mail_and_post_a_signed_webhook_once,
    closed_month_statement_never_changes,
);

/// Speech-to-text at one micro-unit per millisecond; Free accounts start with 0.001.
async fn server(db: Db, clock: Arc<dyn Clock>) -> TestServer {
    TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock, |c| {
        c.outbound.allow_private = true;
        c.billing.evaluation_credit = "0.001".into();
        c.billing.prices = vec![PriceConfig {
            product: "speech_to_text".into(),
            model: "*".into(),
            per_hour: "3.60".into(),
            effective_from: None,
        }];
    })
    .await
}

async fn ws_close(ts: &TestServer, key: &str) -> (u16, String) {
    let url = format!(
        "{}/v3/ws?sample_rate=16000",
        ts.base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string())
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_ne!(v["type"], "Begin", "the session opened");
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Waits until the server's key cache has caught up with a balance change.
async fn wait_upload_status(ts: &TestServer, key: &str, status: u16) -> support::Resp {
    for _ in 0..100 {
        let r = support::post_raw(ts, key, "/v2/upload", script(&["x"])).await;
        if r.status == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("upload never answered {status}");
}

async fn negative_balance_refuses_until_a_credit(db: Db) {
    let ts = server(db, Arc::new(hark_core::SystemClock)).await;
    let o = org(&ts, Plan::Free).await;
    let (_, key) = ts.key(o.project, None).await;
    // The test's own store gave the default 50.00: leave 0.001, as the server's config would.
    ts.store
        .grant_credit(
            o.account,
            -49_999_000,
            CreditKind::Operator,
            "test: to 0.001",
            &Actor::Operator,
        )
        .await
        .unwrap();
    // 1.1 s of audio costs 0.0011 of the 0.001 evaluation credit.
    let id = support::transcribe(&ts, &key, &["a", "b", "c"]).await;
    assert_eq!(wait_done(&ts, &key, &id).await["status"], "completed");
    let refused = wait_upload_status(&ts, &key, 400).await;
    refused.exact_error(400, NEGATIVE);
    let url = format!("{}/v2/upload/none", ts.base);
    let r = support::post_json(&ts, &key, "/v2/transcript", &json!({"audio_url": url})).await;
    r.exact_error(400, NEGATIVE);
    let r = support::get(&ts, &key, "/v3/token?expires_in_seconds=60").await;
    r.exact_error(400, NEGATIVE);
    assert_eq!(ws_close(&ts, &key).await, (1008, NEGATIVE.to_string()));
    // Reading stays allowed.
    assert_eq!(
        support::get(&ts, &key, &format!("/v2/transcript/{id}"))
            .await
            .status,
        200
    );
    // The Owner sees why.
    let b = call(
        &ts,
        "GET",
        &format!("/accounts/{}/balance", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    let v = b.ok();
    assert_eq!(
        (v["balance"].as_str(), v["billing"].as_str()),
        (Some("-0.0001"), Some("prepaid"))
    );
    assert_eq!(v["refused_for_balance"], true);
    assert_eq!(v["credits"][0]["kind"], "evaluation");
    // A credit that makes it positive restores access at once (the operator CLI's way).
    ts.store
        .grant_credit(
            o.account,
            1_000_000,
            CreditKind::Operator,
            "top up",
            &Actor::Operator,
        )
        .await
        .unwrap();
    hark_server::control::notify_credentials_changed(&ts.config.data_dir).await;
    wait_upload_status(&ts, &key, 200).await;
    let r = support::get(&ts, &key, "/v3/token?expires_in_seconds=60").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Invoiced plans are never refused for balance.
    ts.store
        .grant_credit(
            o.account,
            -2_000_000,
            CreditKind::Operator,
            "correction",
            &Actor::Operator,
        )
        .await
        .unwrap();
    hark_server::control::notify_credentials_changed(&ts.config.data_dir).await;
    wait_upload_status(&ts, &key, 400).await;
    ts.store
        .set_plan(
            o.account,
            Plan::Contracted,
            Default::default(),
            &Actor::Operator,
        )
        .await
        .unwrap();
    hark_server::control::notify_credentials_changed(&ts.config.data_dir).await;
    wait_upload_status(&ts, &key, 200).await;
    let b = call(
        &ts,
        "GET",
        &format!("/accounts/{}/balance", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(b.ok()["billing"], "invoiced");
    assert_eq!(b.ok()["refused_for_balance"], false);
    ts.stop().await;
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn hook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

async fn alerts_mail_and_post_a_signed_webhook_once(db: Db) {
    let (hook, received) = hook_receiver().await;
    let ts = server(db, Arc::new(hark_core::SystemClock)).await;
    let o = org(&ts, Plan::Payg).await;
    let path = format!("/accounts/{}/alerts", o.account);
    let admin = add_member(&ts, o.account, Role::Admin).await;
    let reader = add_member(&ts, o.account, Role::Reader).await;
    ts.store
        .grant_credit(
            o.account,
            10_000_000,
            CreditKind::Operator,
            "start",
            &Actor::Operator,
        )
        .await
        .unwrap();
    let create = |token: String, body: Value| {
        let ts = &ts;
        let path = path.clone();
        async move {
            let mut req = ts
                .http
                .post(ts.url(&format!("/api/v1{path}")))
                .header("authorization", format!("Bearer {token}"));
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
            common::mgmt::send(req).await
        }
    };
    // Bad input, and a Reader, are refused.
    let r: Answer = create(
        o.owner.token.clone(),
        json!({"kind": "spend_above", "threshold": "1"}),
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.text);
    let r = create(
        o.owner.token.clone(),
        json!({"kind": "month_spend_above", "threshold": "lots"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = create(
        o.owner.token.clone(),
        json!({"kind": "daily_audio_above", "threshold": "1"}),
    )
    .await;
    assert_eq!(r.status, 400, "a daily alert needs a project or key");
    let r = create(
        reader.token.clone(),
        json!({"kind": "month_spend_above", "threshold": "0.001"}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "permission_denied"),
        "{}",
        r.text
    );
    // The Admin creates a spend alert with a webhook: above 0.002 this month.
    let r = create(
        admin.token.clone(),
        json!({"kind": "month_spend_above", "threshold": "0.002", "webhook_url": hook}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let alert_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["threshold"], "0.002");
    assert_eq!(r.body["last_fired_at"], Value::Null);
    // Readers view alerts (and usage), but cannot edit or delete them.
    let list = call(&ts, "GET", &path, Some(&reader.token), None).await;
    assert_eq!(list.ok()["data"].as_array().unwrap().len(), 1);
    let r = call(
        &ts,
        "PATCH",
        &format!("{path}/{alert_id}"),
        Some(&reader.token),
        Some(json!({"threshold": "5"})),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &ts,
        "DELETE",
        &format!("{path}/{alert_id}"),
        Some(&reader.token),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &ts,
        "GET",
        &format!("/accounts/{}/balance", o.account),
        Some(&reader.token),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &ts,
        "GET",
        &format!("/accounts/{}/statements", o.account),
        Some(&reader.token),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    // Three transcripts at once (3.3 s, 0.0033): the alert fires once.
    let (_, key) = ts.key(o.project, None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(support::transcribe(&ts, &key, &["a", "b", "c"]).await);
    }
    for id in &ids {
        assert_eq!(wait_done(&ts, &key, id).await["status"], "completed");
    }
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = received.lock().unwrap().clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered_now = received.lock().unwrap().clone();
    assert_eq!(delivered_now.len(), 1, "one webhook");
    let (headers, body) = &delivered[0];
    assert!(headers.contains_key("webhook-signature"));
    assert!(headers.contains_key("webhook-id"));
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (body["type"].as_str(), body["kind"].as_str()),
        (Some("usage.alert"), Some("month_spend_above"))
    );
    let mails = ts.store.outbox(false).await.unwrap();
    let alert_mails: Vec<_> = mails
        .iter()
        .filter(|m| m.mail.subject.contains("this month passed 0.002 USD"))
        .collect();
    let mut to: Vec<&str> = alert_mails.iter().map(|m| m.mail.to.as_str()).collect();
    to.sort();
    let mut expected = vec![o.owner.email.as_str(), admin.email.as_str()];
    expected.sort();
    assert_eq!(to, expected, "Owners and Admins, once each; not the Reader");
    let list = call(&ts, "GET", &path, Some(&o.owner.token), None).await;
    let a = &list.ok()["data"][0];
    assert!(a["last_fired_at"].is_string());
    assert_eq!(a["fired_this_period"], true);
    // The Owner edits (re-arms) and deletes it.
    let r = call(
        &ts,
        "PATCH",
        &format!("{path}/{alert_id}"),
        Some(&o.owner.token),
        Some(json!({"threshold": "1.5", "webhook_url": null})),
    )
    .await;
    assert_eq!(
        (
            r.ok()["threshold"].as_str(),
            r.ok()["fired_this_period"].as_bool()
        ),
        (Some("1.50"), Some(false))
    );
    assert_eq!(r.ok()["webhook_url"], Value::Null);
    let r = call(
        &ts,
        "DELETE",
        &format!("{path}/{alert_id}"),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call(
        &ts,
        "DELETE",
        &format!("{path}/{alert_id}"),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    ts.stop().await;
}

/// The dashboard's Billing page and printable January statement show what the API
/// answers; a Reader is refused both.
async fn billing_pages_show_the_same(ts: &TestServer, o: &common::mgmt::Org) {
    let get = |path: String, who: &common::mgmt::Person| {
        let cookie = format!("hark_session={}; hark_csrf={}", who.token, who.csrf);
        let req = ts.http.get(ts.url(&path)).header("cookie", cookie);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let csp = r.headers().contains_key("content-security-policy");
            (status, csp, r.text().await.unwrap())
        }
    };
    let api = call(
        ts,
        "GET",
        &format!("/accounts/{}/balance", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    let balance = format!("{} USD", api.ok()["balance"].as_str().unwrap());
    let (status, csp, html) = get(format!("/accounts/{}/billing", o.account), &o.owner).await;
    assert_eq!(status, 200, "{html}");
    assert!(csp);
    for shown in [
        balance.as_str(),
        "January top-up",
        "February",
        o.owner.email.as_str(),
        "/billing/statements/2027-01\"",
        "/statements/2027-01/csv\"",
    ] {
        assert!(
            html.contains(shown),
            "the Billing page lacks {shown}: {html}"
        );
    }
    let (status, _, html) = get(
        format!("/accounts/{}/billing/statements/2027-01", o.account),
        &o.owner,
    )
    .await;
    assert_eq!(status, 200, "{html}");
    for shown in [
        "Statement 2027-01",
        "Closed (final)",
        "<td>speech_to_text</td><td>whisper-tiny.en</td><td>default</td><td>3</td><td>2</td><td>0</td><td>0.003</td>",
        "0.997 USD",
        "January top-up",
    ] {
        assert!(html.contains(shown), "the statement lacks {shown}: {html}");
    }
    assert!(!html.contains(" style="));
    let reader = add_member(ts, o.account, Role::Reader).await;
    for path in [
        format!("/accounts/{}/billing", o.account),
        format!("/accounts/{}/billing/statements/2027-01", o.account),
    ] {
        assert_eq!(get(path.clone(), &reader).await.0, 403, "{path}");
    }
    ts.store
        .remove_member(o.account, reader.user_id, &Actor::Operator)
        .await
        .unwrap();
}

async fn closed_month_statement_never_changes(db: Db) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ts = server(db, clock.clone()).await;
    let o = org(&ts, Plan::Payg).await;
    let (_, key) = ts.key(o.project, None).await;
    ts.store
        .grant_credit(
            o.account,
            1_000_000,
            CreditKind::Operator,
            "January top-up",
            &Actor::Operator,
        )
        .await
        .unwrap();
    for words in [&["a", "b", "c"][..], &["a", "b", "c", "d", "e"][..]] {
        let id = support::transcribe(&ts, &key, words).await;
        assert_eq!(wait_done(&ts, &key, &id).await["status"], "completed");
    }
    let path = format!("/accounts/{}/statements/2027-01", o.account);
    // While January runs, the statement is open.
    let open = call(&ts, "GET", &path, Some(&o.owner.token), None).await;
    assert_eq!(open.ok()["statement"]["status"], "open");
    // February: January is closed.
    clock.set_ms(START_MS + 20 * 86_400_000);
    // The login session expired meanwhile (12 h).
    let mut o = o;
    o.owner = common::mgmt::login_ok(&ts, &o.owner.email).await;
    let first = call(&ts, "GET", &path, Some(&o.owner.token), None).await;
    let first_csv = call(
        &ts,
        "GET",
        &format!("{path}/csv"),
        Some(&o.owner.token),
        None,
    )
    .await;
    let s = &first.ok()["statement"];
    assert_eq!(first.ok()["billing_email"], o.owner.email.as_str());
    assert_eq!(s["status"], "closed");
    assert_eq!(s["month"], "2027-01");
    assert_eq!(s["opening_balance"], "0.00");
    assert_eq!(s["usage_total"], "0.003");
    assert_eq!(s["credits_total"], "1.00");
    assert_eq!(s["closing_balance"], "0.997");
    let items = s["line_items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["product"], "speech_to_text");
    assert_eq!(items[0]["model"], "whisper-tiny.en");
    assert_eq!(items[0]["project_id"], o.project.to_string());
    assert_eq!(items[0]["project_name"], "default");
    assert_eq!(
        (
            items[0]["quantity_seconds"].as_str(),
            items[0]["transcripts"].as_i64()
        ),
        (Some("3"), Some(2))
    );
    assert_eq!(s["credits"][0]["note"], "January top-up");
    // Later usage, a later credit and a renamed project change nothing in January.
    clock.set_ms(START_MS + 21 * 86_400_000);
    o.owner = common::mgmt::login_ok(&ts, &o.owner.email).await;
    let id = support::transcribe(&ts, &key, &["late"]).await;
    assert_eq!(wait_done(&ts, &key, &id).await["status"], "completed");
    ts.store
        .grant_credit(
            o.account,
            5_000_000,
            CreditKind::Operator,
            "February",
            &Actor::Operator,
        )
        .await
        .unwrap();
    let r = call(
        &ts,
        "PATCH",
        &format!("/accounts/{}/projects/{}", o.account, o.project),
        Some(&o.owner.token),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second = call(&ts, "GET", &path, Some(&o.owner.token), None).await;
    let second_csv = call(
        &ts,
        "GET",
        &format!("{path}/csv"),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(first.text, second.text);
    assert_eq!(first_csv.text, second_csv.text);
    assert!(
        first_csv
            .text
            .contains("\nclosing_balance,,,,,,,,,,2027-01,0.997,USD\n"),
        "{}",
        first_csv.text
    );
    // February opens where January closed.
    let feb = call(
        &ts,
        "GET",
        &format!("/accounts/{}/statements/2027-02", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(feb.ok()["statement"]["opening_balance"], "0.997");
    let months = call(
        &ts,
        "GET",
        &format!("/accounts/{}/statements", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(months.ok()["months"], json!(["2027-02", "2027-01"]));
    billing_pages_show_the_same(&ts, &o).await;
    let bad = call(
        &ts,
        "GET",
        &format!("/accounts/{}/statements/2027-13", o.account),
        Some(&o.owner.token),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    // After the account is deleted its usage and statements remain for the operator.
    let members = ts.store.members(o.account).await.unwrap();
    assert_eq!(members.len(), 1);
    ts.store
        .delete_account(o.account, &Actor::Operator)
        .await
        .unwrap();
    assert!(ts.store.get_account(o.account).await.unwrap().is_none());
    let kept = hark_server::manage::usage::statement::statement(
        &ts.store,
        "USD",
        o.account,
        hark_server::manage::usage::statement::parse_month("2027-01").unwrap(),
        clock.now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(kept.billing_email, None);
    assert_eq!(
        format!("{{\"billing_email\":null,\"statement\":{}}}", kept.document),
        first
            .text
            .replace(&format!("\"{}\"", o.owner.email), "null")
    );
    ts.stop().await;
}
