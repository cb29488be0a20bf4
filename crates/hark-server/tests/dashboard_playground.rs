//! The dashboard Playground over HTTP: the page is locked down (CSP, no inline code) and
//! offers only live keys; an upload (a multipart form, its CSRF token as the first field
//! or in the header) creates a transcript owned by the chosen key's project and key,
//! shown with its text once done; a live token is minted as the chosen key only and
//! opens a streaming session; a Reader, another project's key and another account's
//! key are refused.

mod common;
use common::mgmt::*;
use common::*;
use futures::StreamExt;
use hark_core::{Plan, Role, TranscriptId};
use hark_store::{AccountStore, Actor, TranscriptStore};
use serde_json::Value;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

const BOUNDARY: &str = "----hark-playground-test";

/// Cookies of a dashboard session opened through the JSON login.
fn cookies(p: &Person) -> String {
    format!("hark_session={}; hark_csrf={}", p.token, p.csrf)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get(ts: &TestServer, who: &Person, path: &str) -> Reply {
    send(client().get(ts.url(path)).header("cookie", cookies(who))).await
}

/// A multipart body: the text fields in order, then the file.
fn multipart(fields: &[(&str, &str)], file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(
    ts: &TestServer,
    who: &Person,
    account: &str,
    fields: &[(&str, &str)],
    header_csrf: Option<&str>,
) -> Reply {
    let mut req = client()
        .post(ts.url(&format!("/accounts/{account}/playground/upload")))
        .header("cookie", cookies(who))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(fields, &script(&["hello", "playground"])));
    if let Some(t) = header_csrf {
        req = req.header("x-csrf-token", t);
    }
    send(req).await
}

async fn token(ts: &TestServer, who: &Person, account: &str, project: &str, key: &str) -> Reply {
    send(
        client()
            .post(ts.url(&format!("/accounts/{account}/playground/token")))
            .header("cookie", cookies(who))
            .header("x-csrf-token", &who.csrf)
            .form(&[("project", project), ("key", key)]),
    )
    .await
}

/// The CSP of every dashboard page, and no inline script or style.
fn assert_locked_down(reply: &Reply, base: &str) {
    let ws = base.replacen("http://", "ws://", 1);
    assert_eq!(
        reply.headers["content-security-policy"],
        format!("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' {ws}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'").as_str()
    );
    let html = reply.body.to_ascii_lowercase();
    assert!(!html.contains("<style"), "style block");
    assert!(!html.contains(" style="), "style attribute");
    let mut rest = html.as_str();
    while let Some(at) = rest.find("<script") {
        let end = rest[at..].find('>').expect("tag end") + at;
        assert!(
            rest[at..end].contains(" src=\"/static/"),
            "inline script: {}",
            &rest[at..end]
        );
        assert!(rest[end + 1..].starts_with("</script>"), "script content");
        rest = &rest[end..];
    }
    assert!(html.len() <= 60 * 1024, "{} bytes", html.len());
}

async fn playground_acts_as_the_chosen_key(db: Db) {
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |_| {}).await;
    let org = org(&ts, Plan::Free).await;
    roomy(&ts, org.account).await;
    let account = org.account.to_string();
    let project = org.project.to_string();
    let (key_id, key) = ts.key(org.project, None).await;
    let (revoked_id, _) = ts.key(org.project, None).await;
    ts.revoke(revoked_id).await;
    let owner = &org.owner;

    // The page: locked down, live keys only, the upload form's CSRF field first.
    let page = get(
        &ts,
        owner,
        &format!("/accounts/{account}/playground?project={project}"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page, &ts.base);
    assert!(page.body.contains(&key_id.to_string()));
    assert!(!page.body.contains(&revoked_id.to_string()));
    assert!(page.body.contains("enctype=\"multipart/form-data\""));
    assert!(page.body.contains("needs JavaScript"));
    assert!(page.body.contains("/static/live."), "the live module");
    let overview = get(&ts, owner, &format!("/accounts/{account}")).await;
    assert!(overview.body.contains(">Playground<"), "nav entry");

    // Upload without a CSRF token: refused, nothing stored.
    let fields = [("project", project.as_str()), ("key", &key_id.to_string())];
    let refused = upload(&ts, owner, &account, &fields, None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let csrf = [("csrf", owner.csrf.as_str()), ("project", project.as_str())];
    let key_field = key_id.to_string();
    let mut with_csrf = csrf.to_vec();
    with_csrf.push(("key", &key_field));
    // A wrong token as the first field: refused.
    let mut wrong = with_csrf.clone();
    wrong[0].1 = "hark_tmp_0000000000000000000000000000000000000000000000";
    assert_eq!(upload(&ts, owner, &account, &wrong, None).await.status, 403);
    assert_eq!(
        count_rows(&ts, "transcripts", "api_key_id", &key_field).await,
        0
    );

    // With the token as the first field (a plain form, no JavaScript).
    let created = upload(&ts, owner, &account, &with_csrf, None).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.headers["location"].to_str().expect("location");
    let prefix = format!("/accounts/{account}/playground/transcripts/");
    assert!(location.starts_with(&prefix), "{location}");
    let id = location[prefix.len()..].split('?').next().expect("id");
    let stored = ts
        .store
        .get_transcript(org.project, TranscriptId::parse(id).expect("id"))
        .await
        .expect("read")
        .expect("the transcript is in the chosen key's project");
    assert_eq!(stored.api_key_id, key_id, "usage goes to the chosen key");
    let done = wait_done(&ts, &key, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let shown = get(&ts, owner, location).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_locked_down(&shown, &ts.base);
    assert!(shown.body.contains("hello playground"), "{}", shown.body);
    assert!(shown.body.contains("completed"));
    assert!(!shown.headers.contains_key("refresh"), "done: no reload");

    // With the token in the header instead (a script's request).
    let header_only = [("project", project.as_str()), ("key", key_field.as_str())];
    let by_header = upload(&ts, owner, &account, &header_only, Some(&owner.csrf)).await;
    assert_eq!(by_header.status, 303, "{}", by_header.body);
    assert_eq!(
        count_rows(&ts, "transcripts", "api_key_id", &key_field).await,
        2
    );

    // A revoked key is not used.
    let revoked_field = revoked_id.to_string();
    let mut with_revoked = csrf.to_vec();
    with_revoked.push(("key", &revoked_field));
    let refused = upload(&ts, owner, &account, &with_revoked, None).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("revoked or expired"));
    assert_locked_down(&refused, &ts.base);

    // A live token minted as the chosen key, which opens a streaming session.
    let minted = token(&ts, owner, &account, &project, &key_field).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let minted: Value = serde_json::from_str(&minted.body).expect("json");
    let temp = minted["token"].as_str().expect("token");
    assert!(temp.starts_with("hark_tmp_"), "{temp}");
    assert_eq!(
        count_rows(&ts, "stream_tokens", "api_key_id", &key_field).await,
        1
    );
    let ws_url = minted["ws_url"].as_str().expect("ws_url");
    assert_eq!(
        ws_url,
        format!("{}/v3/ws", ts.base.replacen("http://", "ws://", 1))
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{ws_url}?token={temp}&sample_rate=16000&encoding=pcm_s16le"
    ))
    .await
    .expect("websocket");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an answer")
        .expect("a message")
        .expect("no error");
    let Message::Text(text) = first else {
        panic!("expected Begin, got {first:?}");
    };
    let begin: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(begin["type"], "Begin", "{begin}");
    drop(ws);
    // Without the CSRF header or field: refused.
    let bare = send(
        client()
            .post(ts.url(&format!("/accounts/{account}/playground/token")))
            .header("cookie", cookies(owner))
            .form(&[("project", project.as_str()), ("key", key_field.as_str())]),
    )
    .await;
    assert_eq!(bare.status, 403);

    // Another project's key, and another account's: as missing; nothing minted.
    let other = ts
        .store
        .create_project(
            org.account,
            hark_server::provisioning::new_project(&ts.master_key(), "other"),
            &Actor::Operator,
        )
        .await
        .expect("project");
    let (other_key, _) = ts.key(other.id, None).await;
    let wrong_project = token(&ts, owner, &account, &project, &other_key.to_string()).await;
    assert_eq!(wrong_project.status, 404, "{}", wrong_project.body);
    let stranger = ts.tenant(Plan::Free).await;
    let foreign = token(
        &ts,
        owner,
        &account,
        &stranger.project.to_string(),
        &stranger.key_id.to_string(),
    )
    .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let foreign_account = token(
        &ts,
        owner,
        &stranger.account.to_string(),
        &stranger.project.to_string(),
        &stranger.key_id.to_string(),
    )
    .await;
    assert_eq!(foreign_account.status, 404, "{}", foreign_account.body);
    for k in [other_key.to_string(), stranger.key_id.to_string()] {
        assert_eq!(count_rows(&ts, "stream_tokens", "api_key_id", &k).await, 0);
    }
    let json: Value = serde_json::from_str(&foreign.body).expect("json error");
    assert!(json["error"].is_string(), "{json}");

    // A Reader: no page, no upload, no token.
    let reader = add_member(&ts, org.account, Role::Reader).await;
    let page = get(&ts, &reader, &format!("/accounts/{account}/playground")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_locked_down(&page, &ts.base);
    assert!(!page.body.contains("Transcribe"));
    let nav = get(&ts, &reader, &format!("/accounts/{account}")).await;
    assert!(
        !nav.body.contains(">Playground<"),
        "no nav entry for a Reader"
    );
    let reader_fields = [
        ("csrf", reader.csrf.as_str()),
        ("project", project.as_str()),
        ("key", key_field.as_str()),
    ];
    let refused = upload(&ts, &reader, &account, &reader_fields, None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        token(&ts, &reader, &account, &project, &key_field)
            .await
            .status,
        403
    );
    assert_eq!(
        count_rows(&ts, "transcripts", "api_key_id", &key_field).await,
        2
    );
    assert_eq!(
        count_rows(&ts, "stream_tokens", "api_key_id", &key_field).await,
        1
    );
    ts.stop().await;
}

both_databases!(playground_acts_as_the_chosen_key);
