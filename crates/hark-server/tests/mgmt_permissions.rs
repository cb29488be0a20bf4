//! The seed's permission table, cell by cell, against the running server: every
//! management action × Owner / Admin / Reader / non-member / removed member. Allowed
//! cells succeed; refused ones get a 403 naming the missing permission; a non-member
//! sees the account as missing (404); a removed member's session is gone (401).

mod common;
use common::mgmt::*;
use common::*;
use hark_core::{Plan, Role};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Owner,
    Admin,
    Reader,
    NonMember,
    Removed,
}

/// One action: its name, the permission it needs, and how to perform it on fresh
/// fixtures (returns the answer).
#[derive(Debug, Clone, Copy)]
enum Action {
    ViewAccount,
    ListMembers,
    ListInvites,
    ListProjects,
    GetProject,
    ListKeys,
    ListTranscripts,
    ViewUsage,
    ViewBilling,
    ViewAudit,
    ExportAudit,
    UpdateAccount,
    Invite,
    DeleteInvite,
    ChangeRole,
    RemoveMember,
    CreateProject,
    RenameProject,
    DeleteProject,
    CreateKey,
    RevokeKey,
    RotateKey,
    RevealKey,
    DeleteAccount,
}

const ACTIONS: [Action; 24] = [
    Action::ViewAccount,
    Action::ListMembers,
    Action::ListInvites,
    Action::ListProjects,
    Action::GetProject,
    Action::ListKeys,
    Action::ListTranscripts,
    Action::ViewUsage,
    Action::ViewBilling,
    Action::ViewAudit,
    Action::ExportAudit,
    Action::UpdateAccount,
    Action::Invite,
    Action::DeleteInvite,
    Action::ChangeRole,
    Action::RemoveMember,
    Action::CreateProject,
    Action::RenameProject,
    Action::DeleteProject,
    Action::CreateKey,
    Action::RevokeKey,
    Action::RotateKey,
    Action::RevealKey,
    Action::DeleteAccount,
];

impl Action {
    /// The permission (as named in 403s) and whether Admin and Reader hold it.
    fn rule(self) -> (&'static str, bool, bool) {
        use Action::*;
        match self {
            ViewAccount | ListProjects | GetProject => ("view_projects", true, true),
            ListMembers | ListInvites => ("view_members", true, true),
            ListKeys => ("view_api_keys", true, true),
            ListTranscripts => ("view_transcripts", true, true),
            ViewUsage => ("view_usage", true, true),
            ViewBilling => ("manage_billing", true, false),
            ViewAudit | ExportAudit => ("view_audit_log", true, false),
            UpdateAccount => ("manage_settings", true, false),
            Invite | DeleteInvite | ChangeRole | RemoveMember => ("manage_members", true, false),
            CreateProject | RenameProject | DeleteProject => ("manage_projects", true, false),
            CreateKey | RevokeKey | RotateKey => ("manage_api_keys", true, false),
            RevealKey => ("reveal_api_keys", true, false),
            DeleteAccount => ("delete_account", false, false),
        }
    }

    async fn perform(self, ts: &TestServer, org: &Org, token: &str) -> Answer {
        use Action::*;
        let a = org.account;
        let p = org.project;
        let t = Some(token);
        match self {
            ViewAccount => call(ts, "GET", &format!("/accounts/{a}"), t, None).await,
            ListMembers => call(ts, "GET", &format!("/accounts/{a}/members"), t, None).await,
            ListInvites => call(ts, "GET", &format!("/accounts/{a}/invites"), t, None).await,
            ListProjects => call(ts, "GET", &format!("/accounts/{a}/projects"), t, None).await,
            GetProject => call(ts, "GET", &format!("/accounts/{a}/projects/{p}"), t, None).await,
            ListKeys => {
                call(
                    ts,
                    "GET",
                    &format!("/accounts/{a}/projects/{p}/keys"),
                    t,
                    None,
                )
                .await
            }
            ListTranscripts => {
                call(
                    ts,
                    "GET",
                    &format!("/accounts/{a}/projects/{p}/transcripts"),
                    t,
                    None,
                )
                .await
            }
            ViewUsage => call(ts, "GET", &format!("/accounts/{a}/usage"), t, None).await,
            ViewBilling => call(ts, "GET", &format!("/accounts/{a}/billing"), t, None).await,
            ViewAudit => call(ts, "GET", &format!("/accounts/{a}/audit"), t, None).await,
            ExportAudit => call(ts, "GET", &format!("/accounts/{a}/audit/export"), t, None).await,
            UpdateAccount => {
                call(
                    ts,
                    "PATCH",
                    &format!("/accounts/{a}"),
                    t,
                    Some(json!({"name": "Renamed"})),
                )
                .await
            }
            Invite => {
                let email = unique_email("invitee");
                call(
                    ts,
                    "POST",
                    &format!("/accounts/{a}/invites"),
                    t,
                    Some(json!({"email": email})),
                )
                .await
            }
            DeleteInvite => {
                let email = unique_email("invitee");
                let inv = call(
                    ts,
                    "POST",
                    &format!("/accounts/{a}/invites"),
                    Some(&org.owner.token),
                    Some(json!({"email": email})),
                )
                .await;
                let id = inv.ok()["id"].as_str().expect("id").to_string();
                call(
                    ts,
                    "DELETE",
                    &format!("/accounts/{a}/invites/{id}"),
                    t,
                    None,
                )
                .await
            }
            ChangeRole => {
                let m = add_member(ts, a, Role::Reader).await;
                call(
                    ts,
                    "PATCH",
                    &format!("/accounts/{a}/members/{}", m.user_id),
                    t,
                    Some(json!({"role": "admin"})),
                )
                .await
            }
            RemoveMember => {
                let m = add_member(ts, a, Role::Reader).await;
                call(
                    ts,
                    "DELETE",
                    &format!("/accounts/{a}/members/{}", m.user_id),
                    t,
                    None,
                )
                .await
            }
            CreateProject => {
                call(
                    ts,
                    "POST",
                    &format!("/accounts/{a}/projects"),
                    t,
                    Some(json!({"name": "p"})),
                )
                .await
            }
            RenameProject => {
                call(
                    ts,
                    "PATCH",
                    &format!("/accounts/{a}/projects/{p}"),
                    t,
                    Some(json!({"name": "renamed"})),
                )
                .await
            }
            DeleteProject => {
                let np = call(
                    ts,
                    "POST",
                    &format!("/accounts/{a}/projects"),
                    Some(&org.owner.token),
                    Some(json!({"name": "doomed"})),
                )
                .await;
                let id = np.ok()["id"].as_str().expect("id").to_string();
                call(
                    ts,
                    "DELETE",
                    &format!("/accounts/{a}/projects/{id}"),
                    t,
                    None,
                )
                .await
            }
            CreateKey => {
                call(
                    ts,
                    "POST",
                    &format!("/accounts/{a}/projects/{p}/keys"),
                    t,
                    Some(json!({"name": "k"})),
                )
                .await
            }
            RevokeKey | RotateKey | RevealKey => {
                let (k, _) = ts.key(p, None).await;
                let (method, suffix, body) = match self {
                    RevokeKey => ("DELETE", "", None),
                    RotateKey => ("POST", "/rotate", Some(json!({"grace_seconds": 60}))),
                    _ => ("POST", "/reveal", None),
                };
                call(
                    ts,
                    method,
                    &format!("/accounts/{a}/projects/{p}/keys/{k}{suffix}"),
                    t,
                    body,
                )
                .await
            }
            DeleteAccount => call(ts, "DELETE", &format!("/accounts/{a}"), t, None).await,
        }
    }
}

async fn permission_table(db: Db) {
    let ts = TestServer::start(db).await;
    let org = org(&ts, Plan::Free).await;
    roomy(&ts, org.account).await;
    let admin = add_member(&ts, org.account, Role::Admin).await;
    let reader = add_member(&ts, org.account, Role::Reader).await;
    let removed = add_member(&ts, org.account, Role::Reader).await;
    let outsider = org_owner_elsewhere(&ts).await;
    let r = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/members/{}", org.account, removed.user_id),
        Some(&org.owner.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Everyone who can re-authenticates, so reveal is decided by role alone.
    for p in [&org.owner, &admin, &reader, &outsider] {
        let r = call(
            &ts,
            "POST",
            "/auth/reauth",
            Some(&p.token),
            Some(json!({"password": PASSWORD})),
        )
        .await;
        r.ok();
    }
    let who = [
        (Who::Owner, &org.owner),
        (Who::Admin, &admin),
        (Who::Reader, &reader),
        (Who::NonMember, &outsider),
        (Who::Removed, &removed),
    ];
    let mut cells = 0;
    for action in ACTIONS {
        let (permission, admin_may, reader_may) = action.rule();
        for (w, person) in who {
            let a = action.perform(&ts, &org, &person.token).await;
            let cell = format!("{action:?} as {w:?}: {} {}", a.status, a.text);
            match w {
                Who::NonMember => {
                    assert_eq!(a.status, 404, "{cell}");
                    assert_eq!(a.code(), "not_found", "{cell}");
                }
                Who::Removed => {
                    assert_eq!(a.status, 401, "{cell}");
                    assert_eq!(a.code(), "unauthenticated", "{cell}");
                }
                _ => {
                    let allowed = match w {
                        Who::Owner => true,
                        Who::Admin => admin_may,
                        _ => reader_may,
                    };
                    if allowed {
                        if matches!(action, Action::DeleteAccount) {
                            // Allowed, but the account still has other members.
                            assert_eq!(a.status, 409, "{cell}");
                            assert!(
                                a.body["error"]
                                    .as_str()
                                    .unwrap_or("")
                                    .contains("other member"),
                                "{cell}"
                            );
                        } else {
                            assert!((200..300).contains(&a.status), "{cell}");
                        }
                    } else {
                        assert_eq!(a.status, 403, "{cell}");
                        assert_eq!(a.code(), "permission_denied", "{cell}");
                        assert_eq!(a.body["permission"], permission, "{cell}");
                        assert!(
                            a.body["error"].as_str().unwrap_or("").contains(permission),
                            "{cell}"
                        );
                    }
                }
            }
            cells += 1;
        }
    }
    assert_eq!(cells, ACTIONS.len() * 5);
    // Signing in again does not bring a removed member back: the account is gone for them.
    let again = login_ok(&ts, &removed.email).await;
    let r = call(
        &ts,
        "GET",
        &format!("/accounts/{}", org.account),
        Some(&again.token),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    let me = call(&ts, "GET", "/me", Some(&again.token), None).await;
    assert_eq!(me.ok()["accounts"].as_array().map(Vec::len), Some(0));
    ts.stop().await;
}

/// The Owner of another account: a signed-in person who is not a member here.
async fn org_owner_elsewhere(ts: &TestServer) -> Person {
    org(ts, Plan::Free).await.owner
}

/// Refusals never depend on the order of checks: a Reader learns nothing about keys
/// of another account's project, and a missing account answers like a foreign one.
async fn foreign_ids_answer_as_missing(db: Db) {
    let ts = TestServer::start(db).await;
    let a = org(&ts, Plan::Free).await;
    let b = org(&ts, Plan::Free).await;
    // B's project under A's account path.
    let r = call(
        &ts,
        "GET",
        &format!("/accounts/{}/projects/{}/keys", a.account, b.project),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    let missing = hark_core::AccountId::new();
    let r1 = call(
        &ts,
        "GET",
        &format!("/accounts/{missing}"),
        Some(&a.owner.token),
        None,
    )
    .await;
    let r2 = call(
        &ts,
        "GET",
        &format!("/accounts/{}", b.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(r1.status, 404);
    assert_eq!(
        r1.text, r2.text,
        "a foreign account answers exactly like a missing one"
    );
    ts.stop().await;
}

both_databases!(permission_table, foreign_ids_answer_as_missing);
