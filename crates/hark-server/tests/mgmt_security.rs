//! Security of the management API: CSRF on cookie sessions, no session fixation,
//! login throttling per email and per address without email enumeration, and no
//! secret (password, API key, TOTP seed, recovery code, session or CSRF token) in the
//! database or the logs in plain text.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::{totp, Plan, Role};
use hark_store::{AccountStore, UserStore};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the server logs in this test binary, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || SharedWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn cookie_pair(a: &Answer, name: &str) -> String {
    a.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_string()
}

async fn csrf_is_required_for_cookie_sessions(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let l = login(&ts, &a.owner.email, PASSWORD).await;
    let session = cookie_pair(&l, "hark_session");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain HTTP server: no Secure flag"
    );
    let csrf_cookie = cookie_pair(&l, "hark_csrf");
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "scripts read the CSRF cookie"
    );
    let cookie = format!(
        "{}; {}",
        session.split(';').next().expect("pair"),
        csrf_cookie.split(';').next().expect("pair")
    );
    let csrf = l.body["csrf_token"].as_str().expect("csrf").to_string();
    // A browser login (no return_token) gets the session only as the HttpOnly cookie.
    let browser = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(json!({"email": a.owner.email, "password": PASSWORD})),
    )
    .await;
    assert!(browser.ok().get("token").is_none(), "{}", browser.text);
    assert!(cookie_pair(&browser, "hark_session").contains("HttpOnly"));
    let url = ts.url(&format!("/api/v1/accounts/{}/projects", a.account));
    // Safe methods need no token.
    let r = send(ts.http.get(&url).header("cookie", &cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Unsafe methods with the cookie alone are refused, as with a wrong token.
    let r = send(
        ts.http
            .post(&url)
            .header("cookie", &cookie)
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "csrf_failed"));
    let r = send(
        ts.http
            .post(&url)
            .header("cookie", &cookie)
            .header("x-csrf-token", &a.owner.csrf)
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(r.status, 403, "another session's CSRF token does not fit");
    let r = send(
        ts.http
            .post(&url)
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Bearer tokens are not sent by browsers on their own: no CSRF token needed.
    let r = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects", a.account),
        Some(&a.owner.token),
        Some(json!({"name": "y"})),
    )
    .await;
    assert_ne!(r.code(), "csrf_failed");
    // Login only takes JSON (a cross-site form cannot send it without a preflight).
    let r = send(
        ts.http
            .post(ts.url("/api/v1/auth/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("email={}&password={PASSWORD}", a.owner.email)),
    )
    .await;
    assert_eq!(r.status, 400);
    ts.stop().await;
}

async fn no_session_fixation(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    // A victim's browser carrying a session id an attacker planted.
    let planted = hark_core::keys::generate(hark_core::keys::SecretKind::Session);
    let r = send(
        ts.http
            .post(ts.url("/api/v1/auth/login"))
            .header("cookie", format!("hark_session={}", planted.expose()))
            .json(&json!({"email": a.owner.email, "password": PASSWORD, "return_token": true})),
    )
    .await;
    let issued = r.ok()["token"].as_str().expect("token").to_string();
    assert_ne!(issued, planted.expose());
    assert!(cookie_pair(&r, "hark_session").contains(&issued));
    let probe = call(&ts, "GET", "/me", Some(planted.expose()), None).await;
    assert_eq!(probe.status, 401, "the planted id never becomes a session");
    // Each login is a new session; logout ends exactly that one.
    let second = login_ok(&ts, &a.owner.email).await;
    assert_ne!(second.token, issued);
    assert_ne!(second.token, a.owner.token);
    let out = call(&ts, "POST", "/auth/logout", Some(&second.token), None).await;
    assert_eq!(out.status, 204);
    assert_eq!(
        call(&ts, "GET", "/me", Some(&second.token), None)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&ts, "GET", "/me", Some(&issued), None).await.status,
        200
    );
    // A password change ends the other sessions, keeps this one.
    let pw = call(
        &ts,
        "POST",
        "/me/password",
        Some(&issued),
        Some(json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"})),
    )
    .await;
    assert_eq!(pw.status, 204, "{}", pw.text);
    assert_eq!(
        call(&ts, "GET", "/me", Some(&a.owner.token), None)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&ts, "GET", "/me", Some(&issued), None).await.status,
        200
    );
    assert_eq!(login(&ts, &a.owner.email, PASSWORD).await.status, 401);
    login(&ts, &a.owner.email, "a brand new passphrase")
        .await
        .ok();
    ts.stop().await;
}

async fn login_throttling_without_enumeration(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    // Unknown email and wrong password answer identically.
    let unknown = login(&ts, &unique_email("ghost"), "whatever password").await;
    let wrong = login(&ts, &a.owner.email, "whatever password").await;
    assert_eq!((unknown.status, &unknown.text), (wrong.status, &wrong.text));
    assert_eq!(wrong.code(), "invalid_credentials");
    // Per email: after 5 failures even the right password is refused, for a while.
    for _ in 0..4 {
        assert_eq!(
            login(&ts, &a.owner.email, "whatever password").await.status,
            401
        );
    }
    let t = login(&ts, &a.owner.email, PASSWORD).await;
    assert_eq!((t.status, t.code()), (429, "login_throttled"), "{}", t.text);
    assert!(t.headers.contains_key("retry-after"));
    // The same for an unknown email: throttling reveals nothing either.
    let ghost = unique_email("ghost");
    for _ in 0..5 {
        login(&ts, &ghost, "whatever password").await;
    }
    assert_eq!(login(&ts, &ghost, "whatever password").await.status, 429);
    // Per address: 20 failures over many emails block this client for other emails too.
    let b = org(&ts, Plan::Payg).await;
    for i in 0..20 {
        login(&ts, &format!("spray{i}@example.com"), "whatever password").await;
    }
    let blocked = login(&ts, &b.owner.email, PASSWORD).await;
    assert_eq!(blocked.status, 429, "{}", blocked.text);
    // Failures are audited; throttled attempts are refused before any password check
    // and record nothing: 6 + 5 + 9 failures until the address reached its 20.
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'user.login_failed'")
            .fetch_one(ts.store.pool())
            .await
            .expect("count");
    assert_eq!(failures, 20);
    ts.stop().await;
}

/// A login sent from another loopback address (the server sees it as another client).
async fn login_from(ts: &TestServer, from: [u8; 4], email: &str, password: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .expect("client");
    client
        .post(ts.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password, "return_token": true}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

async fn stranger_cannot_lock_a_person_out(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    // Someone at another address guesses until they are refused...
    for _ in 0..5 {
        assert_eq!(
            login_from(&ts, [127, 0, 0, 2], &a.owner.email, "guess").await,
            401
        );
    }
    assert_eq!(
        login_from(&ts, [127, 0, 0, 2], &a.owner.email, PASSWORD).await,
        429,
        "the guessing address is throttled for this email"
    );
    // ...while the person signs in from their own address as usual.
    assert_eq!(login(&ts, &a.owner.email, PASSWORD).await.status, 200);
    ts.stop().await;
}

async fn concurrent_guesses_are_counted_before_they_are_checked(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let guesses = (0..40).map(|i| {
        let ts = &ts;
        let email = a.owner.email.clone();
        async move { login(ts, &email, &format!("wrong guess {i}")).await.status }
    });
    let statuses = futures::future::join_all(guesses).await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((evaluated, refused), (5, 35), "{statuses:?}");
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'user.login_failed'")
            .fetch_one(ts.store.pool())
            .await
            .expect("count");
    assert_eq!(failures, 5, "only the evaluated guesses were audited");
    ts.stop().await;
}

async fn failed_login_audit_keeps_a_bounded_email(db: Db) {
    let ts = TestServer::start(db).await;
    let long = format!("{}@example.com", "x".repeat(20_000));
    assert_eq!(login(&ts, &long, "whatever password").await.status, 401);
    let details: String =
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = 'user.login_failed'")
            .fetch_one(ts.store.pool())
            .await
            .expect("audit entry");
    assert!(details.len() < 1_000, "{} bytes", details.len());
    ts.stop().await;
}

async fn no_secret_in_database_or_logs(db: Db) {
    let logs = captured_logs();
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let mut secrets: Vec<String> = vec![
        PASSWORD.to_string(),
        a.owner.token.clone(),
        a.owner.csrf.clone(),
    ];
    let k = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects/{}/keys", a.account, a.project),
        Some(&a.owner.token),
        Some(json!({"name": "k"})),
    )
    .await;
    let key = k.body["key"].as_str().expect("key").to_string();
    secrets.push(key.clone());
    assert_eq!(
        ts.http
            .get(ts.url("/v2/transcript"))
            .header("authorization", &key)
            .send()
            .await
            .expect("v2")
            .status()
            .as_u16(),
        200
    );
    reauth_ok(&ts, &a.owner.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", Some(&a.owner.token), None).await;
    let seed = begin.ok()["secret"].as_str().expect("seed").to_string();
    let code = totp::current_code(&seed, ts.clock.now_ms()).expect("code");
    let conf = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        Some(&a.owner.token),
        Some(json!({"code": code})),
    )
    .await;
    for c in conf.ok()["recovery_codes"].as_array().expect("codes") {
        secrets.push(c.as_str().expect("code").to_string());
    }
    secrets.push(seed.clone());
    let member = add_member(&ts, a.account, Role::Reader).await;
    secrets.push(member.token.clone());
    // A failed login with a distinctive wrong password.
    let wrong = "wrong-password-that-must-not-leak";
    login(&ts, &member.email, wrong).await;
    secrets.push(wrong.to_string());
    // The password hash is Argon2id, not the password.
    let user = ts
        .store
        .user_by_email(&a.owner.email)
        .await
        .expect("user")
        .expect("exists");
    assert!(user.password_hash.expect("hash").starts_with("$argon2id$"));
    let dump = dump_database(&ts).await;
    assert!(dump.len() > 1000, "the dump read the tables");
    for s in &secrets {
        assert!(
            !dump.contains(s.as_str()),
            "a secret is stored in plain text: {}…",
            &s[..6.min(s.len())]
        );
    }
    ts.stop().await;
    let logged = String::from_utf8_lossy(&logs.lock().expect("logs")).to_string();
    assert!(
        logged.contains("/api/v1/"),
        "the capture saw the server's request logs"
    );
    for s in &secrets {
        assert!(
            !logged.contains(s.as_str()),
            "a secret was logged: {}…",
            &s[..6.min(s.len())]
        );
    }
}

/// Behind TLS (an https public URL) the session cookie is also `Secure`.
async fn cookies_are_secure_behind_tls(db: Db) {
    let ts = TestServer::start_with(db, None, |c| {
        c.public_base_url = "https://hark.example".into();
    })
    .await;
    let a = org_on(&ts).await;
    let addr = ts.server.as_ref().expect("server").addr;
    let r = send(
        ts.http
            .post(format!("http://{addr}/api/v1/auth/login"))
            .json(&json!({"email": a, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Over TLS the cookies are `__Host-` prefixed: Secure, Path=/, no Domain, so no
    // sibling host can plant or overwrite them.
    for name in ["__Host-hark_session", "__Host-hark_csrf"] {
        let c = cookie_pair(&r, name);
        assert!(c.contains("; Secure") && c.contains("Path=/"), "{c}");
        assert!(!c.to_ascii_lowercase().contains("domain="), "{c}");
    }
    ts.stop().await;
}

/// An Owner with a password, without signing in (the harness's login goes to the
/// public URL, which is not reachable here).
async fn org_on(ts: &TestServer) -> String {
    let email = unique_email("owner");
    let boot = ts
        .store
        .create_account(
            hark_store::NewAccount {
                id: hark_core::AccountId::new(),
                name: "Org".into(),
                plan: Plan::Payg,
                owner_id: hark_core::UserId::new(),
                owner_email: email.clone(),
                project: hark_server::provisioning::new_project(&ts.master_key(), "default"),
            },
            &hark_store::Actor::Operator,
        )
        .await
        .expect("account");
    ts.store
        .set_password(
            boot.owner,
            &password_hash(),
            None,
            &hark_store::Actor::Operator,
        )
        .await
        .expect("password");
    email
}

both_databases!(
    cookies_are_secure_behind_tls,
    csrf_is_required_for_cookie_sessions,
    no_session_fixation,
    login_throttling_without_enumeration,
    stranger_cannot_lock_a_person_out,
    concurrent_guesses_are_counted_before_they_are_checked,
    failed_login_audit_keeps_a_bounded_email,
    no_secret_in_database_or_logs,
);
