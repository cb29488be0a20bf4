//! The dashboard in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver by fantoccini), against the real `hark serve` on SQLite and
//! PostgreSQL: the printed setup link creates the first account and its Owner and
//! works once; sign out and in (with a recovery code once MFA is on); "Forgot
//! password" through the mail outbox; TOTP enrolment with a code computed here;
//! "Require MFA for all members" sending a new member to enrolment; an invite accepted
//! in a second, separate browser profile; the Owner made by `hark admin init` setting
//! a password through its printed link; Projects, API Keys (a created key works until
//! "Revoke"), Members (an invited Reader who sees no control) and "Delete Account"; no
//! inline script or style on any page, and axe-core finds no serious or critical
//! accessibility violation on any of them.
//!
//! With `HARK_SCREENSHOTS_DIR` set, the pages are also saved there as PNG (that is how
//! `docs/dashboard/` is made).

mod common;

use common::{with_database, ChildGuard, Install, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use hark_core::clock::{Clock, SystemClock};
use hark_store::{AccountStore, MemberStore, SqlStore, UserStore};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "a long owner passphrase";

/// axe-core's browser build, read once from the test dependencies' node modules.
fn axe_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = std::env::var("HARK_NODE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hark/node")
            });
        let path = dir.join("node_modules/axe-core/axe.min.js");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "axe-core is not installed at {} ({e}): run `bash scripts/install-test-deps.sh`",
                path.display()
            )
        })
    })
}

/// A chromedriver on a free port, killed when dropped.
struct Driver {
    _child: ChildGuard,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}): run scripts/install-test-deps.sh (Debian chromium-driver)")
            });
        let guard = ChildGuard(Some(child));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        // chromedriver keeps connections open, so wait for the port, not a response.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { _child: guard, url }
    }
}

/// A browser with its own, fresh profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

async fn browser(driver: &Driver) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1000,760",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    Browser {
        client,
        _profile: profile,
    }
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
        self.check_page().await;
    }

    /// No inline script or style, no `style=` or `on*=` attribute in the live page.
    async fn check_page(&self) {
        let found = self
            .client
            .execute(
                "return [...document.querySelectorAll('script:not([src]), style, [style]')].map(e => e.outerHTML.slice(0, 80))
                   .concat([...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).map(e => e.tagName));",
                vec![],
            )
            .await
            .expect("inspect page");
        let url = self.client.current_url().await.expect("url");
        assert_eq!(found, json!([]), "inline script or style on {url}");
        self.check_accessibility().await;
    }

    /// axe-core (npm, installed by scripts/install-test-deps.sh) finds no serious or
    /// critical violation in the page as it is now.
    async fn check_accessibility(&self) {
        self.client
            .execute(&format!("{}\nreturn true;", axe_source()), vec![])
            .await
            .expect("load axe-core");
        let violations = self
            .client
            .execute_async(
                "const done = arguments[0];
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.impact + ' ' + v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '))));",
                vec![],
            )
            .await
            .expect("run axe-core");
        let url = self.client.current_url().await.expect("url");
        assert_eq!(violations, json!([]), "accessibility violations on {url}");
    }

    async fn fill(&self, id: &str, value: &str) {
        let field = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("field #{id}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    /// Clicks the button with this text and waits for the next page.
    async fn press(&self, text: &str) {
        let button = self
            .client
            .find(Locator::XPath(&format!(
                "//button[normalize-space()='{text}'] | //a[normalize-space()='{text}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("button '{text}': {e}"));
        button.click().await.expect("click");
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("body"))
            .await
            .expect("next page");
        self.check_page().await;
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn text(&self) -> String {
        self.client
            .find(Locator::Css("main"))
            .await
            .expect("main")
            .text()
            .await
            .expect("text")
    }

    async fn text_of(&self, css: &str) -> String {
        // A page that reloads itself (the playground's transcript page) may replace
        // the element between finding and reading it: then find it again.
        for _ in 0..10 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("HARK_SCREENSHOTS_DIR") else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    async fn sign_in(&self, base: &str, email: &str, password: &str) {
        self.goto(&format!("{base}/signin")).await;
        self.fill("email", email).await;
        self.fill("password", password).await;
        self.press("Sign in").await;
    }

    async fn sign_out(&self) {
        self.press("Sign out").await;
        assert_eq!(self.path().await, "/signin?notice=signed_out");
    }
}

/// The last mail to `to` in the outbox, and the dashboard link in it.
async fn mailed_link(store: &SqlStore, to: &str, marker: &str) -> String {
    let outbox = store.outbox(false).await.expect("outbox");
    let mail = outbox
        .iter()
        .rev()
        .find(|m| m.mail.to == to)
        .unwrap_or_else(|| panic!("no mail to {to}"));
    let body = &mail.mail.body;
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the mail: {body}"));
    let end = body[at..]
        .find(|c: char| c.is_whitespace() || c == '"')
        .map(|e| at + e)
        .unwrap_or(body.len());
    body[at..end].to_string()
}

fn totp_now(secret: &str) -> String {
    hark_core::totp::current_code(secret, SystemClock.now_ms()).expect("a base32 secret")
}

async fn first_run_and_sign_in_flows(install: &Install, server: &Server, driver: &Driver) {
    let base = &server.base_url;
    let log = server.log();
    let setup = log
        .split_whitespace()
        .find(|w| w.contains("/setup/hark_setup_"))
        .unwrap_or_else(|| panic!("hark serve printed no setup link:\n{log}"))
        .to_string();
    let store = SqlStore::open(&install.effective_database_url(), Arc::new(SystemClock))
        .await
        .expect("store");

    // The setup link: the first account and its Owner.
    let a = browser(driver).await;
    a.goto(&setup).await;
    a.screenshot("setup").await;
    a.fill("name", "Olive Owner").await;
    a.fill("email", OWNER).await;
    a.fill("password", PASSWORD).await;
    a.fill("account_name", "Acme Speech").await;
    a.press("Create account").await;
    let home = a.path().await;
    assert!(home.starts_with("/accounts/"), "landed on {home}");
    let account = home
        .trim_start_matches("/accounts/")
        .split('?')
        .next()
        .expect("id")
        .to_string();
    assert_eq!(a.text_of("h1").await, "Acme Speech");
    assert!(a.text().await.contains("owner"));
    a.screenshot("overview").await;
    // Once only.
    a.goto(&setup).await;
    assert!(
        a.text().await.contains("already used"),
        "{}",
        a.text().await
    );

    // Sign out and in.
    a.goto(&format!("{base}/accounts/{account}")).await;
    a.sign_out().await;
    a.screenshot("signin").await;
    a.sign_in(base, OWNER, "wrong password").await;
    assert!(a.text().await.contains("not right"));
    a.sign_in(base, OWNER, PASSWORD).await;
    assert_eq!(a.path().await, format!("/accounts/{account}"));

    // Forgot password, through the outbox.
    a.sign_out().await;
    a.goto(&format!("{base}/forgot-password")).await;
    a.fill("email", OWNER).await;
    a.press("Send reset link").await;
    assert!(a.text().await.contains("reset link is on its way"));
    let reset = mailed_link(&store, OWNER, "http").await;
    assert!(reset.contains("/password/hark_pwr_"), "{reset}");
    a.goto(&reset).await;
    assert_eq!(a.text_of("h1").await, "Choose a new password");
    let new_password = "a brand new passphrase";
    a.fill("password", new_password).await;
    a.press("Save password").await;
    assert_eq!(a.path().await, "/signin?notice=password_set");
    a.goto(&reset).await;
    assert!(
        a.text().await.contains("already used"),
        "reset links work once"
    );
    a.sign_in(base, OWNER, PASSWORD).await;
    assert!(
        a.text().await.contains("not right"),
        "the old password is gone"
    );
    a.sign_in(base, OWNER, new_password).await;
    assert_eq!(a.path().await, format!("/accounts/{account}"));

    // TOTP enrolment with a code computed here, and ten recovery codes.
    a.goto(&format!("{base}/profile")).await;
    a.screenshot("profile").await;
    a.press("Set up two-factor authentication").await;
    // Enrolling asks for the password again first.
    a.fill("password", new_password).await;
    a.press("Start setup").await;
    let svg = a
        .client
        .find(Locator::Css("svg.qr"))
        .await
        .expect("QR code");
    assert_eq!(
        svg.attr("role").await.expect("role").as_deref(),
        Some("img")
    );
    a.screenshot("mfa-enrol").await;
    let secret = a.text_of("#totp-secret").await;
    a.fill("code", &totp_now(&secret)).await;
    a.press("Turn on").await;
    let codes = a
        .client
        .find_all(Locator::Css("#recovery-codes li"))
        .await
        .expect("codes");
    assert_eq!(codes.len(), 10);
    let recovery = codes[0].text().await.expect("code");
    assert!(
        a.text_of("#signed-out")
            .await
            .contains("this one stays signed in"),
        "the page says what happened to the other sessions"
    );

    // Signing in now takes a second factor: a recovery code works once.
    a.goto(&format!("{base}/profile")).await;
    a.sign_out().await;
    a.sign_in(base, OWNER, new_password).await;
    assert_eq!(a.text_of("h1").await, "Two-factor authentication");
    a.screenshot("signin-code").await;
    a.fill("code", &recovery).await;
    a.press("Verify").await;
    assert_eq!(a.path().await, format!("/accounts/{account}"));

    // "Require MFA for all members".
    a.goto(&format!("{base}/accounts/{account}/security")).await;
    a.client
        .find(Locator::Id("require_mfa"))
        .await
        .expect("toggle")
        .click()
        .await
        .expect("tick");
    a.press("Save").await;
    assert!(a.text().await.contains("Saved."));
    a.screenshot("security").await;

    // An invite (made through the JSON API from the Owner's browser session), accepted
    // in a second, separate profile.
    let invited = "reader@example.com";
    let made = a
        .client
        .execute_async(
            "const [account, email, done] = arguments;
             const csrf = document.cookie.split('; ').find(c => c.startsWith('hark_csrf=')).split('=')[1];
             fetch('/api/v1/accounts/' + account + '/invites', {method: 'POST',
               headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
               body: JSON.stringify({email})}).then(r => done(r.status));",
            vec![json!(account), json!(invited)],
        )
        .await
        .expect("invite");
    assert_eq!(made, json!(201));
    // Invite tokens carry their own prefix; the mail links the dashboard's invite page.
    let link = mailed_link(&store, invited, "http").await;
    assert!(link.contains("/invite/hark_inv_"), "{link}");
    let b = browser(driver).await;
    b.goto(&link).await;
    assert!(b.text().await.contains("Acme Speech"));
    b.screenshot("invite").await;
    b.fill("name", "Rita Reader").await;
    b.fill("password", "the reader's passphrase").await;
    b.press("Accept invitation").await;
    // The account requires MFA and she has none: straight to enrolment.
    assert_eq!(b.path().await, "/profile/mfa?required=1");
    assert!(b.text().await.contains("requires MFA for all members"));
    b.goto(&format!("{base}/accounts/{account}")).await;
    assert_eq!(b.path().await, "/profile/mfa?required=1");
    // And again at her next sign-in.
    b.sign_out().await;
    b.sign_in(base, invited, "the reader's passphrase").await;
    assert_eq!(b.path().await, "/profile/mfa?required=1");
    let members = store
        .member_list(hark_core::AccountId::parse(&account).expect("id"))
        .await
        .expect("members");
    assert_eq!(members.len(), 2);
    // The first profile is still the Owner's: two browsers, two logins.
    a.goto(&format!("{base}/accounts/{account}")).await;
    assert_eq!(a.path().await, format!("/accounts/{account}"));
    b.client.close().await.expect("close");
    a.client.close().await.expect("close");
    store.close().await;
}

/// `hark admin init`'s Owner sets a password through the printed link (its origin is
/// the configured one; the test server listens elsewhere, so the path is reused).
async fn admin_init_owner_sets_password(
    server: &Server,
    set_password_url: &str,
    driver: &Driver,
) -> Browser {
    let path = &set_password_url[set_password_url
        .find("/password/")
        .expect("a password link")..];
    assert!(
        !server.log().contains("/setup/"),
        "no setup link once an account exists"
    );
    let base = &server.base_url;
    let c = browser(driver).await;
    c.goto(&format!("{base}{path}")).await;
    assert_eq!(c.text_of("h1").await, "Set your password");
    c.fill("password", "operator owner passphrase").await;
    c.press("Save password").await;
    c.sign_in(
        base,
        "operator-made@example.com",
        "operator owner passphrase",
    )
    .await;
    assert!(c.path().await.starts_with("/accounts/"));
    assert_eq!(c.text_of("h1").await, "Scripted");
    c.goto(&format!("{base}{path}")).await;
    assert!(c.text().await.contains("already used"));
    c
}

/// `GET /v2/transcript` with the key in the `Authorization` header, as curl would.
async fn list_status(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v2/transcript"))
        .header("authorization", key)
        .send()
        .await
        .expect("GET /v2/transcript")
        .status()
        .as_u16()
}

/// Links and forms that change something inside `/accounts/`.
async fn controls(b: &Browser) -> serde_json::Value {
    b.client
        .execute(
            "return [...document.querySelectorAll('main form[method=post], main a[href$=\"/revoke\"], main a[href$=\"/delete\"], main a[href$=\"/reveal\"], main a[href$=\"/remove\"]')]
               .map(e => e.getAttribute('action') || e.getAttribute('href'));",
            vec![],
        )
        .await
        .expect("inspect controls")
}

/// Projects, API Keys, Members and Account for the Owner `c` of `hark admin init`'s
/// account: a key from "Create new API key", copied from the page, lists transcripts
/// and is refused on the very next request after "Revoke"; "Invite Member" then "Send
/// Invite", accepted in a separate profile by a Reader who sees no control that changes
/// anything; "Delete Account" leaves nothing of the account behind.
async fn account_pages_flow(install: &Install, server: &Server, driver: &Driver, c: Browser) {
    let base = &server.base_url;
    let store = SqlStore::open(&install.effective_database_url(), Arc::new(SystemClock))
        .await
        .expect("store");
    // The start page goes straight into the only account.
    c.goto(&format!("{base}/")).await;
    let home = c.path().await;
    let account = home
        .trim_start_matches("/accounts/")
        .split(['?', '/'])
        .next()
        .expect("id")
        .to_string();
    let at = |p: &str| format!("{base}/accounts/{account}{p}");

    c.goto(&at("/projects")).await;
    assert!(
        c.text().await.contains("1 of 2 projects"),
        "{}",
        c.text().await
    );
    c.screenshot("projects").await;
    c.press("Usage").await;
    assert!(c.text().await.contains("No usage in this range."));
    c.screenshot("usage").await;
    c.press("Alerts").await;
    c.fill("threshold", "5.00").await;
    c.press("Create alert").await;
    assert!(c.text().await.contains("Balance falls below"));
    c.screenshot("alerts").await;
    c.press("Billing").await;
    assert!(c.text().await.contains("Spend this month"));
    c.screenshot("billing").await;
    let now = hark_core::clock::from_millis(SystemClock.now_ms());
    let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    c.goto(&at(&format!("/billing/statements/{month}"))).await;
    assert_eq!(c.text_of("h1").await, format!("Statement {month}"));
    c.screenshot("statement").await;

    // "Create new API key", "Copy" (the text on the page), and it works.
    c.goto(&at("/keys")).await;
    c.fill("key-name", "browser key").await;
    c.press("Create").await;
    assert_eq!(c.text_of("h1").await, "Your new API key");
    let key = c.text_of("#secret").await;
    assert!(key.starts_with("hark_key_"), "{key}");
    c.client
        .find(Locator::Css("button[data-copy]"))
        .await
        .expect("the Copy button");
    c.screenshot("key-created").await;
    assert_eq!(list_status(base, &key).await, 200);
    c.goto(&at("/keys")).await;
    assert!(c.text().await.contains("Never"));
    c.screenshot("keys").await;

    // The key's own page, and "Copy" of the existing key: the password again, then the
    // same key.
    c.press("browser key").await;
    assert_eq!(c.text_of("h1").await, "API key browser key");
    c.press("Copy").await;
    c.fill("password", "operator owner passphrase").await;
    c.press("Show key").await;
    assert_eq!(c.text_of("#secret").await, key);
    c.goto(&at("/keys")).await;

    // "Revoke" (of this key: `hark admin init` made another), confirmed: refused on
    // the very next request.
    c.client
        .find(Locator::Css("a[aria-label='Revoke browser key']"))
        .await
        .expect("Revoke of the new key")
        .click()
        .await
        .expect("click");
    c.check_page().await;
    assert!(c.text().await.contains("This cannot be undone."));
    c.press("Revoke").await;
    assert!(c.text().await.contains("The key was revoked."));
    assert_eq!(list_status(base, &key).await, 401);

    // "Invite Member", "Send Invite"; accepted in a second profile.
    c.goto(&at("/members")).await;
    c.client
        .find(Locator::XPath(
            "//summary[normalize-space()='Invite Member']",
        ))
        .await
        .expect("Invite Member")
        .click()
        .await
        .expect("open the invite form");
    let invited = "second-reader@example.com";
    c.fill("invite-email", invited).await;
    c.press("Send Invite").await;
    assert!(c.text().await.contains(invited));
    assert!(
        c.text().await.contains("2 of 2 members"),
        "{}",
        c.text().await
    );
    c.screenshot("members").await;
    let link = mailed_link(&store, invited, "http").await;
    let d = browser(driver).await;
    d.goto(&link).await;
    d.fill("name", "Ray Reader").await;
    d.fill("password", "ray's own passphrase").await;
    d.press("Accept invitation").await;
    assert!(d.path().await.starts_with(&format!("/accounts/{account}")));
    for page in ["", "/projects", "/keys", "/members", "/settings"] {
        d.goto(&at(page)).await;
        assert_eq!(controls(&d).await, json!([]), "a Reader's {page} page");
        let text = d.text().await;
        for word in [
            "Create new API key",
            "Send Invite",
            "Delete Account",
            "Invite Member",
        ] {
            assert!(!text.contains(word), "a Reader sees {word} on {page}");
        }
    }
    d.client.close().await.expect("close");

    // "Delete Account": the Reader goes first, then the name and the password.
    let reader = store
        .user_by_email(invited)
        .await
        .expect("lookup")
        .expect("reader");
    c.goto(&at(&format!("/members/{}/remove", reader.id))).await;
    c.press("Remove member").await;
    c.goto(&at("/settings")).await;
    c.screenshot("account").await;
    c.press("Delete Account").await;
    c.fill("confirm_name", "Scripted").await;
    c.fill("password", "operator owner passphrase").await;
    c.press("Delete Account").await;
    assert_eq!(c.path().await, "/accounts?notice=account_deleted");
    let id = hark_core::AccountId::parse(&account).expect("id");
    assert!(store.get_account(id).await.expect("get").is_none());
    for table in [
        "projects",
        "api_keys",
        "memberships",
        "transcripts",
        "invites",
    ] {
        let left: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE account_id = $1"
        ))
        .bind(&account)
        .fetch_one(store.pool())
        .await
        .expect("count");
        assert_eq!(left, 0, "{table} rows of the deleted account");
    }
    c.client.close().await.expect("close");
    store.close().await;
}

fn dashboard_in_chromium(postgres: bool) {
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    with_database(postgres, |url| {
        let install = Install::new(url);
        let server = install.serve(&[]);
        rt.block_on(first_run_and_sign_in_flows(&install, &server, &driver));
    });
    with_database(postgres, |url| {
        let install = Install::new(url);
        let out = install.run_json(&[
            "admin",
            "init",
            "--email",
            "operator-made@example.com",
            "--account-name",
            "Scripted",
            "--json",
        ]);
        let link = out["set_password_url"]
            .as_str()
            .unwrap_or_else(|| panic!("admin init printed no set_password_url: {out}"))
            .to_string();
        let server = install.serve(&[]);
        rt.block_on(async {
            let owner = admin_init_owner_sets_password(&server, &link, &driver).await;
            account_pages_flow(&install, &server, &driver, owner).await;
        });
    });
}

#[test]
fn dashboard_in_chromium_sqlite() {
    dashboard_in_chromium(false);
}

#[test]
fn dashboard_in_chromium_postgres() {
    dashboard_in_chromium(true);
}

/// A browser whose microphone is Chromium's fake device playing `wav` (in a loop), with
/// the permission prompt answered yes.
async fn browser_with_microphone(driver: &Driver, wav: &std::path::Path) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1000,760",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                format!("--use-file-for-fake-audio-capture={}", wav.display()),
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    Browser {
        client,
        _profile: profile,
    }
}

/// The sentence the fake microphone speaks, and the words the page must show.
const SPOKEN: &str = "The quick brown fox jumps over the lazy dog.";
const HEARD: &[&str] = &["quick", "over", "lazy", "dog"];

/// `text` (normalised) holds every word of [`HEARD`].
fn heard_all(text: &str) -> bool {
    let words: Vec<String> = common::normalise(text)
        .split(' ')
        .map(str::to_string)
        .collect();
    HEARD.iter().all(|w| words.iter().any(|x| x == w))
}

/// The Playground with the real Whisper model: a file uploaded through the plain form
/// is transcribed on a page that reloads itself until done; "Start" on Live streams
/// Chromium's fake microphone (espeak-ng speaking [`SPOKEN`]) through a token minted
/// with the chosen key, and the turns show the words; "Stop" ends the session.
async fn playground_flow(
    server: &Server,
    set_password_url: &str,
    wav: &std::path::Path,
    driver: &Driver,
) {
    let base = &server.base_url;
    let path = &set_password_url[set_password_url
        .find("/password/")
        .expect("a password link")..];
    let p = browser_with_microphone(driver, wav).await;
    p.goto(&format!("{base}{path}")).await;
    p.fill("password", "playground passphrase").await;
    p.press("Save password").await;
    p.sign_in(base, "player@example.com", "playground passphrase")
        .await;
    let home = p.path().await;
    assert!(home.starts_with("/accounts/"), "{home}");
    p.press("Playground").await;
    assert_eq!(p.text_of("h1").await, "Playground");
    // JavaScript is on: the live form shows, the note saying it needs JavaScript hides.
    let note = p
        .client
        .find(Locator::Id("live-needs-js"))
        .await
        .expect("note");
    assert!(!note.is_displayed().await.expect("displayed"));
    p.screenshot("playground").await;

    // Upload: the plain multipart form, then the self-reloading transcript page.
    p.client
        .find(Locator::Id("upload-file"))
        .await
        .expect("file input")
        .send_keys(&wav.display().to_string())
        .await
        .expect("choose file");
    p.press("Transcribe").await;
    assert!(p.path().await.contains("/playground/transcripts/"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = p.text_of("#transcript-status").await;
        if status == "completed" {
            break;
        }
        assert!(status != "error", "the upload failed: {}", p.text().await);
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.check_page().await;
    let text = p.text_of("#transcript-text").await;
    assert!(heard_all(&text), "uploaded transcript: {text}");
    p.screenshot("playground-transcript").await;

    // Live: the fake microphone, through /v3/ws with a token minted as the chosen key.
    p.press("Back to the Playground").await;
    p.press("Start").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let turns = p.text_of("#live-turns").await;
        if heard_all(&turns) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live turns never showed {HEARD:?}: {turns:?}; status: {}",
            p.text_of("#live-status").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.client
        .execute(
            "document.getElementById('live-turns').scrollIntoView({block: 'end'});",
            vec![],
        )
        .await
        .expect("scroll");
    p.screenshot("playground-live").await;
    p.press("Stop").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.text_of("#live-status").await != "Stopped." {
        assert!(
            Instant::now() < deadline,
            "no Termination: {}",
            p.text_of("#live-status").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The account's own pages (axe-core runs on each): the uploaded transcript in
    // Transcripts with its words, its delete confirmation, then the Audit log and the
    // Webhooks page.
    p.press("Transcripts").await;
    p.screenshot("transcripts").await;
    p.client
        .find(Locator::Css("main table a"))
        .await
        .expect("a transcript in the list")
        .click()
        .await
        .expect("open it");
    p.check_page().await;
    assert!(heard_all(&p.text().await), "{}", p.text().await);
    p.screenshot("transcript").await;
    p.press("Delete").await;
    assert!(p.text().await.contains("This cannot be undone"));
    p.press("Audit log").await;
    assert_eq!(p.text_of("h1").await, "Audit log");
    p.screenshot("audit").await;
    p.press("Webhooks").await;
    p.screenshot("webhooks").await;
    p.client.close().await.expect("close");
}

fn playground_in_chromium(postgres: bool) {
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let wav = dir.path().join("spoken.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(SPOKEN)
        .status()
        .expect("espeak-ng must be installed (scripts/install-test-deps.sh)");
    assert!(status.success(), "espeak-ng failed");
    with_database(postgres, |url| {
        let install = Install::new(url);
        install.install_model();
        let out = install.run_json(&[
            "admin",
            "init",
            "--email",
            "player@example.com",
            "--account-name",
            "Player Co",
            "--json",
        ]);
        let link = out["set_password_url"]
            .as_str()
            .unwrap_or_else(|| panic!("admin init printed no set_password_url: {out}"))
            .to_string();
        let server = install.serve(&[]);
        rt.block_on(playground_flow(&server, &link, &wav, &driver));
    });
}

#[test]
fn playground_in_chromium_sqlite() {
    playground_in_chromium(false);
}

#[test]
fn playground_in_chromium_postgres() {
    playground_in_chromium(true);
}
