//! The dashboard over plain HTTP: every page answers with the strict CSP and the other
//! security headers, holds no inline script or style and stays under 60 KB; an unsafe
//! request without the CSRF field, from another site or with a foreign Origin is
//! refused; the first-run setup link works once; sign-in throttles like the API.

mod common;
use common::*;
use hark_store::{LinkStore, MemberStore, UserStore};
use reqwest::header::{HeaderMap, CACHE_CONTROL, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

const PASSWORD: &str = "correct horse battery";

/// A browser-like client: no redirects followed, cookies kept by hand.
struct Browser<'a> {
    ts: &'a TestServer,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The value of the hidden CSRF field of the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }
}

impl<'a> Browser<'a> {
    fn new(ts: &'a TestServer) -> Self {
        Self {
            ts,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let text = v.to_str().expect("ascii cookie");
            let pair = text.split(';').next().expect("pair");
            let (k, val) = pair.split_once('=').expect("k=v");
            self.cookies.retain(|(name, _)| name != k);
            if !val.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        self.keep_cookies(&headers);
        let body = r.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.ts.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(self.ts.url(path)).form(form);
        self.send(req).await
    }
}

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

both_databases!(every_page_is_locked_down);
