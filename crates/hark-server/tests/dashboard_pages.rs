//! The dashboard's Transcripts, Audit log and Webhooks pages over plain HTTP, on
//! SQLite and PostgreSQL: they render locked down (CSP, no inline code, ≤ 60 KB);
//! downloads are attachments whose SRT and VTT are exactly what the AssemblyAI API
//! answers; a Reader sees no delete, reveal or rotate control and a hand-made POST of
//! each is refused; forms need their CSRF field; deletions, reveals and rotations are
//! audited and the audit log filters and exports them; the JSON API's webhook-secret
//! endpoints need a recent re-authentication and refuse Readers.

mod common;
use common::browser::{Browser, Page};
use common::mgmt::*;
use common::*;
use hark_core::{Plan, Role};
use hark_outbound::project_secret_seal_context;
use hark_store::{AccountStore, AuditStore, SigningSecretStore};
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use serde_json::json;
use std::sync::Arc;

/// The CSP, no inline script, style or handler, at most 60 KB.
fn assert_safe(path: &str, page: &Page) {
    let csp = page.header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"),
        "{path}: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{path}");
    assert_eq!(page.header("cache-control"), "no-store", "{path}");
    let html = page.body.to_ascii_lowercase();
    assert!(
        html.len() <= 60 * 1024,
        "{path} weighs {} bytes",
        html.len()
    );
    assert!(!html.contains("<style"), "{path}");
    assert!(!html.contains(" style="), "{path}");
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').expect("tag end")];
        assert!(
            tag.contains(" src=\"/static/"),
            "{path}: inline script {tag}"
        );
    }
    for (at, _) in html.match_indices(" on") {
        let name: String = html[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            name.is_empty() || !html[at + 3 + name.len()..].starts_with('='),
            "{path}: handler on{name}="
        );
    }
}

async fn completed_transcript(ts: &TestServer, key: &str, words: &[&str]) -> String {
    let up: serde_json::Value = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", key)
        .body(script(words))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let created: serde_json::Value = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", key)
        .json(&json!({"audio_url": up["upload_url"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let done = wait_done(ts, key, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    id
}

async fn api_text(ts: &TestServer, key: &str, path: &str) -> String {
    ts.http
        .get(ts.url(path))
        .header("authorization", key)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

async fn transcripts_pages(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let o = org(&ts, Plan::Payg).await;
    let reader = add_member(&ts, o.account, Role::Reader).await;
    let (_, key) = ts.key(o.project, None).await;
    let id = completed_transcript(&ts, &key, &["Hello", "world."]).await;
    let (a, p) = (o.account, o.project);
    let base = format!("/accounts/{a}/projects/{p}/transcripts");

    let mut owner = Browser::new(&ts);
    owner.sign_in(&o.owner.email, PASSWORD).await;
    let section = owner.get(&format!("/accounts/{a}/transcripts")).await;
    assert_eq!((section.status, section.location()), (303, base.clone()));
    let list = owner.get(&base).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_safe(&base, &list);
    assert!(list.body.contains(&id) && list.body.contains("completed"));
    assert!(list.body.contains("test key"), "the key that made it");
    assert!(list.body.contains(">Transcripts</a>"), "in the navigation");

    let detail_path = format!("{base}/{id}");
    let detail = owner.get(&detail_path).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_safe(&detail_path, &detail);
    assert!(detail.body.contains("Hello world."));
    assert!(
        detail
            .body
            .contains("<td>world.</td><td class=\"num\">0:00.400</td>"),
        "{}",
        detail.body
    );
    assert!(detail.body.contains(&format!("{detail_path}/delete\"")));

    // Downloads: attachments; SRT and VTT exactly as the AssemblyAI API renders them.
    let api_srt = api_text(&ts, &key, &format!("/v2/transcript/{id}/srt")).await;
    let api_vtt = api_text(&ts, &key, &format!("/v2/transcript/{id}/vtt")).await;
    assert!(api_srt.starts_with("1\n00:00:00,000 --> "), "{api_srt}");
    assert!(api_vtt.starts_with("WEBVTT"), "{api_vtt}");
    for (fmt, expected) in [
        ("srt", api_srt.as_str()),
        ("vtt", api_vtt.as_str()),
        ("txt", "Hello world.\n"),
    ] {
        let d = owner.get(&format!("{detail_path}/download/{fmt}")).await;
        assert_eq!(d.status, 200, "{fmt}: {}", d.body);
        assert_eq!(
            d.header(CONTENT_DISPOSITION),
            format!("attachment; filename=\"transcript-{id}.{fmt}\"")
        );
        assert!(d.header(CONTENT_TYPE).starts_with("text/"), "{fmt}");
        assert_eq!(d.body, expected, "{fmt}");
    }
    assert_eq!(
        owner
            .get(&format!("{detail_path}/download/pdf"))
            .await
            .status,
        404
    );

    // A Reader browses and downloads, but sees no delete control and is refused.
    let mut r = Browser::new(&ts);
    r.sign_in(&reader.email, PASSWORD).await;
    let rlist = r.get(&base).await;
    assert_eq!(rlist.status, 200);
    let rdetail = r.get(&detail_path).await;
    assert_eq!(rdetail.status, 200);
    assert!(rdetail.body.contains("Download SRT"));
    assert!(
        !rdetail.body.contains("/delete"),
        "no delete control for a Reader"
    );
    assert_eq!(r.get(&format!("{detail_path}/delete")).await.status, 403);
    let csrf = rdetail.csrf();
    let refused = r
        .post(&format!("{detail_path}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // The confirmation page, then the delete, which needs the CSRF field.
    let confirm = owner.get(&format!("{detail_path}/delete")).await;
    assert_eq!(confirm.status, 200);
    assert_safe("confirm delete", &confirm);
    assert!(confirm.body.contains("cannot be undone"));
    let no_csrf = owner.post(&format!("{detail_path}/delete"), &[]).await;
    assert_eq!(no_csrf.status, 403);
    let still = api_text(&ts, &key, &format!("/v2/transcript/{id}")).await;
    assert!(still.contains("Hello world."), "not deleted without CSRF");
    let csrf = confirm.csrf();
    let deleted = owner
        .post(&format!("{detail_path}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(
        deleted.location(),
        format!("{base}?notice=transcript_deleted")
    );
    let gone = api_text(&ts, &key, &format!("/v2/transcript/{id}")).await;
    assert!(gone.contains("Deleted by user."), "{gone}");
    let after = owner.get(&detail_path).await;
    assert!(after.body.contains("was deleted") && !after.body.contains("Download SRT"));

    // The deletion is audited under the Owner; the audit log filters and exports it.
    let audit = format!("/accounts/{a}/audit");
    let page = owner.get(&audit).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_safe(&audit, &page);
    let filtered_path = format!(
        "{audit}?action=transcript.&actor={}",
        o.owner.email.replace('@', "%40")
    );
    let filtered = owner.get(&filtered_path).await;
    assert_eq!(filtered.status, 200);
    assert!(
        filtered.body.contains("transcript.delete"),
        "{}",
        filtered.body
    );
    assert!(!filtered.body.contains("project.create"));
    assert_eq!(filtered.body.matches("<tr><td class=\"num\">").count(), 1);
    let csv = owner
        .get(&format!(
            "{audit}/export.csv?action=transcript.&actor={}",
            o.owner.email.replace('@', "%40")
        ))
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv
        .header(CONTENT_DISPOSITION)
        .starts_with("attachment; filename=\"audit-"));
    let rows: Vec<&str> = csv.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{}", csv.body);
    assert_eq!(rows[0], "seq,created_at,actor,action,target,details,hash");
    assert!(
        rows[1].contains(&format!("user:{},transcript.delete,{id},", o.owner.user_id)),
        "{}",
        rows[1]
    );
    assert!(
        rows[1].contains(&format!("\"{{\"\"project_id\"\":\"\"{p}\"\"}}\"")),
        "{}",
        rows[1]
    );
    let ndjson = owner
        .get(&format!("{audit}/export.ndjson?since=2000-01-01"))
        .await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.header(CONTENT_TYPE), "application/x-ndjson");
    let entries: Vec<serde_json::Value> = ndjson
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(entries.iter().any(|e| e["action"] == "transcript.delete"));
    assert!(entries.iter().any(|e| e["action"] == "account.create"));
    let none = owner
        .get(&format!("{audit}/export.ndjson?until=2000-01-01"))
        .await;
    assert_eq!(none.body, "", "nothing before 2000");
    let bad_date = owner.get(&format!("{audit}?since=yesterday")).await;
    assert_eq!(bad_date.status, 200);
    assert!(bad_date.body.contains("must be a date"));
    // A Reader may not read the audit log, nor see its entry.
    assert_eq!(r.get(&audit).await.status, 403);
    assert_eq!(r.get(&format!("{audit}/export.csv")).await.status, 403);
    assert!(!rlist.body.contains(">Audit log</a>"));
    assert!(page.body.contains(">Audit log</a>"));
    ts.stop().await;
}

async fn webhook_secret_pages_and_api(db: Db) {
    let ts = TestServer::start(db).await;
    let o = org(&ts, Plan::Payg).await;
    let reader = add_member(&ts, o.account, Role::Reader).await;
    let (a, p) = (o.account, o.project);
    let mk = ts.master_key();
    let unseal = |sealed: &str| {
        mk.open(sealed, &project_secret_seal_context(p))
            .expect("open")
    };
    let original = unseal(&ts.store.project_webhook_secret(p).await.unwrap().unwrap());
    let page_path = format!("/accounts/{a}/projects/{p}/webhooks");

    let mut owner = Browser::new(&ts);
    owner.sign_in(&o.owner.email, PASSWORD).await;
    let section = owner.get(&format!("/accounts/{a}/webhooks")).await;
    assert_eq!(
        (section.status, section.location()),
        (303, page_path.clone())
    );
    let page = owner.get(&page_path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_safe(&page_path, &page);
    assert!(
        !page.body.contains(&original),
        "the secret only after re-authentication"
    );
    assert!(page.body.contains("/reveal\"") && page.body.contains("/rotate\""));
    let csrf = page.csrf();

    let wrong = owner
        .post(
            &format!("{page_path}/reveal"),
            &[("csrf", &csrf), ("password", "not it at all")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(!wrong.body.contains(&original));
    let no_csrf = owner
        .post(&format!("{page_path}/reveal"), &[("password", PASSWORD)])
        .await;
    assert_eq!(no_csrf.status, 403);
    let shown = owner
        .post(
            &format!("{page_path}/reveal"),
            &[("csrf", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_safe("revealed", &shown);
    assert!(shown.body.contains(&original));

    // Rotate with a two-hour overlap: the page shows both; the store keeps both.
    let rotated = owner
        .post(
            &format!("{page_path}/rotate"),
            &[
                ("csrf", &csrf),
                ("password", PASSWORD),
                ("overlap_hours", "2"),
            ],
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let stored = ts.store.webhook_signing_secrets(p).await.unwrap().unwrap();
    let new_secret = unseal(&stored.current_sealed);
    assert_ne!(new_secret, original);
    assert!(rotated.body.contains(&new_secret) && rotated.body.contains(&original));
    let until = stored.previous_until.expect("an overlap");
    assert_eq!(until - stored.rotated_at.expect("rotated"), 2 * 3_600_000);
    assert!(owner
        .get(&page_path)
        .await
        .body
        .contains("still signs until"));
    let too_long = owner
        .post(
            &format!("{page_path}/rotate"),
            &[
                ("csrf", &csrf),
                ("password", PASSWORD),
                ("overlap_hours", "1000"),
            ],
        )
        .await;
    assert_eq!(too_long.status, 400, "{}", too_long.body);

    // A Reader sees the state but no control, and a hand-made POST is refused.
    let mut r = Browser::new(&ts);
    r.sign_in(&reader.email, PASSWORD).await;
    let rpage = r.get(&page_path).await;
    assert_eq!(rpage.status, 200);
    assert!(!rpage.body.contains("/reveal\"") && !rpage.body.contains("/rotate\""));
    assert!(!rpage.body.contains(&new_secret));
    let rcsrf = rpage.csrf();
    for action in ["reveal", "rotate"] {
        let refused = r
            .post(
                &format!("{page_path}/{action}"),
                &[
                    ("csrf", &rcsrf),
                    ("password", PASSWORD),
                    ("overlap_hours", "1"),
                ],
            )
            .await;
        assert_eq!(refused.status, 403, "{action}: {}", refused.body);
        assert!(!refused.body.contains(&new_secret));
    }
    assert_eq!(
        unseal(
            &ts.store
                .webhook_signing_secrets(p)
                .await
                .unwrap()
                .unwrap()
                .current_sealed
        ),
        new_secret,
        "the Reader changed nothing"
    );

    // The JSON API: GET needs a recent re-authentication; POST rotates; Readers refused.
    let path = format!("/accounts/{a}/projects/{p}/webhook-secret");
    let fresh = login_ok(&ts, &o.owner.email).await;
    let r0 = call(&ts, "GET", &path, Some(&fresh.token), None).await;
    assert_eq!((r0.status, r0.code()), (403, "reauth_required"));
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&fresh.token),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .ok();
    let got = call(&ts, "GET", &path, Some(&fresh.token), None).await;
    assert_eq!(got.ok()["secret"], new_secret.as_str());
    assert_eq!(got.body["previous_secret"], original.as_str());
    let rot = call(
        &ts,
        "POST",
        &format!("{path}/rotate"),
        Some(&fresh.token),
        Some(json!({"overlap_seconds": 0})),
    )
    .await;
    assert_eq!(rot.status, 201, "{}", rot.text);
    let newest = rot.body["secret"].as_str().expect("secret").to_string();
    assert!(newest.starts_with("whsec_"));
    assert!(rot.body["previous_secret"].is_null(), "no overlap asked");
    let bad = call(
        &ts,
        "POST",
        &format!("{path}/rotate"),
        Some(&fresh.token),
        Some(json!({"overlap_seconds": -1})),
    )
    .await;
    assert_eq!(bad.status, 400);
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&reader.token),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .ok();
    let rg = call(&ts, "GET", &path, Some(&reader.token), None).await;
    assert_eq!(
        (rg.status, rg.code()),
        (403, "permission_denied"),
        "{}",
        rg.text
    );
    let rr = call(
        &ts,
        "POST",
        &format!("{path}/rotate"),
        Some(&reader.token),
        Some(json!({})),
    )
    .await;
    assert_eq!(rr.status, 403);

    // Every reveal and rotation is in the audit log.
    let audit = ts.store.audit_entries(Some(a)).await.expect("audit");
    let count = |action: &str| audit.iter().filter(|e| e.action == action).count();
    assert_eq!(count("webhook_secret.reveal"), 2);
    assert_eq!(count("webhook_secret.rotate"), 2);
    ts.stop().await;
}

both_databases!(transcripts_pages, webhook_secret_pages_and_api);
