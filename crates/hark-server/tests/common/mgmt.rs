//! Management-API helpers: people with passwords, logins, JSON requests with a
//! session, members added through real invites, and database/disk inspection.

use super::TestServer;
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::plan::LimitOverrides;
use hark_core::{AccountId, InviteId, Plan, ProjectId, Role, UserId};
use hark_store::{AccountStore, Actor, Mail, MemberStore, NewAccount, NewInvite, UserStore};
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::OnceLock;

pub const PASSWORD: &str = "correct horse battery staple";

/// One Argon2id hash of [`PASSWORD`], computed once per test binary.
pub fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hark_core::password::hash(PASSWORD).expect("hash"))
        .clone()
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Person {
    pub email: String,
    pub user_id: UserId,
    pub token: String,
    pub csrf: String,
}

/// An answer: status and JSON (or `Null` for an empty body).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.text
        );
        &self.body
    }
}

pub async fn call(
    ts: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let url = ts.url(&format!("/api/v1{path}"));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = ts.http.request(method, url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    send(req).await
}

pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
    };
    Answer {
        status,
        body,
        text,
        headers,
    }
}

pub async fn login(ts: &TestServer, email: &str, password: &str) -> Answer {
    call(
        ts,
        "POST",
        "/auth/login",
        None,
        Some(json!({"email": email, "password": password, "return_token": true})),
    )
    .await
}

#[track_caller]
pub fn person_from(email: &str, a: &Answer) -> Person {
    let v = a.ok();
    Person {
        email: email.to_string(),
        user_id: UserId::parse(v["user"]["id"].as_str().expect("user id")).expect("uuid"),
        token: v["token"].as_str().expect("token").to_string(),
        csrf: v["csrf_token"].as_str().expect("csrf").to_string(),
    }
}

/// Re-enters [`PASSWORD`] in the session of `token` (sensitive actions, MFA enrolment
/// among them, need it within the last few minutes).
pub async fn reauth_ok(ts: &TestServer, token: &str) {
    let r = call(
        ts,
        "POST",
        "/auth/reauth",
        Some(token),
        Some(json!({"password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 200, "re-authentication: {}", r.text);
}

pub async fn login_ok(ts: &TestServer, email: &str) -> Person {
    let a = login(ts, email, PASSWORD).await;
    person_from(email, &a)
}

/// An account with its Owner (password [`PASSWORD`]) signed in, and its first project.
pub struct Org {
    pub account: AccountId,
    pub project: ProjectId,
    pub owner: Person,
}

pub async fn org(ts: &TestServer, plan: Plan) -> Org {
    let email = unique_email("owner");
    let boot = ts
        .store
        .create_account(
            NewAccount {
                id: AccountId::new(),
                name: "Org".into(),
                plan,
                owner_id: UserId::new(),
                owner_email: email.clone(),
                project: hark_server::provisioning::new_project(&ts.master_key(), "default"),
            },
            &Actor::Operator,
        )
        .await
        .expect("account");
    ts.store
        .set_password(boot.owner, &password_hash(), None, &Actor::Operator)
        .await
        .expect("password");
    let owner = login_ok(ts, &email).await;
    Org {
        account: boot.account.id,
        project: boot.project.id,
        owner,
    }
}

/// Raises an account's limits so permission tests never hit them.
pub async fn roomy(ts: &TestServer, account: AccountId) {
    let mut o = LimitOverrides::default();
    for s in ["projects=500", "api_keys=5000", "members=500"] {
        o.set(s).expect("override");
    }
    ts.store
        .set_plan(account, Plan::Enterprise, o, &Actor::Operator)
        .await
        .expect("plan");
}

/// Adds a member through a real invite accepted by the store, then signs them in.
pub async fn add_member(ts: &TestServer, account: AccountId, role: Role) -> Person {
    let email = unique_email(role.as_str());
    let token = keys::generate(SecretKind::Invite);
    let digest = SecretDigest::of(token.expose()).to_hex();
    ts.store
        .create_invite(
            NewInvite {
                id: InviteId::new(),
                account_id: account,
                email: email.clone(),
                role,
                digest_hex: digest.clone(),
                expires_at: ts.clock.now_ms() + 86_400_000,
            },
            Mail {
                to: email.clone(),
                subject: "invite".into(),
                body: "test".into(),
            },
            &Actor::Operator,
        )
        .await
        .expect("invite");
    ts.store
        .accept_invite(&digest, (UserId::new(), password_hash()))
        .await
        .expect("accept");
    login_ok(ts, &email).await
}

/// The invite token mailed to `email` (read from the outbox, as an operator would).
pub async fn mailed_token(ts: &TestServer, email: &str) -> String {
    let outbox = ts.store.outbox(false).await.expect("outbox");
    let mail = outbox
        .iter()
        .rev()
        .find(|m| m.mail.to == email)
        .unwrap_or_else(|| panic!("no mail to {email}"));
    // Invites mailed before the invite prefix existed carry the streaming-token prefix.
    let (start, prefix) = [SecretKind::Invite.prefix(), "hark_tmp_"]
        .iter()
        .find_map(|p| mail.mail.body.find(p).map(|at| (at, *p)))
        .expect("token in mail");
    mail.mail.body[start..start + prefix.len() + 46].to_string()
}

/// Count of rows in `table` where `column` = `value`.
pub async fn count_rows(ts: &TestServer, table: &str, column: &str, value: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
        .bind(value)
        .fetch_one(ts.store.pool())
        .await
        .expect("count")
}

/// Every value of every column of every table, as text: for "no plaintext secret" checks.
pub async fn dump_database(ts: &TestServer) -> String {
    let pool = ts.store.pool();
    let tables: Vec<String> = match ts.store.backend() {
        hark_store::Backend::Sqlite => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(pool)
        .await
        .expect("tables"),
        hark_store::Backend::Postgres => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(pool)
        .await
        .expect("tables"),
    };
    let mut out = String::new();
    // The migrations table holds checksums (binary), not data.
    for t in tables.into_iter().filter(|t| t != "_sqlx_migrations") {
        let cols: Vec<String> = match ts.store.backend() {
            hark_store::Backend::Sqlite => {
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                    .fetch_all(pool)
                    .await
                    .expect("cols")
            }
            hark_store::Backend::Postgres => sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1",
            )
            .bind(&t)
            .fetch_all(pool)
            .await
            .expect("cols"),
        };
        for c in cols {
            let rows = sqlx::query(&format!("SELECT CAST({c} AS TEXT) AS v FROM {t}"))
                .fetch_all(pool)
                .await
                .expect("select");
            for r in rows {
                if let Ok(Some(v)) = r.try_get::<Option<String>, _>("v") {
                    out.push_str(&v);
                    out.push('\n');
                }
            }
        }
    }
    out
}
