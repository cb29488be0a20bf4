//! What the management API says about what it was sent: every route with a body is fed
//! wrong types and answers in the envelope in its own words (never a deserializer's
//! message); roles are read in any case and a bad one gets the valid choices; bodies
//! need no `Content-Type`; re-authentication says whether the password or the code was
//! wrong, and whether a code was already used; TOTP confirmation says the code is spent.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::clock::ManualClock;
use hark_core::{totp, Clock, Plan, Role};
use serde_json::{json, Value};
use std::sync::Arc;

/// Texts that only a deserializer writes.
const DESERIALIZER_WORDS: &[&str] = &[
    "Failed to",
    "deserialize",
    "invalid type",
    "unknown variant",
    "expected",
    "missing field",
    "`",
];

#[track_caller]
fn assert_own_words(a: &Answer, context: &str) {
    assert_eq!(a.status, 400, "{context}: {}", a.text);
    assert_eq!(a.code(), "invalid_request", "{context}: {}", a.text);
    let obj = a.body.as_object().expect("envelope");
    assert_eq!(obj.len(), 2, "{context}: only error and code: {}", a.text);
    let msg = a.body["error"].as_str().expect("error text");
    for word in DESERIALIZER_WORDS {
        assert!(!msg.contains(word), "{context}: '{word}' in {msg}");
    }
}

/// A value of another JSON type than the schema asks for.
fn wrong_value(schema: &Value) -> Value {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => schema["anyOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["type"].as_str())
            .collect(),
    };
    let ty = types.into_iter().find(|t| *t != "null").unwrap_or("string");
    match ty {
        "string" => json!(12345),
        "array" => json!("not a list"),
        "boolean" => json!("yes"),
        "integer" | "number" => json!("ten"),
        _ => json!([1, 2]),
    }
}

/// Every route with a body (from the OpenAPI document), every field of the wrong type.
async fn every_body_refuses_wrong_types_in_its_own_words(db: Db) {
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Enterprise).await;
    roomy(&ts, org.account).await;
    let member = add_member(&ts, org.account, Role::Reader).await;
    let key = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects/{}/keys", org.account, org.project),
        Some(&org.owner.token),
        Some(json!({"name": "k"})),
    )
    .await;
    let key_id = key.ok()["id"].as_str().expect("key id").to_string();
    let doc = call(&ts, "GET", "/openapi.json", None, None).await;
    let doc = doc.ok().clone();
    let mut checked = 0;
    for (template, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"].as_object()
            else {
                continue;
            };
            let schema = resolve(&doc, &Value::Object(schema.clone()));
            let path = template
                .trim_start_matches("/api/v1")
                .replace("{account}", &org.account.to_string())
                .replace("{project}", &org.project.to_string())
                .replace("{key}", &key_id)
                .replace("{user}", &member.user_id.to_string())
                .replace("{invite}", &uuid::Uuid::now_v7().to_string());
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            assert!(!props.is_empty(), "{method} {template}: no properties");
            for (name, prop) in &props {
                let body = json!({ name.as_str(): wrong_value(&resolve(&doc, prop)) });
                let a = call(
                    &ts,
                    &method.to_uppercase(),
                    &path,
                    Some(&org.owner.token),
                    Some(body.clone()),
                )
                .await;
                assert_own_words(&a, &format!("{method} {template} {body}"));
                checked += 1;
            }
            for bad in ["[]", "\"text\"", "{\"unclosed\": ", ""] {
                let url = ts.url(&format!("/api/v1{path}"));
                let req = ts
                    .http
                    .request(
                        reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        url,
                    )
                    .header("authorization", format!("Bearer {}", org.owner.token))
                    .body(bad);
                let a = send(req).await;
                assert_own_words(&a, &format!("{method} {template} body {bad:?}"));
            }
        }
    }
    assert!(checked >= 20, "only {checked} fields checked");
    ts.stop().await;
}

fn resolve(doc: &Value, schema: &Value) -> Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema.clone(),
    }
}

/// Roles in any case; a role that cannot be given is refused with the choices that can.
async fn roles_in_any_case_and_bad_roles_in_the_envelope(db: Db) {
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Enterprise).await;
    roomy(&ts, org.account).await;
    let invites = format!("/accounts/{}/invites", org.account);
    for role in ["Reader", "ADMIN", "reader"] {
        let a = call(
            &ts,
            "POST",
            &invites,
            Some(&org.owner.token),
            Some(json!({"email": unique_email("x"), "role": role})),
        )
        .await;
        assert_eq!(a.status, 201, "{role}: {}", a.text);
        assert_eq!(a.body["role"], role.to_lowercase());
    }
    let member = add_member(&ts, org.account, Role::Reader).await;
    let member_path = format!("/accounts/{}/members/{}", org.account, member.user_id);
    let a = call(
        &ts,
        "PATCH",
        &member_path,
        Some(&org.owner.token),
        Some(json!({"role": "Admin"})),
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.text);
    for (path, method, body) in [
        (
            &invites,
            "POST",
            json!({"email": unique_email("y"), "role": "owner"}),
        ),
        (
            &invites,
            "POST",
            json!({"email": unique_email("y"), "role": "Owner"}),
        ),
        (
            &invites,
            "POST",
            json!({"email": unique_email("y"), "role": "boss"}),
        ),
        (&member_path, "PATCH", json!({"role": "owner"})),
        (&member_path, "PATCH", json!({"role": "superuser"})),
        (&member_path, "PATCH", json!({"role": 3})),
    ] {
        let a = call(
            &ts,
            method,
            path,
            Some(&org.owner.token),
            Some(body.clone()),
        )
        .await;
        assert_own_words(&a, &format!("{method} {path} {body}"));
        assert_eq!(
            a.body["error"], "role must be one of: admin, reader",
            "{body}"
        );
    }
    ts.stop().await;
}

/// A body that parses as JSON is taken whatever the content type (curl -d sends a form
/// type; some clients send none).
async fn bodies_need_no_content_type(db: Db) {
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Enterprise).await;
    roomy(&ts, org.account).await;
    for (i, content_type) in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = ts
            .http
            .post(ts.url(&format!("/api/v1/accounts/{}/projects", org.account)))
            .header("authorization", format!("Bearer {}", org.owner.token))
            .body(json!({"name": format!("p{i}")}).to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let a = send(req).await;
        assert_eq!(a.status, 201, "{content_type:?}: {}", a.text);
        assert_eq!(a.body["name"], format!("p{i}"));
        // Sign-in takes no content type or JSON, but not the types a cross-site form
        // can send (no login CSRF).
        let mut req = ts
            .http
            .post(ts.url("/api/v1/auth/login"))
            .body(json!({"email": org.owner.email, "password": PASSWORD}).to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let a = send(req).await;
        if content_type.is_none() {
            assert_eq!(a.status, 200, "{}", a.text);
        } else {
            assert_own_words(&a, &format!("login as {content_type:?}"));
            assert!(a.body["error"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"));
        }
    }
    ts.stop().await;
}

/// Re-authentication says what was wrong; TOTP confirmation says its code is spent and
/// when the next one comes; the replay rule holds.
async fn reauth_and_totp_say_what_was_wrong(db: Db) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let org = org(&ts, Plan::Payg).await;
    let t = Some(org.owner.token.as_str());
    let a = call(
        &ts,
        "POST",
        "/auth/reauth",
        t,
        Some(json!({"password": "not the password"})),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (401, "invalid_credentials"),
        "{}",
        a.text
    );
    assert_eq!(a.body["error"], "the password is wrong");

    reauth_ok(&ts, &org.owner.token).await;
    let enrol = call(&ts, "POST", "/me/mfa/totp", t, None).await;
    let seed = enrol.ok()["secret"].as_str().expect("seed").to_string();
    let code = totp::current_code(&seed, clock.now_ms()).expect("code");
    let confirm = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        t,
        Some(json!({"code": code})),
    )
    .await;
    let v = confirm.ok();
    let step_end = (totp::step_of(clock.now_ms()) + 1) * 30_000;
    assert_eq!(
        v["next_code_at"],
        hark_server::manage::Instant(step_end).rfc3339()
    );
    assert!(
        v["note"].as_str().expect("note").contains("next code"),
        "{v}"
    );

    // The confirmation's code is spent: at once it is refused, saying so.
    let again = call(
        &ts,
        "POST",
        "/auth/reauth",
        t,
        Some(json!({"totp_code": code})),
    )
    .await;
    assert_eq!(
        (again.status, again.code()),
        (401, "invalid_mfa_code"),
        "{}",
        again.text
    );
    assert!(
        again.body["error"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{}",
        again.text
    );
    let login = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(json!({"email": org.owner.email, "password": PASSWORD, "totp_code": code})),
    )
    .await;
    assert_eq!(
        (login.status, login.code()),
        (401, "invalid_mfa_code"),
        "{}",
        login.text
    );
    assert!(
        login.body["error"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{}",
        login.text
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let a = call(
        &ts,
        "POST",
        "/auth/reauth",
        t,
        Some(json!({"totp_code": wrong})),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (401, "invalid_mfa_code"),
        "{}",
        a.text
    );
    assert!(
        a.body["error"].as_str().unwrap().contains("wrong"),
        "{}",
        a.text
    );

    clock.advance_ms(30_000);
    let next = totp::current_code(&seed, clock.now_ms()).expect("code");
    let a = call(
        &ts,
        "POST",
        "/auth/reauth",
        t,
        Some(json!({"totp_code": next})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    ts.stop().await;
}

/// Invites mailed before invites had their own prefix (`hark_tmp_`) can still be accepted;
/// new invites and CSRF tokens carry their own prefixes.
async fn secrets_carry_their_own_prefixes(db: Db) {
    use hark_core::keys::{self, SecretDigest, SecretKind};
    use hark_core::InviteId;
    use hark_store::{Actor, Mail, MemberStore, NewInvite};
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Enterprise).await;
    assert!(
        org.owner.csrf.starts_with("hark_csrf_"),
        "{}",
        org.owner.csrf
    );
    assert!(org.owner.token.starts_with("hark_ses_"));
    let email = unique_email("new");
    let a = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", org.account),
        Some(&org.owner.token),
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(mailed_token(&ts, &email).await.starts_with("hark_inv_"));

    let old = keys::generate(SecretKind::TempToken);
    let old_email = unique_email("old");
    ts.store
        .create_invite(
            NewInvite {
                id: InviteId::new(),
                account_id: org.account,
                email: old_email.clone(),
                role: Role::Reader,
                digest_hex: SecretDigest::of(old.expose()).to_hex(),
                expires_at: ts.clock.now_ms() + 86_400_000,
            },
            Mail {
                to: old_email,
                subject: "invite".into(),
                body: "old".into(),
            },
            &Actor::Operator,
        )
        .await
        .expect("invite");
    let a = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": old.expose(), "password": PASSWORD})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    ts.stop().await;
}

/// Without MFA no code can be right: a TOTP code is a failed re-authentication (401,
/// counted by the throttle), not a malformed request; sending neither is one.
async fn a_code_without_mfa_is_a_failed_reauthentication(db: Db) {
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Payg).await;
    let t = Some(org.owner.token.as_str());
    let no_mfa = call(
        &ts,
        "POST",
        "/auth/reauth",
        t,
        Some(json!({"totp_code": "123456"})),
    )
    .await;
    assert_eq!(
        (no_mfa.status, no_mfa.code()),
        (401, "invalid_mfa_code"),
        "{}",
        no_mfa.text
    );
    let neither = call(&ts, "POST", "/auth/reauth", t, Some(json!({}))).await;
    assert_eq!(neither.status, 400, "{}", neither.text);
    ts.stop().await;
}

/// The OpenAPI document says what the server enforces (schemathesis' "schema-valid
/// request rejected" found these): page limits, scope names, re-authentication bodies.
async fn the_openapi_document_states_the_limits_the_server_enforces(db: Db) {
    let ts = TestServer::start(db).await;
    let answer = call(&ts, "GET", "/openapi.json", None, None).await;
    let doc = answer.ok();
    let text = doc.to_string();
    let audit = &doc["paths"]["/api/v1/accounts/{account}/audit"]["get"]["parameters"];
    let limit = audit
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit");
    assert_eq!(limit["schema"]["maximum"].as_f64(), Some(200.0), "{limit}");
    assert_eq!(limit["schema"]["minimum"].as_f64(), Some(1.0), "{limit}");
    assert!(
        text.contains(r#""enum":["transcripts:read","transcripts:write","streaming"]"#),
        "scopes are named"
    );
    let reauth = &doc["components"]["schemas"]["ReauthInput"];
    assert_eq!(
        reauth["anyOf"],
        json!([{"required": ["password"]}, {"required": ["totp_code"]}]),
        "{reauth}"
    );
    ts.stop().await;
}

both_databases!(
    a_code_without_mfa_is_a_failed_reauthentication,
    the_openapi_document_states_the_limits_the_server_enforces,
    secrets_carry_their_own_prefixes,
    every_body_refuses_wrong_types_in_its_own_words,
    roles_in_any_case_and_bad_roles_in_the_envelope,
    bodies_need_no_content_type,
    reauth_and_totp_say_what_was_wrong,
);
