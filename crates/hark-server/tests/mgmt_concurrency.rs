//! Plan limits under concurrency through the API: 50 simultaneous creations of API
//! keys, projects and invites with one slot left yield exactly one success each.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::Plan;
use serde_json::json;

/// Fires 50 identical-but-for-a-name requests at once; returns their statuses.
async fn fifty(
    ts: &TestServer,
    token: &str,
    path: &str,
    body: impl Fn(usize) -> serde_json::Value,
) -> Vec<u16> {
    let futs = (0..50).map(|i| {
        let url = ts.url(&format!("/api/v1{path}"));
        let req = ts.http.post(url).bearer_auth(token).json(&body(i));
        async move { req.send().await.expect("sent").status().as_u16() }
    });
    futures::future::join_all(futs).await
}

fn one_success(statuses: &[u16], what: &str) {
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (1, 49), "{what}: {statuses:?}");
}

async fn limits_hold_under_concurrency(db: Db) {
    let ts = TestServer::start(db).await;
    // Free: 2 keys, 2 projects, 2 members. The bootstrap leaves one of each free:
    // one project exists, one key is issued below, the Owner is one member.
    let a = org(&ts, Plan::Free).await;
    ts.key(a.project, None).await;
    let keys = fifty(
        &ts,
        &a.owner.token,
        &format!("/accounts/{}/projects/{}/keys", a.account, a.project),
        |i| json!({"name": format!("k{i}")}),
    )
    .await;
    one_success(&keys, "keys");
    let projects = fifty(
        &ts,
        &a.owner.token,
        &format!("/accounts/{}/projects", a.account),
        |i| json!({"name": format!("p{i}")}),
    )
    .await;
    one_success(&projects, "projects");
    let invites = fifty(
        &ts,
        &a.owner.token,
        &format!("/accounts/{}/invites", a.account),
        |i| json!({"email": format!("person{i}@example.com")}),
    )
    .await;
    one_success(&invites, "invites");
    let id = a.account.to_string();
    assert_eq!(count_rows(&ts, "api_keys", "account_id", &id).await, 2);
    assert_eq!(count_rows(&ts, "projects", "account_id", &id).await, 2);
    assert_eq!(count_rows(&ts, "invites", "account_id", &id).await, 1);
    ts.stop().await;
}

both_databases!(limits_hold_under_concurrency);
