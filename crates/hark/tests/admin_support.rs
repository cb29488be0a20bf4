//! The operator's support commands for the management API, through the `hark`
//! binary: set a password, transfer ownership, change a user's email, read the mail
//! outbox, and `audit verify` catching a deleted and an edited audit row.

mod common;

use common::{run_bounded, runtime, with_database, Install};
use hark_core::clock::{Clock, SystemClock};
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::{AccountId, InviteId, Role, UserId};
use hark_store::{Actor, Mail, MemberStore, NewInvite, SqlStore, UserStore};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

async fn open_store(url: &str) -> SqlStore {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    SqlStore::open(url, clock)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn support_commands(database_url: Option<String>) {
    let install = Install::new(database_url);
    let tenant = install.admin_init();
    let account = AccountId::parse(&tenant.account_id).expect("account id");
    install.set_password("owner@example.com", "operator-chosen passphrase");
    let url = install.effective_database_url();
    let rt = runtime();
    let store = rt.block_on(open_store(&url));
    let owner = rt
        .block_on(store.user_by_email("owner@example.com"))
        .expect("lookup")
        .expect("owner exists");
    let hash = owner.password_hash.clone().expect("password set");
    assert!(hark_core::password::verify(
        "operator-chosen passphrase",
        &hash
    ));
    // A second member, through an invite (its mail lands in the outbox).
    let token = keys::generate(SecretKind::Invite);
    let digest = SecretDigest::of(token.expose()).to_hex();
    rt.block_on(store.create_invite(
        NewInvite {
            id: InviteId::new(),
            account_id: account,
            email: "second@example.com".into(),
            role: Role::Admin,
            digest_hex: digest.clone(),
            expires_at: SystemClock.now_ms() + 60_000,
        },
        Mail {
            to: "second@example.com".into(),
            subject: "Invitation".into(),
            body: "accept it".into(),
        },
        &Actor::Operator,
    ))
    .expect("invite");
    rt.block_on(store.accept_invite(&digest, (UserId::new(), hash)))
        .expect("accept");
    // Transfer ownership.
    let v = install.run_json(&[
        "admin",
        "account",
        "transfer-ownership",
        &tenant.account_id,
        "--to",
        "second@example.com",
        "--json",
    ]);
    assert_eq!(v["owner_email"], "second@example.com");
    let members = rt.block_on(store.member_list(account)).expect("members");
    let role = |email: &str| members.iter().find(|m| m.email == email).map(|m| m.role);
    assert_eq!(role("second@example.com"), Some(Role::Owner));
    assert_eq!(role("owner@example.com"), Some(Role::Admin));
    assert_eq!(
        rt.block_on(store.owner_email(account))
            .expect("owner")
            .as_deref(),
        Some("second@example.com")
    );
    // Change an email.
    install.run_json(&[
        "admin",
        "user",
        "change-email",
        "owner@example.com",
        "first@example.com",
        "--json",
    ]);
    assert!(rt
        .block_on(store.user_by_email("owner@example.com"))
        .expect("q")
        .is_none());
    assert!(rt
        .block_on(store.user_by_email("FIRST@example.com"))
        .expect("q")
        .is_some());
    let clash = run_bounded(
        install.command().args([
            "admin",
            "user",
            "change-email",
            "first@example.com",
            "second@example.com",
        ]),
        Duration::from_secs(60),
    );
    assert!(!clash.status.success(), "an email in use is refused");
    // The outbox holds the ownership notice; the invite's mail went when the invite was
    // accepted before it was sent (an ended invite's mail is never delivered).
    let out = install.run(&["admin", "outbox", "--json"]);
    let mails: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(!mails.iter().any(|m| m["subject"] == "Invitation"));
    let notice = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains("Owner"))
        .expect("ownership notice");
    assert_eq!(notice["to"], "second@example.com");
    let id = notice["id"].as_str().expect("id");
    install.run(&["admin", "outbox", "--mark-sent", id]);
    let unsent = install.run(&["admin", "outbox", "--unsent", "--json"]);
    assert!(!unsent.contains(id));
    // Audit verification: intact, then a deleted row, then an edited row.
    let ok = install.run_json(&[
        "admin",
        "audit",
        "verify",
        "--account",
        &tenant.account_id,
        "--json",
    ]);
    assert_eq!(ok["ok"], true, "{ok}");
    let verify = || {
        run_bounded(
            install.command().args([
                "admin",
                "audit",
                "verify",
                "--account",
                &tenant.account_id,
                "--json",
            ]),
            Duration::from_secs(60),
        )
    };
    let pool = store.pool().clone();
    rt.block_on(async {
        sqlx::query("CREATE TABLE audit_backup AS SELECT * FROM audit_log")
            .execute(&pool)
            .await
            .expect("backup");
        sqlx::query("DELETE FROM audit_log WHERE account_id = $1 AND seq = 2")
            .bind(account.to_string())
            .execute(&pool)
            .await
            .expect("delete");
    });
    let out = verify();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["problem"].as_str().expect("problem").contains("missing"),
        "{v}"
    );
    rt.block_on(async {
        sqlx::query("DELETE FROM audit_log")
            .execute(&pool)
            .await
            .expect("clear");
        sqlx::query("INSERT INTO audit_log SELECT * FROM audit_backup")
            .execute(&pool)
            .await
            .expect("restore");
        sqlx::query("UPDATE audit_log SET details = $2 WHERE account_id = $1 AND seq = 3")
            .bind(account.to_string())
            .bind(r#"{"edited":true}"#)
            .execute(&pool)
            .await
            .expect("edit");
    });
    let out = verify();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["problem"]
            .as_str()
            .expect("problem")
            .contains("entry 3 was altered"),
        "{v}"
    );
    rt.block_on(store.close());
}

#[test]
fn support_commands_on_sqlite() {
    with_database(false, support_commands);
}

#[test]
fn support_commands_on_postgres() {
    with_database(true, support_commands);
}
