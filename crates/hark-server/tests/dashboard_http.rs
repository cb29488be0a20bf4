//! The dashboard over plain HTTP: every page answers with the strict CSP and the other
//! security headers, holds no inline script or style and stays under 60 KB; an unsafe
//! request without the CSRF field, from another site or with a foreign Origin is
//! refused; the first-run setup link works once; sign-in throttles like the API.

mod common;
use common::browser::{Browser, Page};
use common::mgmt::{self, add_member, org, roomy};
use common::*;
use hark_core::{Plan, Role};
use hark_store::{AccountStore, KeyStore, LinkStore, ManageStore, MemberStore, UserStore};
use reqwest::header::CACHE_CONTROL;

const PASSWORD: &str = "correct horse battery";

/// The CSP and companions, no inline script or style, no `on*=` handlers, ≤ 60 KB.
fn assert_safe_page(path: &str, page: &Page, base: &str) {
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{path}: no CSP header"))
        .to_str()
        .expect("csp");
    let ws = base.replacen("http://", "ws://", 1);
    assert_eq!(
        csp,
        format!("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' {ws}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
        "{path}"
    );
    assert_eq!(page.headers["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(page.headers["referrer-policy"], "same-origin", "{path}");
    let html = page.body.to_ascii_lowercase();
    assert!(
        html.len() <= 60 * 1024,
        "{path} weighs {} bytes",
        html.len()
    );
    assert!(!html.contains("<style"), "{path} has a <style> block");
    assert!(!html.contains(" style="), "{path} has a style attribute");
    let mut rest = html.as_str();
    while let Some(at) = rest.find("<script") {
        let tag_end = rest[at..].find('>').expect("script tag end") + at;
        let tag = &rest[at..tag_end];
        assert!(
            tag.contains(" src=\"/static/"),
            "{path}: inline script: {tag}"
        );
        assert!(
            rest[tag_end + 1..].starts_with("</script>"),
            "{path}: script with content"
        );
        rest = &rest[tag_end..];
    }
    let bytes = html.as_bytes();
    for (i, w) in bytes.windows(3).enumerate() {
        if w == b" on" {
            let name: String = html[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                name.is_empty() || !html[i + 3 + name.len()..].starts_with('='),
                "{path}: event handler attribute on{name}="
            );
        }
    }
}

async fn every_page_is_locked_down(db: Db) {
    let ts = TestServer::start(db).await;
    let state = ts.server.as_ref().expect("server").state.clone();
    let link = hark_server::manage::links::first_run_link(&state)
        .await
        .expect("link")
        .expect("no account yet, so a setup link");
    let setup_path = link.strip_prefix(&ts.base).expect("link on this server");
    let mut b = Browser::new(&ts);

    // Signed out: the public pages.
    for path in ["/signin", "/forgot-password", setup_path] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_safe_page(path, &page, &ts.base);
    }
    // Not found, and sign-up while it is by invitation only: still locked down.
    for path in ["/signup", "/password/hark_tmp_nothing"] {
        let page = b.get(path).await;
        assert!(page.status >= 400, "{path} answered {}", page.status);
        assert_safe_page(path, &page, &ts.base);
    }
    let page = b.get(setup_path).await;
    let token = page.csrf();
    let form = [
        ("name", "Ada Owner"),
        ("email", "ada@example.com"),
        ("password", PASSWORD),
        ("account_name", "Analytical"),
    ];

    // Refused: no CSRF field, a wrong one, from another site, a foreign Origin.
    let refused = b.post(setup_path, &form).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_safe_page("refused setup", &refused, &ts.base);
    let mut wrong = form.to_vec();
    wrong.push((
        "csrf",
        "hark_tmp_0000000000000000000000000000000000000000000000",
    ));
    assert_eq!(b.post(setup_path, &wrong).await.status, 403);
    let mut good = form.to_vec();
    good.push(("csrf", &token));
    let cross = b
        .send(
            b.http
                .post(ts.url(setup_path))
                .header("sec-fetch-site", "cross-site")
                .form(&good),
        )
        .await;
    assert_eq!(cross.status, 403);
    let foreign = b
        .send(
            b.http
                .post(ts.url(setup_path))
                .header("origin", "http://evil.example")
                .form(&good),
        )
        .await;
    assert_eq!(foreign.status, 403);
    assert_eq!(ts.store.account_count().await.expect("count"), 0);

    // The setup link creates the first account with its Owner, signed in.
    let created = b.post(setup_path, &good).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let home = created.location();
    assert!(home.starts_with("/accounts/"), "{home}");
    let owner = ts
        .store
        .user_by_email("ada@example.com")
        .await
        .expect("lookup")
        .expect("owner");
    assert_eq!(owner.name, "Ada Owner");
    let accounts = ts.store.accounts_of_user(owner.id).await.expect("accounts");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].role, hark_core::Role::Owner);
    assert!(b.cookies.iter().any(|(k, _)| k == "hark_session"));

    // Every signed-in page.
    let account = accounts[0].account_id;
    for path in [
        "/".to_string(),
        "/accounts".to_string(),
        format!("/accounts/{account}"),
        format!("/accounts/{account}/security"),
        "/profile".to_string(),
        "/profile/mfa".to_string(),
        "/profile/mfa?required=1".to_string(),
    ] {
        let page = b.get(&path).await;
        assert!(
            page.status == 200 || page.status == 303,
            "{path}: {} {}",
            page.status,
            page.body
        );
        assert_safe_page(&path, &page, &ts.base);
        if page.status == 200 {
            assert_eq!(page.headers[CACHE_CONTROL], "no-store", "{path}");
            assert!(page.body.contains("ada@example.com"), "{path}");
        }
    }
    // The stylesheet, script and icon are versioned and cached for long.
    let overview = b.get(&format!("/accounts/{account}")).await;
    for ext in [".css", ".js", ".svg"] {
        let at = overview
            .body
            .find(&format!("{ext}\""))
            .unwrap_or_else(|| panic!("no {ext} asset linked"));
        let start = overview.body[..at].rfind("/static/").expect("asset url");
        let url = overview.body[start..at + ext.len()].to_string();
        let asset = b.get(&url).await;
        assert_eq!(asset.status, 200, "{url}");
        assert_eq!(
            asset.headers[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
    }
    assert_eq!(b.get("/static/app.css").await.status, 404);

    // Signed in, a form without its CSRF field changes nothing.
    let refused = b
        .post(
            "/profile/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another long one"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let csrf = b.get("/profile").await.csrf();
    let changed = b
        .post(
            "/profile/password",
            &[
                ("csrf", csrf.as_str()),
                ("current_password", PASSWORD),
                ("new_password", "another long one"),
            ],
        )
        .await;
    assert_eq!(changed.status, 303, "{}", changed.body);
    assert_eq!(changed.location(), "/profile?notice=password_changed");

    // The setup link worked once.
    let mut other = Browser::new(&ts);
    let again = other.get(setup_path).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert!(
        hark_server::manage::links::first_run_link(&state)
            .await
            .expect("link")
            .is_none(),
        "no new setup link once an account exists"
    );

    // Sign out, then a wrong password re-renders the form with the message.
    let csrf = b.get("/profile").await.csrf();
    let out = b.post("/signout", &[("csrf", csrf.as_str())]).await;
    assert_eq!(out.location(), "/signin?notice=signed_out");
    assert_eq!(
        b.get("/profile").await.location(),
        "/signin?next=%2Fprofile"
    );
    let page = b.get("/signin").await;
    let csrf = page.csrf();
    let wrong = b
        .post(
            "/signin",
            &[
                ("csrf", csrf.as_str()),
                ("email", "ada@example.com"),
                ("password", "not the password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not right"));
    assert_safe_page("wrong password", &wrong, &ts.base);
    let ok = b
        .post(
            "/signin",
            &[
                ("csrf", csrf.as_str()),
                ("email", "ada@example.com"),
                ("password", "another long one"),
                ("next", "/profile"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location(), "/profile");
    ts.stop().await;
}

/// The text of the element with `id` (the one-time secret pages put the key there).
fn element_text(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in: {body}"));
    let start = at + body[at..].find('>').expect("tag end") + 1;
    let end = start + body[start..].find('<').expect("text end");
    body[start..end].trim().to_string()
}

async fn api_status(ts: &TestServer, key: &str, method: reqwest::Method, path: &str) -> u16 {
    reqwest::Client::new()
        .request(method, ts.url(path))
        .header("authorization", key)
        .json(&serde_json::json!({"audio_url": "http://127.0.0.1:9/a.wav"}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Projects ("N of M" against the plan, create, rename, delete by typing the name),
/// API Keys (create shown once, copy after re-authentication, scopes, rotate, revoke
/// refusing the very next request, delete), Members (invite, roles, removal) and
/// Account (billing email, Delete Account), every page locked down; a Reader sees no
/// control that changes anything and each such form, posted by hand, is refused.
async fn account_pages(db: Db) {
    let ts = TestServer::start(db).await;
    let o = org(&ts, Plan::Free).await;
    let a = o.account;
    let mut b = Browser::signed_in(&ts, &o.owner);
    let base = format!("/accounts/{a}");

    // Projects against the Free plan's two.
    let page = b.get(&format!("{base}/projects")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_safe_page("projects", &page, &ts.base);
    assert!(page.body.contains("1 of 2 projects"), "{}", page.body);
    let csrf = page.csrf();
    let made = b
        .post(
            &format!("{base}/projects"),
            &[("csrf", csrf.as_str()), ("name", "Second")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let page = b.get(&made.location()).await;
    assert!(page.body.contains("2 of 2 projects"), "{}", page.body);
    assert!(page.body.contains("The project was created."));
    let over = b
        .post(
            &format!("{base}/projects"),
            &[("csrf", csrf.as_str()), ("name", "Third")],
        )
        .await;
    assert_eq!(over.status, 409, "{}", over.body);
    assert!(over.body.contains("class=\"error\""), "{}", over.body);
    assert_safe_page("project limit", &over, &ts.base);
    let second = ts
        .store
        .list_projects(a)
        .await
        .expect("projects")
        .into_iter()
        .find(|p| p.name == "Second")
        .expect("second project");
    let renamed = b
        .post(
            &format!("{base}/projects/{}/rename", second.id),
            &[("csrf", csrf.as_str()), ("name", "Staging")],
        )
        .await;
    assert_eq!(renamed.status, 303, "{}", renamed.body);
    let confirm = b
        .get(&format!("{base}/projects/{}/delete", second.id))
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("This cannot be undone."));
    assert_safe_page("delete project", &confirm, &ts.base);
    let typo = b
        .post(
            &format!("{base}/projects/{}/delete", second.id),
            &[("csrf", csrf.as_str()), ("confirm_name", "Stagin")],
        )
        .await;
    assert_eq!(typo.status, 400, "{}", typo.body);
    assert_eq!(ts.store.list_projects(a).await.expect("projects").len(), 2);
    let gone = b
        .post(
            &format!("{base}/projects/{}/delete", second.id),
            &[("csrf", csrf.as_str()), ("confirm_name", " Staging ")],
        )
        .await;
    assert_eq!(gone.status, 303, "{}", gone.body);
    assert_eq!(ts.store.list_projects(a).await.expect("projects").len(), 1);

    // API Keys: "Create new API key" shows the key once; it works; "Revoke" ends it.
    let keys = b.get(&format!("{base}/keys")).await;
    assert_eq!(keys.status, 200, "{}", keys.body);
    assert_safe_page("keys", &keys, &ts.base);
    assert!(keys.body.contains("Create new API key"));
    let p = o.project;
    let created = b
        .post(
            &format!("{base}/projects/{p}/keys"),
            &[("csrf", csrf.as_str()), ("name", "ci"), ("expires_in", "")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.headers[CACHE_CONTROL], "no-store");
    assert_safe_page("new key", &created, &ts.base);
    let secret = element_text(&created.body, "secret");
    assert!(secret.starts_with("hark_key_"), "{secret}");
    assert_eq!(
        api_status(&ts, &secret, reqwest::Method::GET, "/v2/transcript").await,
        200
    );
    let listed = b.get(&format!("{base}/keys?project={p}")).await;
    assert!(listed.body.contains("Never"), "last used / expiry: Never");
    assert!(
        !listed.body.contains(&secret),
        "a list never shows a secret"
    );
    let key = ts
        .store
        .list_api_keys(p)
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.name == "ci")
        .expect("key ci");
    let kb = format!("{base}/projects/{p}/keys/{}", key.id);

    // "Copy" of an existing key: the password first, then the key (audited).
    let ask = b.get(&format!("{kb}/reveal")).await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("name=\"password\""));
    let wrong = b
        .post(
            &format!("{kb}/reveal"),
            &[("csrf", csrf.as_str()), ("password", "not it")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(!wrong.body.contains(&secret));
    let shown = b
        .post(
            &format!("{kb}/reveal"),
            &[("csrf", csrf.as_str()), ("password", mgmt::PASSWORD)],
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(element_text(&shown.body, "secret"), secret);
    assert_eq!(shown.headers[CACHE_CONTROL], "no-store");
    let audit = ts
        .store
        .audit_query(
            a,
            &hark_store::AuditFilter {
                action_prefix: Some("api_key.reveal".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);

    // Scopes narrowed on the key's page hold from the next request.
    let edited = b
        .post(
            &format!("{kb}/edit"),
            &[
                ("csrf", csrf.as_str()),
                ("name", "ci reader"),
                ("scope_transcripts_read", "on"),
            ],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let page = b.get(&edited.location()).await;
    assert_eq!(page.status, 200);
    assert_safe_page("key", &page, &ts.base);
    assert!(page.body.contains("ci reader"));
    assert_eq!(
        api_status(&ts, &secret, reqwest::Method::POST, "/v2/transcript").await,
        403
    );
    assert_eq!(
        api_status(&ts, &secret, reqwest::Method::GET, "/v2/transcript").await,
        200
    );

    // Rotate without grace: the new key works, the old one is refused at once.
    let rotated = b
        .post(
            &format!("{kb}/rotate"),
            &[("csrf", csrf.as_str()), ("grace_seconds", "0")],
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let successor = element_text(&rotated.body, "secret");
    assert_ne!(successor, secret);
    assert_eq!(
        api_status(&ts, &secret, reqwest::Method::GET, "/v2/transcript").await,
        401
    );
    assert_eq!(
        api_status(&ts, &successor, reqwest::Method::GET, "/v2/transcript").await,
        200
    );
    let new_key = ts
        .store
        .list_api_keys(p)
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.replaced_by.is_none() && k.revoked_at.is_none() && k.id != key.id)
        .expect("successor");
    assert_eq!(new_key.scopes, key_scopes_read());
    let nb = format!("{base}/projects/{p}/keys/{}", new_key.id);
    let confirm = b.get(&format!("{nb}/revoke")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("This cannot be undone."));
    // A live key cannot be deleted; revoke first.
    let early = b
        .post(&format!("{nb}/delete"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(early.status, 409, "{}", early.body);
    let revoked = b
        .post(&format!("{nb}/revoke"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(
        api_status(&ts, &successor, reqwest::Method::GET, "/v2/transcript").await,
        401,
        "refused on the very next request after Revoke"
    );
    let deleted = b
        .post(&format!("{nb}/delete"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert!(ts
        .store
        .get_api_key(new_key.id)
        .await
        .expect("get")
        .is_none());

    // Members: "Invite Member", "Send Invite", N of M (active and pending).
    roomy(&ts, a).await;
    let members = b.get(&format!("{base}/members")).await;
    assert_eq!(members.status, 200);
    assert_safe_page("members", &members, &ts.base);
    assert!(members.body.contains("Invite Member") && members.body.contains("Send Invite"));
    assert!(members.body.contains("Not set up"));
    let invited = b
        .post(
            &format!("{base}/members/invite"),
            &[
                ("csrf", csrf.as_str()),
                ("email", "new@example.com"),
                ("role", ""),
            ],
        )
        .await;
    assert_eq!(invited.status, 303, "{}", invited.body);
    let members = b.get(&invited.location()).await;
    assert!(members.body.contains("new@example.com"));
    assert!(
        members.body.contains("2 of 500 members"),
        "{}",
        members.body
    );
    let pending = ts.store.pending_invites(a).await.expect("invites");
    assert_eq!(pending[0].role, Role::Reader, "Reader by default");
    let admin = add_member(&ts, a, Role::Admin).await;
    let made_reader = b
        .post(
            &format!("{base}/members/{}/role", admin.user_id),
            &[("csrf", csrf.as_str()), ("role", "reader")],
        )
        .await;
    assert_eq!(made_reader.status, 303, "{}", made_reader.body);
    assert_eq!(
        ts.store.role_of(a, admin.user_id).await.expect("role"),
        Some(Role::Reader)
    );
    let owner_role = b
        .post(
            &format!("{base}/members/{}/role", o.owner.user_id),
            &[("csrf", csrf.as_str()), ("role", "reader")],
        )
        .await;
    assert!(owner_role.status >= 400, "the Owner's row cannot change");

    // A Reader: pages open, no control that changes anything, each form refused.
    let reader = add_member(&ts, a, Role::Reader).await;
    let mut r = Browser::signed_in(&ts, &reader);
    let pages = [
        base.clone(),
        format!("{base}/projects"),
        format!("{base}/keys"),
        format!("{base}/members"),
        format!("{base}/settings"),
        format!("{base}/usage"),
    ];
    for path in &pages {
        let page = r.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_safe_page(path, &page, &ts.base);
        let posts_here = page
            .body
            .matches(&format!("method=\"post\" action=\"{base}/"))
            .count();
        assert_eq!(posts_here, 0, "{path}: a Reader sees a form: {}", page.body);
        for word in [
            "/revoke\"",
            "/delete\"",
            "/reveal\"",
            "Create new API key",
            "Send Invite",
            "Delete Account",
        ] {
            assert!(!page.body.contains(word), "{path}: a Reader sees {word}");
        }
    }
    let rcsrf = reader.csrf.clone();
    let refused: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{base}/projects"), vec![("name", "x")]),
        (format!("{base}/projects/{p}/rename"), vec![("name", "x")]),
        (
            format!("{base}/projects/{p}/delete"),
            vec![("confirm_name", "default")],
        ),
        (format!("{base}/projects/{p}/keys"), vec![("name", "x")]),
        (format!("{kb}/edit"), vec![("name", "x")]),
        (format!("{kb}/rotate"), vec![("grace_seconds", "0")]),
        (format!("{kb}/reveal"), vec![("password", mgmt::PASSWORD)]),
        (format!("{kb}/revoke"), vec![]),
        (format!("{kb}/delete"), vec![]),
        (
            format!("{base}/members/invite"),
            vec![("email", "x@example.com")],
        ),
        (
            format!("{base}/members/{}/role", admin.user_id),
            vec![("role", "admin")],
        ),
        (format!("{base}/members/{}/remove", admin.user_id), vec![]),
        (format!("{base}/invites/{}/delete", pending[0].id), vec![]),
        (format!("{base}/settings"), vec![("name", "x")]),
        (format!("{base}/security"), vec![("require_mfa", "on")]),
        (
            format!("{base}/delete"),
            vec![("confirm_name", "Org"), ("password", mgmt::PASSWORD)],
        ),
    ];
    for (path, fields) in &refused {
        let mut form = fields.clone();
        form.push(("csrf", rcsrf.as_str()));
        let page = r.post(path, &form).await;
        assert_eq!(page.status, 403, "{path}: a Reader's POST: {}", page.body);
    }
    assert_eq!(ts.store.list_projects(a).await.expect("projects").len(), 1);
    assert_eq!(ts.store.pending_invites(a).await.expect("invites").len(), 1);

    // Remove the members, then "Delete Account" with the name and the password.
    for who in [&admin, &reader] {
        let confirm = b
            .get(&format!("{base}/members/{}/remove", who.user_id))
            .await;
        assert!(confirm.body.contains("This cannot be undone."));
        let removed = b
            .post(
                &format!("{base}/members/{}/remove", who.user_id),
                &[("csrf", csrf.as_str())],
            )
            .await;
        assert_eq!(removed.status, 303, "{}", removed.body);
    }
    // A wrong password when turning MFA off shows the profile form with the message.
    let wrong = b
        .post(
            "/profile/mfa/disable",
            &[("csrf", csrf.as_str()), ("password", "not it")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong.body.contains("The password is not right.")
            && wrong.body.contains("name=\"current_password\""),
        "{}",
        wrong.body
    );
    let account = b.get(&format!("{base}/settings")).await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains(&o.owner.email), "billing email");
    assert!(account.body.contains("Delete Account"));
    let confirm = b.get(&format!("{base}/delete")).await;
    assert_safe_page("delete account", &confirm, &ts.base);
    let typo = b
        .post(
            &format!("{base}/delete"),
            &[
                ("csrf", csrf.as_str()),
                ("confirm_name", "Orgg"),
                ("password", mgmt::PASSWORD),
            ],
        )
        .await;
    assert_eq!(typo.status, 400, "{}", typo.body);
    let no_password = b
        .post(
            &format!("{base}/delete"),
            &[
                ("csrf", csrf.as_str()),
                ("confirm_name", "Org"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(no_password.status, 403, "{}", no_password.body);
    assert!(ts.store.get_account(a).await.expect("get").is_some());
    let deleted = b
        .post(
            &format!("{base}/delete"),
            &[
                ("csrf", csrf.as_str()),
                ("confirm_name", "Org"),
                ("password", mgmt::PASSWORD),
            ],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(deleted.location(), "/accounts?notice=account_deleted");
    assert!(ts.store.get_account(a).await.expect("get").is_none());
    ts.stop().await;
}

fn key_scopes_read() -> Vec<hark_core::scope::Scope> {
    vec![hark_core::scope::Scope::TranscriptsRead]
}

both_databases!(every_page_is_locked_down, account_pages, alerts_page);

/// With `signup = "open"`, the sign-up page makes a Free account with its Owner (signed
/// in) and a default project; an email that already has a login is refused and makes
/// nothing. (Invite-only, the default, is checked above: the page does not exist.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sign_up_makes_a_free_account() {
    for db in [Db::Sqlite, Db::Postgres] {
        let ts = TestServer::start_with(db, None, |c| {
            c.signup = hark_server::config::SignupMode::Open;
        })
        .await;
        let mut b = Browser::new(&ts);
        let page = b.get("/signup").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_safe_page("/signup", &page, &ts.base);
        let csrf = page.csrf();
        let form = |email: &'static str| {
            vec![
                ("name", "Sam Signup"),
                ("email", email),
                ("password", "a long sign-up passphrase"),
                ("account_name", "Sam's Speech"),
            ]
        };
        let mut fields = form("sam@example.com");
        fields.push(("csrf", csrf.as_str()));
        let made = b.post("/signup", &fields).await;
        assert_eq!(made.status, 303, "{}", made.body);
        assert!(
            made.location().starts_with("/accounts/"),
            "{}",
            made.location()
        );
        let user = ts
            .store
            .user_by_email("sam@example.com")
            .await
            .expect("lookup")
            .expect("the new Owner");
        let accounts = ts.store.accounts_of_user(user.id).await.expect("accounts");
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].role, Role::Owner);
        let account = ts
            .store
            .get_account(accounts[0].account_id)
            .await
            .expect("get")
            .expect("account");
        assert_eq!(account.plan, Plan::Free);
        assert_eq!(account.name, "Sam's Speech");
        assert_eq!(
            ts.store
                .list_projects(account.id)
                .await
                .expect("projects")
                .len(),
            1
        );
        // Signed in: the overview opens.
        assert_eq!(b.get(&made.location()).await.status, 200);

        // The same email again, from another browser: refused, nothing made.
        let before = ts.store.account_count().await.expect("count");
        let mut other = Browser::new(&ts);
        let csrf = other.get("/signup").await.csrf();
        let mut fields = form("sam@example.com");
        fields.push(("csrf", csrf.as_str()));
        let again = other.post("/signup", &fields).await;
        assert!(again.status >= 400, "{} {}", again.status, again.body);
        assert_eq!(ts.store.account_count().await.expect("count"), before);
        ts.stop().await;
    }
}

/// The Alerts page: an Owner creates, changes and deletes an alert through the forms
/// (the JSON API lists the same); a Reader sees the alerts but no form, and each form
/// posted by hand is refused.
async fn alerts_page(db: Db) {
    let ts = TestServer::start(db).await;
    let o = org(&ts, Plan::Payg).await;
    let base = format!("/accounts/{}", o.account);
    let mut b = Browser::signed_in(&ts, &o.owner);
    let page = b.get(&format!("{base}/alerts")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_safe_page("alerts", &page, &ts.base);
    let csrf = page.csrf();
    let bad = b
        .post(
            &format!("{base}/alerts"),
            &[
                ("csrf", csrf.as_str()),
                ("kind", "balance_below"),
                ("threshold", "lots"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("class=\"error\""));
    let made = b
        .post(
            &format!("{base}/alerts"),
            &[
                ("csrf", csrf.as_str()),
                ("kind", "balance_below"),
                ("threshold", "5.00"),
                ("project_id", ""),
                ("webhook_url", ""),
            ],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let listed = mgmt::call(
        &ts,
        "GET",
        &format!("{base}/alerts"),
        Some(&o.owner.token),
        None,
    )
    .await;
    let alerts = listed
        .ok()
        .as_array()
        .cloned()
        .unwrap_or_else(|| listed.ok()["data"].as_array().cloned().unwrap_or_default());
    assert_eq!(alerts.len(), 1, "{}", listed.text);
    let id = alerts[0]["id"].as_str().expect("id").to_string();
    let page = b.get(&format!("{base}/alerts")).await;
    assert!(
        page.body.contains("Balance falls below") && page.body.contains("5.00 USD"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Never"));
    let changed = b
        .post(
            &format!("{base}/alerts/{id}/edit"),
            &[
                ("csrf", csrf.as_str()),
                ("threshold", "7.50"),
                ("webhook_url", ""),
            ],
        )
        .await;
    assert_eq!(changed.status, 303, "{}", changed.body);
    assert!(b
        .get(&format!("{base}/alerts"))
        .await
        .body
        .contains("7.50 USD"));

    let reader = add_member(&ts, o.account, Role::Reader).await;
    let mut r = Browser::signed_in(&ts, &reader);
    let page = r.get(&format!("{base}/alerts")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("7.50 USD"));
    assert_eq!(
        page.body
            .matches("method=\"post\" action=\"/accounts/")
            .count(),
        0,
        "{}",
        page.body
    );
    for (path, form) in [
        (
            format!("{base}/alerts"),
            vec![("kind", "balance_below"), ("threshold", "1")],
        ),
        (format!("{base}/alerts/{id}/edit"), vec![("threshold", "1")]),
        (format!("{base}/alerts/{id}/delete"), vec![]),
    ] {
        let mut form = form;
        form.push(("csrf", reader.csrf.as_str()));
        assert_eq!(r.post(&path, &form).await.status, 403, "{path}");
    }

    let deleted = b
        .post(
            &format!("{base}/alerts/{id}/delete"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert!(b
        .get(&format!("{base}/alerts"))
        .await
        .body
        .contains("No alerts yet."));
    ts.stop().await;
}
