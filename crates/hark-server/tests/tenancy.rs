//! The cross-tenant matrix: for every route, a key of another project in the same
//! account, a key of another account, a revoked key, an expired key, a malformed key,
//! an unknown key and no key each get the right refusal and never see the owner's data.

mod common;
mod support;
use common::*;
use hark_core::keys::{self, SecretKind};
use hark_core::Plan;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// One request of the route matrix.
#[derive(Clone, Copy)]
enum Route {
    Upload,
    Create,
    List,
    Get,
    Delete,
    Sentences,
    Paragraphs,
    Srt,
    Vtt,
    WordSearch,
}

const ROUTES: [Route; 10] = [
    Route::Upload,
    Route::Create,
    Route::List,
    Route::Get,
    Route::Delete,
    Route::Sentences,
    Route::Paragraphs,
    Route::Srt,
    Route::Vtt,
    Route::WordSearch,
];

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Upload => "POST /v2/upload",
            Route::Create => "POST /v2/transcript",
            Route::List => "GET /v2/transcript",
            Route::Get => "GET /v2/transcript/{id}",
            Route::Delete => "DELETE /v2/transcript/{id}",
            Route::Sentences => "GET sentences",
            Route::Paragraphs => "GET paragraphs",
            Route::Srt => "GET srt",
            Route::Vtt => "GET vtt",
            Route::WordSearch => "GET word-search",
        }
    }

    /// Sends this route against transcript `id` / upload `upload_url` with the
    /// `Authorization` value `auth` (no header at all when `None`).
    async fn call(self, ts: &TestServer, auth: Option<&str>, id: &str, upload_url: &str) -> Resp {
        let url = |p: &str| ts.url(p);
        let req = match self {
            Route::Upload => ts.http.post(url("/v2/upload")).body(script(&["intruder"])),
            Route::Create => ts
                .http
                .post(url("/v2/transcript"))
                .header("content-type", "application/json")
                .body(json!({ "audio_url": upload_url }).to_string()),
            Route::List => ts.http.get(url("/v2/transcript")),
            Route::Get => ts.http.get(url(&format!("/v2/transcript/{id}"))),
            Route::Delete => ts.http.delete(url(&format!("/v2/transcript/{id}"))),
            Route::Sentences => ts.http.get(url(&format!("/v2/transcript/{id}/sentences"))),
            Route::Paragraphs => ts.http.get(url(&format!("/v2/transcript/{id}/paragraphs"))),
            Route::Srt => ts.http.get(url(&format!("/v2/transcript/{id}/srt"))),
            Route::Vtt => ts.http.get(url(&format!(
                "/v2/transcript/{id}/vtt?chars_per_caption=20"
            ))),
            Route::WordSearch => ts.http.get(url(&format!(
                "/v2/transcript/{id}/word-search?words=zebracorn,quixotic"
            ))),
        };
        let req = match auth {
            Some(a) => req.header("authorization", a),
            None => req,
        };
        send(req).await
    }
}

/// The owner's secrets that must never show up in another tenant's response.
struct Secrets {
    strings: Vec<String>,
}

impl Secrets {
    fn assert_absent(&self, who: &str, route: Route, r: &Resp) {
        for s in &self.strings {
            assert!(
                !r.text.contains(s.as_str()),
                "{who} on {} saw '{s}': {}",
                route.name(),
                r.text
            );
        }
    }
}

async fn owner_with_transcript(ts: &TestServer) -> (Tenant, String, String) {
    let owner = ts.tenant(Plan::Free).await;
    let upload_url = upload(ts, &owner.key, script(&["Zebracorn", "quixotic", "words."])).await;
    let t = create(ts, &owner.key, json!({ "audio_url": upload_url })).await;
    let id = t["id"].as_str().unwrap().to_string();
    let done = wait_done(ts, &owner.key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    (owner, id, upload_url)
}

/// Checks the owner still sees its transcript and upload intact.
async fn assert_owner_intact(ts: &TestServer, owner: &Tenant, id: &str, upload_url: &str) {
    let r = get(ts, &owner.key, &format!("/v2/transcript/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["text"], "Zebracorn quixotic words.", "{v}");
    assert_eq!(v["audio_url"], upload_url);
    let file = uploads_dir(ts)
        .join(owner.project.to_string())
        .join(upload_id(upload_url));
    assert!(file.is_file(), "owner's upload still on disk");
    assert_eq!(ids(&list(ts, &owner.key, "").await), vec![id.to_string()]);
}

/// Foreign keys (another project of the same account, another account): each route
/// refuses exactly as for a missing transcript or upload, and lists show nothing.
async fn foreign_keys_see_nothing(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let (owner, id, upload_url) = owner_with_transcript(&ts).await;
    let (_, sibling_key) = ts.second_project(&owner).await;
    let stranger = ts.tenant(Plan::Payg).await;
    // PAYG is prepaid: credit, so that its own uploads and transcripts are not refused
    // for a negative balance once its first transcript is charged.
    hark_store::BillingStore::grant_credit(
        &ts.store,
        stranger.account,
        100_000_000,
        hark_store::CreditKind::Operator,
        "test credit",
        &hark_store::Actor::Operator,
    )
    .await
    .expect("credit");
    // The stranger has data of its own, so its list is not trivially empty.
    let stranger_id = transcribe(&ts, &stranger.key, &["Stranger", "text."]).await;
    wait_done(&ts, &stranger.key, &stranger_id).await;

    let secrets = Secrets {
        strings: vec![
            id.clone(),
            upload_id(&upload_url).to_string(),
            owner.project.to_string(),
            owner.account.to_string(),
            "Zebracorn".into(),
            "quixotic".into(),
        ],
    };
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let unknown_upload = format!("{}/v2/upload/{}", ts.base, uuid::Uuid::new_v4());

    for (who, key) in [
        ("sibling project", &sibling_key),
        ("other account", &stranger.key),
    ] {
        for route in ROUTES {
            let r = route.call(&ts, Some(key), &id, &upload_url).await;
            secrets.assert_absent(who, route, &r);
            match route {
                Route::Upload => assert_eq!(r.status, 200, "{who}: {}", r.text),
                Route::List => {
                    assert_eq!(r.status, 200, "{who}: {}", r.text);
                    let v = r.json();
                    if who == "other account" {
                        assert_eq!(ids(&v), vec![stranger_id.clone()]);
                    } else {
                        assert_eq!(ids(&v), Vec::<String>::new());
                    }
                }
                Route::Create => {
                    r.exact_error(403, UPLOAD_FORBIDDEN);
                    // Exactly like an upload id that does not exist.
                    let missing = route.call(&ts, Some(key), &id, &unknown_upload).await;
                    assert_eq!((missing.status, &missing.text), (r.status, &r.text));
                }
                _ => {
                    r.exact_error(400, NOT_FOUND_TRANSCRIPT);
                    // Exactly like an id that does not exist.
                    let missing = route.call(&ts, Some(key), &unknown_id, &upload_url).await;
                    assert_eq!(
                        (missing.status, &missing.text),
                        (r.status, &r.text),
                        "{who} on {}",
                        route.name()
                    );
                }
            }
        }
    }
    // Nothing the foreign keys did changed or revealed the owner's data, and the
    // owner in turn cannot see the stranger's transcript.
    assert_owner_intact(&ts, &owner, &id, &upload_url).await;
    let r = get(&ts, &owner.key, &format!("/v2/transcript/{stranger_id}")).await;
    r.exact_error(400, NOT_FOUND_TRANSCRIPT);
    // The stranger's own transcript is untouched by the owner's attempt.
    let r = get(&ts, &stranger.key, &format!("/v2/transcript/{stranger_id}")).await;
    assert_eq!(r.json()["text"], "Stranger text.");
    ts.stop().await;
}

/// Bad credentials: 401 with the exact body on every route; nothing is changed.
async fn bad_credentials_are_refused(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let (owner, id, upload_url) = owner_with_transcript(&ts).await;
    let secrets = Secrets {
        strings: vec![
            id.clone(),
            upload_id(&upload_url).to_string(),
            "Zebracorn".into(),
        ],
    };

    // Revoked: works, is revoked, and the very next request fails.
    let (revoked_id, revoked) = ts.key(owner.project, None).await;
    let r = get(&ts, &revoked, &format!("/v2/transcript/{id}")).await;
    assert_eq!(r.status, 200, "before revocation: {}", r.text);
    ts.revoke(revoked_id).await;
    let r = get(&ts, &revoked, &format!("/v2/transcript/{id}")).await;
    r.exact_error(401, AUTH_ERROR);

    // Expired: a key of the owner's project that expired 1 ms after issue.
    let (_, expired) = ts.key(owner.project, Some(1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let unknown = keys::generate(SecretKind::ApiKey).into_inner();
    assert!(keys::is_well_formed(SecretKind::ApiKey, &unknown));
    let mut tampered = owner.key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("malformed", Some("not-a-key".into())),
        ("tampered checksum", Some(tampered)),
        ("owner key with suffix", Some(format!("{}x", owner.key))),
        ("bearer only", Some("Bearer".into())),
        ("unknown well-formed", Some(unknown.clone())),
        ("bearer unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(revoked.clone())),
        ("bearer revoked", Some(format!("Bearer {revoked}"))),
        ("expired", Some(expired.clone())),
    ];
    for (who, auth) in &bad {
        for route in ROUTES {
            let r = route.call(&ts, auth.as_deref(), &id, &upload_url).await;
            assert_eq!(r.status, 401, "{who} on {}: {}", route.name(), r.text);
            assert_eq!(
                r.json(),
                json!({ "error": AUTH_ERROR }),
                "{who} on {}",
                route.name()
            );
            secrets.assert_absent(who, route, &r);
        }
    }
    // Nothing was written by refused requests: no uploads, the delete did not happen.
    let files = files_under(&uploads_dir(&ts));
    assert_eq!(files.len(), 1, "only the owner's upload: {files:?}");
    assert_owner_intact(&ts, &owner, &id, &upload_url).await;
    ts.stop().await;
}

/// `/health` stays open without credentials (load balancers) and, when an
/// `Authorization` header is sent, answers 200 only for a usable key: the check a
/// rotation runbook makes before revoking the old key.
async fn health_checks_a_presented_key(db: Db) {
    let ts = TestServer::start(db).await;
    let owner = ts.tenant(Plan::Payg).await;
    let health = |auth: Option<String>| {
        let mut req = ts.http.get(ts.url("/health"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        send(req)
    };
    // The body also names the region and node that answered (issue 12).
    let r = health(None).await;
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    for good in [owner.key.clone(), format!("Bearer {}", owner.key)] {
        let r = health(Some(good)).await;
        assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    }
    let (revoked_id, revoked) = ts.key(owner.project, None).await;
    assert_eq!(health(Some(revoked.clone())).await.status, 200);
    ts.revoke(revoked_id).await;
    let (_, expired) = ts.key(owner.project, Some(1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for bad in [
        String::new(),
        "not-a-key".into(),
        keys::generate(SecretKind::ApiKey).into_inner(),
        keys::generate(SecretKind::TempToken).into_inner(),
        format!("Bearer {revoked}"),
        expired,
    ] {
        health(Some(bad.clone())).await.exact_error(401, AUTH_ERROR);
    }
    ts.stop().await;
}

both_databases!(
    foreign_keys_see_nothing,
    bad_credentials_are_refused,
    health_checks_a_presented_key
);
