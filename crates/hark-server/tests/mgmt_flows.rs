//! Management flows through the running server: invite → accept → switch account,
//! removal while signed in, MFA (enrolment, replay, recovery codes, Require MFA),
//! ownership transfer, reveal after re-authentication, rotation grace on an injected
//! clock, revocation, scopes, and project/account deletion leaving nothing behind.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::clock::ManualClock;
use hark_core::{totp, Clock, Plan, Role};
use hark_store::{AuditStore, MemberStore};
use serde_json::json;
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;

async fn v2(ts: &TestServer, key: &str) -> u16 {
    ts.http
        .get(ts.url("/v2/transcript"))
        .header("authorization", key)
        .send()
        .await
        .expect("v2")
        .status()
        .as_u16()
}

async fn invite_accept_switch(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Free).await;
    let b = org(&ts, Plan::Payg).await;
    let email = unique_email("newcomer");
    // Invite with the default role (Reader).
    let inv = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(inv.status, 201, "{}", inv.text);
    assert_eq!(inv.body["role"], "reader");
    assert!(
        !inv.text.contains("hark_inv_"),
        "the token is mailed, not returned"
    );
    let listed = call(
        &ts,
        "GET",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(listed.ok()["data"][0]["email"], email.as_str());
    let token = mailed_token(&ts, &email).await;
    // A new person: accepting creates the user.
    let acc = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(acc.ok()["created_user"], true);
    assert_eq!(acc.body["role"], "reader");
    // The token is good once.
    let again = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.text);
    // Invited to a second account as Admin: links the existing user (password proves it).
    let inv = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", b.account),
        Some(&b.owner.token),
        Some(json!({"email": email, "role": "admin"})),
    )
    .await;
    assert_eq!(inv.status, 201, "{}", inv.text);
    let token = mailed_token(&ts, &email).await;
    let wrong = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": "not the password at all"})),
    )
    .await;
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    let acc = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(acc.ok()["created_user"], false);
    // Sign in: both accounts, with their roles; switch to the second.
    let me = login_ok(&ts, &email).await;
    let profile = call(&ts, "GET", "/me", Some(&me.token), None).await;
    let accounts = profile.ok()["accounts"]
        .as_array()
        .expect("accounts")
        .clone();
    assert_eq!(accounts.len(), 2);
    assert_eq!(profile.body["current_account_id"], a.account.to_string());
    let sw = call(
        &ts,
        "POST",
        "/me/account",
        Some(&me.token),
        Some(json!({"account_id": b.account})),
    )
    .await;
    assert_eq!(sw.ok()["current_account_id"], b.account.to_string());
    let again = call(&ts, "GET", "/me", Some(&me.token), None).await;
    assert_eq!(again.ok()["current_account_id"], b.account.to_string());
    let acct = call(
        &ts,
        "GET",
        &format!("/accounts/{}", b.account),
        Some(&me.token),
        None,
    )
    .await;
    assert_eq!(acct.ok()["your_role"], "admin");
    // Switching to an account one is not in is refused as missing.
    let c = org(&ts, Plan::Free).await;
    let bad = call(
        &ts,
        "POST",
        "/me/account",
        Some(&me.token),
        Some(json!({"account_id": c.account})),
    )
    .await;
    assert_eq!(bad.status, 404);
    // Members list shows the newcomer with MFA status.
    let members = call(
        &ts,
        "GET",
        &format!("/accounts/{}/members", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    let row = members.ok()["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["email"] == email.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(row["mfa_enabled"], false);
    assert_eq!(row["role"], "reader");
    ts.stop().await;
}

async fn invites_expire_and_revoke(db: Db) {
    let clock = Arc::new(ManualClock::new(T0));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Free).await;
    // Free: 2 members. The Owner plus one pending invite fill it.
    let e1 = unique_email("x");
    let r = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": e1})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let full = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": unique_email("y")})),
    )
    .await;
    assert_eq!(
        (full.status, full.code()),
        (409, "limit_reached"),
        "{}",
        full.text
    );
    // Deleting the pending invite revokes it and frees the seat.
    let id = r.body["id"].as_str().expect("id");
    let token = mailed_token(&ts, &e1).await;
    let d = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/invites/{id}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(d.status, 204);
    let gone = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(gone.status, 404);
    // An invite expires after 7 days (the injected clock).
    let e2 = unique_email("z");
    let r = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": e2})),
    )
    .await;
    assert_eq!(r.status, 201);
    let token = mailed_token(&ts, &e2).await;
    clock.advance_ms(7 * 86_400_000 + 1);
    // The Owner's session (12 h) has expired: sign in again.
    let stale = call(&ts, "GET", "/me", Some(&a.owner.token), None).await;
    assert_eq!((stale.status, stale.code()), (401, "unauthenticated"));
    let owner = login_ok(&ts, &a.owner.email).await;
    let listed = call(
        &ts,
        "GET",
        &format!("/accounts/{}/invites", a.account),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(listed.ok()["data"].as_array().map(Vec::len), Some(0));
    let late = call(
        &ts,
        "POST",
        "/invites/accept",
        None,
        Some(json!({"token": token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(late.status, 404);
    ts.stop().await;
}

async fn removed_member_is_refused_at_once(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let admin = add_member(&ts, a.account, Role::Admin).await;
    let reader = add_member(&ts, a.account, Role::Reader).await;
    let path = format!("/accounts/{}/projects", a.account);
    assert_eq!(
        call(&ts, "GET", &path, Some(&reader.token), None)
            .await
            .status,
        200
    );
    let r = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/members/{}", a.account, reader.user_id),
        Some(&admin.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let next = call(&ts, "GET", &path, Some(&reader.token), None).await;
    assert_eq!((next.status, next.code()), (401, "unauthenticated"));
    // The Owner cannot be removed, nor demoted, by an Admin.
    let r = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/members/{}", a.account, a.owner.user_id),
        Some(&admin.token),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let r = call(
        &ts,
        "PATCH",
        &format!("/accounts/{}/members/{}", a.account, a.owner.user_id),
        Some(&admin.token),
        Some(json!({"role": "reader"})),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    ts.stop().await;
}

async fn mfa_enrol_replay_recovery_and_require(db: Db) {
    let clock = Arc::new(ManualClock::new(T0));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    let reader = add_member(&ts, a.account, Role::Reader).await;
    // Enrol the Owner.
    reauth_ok(&ts, &a.owner.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", Some(&a.owner.token), None).await;
    let seed = begin.ok()["secret"].as_str().expect("seed").to_string();
    assert!(begin.body["otpauth_uri"]
        .as_str()
        .expect("uri")
        .starts_with("otpauth://totp/Hark:"));
    let bad = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        Some(&a.owner.token),
        Some(json!({"code": "000000"})),
    )
    .await;
    assert_eq!(bad.status, 401);
    let code = totp::current_code(&seed, clock.now_ms()).expect("code");
    let confirmed = call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        Some(&a.owner.token),
        Some(json!({"code": code})),
    )
    .await;
    let recovery: Vec<String> = confirmed.ok()["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("s").to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    // Password alone is no longer enough.
    let r = login(&ts, &a.owner.email, PASSWORD).await;
    assert_eq!((r.status, r.code()), (401, "mfa_required"));
    // The code used to confirm cannot be replayed within its window.
    let body = |extra: serde_json::Value| {
        let mut b = json!({"email": a.owner.email, "password": PASSWORD, "return_token": true});
        b.as_object_mut()
            .expect("obj")
            .extend(extra.as_object().expect("obj").clone());
        b
    };
    let replay = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(body(json!({"totp_code": code}))),
    )
    .await;
    assert_eq!(
        (replay.status, replay.code()),
        (401, "invalid_mfa_code"),
        "{}",
        replay.text
    );
    clock.advance_ms(30_000);
    let fresh = totp::current_code(&seed, clock.now_ms()).expect("code");
    let ok = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(body(json!({"totp_code": fresh}))),
    )
    .await;
    ok.ok();
    let replay = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(body(json!({"totp_code": fresh}))),
    )
    .await;
    assert_eq!(replay.status, 401, "a code works once");
    // A recovery code works once.
    let rc = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(body(json!({"recovery_code": recovery[3].to_uppercase()}))),
    )
    .await;
    let owner = person_from(&a.owner.email, &rc);
    let rc2 = call(
        &ts,
        "POST",
        "/auth/login",
        None,
        Some(body(json!({"recovery_code": recovery[3]}))),
    )
    .await;
    assert_eq!((rc2.status, rc2.code()), (401, "invalid_mfa_code"));
    // Require MFA for all members.
    let set = call(
        &ts,
        "PATCH",
        &format!("/accounts/{}", a.account),
        Some(&owner.token),
        Some(json!({"require_mfa": true})),
    )
    .await;
    assert_eq!(set.ok()["require_mfa"], true);
    let members = call(
        &ts,
        "GET",
        &format!("/accounts/{}/members", a.account),
        Some(&owner.token),
        None,
    )
    .await;
    let statuses: Vec<(String, bool)> = members.ok()["data"]
        .as_array()
        .expect("d")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("r").to_string(),
                m["mfa_enabled"].as_bool().expect("b"),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("owner".into(), true)) && statuses.contains(&("reader".into(), false)),
        "{statuses:?}"
    );
    // The Reader without MFA is told to enrol, at login and on every account action.
    let relog = login_ok(&ts, &reader.email).await;
    let me = call(&ts, "GET", "/me", Some(&relog.token), None).await;
    assert_eq!(me.ok()["mfa_enrollment_required"], true);
    let blocked = call(
        &ts,
        "GET",
        &format!("/accounts/{}/projects", a.account),
        Some(&relog.token),
        None,
    )
    .await;
    assert_eq!(
        (blocked.status, blocked.code()),
        (403, "mfa_enrollment_required")
    );
    reauth_ok(&ts, &relog.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", Some(&relog.token), None).await;
    let rseed = begin.ok()["secret"].as_str().expect("seed").to_string();
    let c = totp::current_code(&rseed, clock.now_ms()).expect("code");
    call(
        &ts,
        "POST",
        "/me/mfa/totp/confirm",
        Some(&relog.token),
        Some(json!({"code": c})),
    )
    .await
    .ok();
    let open = call(
        &ts,
        "GET",
        &format!("/accounts/{}/projects", a.account),
        Some(&relog.token),
        None,
    )
    .await;
    assert_eq!(open.status, 200, "{}", open.text);
    // Disabling MFA needs re-authentication (the one before enrolling has lapsed).
    clock.advance_ms(hark_server::manage::REAUTH_WINDOW_MS + 1_000);
    let d = call(&ts, "DELETE", "/me/mfa/totp", Some(&relog.token), None).await;
    assert_eq!((d.status, d.code()), (403, "reauth_required"));
    clock.advance_ms(30_000);
    let c = totp::current_code(&rseed, clock.now_ms()).expect("code");
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&relog.token),
        Some(json!({"totp_code": c})),
    )
    .await
    .ok();
    let d = call(&ts, "DELETE", "/me/mfa/totp", Some(&relog.token), None).await;
    assert_eq!(d.status, 204, "{}", d.text);
    ts.stop().await;
}

async fn ownership_transfer(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let admin = add_member(&ts, a.account, Role::Admin).await;
    // As `hark admin account transfer-ownership` does.
    ts.store
        .transfer_ownership(a.account, &admin.email, &hark_store::Actor::Operator)
        .await
        .expect("transfer");
    let me = call(
        &ts,
        "GET",
        &format!("/accounts/{}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(me.ok()["your_role"], "admin");
    let billing = call(
        &ts,
        "GET",
        &format!("/accounts/{}/billing", a.account),
        Some(&admin.token),
        None,
    )
    .await;
    assert_eq!(billing.ok()["billing_email"], admin.email.as_str());
    // The previous Owner can no longer delete the account; the new one is refused
    // only because another member remains.
    let r = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(r.body["permission"], "delete_account");
    let notice = ts.store.outbox(false).await.expect("outbox");
    assert!(notice
        .iter()
        .any(|m| m.mail.to == admin.email && m.mail.subject.contains("Owner")));
    // Transfer to a non-member is refused.
    let err = ts
        .store
        .transfer_ownership(
            a.account,
            "nobody@example.com",
            &hark_store::Actor::Operator,
        )
        .await;
    assert!(err.is_err());
    ts.stop().await;
}

async fn reveal_needs_recent_reauth(db: Db) {
    let clock = Arc::new(ManualClock::new(T0));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    let keys = format!("/accounts/{}/projects/{}/keys", a.account, a.project);
    let created = call(
        &ts,
        "POST",
        &keys,
        Some(&a.owner.token),
        Some(json!({"name": "prod"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["key"].as_str().expect("secret").to_string();
    let id = created.body["id"].as_str().expect("id").to_string();
    let listed = call(&ts, "GET", &keys, Some(&a.owner.token), None).await;
    assert!(!listed.text.contains(&secret), "lists are masked");
    let reveal = format!("{keys}/{id}/reveal");
    let r = call(&ts, "POST", &reveal, Some(&a.owner.token), None).await;
    assert_eq!((r.status, r.code()), (403, "reauth_required"));
    let bad = call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&a.owner.token),
        Some(json!({"password": "wrong password here"})),
    )
    .await;
    assert_eq!(bad.status, 401);
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&a.owner.token),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .ok();
    let r = call(&ts, "POST", &reveal, Some(&a.owner.token), None).await;
    assert_eq!(r.ok()["key"], secret.as_str());
    clock.advance_ms(5 * 60_000 + 1);
    let r = call(&ts, "POST", &reveal, Some(&a.owner.token), None).await;
    assert_eq!(r.status, 403, "the re-authentication window has closed");
    let audit = ts
        .store
        .audit_entries(Some(a.account))
        .await
        .expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "api_key.reveal")
            .count(),
        1
    );
    ts.stop().await;
}

async fn rotated_key_successor_keeps_the_expiry(db: Db) {
    let clock = Arc::new(ManualClock::new(T0));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    let keys = format!("/accounts/{}/projects/{}/keys", a.account, a.project);
    let created = call(
        &ts,
        "POST",
        &keys,
        Some(&a.owner.token),
        Some(json!({"name": "temporary", "expires_in_seconds": 3600})),
    )
    .await;
    let old_id = created.ok()["id"].as_str().expect("id").to_string();
    let expires_at = created.body["expires_at"].clone();
    assert!(expires_at.is_string());
    clock.advance_ms(600_000);
    let rot = call(
        &ts,
        "POST",
        &format!("{keys}/{old_id}/rotate"),
        Some(&a.owner.token),
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    assert_eq!(rot.status, 201, "{}", rot.text);
    assert_eq!(
        rot.body["new"]["expires_at"], expires_at,
        "the successor expires when the original was made to"
    );
    let new = rot.body["new"]["key"].as_str().expect("secret").to_string();
    assert_eq!(v2(&ts, &new).await, 200);
    clock.advance_ms(3_000_000);
    assert_eq!(v2(&ts, &new).await, 401, "the successor expired on time");
    ts.stop().await;
}

async fn rotation_grace_and_revocation(db: Db) {
    let clock = Arc::new(ManualClock::new(T0));
    let ts = TestServer::start_with_clock(db, None, clock.clone(), |_| {}).await;
    let a = org(&ts, Plan::Payg).await;
    let keys = format!("/accounts/{}/projects/{}/keys", a.account, a.project);
    let created = call(
        &ts,
        "POST",
        &keys,
        Some(&a.owner.token),
        Some(json!({"name": "prod"})),
    )
    .await;
    let old = created.body["key"].as_str().expect("secret").to_string();
    let old_id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(v2(&ts, &old).await, 200);
    for bad in [-1, 86_401] {
        let r = call(
            &ts,
            "POST",
            &format!("{keys}/{old_id}/rotate"),
            Some(&a.owner.token),
            Some(json!({"grace_seconds": bad})),
        )
        .await;
        assert_eq!(r.status, 400);
    }
    let rot = call(
        &ts,
        "POST",
        &format!("{keys}/{old_id}/rotate"),
        Some(&a.owner.token),
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    assert_eq!(rot.status, 201, "{}", rot.text);
    let new = rot.body["new"]["key"]
        .as_str()
        .expect("new secret")
        .to_string();
    assert_eq!(rot.body["old"]["status"], "rotating");
    assert_eq!(
        v2(&ts, &old).await,
        200,
        "old key works during the grace period"
    );
    assert_eq!(v2(&ts, &new).await, 200);
    let listed = call(&ts, "GET", &keys, Some(&a.owner.token), None).await;
    let rows = listed.ok()["data"].as_array().expect("d").clone();
    assert!(
        rows.iter().all(|k| !k["last_used_at"].is_null()),
        "both keys show their last use: {rows:?}"
    );
    // Traffic per key: the transcripts each created.
    for (key, n) in [(&old, 2), (&new, 1)] {
        for _ in 0..n {
            let r = ts
                .http
                .post(ts.url("/v2/transcript"))
                .header("authorization", key.as_str())
                .json(&json!({"audio_url": "https://example.com/a.wav"}))
                .send()
                .await
                .expect("create");
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    let listed = call(&ts, "GET", &keys, Some(&a.owner.token), None).await;
    let traffic = |id: &str| {
        listed.body["data"]
            .as_array()
            .and_then(|d| d.iter().find(|k| k["id"] == id))
            .map(|k| k["traffic"]["transcripts"].clone())
    };
    let new_id_s = rot.body["new"]["id"].as_str().expect("id");
    assert_eq!(traffic(&old_id), Some(json!(2)));
    assert_eq!(traffic(new_id_s), Some(json!(1)));
    clock.advance_ms(59_000);
    assert_eq!(v2(&ts, &old).await, 200);
    clock.advance_ms(1_001);
    assert_eq!(v2(&ts, &old).await, 401, "grace ended on time");
    assert_eq!(v2(&ts, &new).await, 200);
    // Revocation takes effect on the very next request.
    let new_id = rot.body["new"]["id"].as_str().expect("id");
    let r = call(
        &ts,
        "DELETE",
        &format!("{keys}/{new_id}"),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(r.ok()["status"], "revoked");
    assert_eq!(v2(&ts, &new).await, 401);
    // Expiry chosen at creation.
    let exp = call(
        &ts,
        "POST",
        &keys,
        Some(&a.owner.token),
        Some(json!({"name": "temp", "expires_in_seconds": 120})),
    )
    .await;
    let temp = exp.body["key"].as_str().expect("secret").to_string();
    assert_eq!(v2(&ts, &temp).await, 200);
    clock.advance_ms(120_001);
    assert_eq!(v2(&ts, &temp).await, 401);
    ts.stop().await;
}

async fn scopes_limit_data_plane(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let keys = format!("/accounts/{}/projects/{}/keys", a.account, a.project);
    let mk = |scopes: serde_json::Value| {
        call(
            &ts,
            "POST",
            &keys,
            Some(&a.owner.token),
            Some(json!({"name": "scoped", "scopes": scopes})),
        )
    };
    let streaming = mk(json!(["streaming"])).await;
    assert_eq!(streaming.status, 201, "{}", streaming.text);
    assert_eq!(streaming.body["scopes"], json!(["streaming"]));
    let s_key = streaming.body["key"].as_str().expect("k").to_string();
    let read = mk(json!(["transcripts:read"])).await;
    let r_key = read.body["key"].as_str().expect("k").to_string();
    let bogus = mk(json!(["admin"])).await;
    assert_eq!(bogus.status, 400);
    let resp = ts
        .http
        .get(ts.url("/v2/transcript"))
        .header("authorization", &s_key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 403);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "AssemblyAI envelope: {body}"
    );
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("transcripts:read"));
    assert_eq!(v2(&ts, &r_key).await, 200);
    let up = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", &r_key)
        .body(script(&["x"]))
        .send()
        .await
        .expect("upload");
    assert_eq!(up.status().as_u16(), 403, "read-only key cannot upload");
    ts.stop().await;
}

async fn project_deletion_leaves_nothing(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let p = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects", a.account),
        Some(&a.owner.token),
        Some(json!({"name": "doomed"})),
    )
    .await;
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().expect("id").to_string();
    let renamed = call(
        &ts,
        "PATCH",
        &format!("/accounts/{}/projects/{pid}", a.account),
        Some(&a.owner.token),
        Some(json!({"name": "still doomed"})),
    )
    .await;
    assert_eq!(renamed.ok()["name"], "still doomed");
    let k = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects/{pid}/keys", a.account),
        Some(&a.owner.token),
        Some(json!({"name": "k"})),
    )
    .await;
    let key = k.body["key"].as_str().expect("key").to_string();
    let up: serde_json::Value = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", &key)
        .body(script(&["hello"]))
        .send()
        .await
        .expect("up")
        .json()
        .await
        .expect("json");
    let url = up["upload_url"].as_str().expect("url").to_string();
    let tr = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", &key)
        .json(&json!({"audio_url": url}))
        .send()
        .await
        .expect("tr");
    assert_eq!(tr.status().as_u16(), 200);
    let dir = hark_server::uploads_dir(&ts.config.data_dir).join(&pid);
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
    let d = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/projects/{pid}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert_eq!(v2(&ts, &key).await, 401, "its keys stop at once");
    for (table, col) in [
        ("projects", "id"),
        ("api_keys", "project_id"),
        ("uploads", "project_id"),
        ("transcripts", "project_id"),
        ("webhook_deliveries", "project_id"),
    ] {
        assert_eq!(count_rows(&ts, table, col, &pid).await, 0, "{table}");
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM transcripts t WHERE t.id = j.transcript_id)").fetch_one(ts.store.pool()).await.expect("jobs");
    assert_eq!(jobs, 0);
    assert!(!dir.exists(), "upload files removed from disk");
    ts.stop().await;
}

async fn account_deletion_leaves_nothing(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let other = add_member(&ts, a.account, Role::Reader).await;
    let (_, key) = ts.key(a.project, None).await;
    let up = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", &key)
        .body(script(&["hello"]))
        .send()
        .await
        .expect("up");
    assert_eq!(up.status().as_u16(), 200);
    let path = format!("/accounts/{}", a.account);
    let r = call(&ts, "DELETE", &path, Some(&a.owner.token), None).await;
    assert_eq!((r.status, r.code()), (403, "reauth_required"));
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&a.owner.token),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .ok();
    let r = call(&ts, "DELETE", &path, Some(&a.owner.token), None).await;
    assert_eq!(r.status, 409);
    assert!(
        r.body["error"]
            .as_str()
            .expect("e")
            .contains("1 other member"),
        "{}",
        r.text
    );
    call(
        &ts,
        "DELETE",
        &format!("{path}/members/{}", other.user_id),
        Some(&a.owner.token),
        None,
    )
    .await;
    let r = call(&ts, "DELETE", &path, Some(&a.owner.token), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(v2(&ts, &key).await, 401);
    let id = a.account.to_string();
    for table in [
        "projects",
        "api_keys",
        "uploads",
        "transcripts",
        "jobs",
        "webhook_deliveries",
        // usage_events are kept: billing records outlive the account (issue 11).
        "invites",
        "memberships",
    ] {
        assert_eq!(
            count_rows(&ts, table, "account_id", &id).await,
            0,
            "{table}"
        );
    }
    assert_eq!(count_rows(&ts, "accounts", "id", &id).await, 0);
    assert!(!hark_server::uploads_dir(&ts.config.data_dir)
        .join(a.project.to_string())
        .exists());
    let me = call(&ts, "GET", "/me", Some(&a.owner.token), None).await;
    assert_eq!(me.ok()["accounts"].as_array().map(Vec::len), Some(0));
    // The audit chain survives and still verifies.
    assert!(ts
        .store
        .verify_audit_chain(Some(a.account))
        .await
        .expect("verify")
        .is_ok());
    ts.stop().await;
}

async fn audit_api_filters_and_exports(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Payg).await;
    let keys = format!("/accounts/{}/projects/{}/keys", a.account, a.project);
    for i in 0..3 {
        call(
            &ts,
            "POST",
            &keys,
            Some(&a.owner.token),
            Some(json!({"name": format!("k{i}")})),
        )
        .await
        .ok();
    }
    let base = format!("/accounts/{}/audit", a.account);
    let page1 = call(
        &ts,
        "GET",
        &format!("{base}?action=api_key.&limit=2"),
        Some(&a.owner.token),
        None,
    )
    .await;
    let d = page1.ok()["data"].as_array().expect("d").clone();
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|e| e["action"] == "api_key.create"));
    assert_eq!(page1.body["has_more"], true);
    let cursor = page1.body["next_cursor"].as_str().expect("cursor");
    let page2 = call(
        &ts,
        "GET",
        &format!("{base}?action=api_key.&limit=2&cursor={cursor}"),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(page2.ok()["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2.body["has_more"], false);
    let actor = format!("user:{}", a.owner.user_id);
    let by_actor = call(
        &ts,
        "GET",
        &format!("{base}?actor={actor}"),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(by_actor.ok()["data"].as_array().map(Vec::len), Some(3));
    let export = ts
        .http
        .get(ts.url(&format!("/api/v1{base}/export")))
        .bearer_auth(&a.owner.token)
        .send()
        .await
        .expect("export");
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.expect("text");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(
        lines.len() as i64,
        lines.last().expect("last")["seq"].as_i64().expect("seq")
    );
    assert_eq!(lines[0]["action"], "account.create");
    let bad = call(
        &ts,
        "GET",
        &format!("{base}?limit=0"),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    ts.stop().await;
}

async fn openapi_documents_every_route(db: Db) {
    let ts = TestServer::start(db).await;
    let doc = call(&ts, "GET", "/openapi.json", None, None).await;
    let v = doc.ok().clone();
    assert_eq!(v["openapi"], "3.0.3");
    let paths = v["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20);
    assert_eq!(
        v["paths"]["/api/v1/accounts/{account}/projects/{project}/keys/{key}/reveal"]["post"]
            ["x-permission"],
        "reveal_api_keys"
    );
    // Every documented operation is routed (answers with something other than "no route").
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            let concrete = path
                .trim_start_matches("/api/v1")
                .replace("{account}", &uuid::Uuid::new_v4().to_string())
                .replace("{project}", &uuid::Uuid::new_v4().to_string())
                .replace("{key}", &uuid::Uuid::new_v4().to_string())
                .replace("{user}", &uuid::Uuid::new_v4().to_string())
                .replace("{invite}", &uuid::Uuid::new_v4().to_string());
            let a = call(
                &ts,
                &method.to_uppercase(),
                &concrete,
                None,
                Some(json!({})),
            )
            .await;
            assert_ne!(a.status, 405, "{method} {path}");
            assert!(
                !(a.status == 404 && a.text.contains("route not found")),
                "{method} {path}"
            );
        }
    }
    let unknown = call(&ts, "GET", "/nope", None, None).await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    ts.stop().await;
}

/// Checks `value` against the document's schema `schema` (following `$ref`s): every
/// object has exactly the properties the schema lists, with the listed JSON types.
fn conforms(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: no schema {name}");
        return conforms(doc, target, value, at);
    }
    if value.is_null() {
        assert_eq!(
            schema["nullable"], true,
            "{at}: null where {schema} is not nullable"
        );
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {value}"));
            if let Some(props) = schema["properties"].as_object() {
                let mut want: Vec<&String> = props.keys().collect();
                let mut got: Vec<&String> = obj.keys().collect();
                // `permission` in Error is optional; all others are required.
                want.retain(|k| {
                    schema["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == *k))
                        || obj.contains_key(*k)
                });
                want.sort();
                got.sort();
                assert_eq!(got, want, "{at}: properties differ");
                for (k, v) in obj {
                    conforms(doc, &props[k], v, &format!("{at}.{k}"));
                }
            }
        }
        Some("array") => {
            for (i, item) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"))
                .iter()
                .enumerate()
            {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at}: not a string: {value}"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean: {value}"),
        Some("integer") => assert!(
            value.is_i64() || value.is_u64(),
            "{at}: not an integer: {value}"
        ),
        Some("number") => assert!(value.is_number(), "{at}: not a number: {value}"),
        _ => {}
    }
}

/// The success schema the document gives for `method path`.
fn success_schema(doc: &serde_json::Value, method: &str, path: &str) -> serde_json::Value {
    let responses = &doc["paths"][format!("/api/v1{path}")][method]["responses"];
    let (_, ok) = responses
        .as_object()
        .and_then(|r| r.iter().find(|(code, _)| code.starts_with('2')))
        .unwrap_or_else(|| panic!("{method} {path} is not documented"));
    ok["content"]["application/json"]["schema"].clone()
}

async fn openapi_schemas_match_responses(db: Db) {
    let ts = TestServer::start(db).await;
    let doc = call(&ts, "GET", "/openapi.json", None, None)
        .await
        .ok()
        .clone();
    let a = org(&ts, Plan::Payg).await;
    let t = Some(a.owner.token.as_str());
    let acc = format!("/accounts/{}", a.account);
    let proj = format!("{acc}/projects/{}", a.project);
    let check = |method: &str, templ: &str, v: &serde_json::Value| {
        conforms(
            &doc,
            &success_schema(&doc, method, templ),
            v,
            &format!("{method} {templ}"),
        );
    };
    let login = login(&ts, &a.owner.email, PASSWORD).await;
    check("post", "/auth/login", login.ok());
    check("get", "/me", call(&ts, "GET", "/me", t, None).await.ok());
    check(
        "post",
        "/me/account",
        call(
            &ts,
            "POST",
            "/me/account",
            t,
            Some(json!({"account_id": a.account})),
        )
        .await
        .ok(),
    );
    check(
        "get",
        "/accounts",
        call(&ts, "GET", "/accounts", t, None).await.ok(),
    );
    check(
        "get",
        "/accounts/{account}",
        call(&ts, "GET", &acc, t, None).await.ok(),
    );
    check(
        "patch",
        "/accounts/{account}",
        call(&ts, "PATCH", &acc, t, Some(json!({"name": "N"})))
            .await
            .ok(),
    );
    check(
        "get",
        "/accounts/{account}/billing",
        call(&ts, "GET", &format!("{acc}/billing"), t, None)
            .await
            .ok(),
    );
    check(
        "get",
        "/accounts/{account}/usage",
        call(&ts, "GET", &format!("{acc}/usage"), t, None)
            .await
            .ok(),
    );
    let email = unique_email("c");
    check(
        "post",
        "/accounts/{account}/invites",
        call(
            &ts,
            "POST",
            &format!("{acc}/invites"),
            t,
            Some(json!({"email": email})),
        )
        .await
        .ok(),
    );
    check(
        "get",
        "/accounts/{account}/invites",
        call(&ts, "GET", &format!("{acc}/invites"), t, None)
            .await
            .ok(),
    );
    let token = mailed_token(&ts, &email).await;
    check(
        "post",
        "/invites/accept",
        call(
            &ts,
            "POST",
            "/invites/accept",
            None,
            Some(json!({"token": token, "password": PASSWORD})),
        )
        .await
        .ok(),
    );
    check(
        "get",
        "/accounts/{account}/members",
        call(&ts, "GET", &format!("{acc}/members"), t, None)
            .await
            .ok(),
    );
    check(
        "post",
        "/accounts/{account}/projects",
        call(
            &ts,
            "POST",
            &format!("{acc}/projects"),
            t,
            Some(json!({"name": "p2"})),
        )
        .await
        .ok(),
    );
    check(
        "get",
        "/accounts/{account}/projects",
        call(&ts, "GET", &format!("{acc}/projects"), t, None)
            .await
            .ok(),
    );
    check(
        "get",
        "/accounts/{account}/projects/{project}",
        call(&ts, "GET", &proj, t, None).await.ok(),
    );
    check(
        "patch",
        "/accounts/{account}/projects/{project}",
        call(&ts, "PATCH", &proj, t, Some(json!({"name": "p"})))
            .await
            .ok(),
    );
    let created = call(
        &ts,
        "POST",
        &format!("{proj}/keys"),
        t,
        Some(json!({"name": "k", "scopes": ["streaming"]})),
    )
    .await;
    check(
        "post",
        "/accounts/{account}/projects/{project}/keys",
        created.ok(),
    );
    let kid = created.body["id"].as_str().expect("id").to_string();
    let key = created.body["key"].as_str().expect("key").to_string();
    assert_eq!(
        ts.http
            .get(ts.url("/v2/transcript"))
            .header("authorization", &key)
            .send()
            .await
            .expect("v2")
            .status()
            .as_u16(),
        403
    );
    let rot = call(
        &ts,
        "POST",
        &format!("{proj}/keys/{kid}/rotate"),
        t,
        Some(json!({"grace_seconds": 0})),
    )
    .await;
    check(
        "post",
        "/accounts/{account}/projects/{project}/keys/{key}/rotate",
        rot.ok(),
    );
    check(
        "get",
        "/accounts/{account}/projects/{project}/keys",
        call(&ts, "GET", &format!("{proj}/keys"), t, None)
            .await
            .ok(),
    );
    check(
        "post",
        "/auth/reauth",
        call(
            &ts,
            "POST",
            "/auth/reauth",
            t,
            Some(json!({"password": PASSWORD})),
        )
        .await
        .ok(),
    );
    check(
        "post",
        "/accounts/{account}/projects/{project}/keys/{key}/reveal",
        call(&ts, "POST", &format!("{proj}/keys/{kid}/reveal"), t, None)
            .await
            .ok(),
    );
    check(
        "delete",
        "/accounts/{account}/projects/{project}/keys/{key}",
        call(&ts, "DELETE", &format!("{proj}/keys/{kid}"), t, None)
            .await
            .ok(),
    );
    check(
        "get",
        "/accounts/{account}/projects/{project}/transcripts",
        call(&ts, "GET", &format!("{proj}/transcripts"), t, None)
            .await
            .ok(),
    );
    check(
        "get",
        "/accounts/{account}/audit",
        call(&ts, "GET", &format!("{acc}/audit"), t, None)
            .await
            .ok(),
    );
    reauth_ok(&ts, &a.owner.token).await;
    let begin = call(&ts, "POST", "/me/mfa/totp", t, None).await;
    check("post", "/me/mfa/totp", begin.ok());
    let seed = begin.body["secret"].as_str().expect("seed");
    let code = totp::current_code(seed, ts.clock.now_ms()).expect("code");
    check(
        "post",
        "/me/mfa/totp/confirm",
        call(
            &ts,
            "POST",
            "/me/mfa/totp/confirm",
            t,
            Some(json!({"code": code})),
        )
        .await
        .ok(),
    );
    // Errors: the envelope schema.
    let err = call(
        &ts,
        "GET",
        &format!("/accounts/{}", hark_core::AccountId::new()),
        t,
        None,
    )
    .await;
    conforms(
        &doc,
        &json!({"$ref": "#/components/schemas/Error"}),
        &err.body,
        "error",
    );
    ts.stop().await;
}

both_databases!(
    openapi_schemas_match_responses,
    invite_accept_switch,
    invites_expire_and_revoke,
    removed_member_is_refused_at_once,
    mfa_enrol_replay_recovery_and_require,
    ownership_transfer,
    reveal_needs_recent_reauth,
    rotation_grace_and_revocation,
    scopes_limit_data_plane,
    project_deletion_leaves_nothing,
    account_deletion_leaves_nothing,
    audit_api_filters_and_exports,
    openapi_documents_every_route,
    rotated_key_successor_keeps_the_expiry,
);
