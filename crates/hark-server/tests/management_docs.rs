//! docs/management-api.md cannot drift from the server: every example request in it is
//! replayed, in order, against a running server, and each answer must have the status
//! and the shape (the same keys, the same JSON types) of the example response under it.
//! Ids and secrets in the examples stand for the real ones: the first time an example
//! response shows one, the value the server actually returned takes its place in every
//! later example. Out-of-band values come from where a user gets them: invite tokens
//! from the outbox, TOTP codes from the enrolled seed.

mod common;

use common::mgmt::password_hash;
use common::*;
use hark_core::clock::{Clock, ManualClock};
use hark_core::{totp, AccountId, Plan, UserId};
use hark_store::{AccountStore, Actor, MemberStore, NewAccount, UserStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const DOC: &str = include_str!("../../../docs/management-api.md");
const OWNER_EMAIL: &str = "owner@example.com";
/// Marks an example object as partial: only the keys it shows are checked.
const MORE: &str = "…";

/// One example: the request block and the response block under it.
#[derive(Debug)]
struct Example {
    line: usize,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    status: u16,
    response: String,
}

/// The fenced ```http blocks of the document, paired request → response.
fn examples(doc: &str) -> Vec<Example> {
    let mut blocks: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start();
        if current.is_none() {
            if fence == "```http" {
                current = Some((i + 1, String::new()));
            }
        } else if fence == "```" {
            blocks.extend(current.take());
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    let mut out = Vec::new();
    let mut it = blocks.into_iter();
    while let Some((line, request)) = it.next() {
        let (head, body) = split_head(&request);
        let mut head = head.lines();
        let first = head.next().unwrap_or_default();
        let (method, path) = first
            .split_once(' ')
            .unwrap_or_else(|| panic!("docs line {line}: request line '{first}'"));
        assert!(
            !method.starts_with("HTTP/"),
            "docs line {line}: a response without a request before it"
        );
        let headers = head
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let (rline, response) = it
            .next()
            .unwrap_or_else(|| panic!("docs line {line}: request without a response block"));
        let (rhead, rbody) = split_head(&response);
        let status_line = rhead.lines().next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("docs line {rline}: status line '{status_line}'"));
        out.push(Example {
            line,
            method: method.to_string(),
            path: path.trim().to_string(),
            headers,
            body: body.trim().to_string(),
            status,
            response: rbody.trim().to_string(),
        });
    }
    out
}

/// Head (request or status line and headers) and body, split at the first empty line.
fn split_head(block: &str) -> (String, String) {
    match block.split_once("\n\n") {
        Some((head, body)) => (head.to_string(), body.to_string()),
        None => (block.to_string(), String::new()),
    }
}

/// Example value → real value, applied to every later request.
#[derive(Default)]
struct Bindings(BTreeMap<String, String>);

impl Bindings {
    fn apply(&self, text: &str) -> String {
        // Longest first, so no value is replaced inside a longer one.
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        let mut out = text.to_string();
        for k in keys {
            out = out.replace(k.as_str(), &self.0[k]);
        }
        out
    }

    /// Ids (UUIDs), secrets (`hark_…`) and TOTP seeds shown in an example response
    /// stand for the values the server returned at the same place.
    fn learn(&mut self, example: &Value, actual: &Value) {
        match (example, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (k, ev) in e {
                    if let Some(av) = a.get(k) {
                        if k == "secret" {
                            if let (Some(es), Some(as_)) = (ev.as_str(), av.as_str()) {
                                self.0.insert(es.to_string(), as_.to_string());
                            }
                        }
                        self.learn(ev, av);
                    }
                }
            }
            (Value::Array(e), Value::Array(a)) => {
                for (ev, av) in e.iter().zip(a) {
                    self.learn(ev, av);
                }
            }
            (Value::String(e), Value::String(a)) if stands_for_a_value(e) => {
                self.0.entry(e.clone()).or_insert_with(|| a.clone());
            }
            _ => {}
        }
    }
}

fn stands_for_a_value(s: &str) -> bool {
    s.starts_with("hark_") || uuid::Uuid::parse_str(s).is_ok()
}

/// Where `actual` differs in shape from `example`: missing or extra keys, or another
/// JSON type (`null` stands for any value of a field that may be empty).
fn shape_differences(path: &str, example: &Value, actual: &Value, out: &mut Vec<String>) {
    match (example, actual) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(e), Value::Object(a)) => {
            let partial = e.contains_key(MORE);
            for k in e.keys().filter(|k| *k != MORE) {
                match a.get(k) {
                    Some(av) => shape_differences(&format!("{path}.{k}"), &e[k], av, out),
                    None => out.push(format!("{path}.{k}: in the docs, not in the answer")),
                }
            }
            if !partial {
                for k in a.keys().filter(|k| !e.contains_key(*k)) {
                    out.push(format!("{path}.{k}: in the answer, not in the docs"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(ef), Some(af)) = (e.first(), a.first()) {
                shape_differences(&format!("{path}[0]"), ef, af, out);
            }
        }
        (e, a) if std::mem::discriminant(e) == std::mem::discriminant(a) => {}
        (e, a) => out.push(format!("{path}: docs show {e}, the answer has {a}")),
    }
}

/// The account of the examples, its Owner with the documented email and password.
async fn docs_account(ts: &TestServer) -> AccountId {
    let boot = ts
        .store
        .create_account(
            NewAccount {
                id: AccountId::new(),
                name: "My team".into(),
                plan: Plan::Payg,
                owner_id: UserId::new(),
                owner_email: OWNER_EMAIL.into(),
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
    boot.account.id
}

async fn examples_match_the_server(db: Db) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    docs_account(&ts).await;
    let examples = examples(DOC);
    assert!(examples.len() >= 30, "only {} examples", examples.len());
    let mut bindings = Bindings::default();
    let mut totp_seed: Option<String> = None;
    for ex in &examples {
        let path = bindings.apply(&ex.path);
        let mut body = bindings.apply(&ex.body);
        // Out-of-band values, as a user gets them.
        if let Some(shown) = secret_in(&body, "hark_inv_") {
            let mailed = ts.store.outbox(true).await.expect("outbox");
            let mail = mailed.last().expect("an invite mail");
            let real = secret_in(&mail.mail.body, "hark_inv_").expect("token in the mail");
            body = body.replace(&shown, &real);
        }
        if let Some(seed) = &totp_seed {
            if let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&body) {
                for name in ["code", "totp_code"] {
                    if fields.contains_key(name) {
                        // A code works once per 30-s step (the replay rule): a new step.
                        clock.advance_ms(30_000);
                        let code = totp::current_code(seed, clock.now_ms()).expect("code");
                        fields.insert(name.into(), Value::String(code));
                    }
                }
                body = Value::Object(fields).to_string();
            }
        }
        let method = reqwest::Method::from_bytes(ex.method.as_bytes()).expect("method");
        let mut req = ts.http.request(method, ts.url(&path));
        for (k, v) in &ex.headers {
            req = req.header(k.as_str(), bindings.apply(v));
        }
        if !body.is_empty() {
            req = req.body(body.clone());
        }
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let at = format!("docs line {}: {} {}", ex.line, ex.method, ex.path);
        assert_eq!(status, ex.status, "{at}: {text}");
        if ex.response.is_empty() {
            assert!(text.is_empty(), "{at}: the docs show no body, got {text}");
            continue;
        }
        if !ex.response.starts_with(['{', '[']) {
            // A CSV answer: the docs show its header line and the first rows' form.
            assert_eq!(
                text.lines().next(),
                ex.response.lines().next(),
                "{at}: the CSV header differs from the docs: {text}"
            );
            continue;
        }
        let shown: Value = serde_json::from_str(&ex.response)
            .unwrap_or_else(|e| panic!("{at}: the example response is not JSON ({e})"));
        let actual: Value = serde_json::from_str(text.lines().next().unwrap_or(""))
            .or_else(|_| serde_json::from_str(&text))
            .unwrap_or_else(|e| panic!("{at}: the answer is not JSON ({e}): {text}"));
        let mut differences = Vec::new();
        shape_differences("", &shown, &actual, &mut differences);
        assert!(
            differences.is_empty(),
            "{at}: the answer differs from the docs:\n  {}\nanswer: {text}",
            differences.join("\n  ")
        );
        bindings.learn(&shown, &actual);
        if let Some(seed) = actual.get("secret").and_then(Value::as_str) {
            totp_seed = Some(seed.to_string());
        }
    }
    // Every route of the API is shown at least once.
    let document = ts.get_json("/api/v1/openapi.json").await;
    let shown: Vec<(String, String)> = examples
        .iter()
        .map(|e| (e.method.to_lowercase(), template_of(&e.path)))
        .collect();
    let mut missing = Vec::new();
    for (path, ops) in document["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            let full = if path.starts_with("/api/v1") {
                path.clone()
            } else {
                format!("/api/v1{path}")
            };
            if !shown
                .iter()
                .any(|(m, p)| m == method && same_route(p, &full))
            {
                missing.push(format!("{} {full}", method.to_uppercase()));
            }
        }
    }
    assert!(missing.is_empty(), "routes without an example: {missing:?}");
    ts.stop().await;
}

/// The first secret with `prefix` in `text`.
fn secret_in(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// The path without its query string.
fn template_of(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_string()
}

/// Whether a concrete example path is an instance of an OpenAPI path template.
fn same_route(concrete: &str, template: &str) -> bool {
    let c: Vec<&str> = concrete.split('/').collect();
    let t: Vec<&str> = template.split('/').collect();
    c.len() == t.len()
        && c.iter()
            .zip(&t)
            .all(|(c, t)| c == t || (t.starts_with('{') && t.ends_with('}')))
}

#[test]
fn the_parser_reads_the_documented_form() {
    let doc = "text\n```http\nPOST /api/v1/x\nContent-Type: application/json\n\n{\"a\": 1}\n```\n\n```http\nHTTP/1.1 201 Created\n\n{\"id\": \"0192f0c4-0000-7000-8000-000000000001\"}\n```\n";
    let ex = examples(doc);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        (ex[0].method.as_str(), ex[0].path.as_str()),
        ("POST", "/api/v1/x")
    );
    assert_eq!(ex[0].status, 201);
    assert_eq!(ex[0].body, "{\"a\": 1}");
    let mut d = Vec::new();
    shape_differences(
        "",
        &serde_json::json!({"a": 1, "b": "x", "c": null}),
        &serde_json::json!({"a": 2, "b": 3, "c": "y", "d": true}),
        &mut d,
    );
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(same_route(
        "/api/v1/accounts/abc",
        "/api/v1/accounts/{account}"
    ));
    assert!(!same_route(
        "/api/v1/accounts",
        "/api/v1/accounts/{account}"
    ));
}

both_databases!(examples_match_the_server);
