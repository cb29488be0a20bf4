//! The storage conformance suite: every test runs against SQLite and PostgreSQL.

use hark_core::clock::ManualClock;
use hark_core::{AccountId, ApiKeyId, Plan, ProjectId, TranscriptId, UploadId, UserId};
use hark_store::testing::TestDatabase;
use hark_store::*;
use std::future::Future;
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;

struct Ctx {
    store: SqlStore,
    clock: Arc<ManualClock>,
}

async fn run<F, Fut>(db: TestDatabase, test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = Arc::new(ManualClock::new(T0));
    let store = db.open(clock.clone()).await.expect("open store");
    test(Ctx {
        store: store.clone(),
        clock,
    })
    .await;
    store.close().await;
    db.drop_database().await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::run(hark_store::testing::TestDatabase::sqlite().await, super::$name).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::run(hark_store::testing::TestDatabase::postgres().await, super::$name).await } )* }
    };
}

conformance!(
    bootstrap_creates_owner_project_and_audit,
    key_limit_is_atomic_under_concurrency,
    project_limit_and_overrides,
    revoked_and_expired_keys,
    transcripts_are_project_scoped,
    listing_orders_and_pages,
    jobs_lease_reclaim_and_finish_once,
    concurrency_limit_throttles_fifo,
    delete_scrubs_and_releases_upload,
    webhook_outbox_retries_and_records,
    audit_chain_detects_tampering,
    usage_is_idempotent,
    stream_token_redeems_exactly_once,
    stream_rate_limit_and_lost_sessions,
    setup_link_creates_first_account_once,
    password_links_work_once_and_expire,
    sign_up_never_takes_an_existing_email,
    webhook_secret_rotates_with_an_overlap_and_is_audited,
    transcript_deleted_by_a_person_is_audited,
    sessions_record_how_they_signed_in,
);

async fn new_account(store: &SqlStore, plan: Plan) -> Bootstrap {
    store
        .create_account(
            NewAccount {
                id: AccountId::new(),
                name: "Acme".into(),
                plan,
                owner_id: UserId::new(),
                owner_email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                project: NewProject {
                    id: ProjectId::new(),
                    name: "default".into(),
                    webhook_secret_sealed: "sealed".into(),
                },
            },
            &Actor::Operator,
        )
        .await
        .expect("create account")
}

fn new_key(project: ProjectId, secret: &str) -> NewApiKey {
    NewApiKey {
        id: ApiKeyId::new(),
        project_id: project,
        name: "k".into(),
        digest_hex: hark_core::keys::SecretDigest::of(secret).to_hex(),
        sealed: "sealed".into(),
        masked: "masked".into(),
        created_by: "operator".into(),
        expires_at: None,
        scopes: vec![],
    }
}

async fn new_transcript(store: &SqlStore, project: ProjectId, key: ApiKeyId) -> Transcript {
    store
        .create_transcript(NewTranscript {
            id: TranscriptId::random(),
            project_id: project,
            api_key_id: key,
            audio_url: "https://example.com/a.wav".into(),
            upload_id: None,
            params: "{}".into(),
        })
        .await
        .expect("create transcript")
}

async fn bootstrap_creates_owner_project_and_audit(c: Ctx) {
    let b = new_account(&c.store, Plan::Free).await;
    assert_eq!(b.account.limits.projects, 2);
    let members = c.store.members(b.account.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, hark_core::Role::Owner);
    assert_eq!(
        c.store.list_projects(b.account.id).await.unwrap(),
        vec![b.project.clone()]
    );
    let audit = c.store.audit_entries(Some(b.account.id)).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "account.create");
}

async fn key_limit_is_atomic_under_concurrency(c: Ctx) {
    let b = new_account(&c.store, Plan::Enterprise).await;
    let mut overrides = hark_core::plan::LimitOverrides::default();
    overrides.set("api_keys=10").unwrap();
    c.store
        .set_plan(b.account.id, Plan::Enterprise, overrides, &Actor::Operator)
        .await
        .unwrap();
    for i in 0..9 {
        c.store
            .create_api_key(new_key(b.project.id, &format!("pre{i}")), &Actor::Operator)
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = c.store.clone();
            let key = new_key(b.project.id, &format!("race{i}"));
            tokio::spawn(async move { store.create_api_key(key, &Actor::Operator).await })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::LimitReached { limit: 10, .. }) => limited += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, limited), (1, 49));
    assert_eq!(c.store.list_api_keys(b.project.id).await.unwrap().len(), 10);
}

async fn project_limit_and_overrides(c: Ctx) {
    let b = new_account(&c.store, Plan::Free).await;
    let p = |name: &str| NewProject {
        id: ProjectId::new(),
        name: name.into(),
        webhook_secret_sealed: "s".into(),
    };
    c.store
        .create_project(b.account.id, p("second"), &Actor::Operator)
        .await
        .unwrap();
    let err = c
        .store
        .create_project(b.account.id, p("third"), &Actor::Operator)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::LimitReached {
            plan: Plan::Free,
            what: hark_core::plan::Limit::Projects,
            limit: 2
        }
    ));
    let mut o = hark_core::plan::LimitOverrides::default();
    o.set("projects=3").unwrap();
    let acct = c
        .store
        .set_plan(b.account.id, Plan::Enterprise, o, &Actor::Operator)
        .await
        .unwrap();
    assert_eq!(acct.limits.projects, 3);
    c.store
        .create_project(b.account.id, p("third"), &Actor::Operator)
        .await
        .unwrap();
    assert_eq!(c.store.list_projects(b.account.id).await.unwrap().len(), 3);
}

async fn revoked_and_expired_keys(c: Ctx) {
    let b = new_account(&c.store, Plan::Payg).await;
    let mut k = new_key(b.project.id, "secret-1");
    k.expires_at = Some(T0 + 1000);
    let rec = c.store.create_api_key(k, &Actor::Operator).await.unwrap();
    let digest = hark_core::keys::SecretDigest::of("secret-1").to_hex();
    let epoch0 = c.store.auth_epoch().await.unwrap();
    let p = c.store.principal_by_digest(&digest).await.unwrap().unwrap();
    assert_eq!(
        (p.key_id, p.project_id, p.account_id),
        (rec.id, b.project.id, b.account.id)
    );
    assert!(p.is_usable_at(T0));
    assert!(!p.is_usable_at(T0 + 1000));
    c.store
        .revoke_api_key(rec.id, &Actor::Operator)
        .await
        .unwrap();
    let p = c.store.principal_by_digest(&digest).await.unwrap().unwrap();
    assert!(!p.is_usable_at(T0));
    assert!(c.store.auth_epoch().await.unwrap() > epoch0);
    assert!(c
        .store
        .principal_by_digest(&hark_core::keys::SecretDigest::of("other").to_hex())
        .await
        .unwrap()
        .is_none());
    c.store.touch_last_used(&[(rec.id, T0 + 5)]).await.unwrap();
    assert_eq!(
        c.store
            .get_api_key(rec.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(T0 + 5)
    );
}

async fn transcripts_are_project_scoped(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let b = new_account(&c.store, Plan::Payg).await;
    let t = new_transcript(&c.store, a.project.id, ApiKeyId::new()).await;
    assert_eq!(t.status, TranscriptStatus::Queued);
    assert!(c
        .store
        .get_transcript(a.project.id, t.id)
        .await
        .unwrap()
        .is_some());
    assert!(c
        .store
        .get_transcript(b.project.id, t.id)
        .await
        .unwrap()
        .is_none());
    assert!(c
        .store
        .delete_transcript(b.project.id, t.id)
        .await
        .unwrap()
        .is_none());
    let q = TranscriptQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        c.store
            .list_transcripts(b.project.id, &q)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        c.store
            .list_transcripts(a.project.id, &q)
            .await
            .unwrap()
            .len(),
        1
    );
    let up = Upload {
        id: UploadId::new(),
        account_id: a.account.id,
        project_id: a.project.id,
        api_key_id: ApiKeyId::new(),
        path: "/x".into(),
        size_bytes: 3,
        created_at: T0,
    };
    c.store.create_upload(up.clone()).await.unwrap();
    assert_eq!(c.store.get_upload(up.id).await.unwrap(), Some(up));
}

async fn listing_orders_and_pages(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            new_transcript(&c.store, a.project.id, ApiKeyId::new())
                .await
                .id,
        );
        c.clock.advance_ms(10);
    }
    let list = |q: TranscriptQuery| {
        let store = c.store.clone();
        let project = a.project.id;
        async move {
            store
                .list_transcripts(project, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(
        list(TranscriptQuery {
            limit: 10,
            ..Default::default()
        })
        .await,
        newest_first
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 2,
            ..Default::default()
        })
        .await,
        newest_first[..2]
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 2,
            before_id: Some(ids[3]),
            ..Default::default()
        })
        .await,
        vec![ids[2], ids[1]]
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 2,
            after_id: Some(ids[1]),
            ..Default::default()
        })
        .await,
        vec![ids[3], ids[2]]
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 10,
            after_id: Some(ids[0]),
            before_id: Some(ids[3]),
            ..Default::default()
        })
        .await,
        vec![ids[2], ids[1]]
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 10,
            status: Some(TranscriptStatus::Completed),
            ..Default::default()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(TranscriptQuery {
            limit: 10,
            created_between: Some((T0 + 10, T0 + 20)),
            ..Default::default()
        })
        .await,
        vec![ids[2], ids[1]]
    );
}

fn completed(t: &Transcript) -> JobOutcome {
    JobOutcome::Completed {
        result_json: r#"{"text":"hi"}"#.into(),
        speech_model_used: "whisper-tiny.en".into(),
        audio_duration: 2.5,
        usage: NewUsageEvent {
            idempotency_key: format!("transcript:{}", t.id),
            account_id: t.account_id,
            project_id: t.project_id,
            api_key_id: t.api_key_id,
            product: "speech_to_text".into(),
            model: "whisper-tiny.en".into(),
            audio_ms: 2_500,
            session_ms: None,
        },
    }
}

async fn jobs_lease_reclaim_and_finish_once(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let t = new_transcript(&c.store, a.project.id, ApiKeyId::new()).await;
    let job = c.store.claim_job("w1", 1000).await.unwrap().unwrap();
    assert_eq!(job.transcript.id, t.id);
    assert_eq!(job.transcript.status, TranscriptStatus::Processing);
    assert!(
        c.store.claim_job("w2", 1000).await.unwrap().is_none(),
        "leased job is not claimable"
    );
    // w1 dies; its lease expires and w2 takes over.
    c.clock.advance_ms(1001);
    let again = c.store.claim_job("w2", 1000).await.unwrap().unwrap();
    assert_eq!(
        (again.job_id.as_str(), again.attempts),
        (job.job_id.as_str(), 2)
    );
    assert!(!c.store.extend_lease(&job.job_id, "w1", 1000).await.unwrap());
    assert!(c.store.extend_lease(&job.job_id, "w2", 1000).await.unwrap());
    // The stale worker cannot complete; the owner can, once.
    assert!(!c
        .store
        .finish_job(&job.job_id, "w1", completed(&t), None)
        .await
        .unwrap());
    assert!(c
        .store
        .finish_job(&job.job_id, "w2", completed(&t), None)
        .await
        .unwrap());
    assert!(!c
        .store
        .finish_job(&job.job_id, "w2", completed(&t), None)
        .await
        .unwrap());
    let done = c
        .store
        .get_transcript(a.project.id, t.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TranscriptStatus::Completed);
    assert_eq!(done.speech_model_used.as_deref(), Some("whisper-tiny.en"));
    assert_eq!(c.store.usage_events(a.account.id).await.unwrap().len(), 1);
    assert!(c.store.claim_job("w3", 1000).await.unwrap().is_none());
}

async fn concurrency_limit_throttles_fifo(c: Ctx) {
    let a = new_account(&c.store, Plan::Enterprise).await;
    let mut o = hark_core::plan::LimitOverrides::default();
    o.set("concurrent_jobs=2").unwrap();
    c.store
        .set_plan(a.account.id, Plan::Enterprise, o, &Actor::Operator)
        .await
        .unwrap();
    let b = new_account(&c.store, Plan::Payg).await;
    let mut ts = Vec::new();
    for _ in 0..3 {
        ts.push(new_transcript(&c.store, a.project.id, ApiKeyId::new()).await);
    }
    let other = new_transcript(&c.store, b.project.id, ApiKeyId::new()).await;
    let j1 = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
    let j2 = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!((j1.transcript.id, j2.transcript.id), (ts[0].id, ts[1].id));
    let third = c
        .store
        .get_transcript(a.project.id, ts[2].id)
        .await
        .unwrap()
        .unwrap();
    assert!(third.throttled && third.status == TranscriptStatus::Queued);
    let q = TranscriptQuery {
        limit: 10,
        throttled_only: true,
        ..Default::default()
    };
    assert_eq!(
        c.store
            .list_transcripts(a.project.id, &q)
            .await
            .unwrap()
            .len(),
        1
    );
    // Account A is full: the next claim goes to account B.
    let j3 = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(j3.transcript.id, other.id);
    assert!(c.store.claim_job("w", 60_000).await.unwrap().is_none());
    c.store
        .finish_job(
            &j1.job_id,
            "w",
            JobOutcome::Failed { error: "x".into() },
            None,
        )
        .await
        .unwrap();
    let j4 = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(j4.transcript.id, ts[2].id);
}

async fn delete_scrubs_and_releases_upload(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let up = Upload {
        id: UploadId::new(),
        account_id: a.account.id,
        project_id: a.project.id,
        api_key_id: ApiKeyId::new(),
        path: "/data/u1".into(),
        size_bytes: 10,
        created_at: T0,
    };
    c.store.create_upload(up.clone()).await.unwrap();
    let t = c
        .store
        .create_transcript(NewTranscript {
            id: TranscriptId::random(),
            project_id: a.project.id,
            api_key_id: ApiKeyId::new(),
            audio_url: "http://x/upload/1".into(),
            upload_id: Some(up.id),
            params: "{}".into(),
        })
        .await
        .unwrap();
    let (scrubbed, upload) = c
        .store
        .delete_transcript(a.project.id, t.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(scrubbed.audio_url, "http://deleted_by_user");
    assert!(scrubbed.deleted_at.is_some());
    assert_eq!(upload, Some(up.clone()));
    assert!(c.store.get_upload(up.id).await.unwrap().is_none());
    assert!(
        c.store.claim_job("w", 1000).await.unwrap().is_none(),
        "queued job is cancelled"
    );
    assert!(
        c.store
            .get_transcript(a.project.id, t.id)
            .await
            .unwrap()
            .is_some(),
        "still listed"
    );
}

async fn webhook_outbox_retries_and_records(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let t = new_transcript(&c.store, a.project.id, ApiKeyId::new()).await;
    let job = c.store.claim_job("w", 1000).await.unwrap().unwrap();
    let hook = NewWebhook {
        url: "https://hooks.example/x?customer=1".into(),
        auth_header_name: Some("X-Auth".into()),
        auth_header_sealed: Some("sealed".into()),
        body: format!(r#"{{"transcript_id":"{}","status":"completed"}}"#, t.id),
    };
    assert!(c
        .store
        .finish_job(&job.job_id, "w", completed(&t), Some(hook))
        .await
        .unwrap());
    let d = c.store.claim_due_webhook(5000).await.unwrap().unwrap();
    assert_eq!((d.transcript_id, d.attempts), (Some(t.id), 1));
    assert!(
        c.store.claim_due_webhook(5000).await.unwrap().is_none(),
        "leased"
    );
    c.store
        .record_delivery(
            &d.id,
            DeliveryResult::RetryAt {
                status: Some(503),
                error: "503".into(),
                at: T0 + 10_000,
            },
        )
        .await
        .unwrap();
    assert!(
        c.store.claim_due_webhook(5000).await.unwrap().is_none(),
        "not due yet"
    );
    c.clock.advance_ms(10_000);
    let d2 = c.store.claim_due_webhook(5000).await.unwrap().unwrap();
    assert_eq!(d2.attempts, 2);
    c.store
        .record_delivery(&d2.id, DeliveryResult::Delivered { status: 204 })
        .await
        .unwrap();
    assert!(c.store.claim_due_webhook(5000).await.unwrap().is_none());
    let t = c
        .store
        .get_transcript(a.project.id, t.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.webhook_status_code, Some(204));
}

async fn audit_chain_detects_tampering(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    for i in 0..3 {
        c.store
            .create_api_key(new_key(a.project.id, &format!("k{i}")), &Actor::Operator)
            .await
            .unwrap();
    }
    assert_eq!(
        c.store
            .verify_audit_chain(Some(a.account.id))
            .await
            .unwrap(),
        Ok(4)
    );
    let account = a.account.id.to_string();
    sqlx::query("UPDATE audit_log SET details = '{}' WHERE account_id = $1 AND seq = 2")
        .bind(&account)
        .execute(c.store.pool())
        .await
        .unwrap();
    assert!(c
        .store
        .verify_audit_chain(Some(a.account.id))
        .await
        .unwrap()
        .unwrap_err()
        .contains("entry 2"));
    let b = new_account(&c.store, Plan::Payg).await;
    c.store
        .create_api_key(new_key(b.project.id, "kb"), &Actor::Operator)
        .await
        .unwrap();
    c.store
        .create_api_key(new_key(b.project.id, "kb2"), &Actor::Operator)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE account_id = $1 AND seq = 2")
        .bind(b.account.id.to_string())
        .execute(c.store.pool())
        .await
        .unwrap();
    assert!(c
        .store
        .verify_audit_chain(Some(b.account.id))
        .await
        .unwrap()
        .unwrap_err()
        .contains("missing"));
}

async fn usage_is_idempotent(c: Ctx) {
    let a = new_account(&c.store, Plan::Payg).await;
    let e = NewUsageEvent {
        idempotency_key: "session:1".into(),
        account_id: a.account.id,
        project_id: a.project.id,
        api_key_id: ApiKeyId::new(),
        product: "streaming".into(),
        model: "whisper-tiny.en".into(),
        audio_ms: 3_000,
        session_ms: Some(4_000),
    };
    assert!(c.store.record_usage(e.clone()).await.unwrap());
    assert!(!c.store.record_usage(e.clone()).await.unwrap());
    let events = c.store.usage_events(a.account.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, e);
}

/// The management API's storage (issue 5): users, sessions, MFA, invites, rotation,
/// deletion. Appended in its own module so the list above stays untouched.
mod management {
    use super::*;
    use hark_core::keys::SecretDigest;
    use hark_core::{Clock, InviteId, LoginSessionId, Role};

    conformance!(
        users_sessions_and_second_factors,
        invites_count_against_member_limit_atomically,
        rotation_and_deletion,
        key_settings_and_deletion,
    );

    /// Renaming and rescoping a key (a scope change reaches the principal the next
    /// lookup returns), and deleting only a key that no longer works.
    async fn key_settings_and_deletion(c: Ctx) {
        use hark_core::scope::Scope;
        let b = new_account(&c.store, Plan::Free).await;
        let k = c
            .store
            .create_api_key(new_key(b.project.id, "one"), &Actor::Operator)
            .await
            .unwrap();
        let renamed = c
            .store
            .update_api_key(k.id, Some("renamed"), None, &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(
            (renamed.name.as_str(), renamed.scopes.len()),
            ("renamed", 0)
        );
        let narrowed = c
            .store
            .update_api_key(k.id, None, Some(&[Scope::Streaming]), &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(narrowed.name, "renamed");
        let stored = c.store.get_api_key(k.id).await.unwrap().unwrap();
        assert_eq!(stored.scopes, vec![Scope::Streaming]);
        let p = c
            .store
            .principal_by_digest(&SecretDigest::of("one").to_hex())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.scopes, vec![Scope::Streaming]);
        // A working key cannot be deleted; a revoked one can, and is gone.
        assert!(matches!(
            c.store.delete_api_key(k.id, &Actor::Operator).await,
            Err(StoreError::Conflict(_))
        ));
        c.store
            .revoke_api_key(k.id, &Actor::Operator)
            .await
            .unwrap();
        c.store
            .delete_api_key(k.id, &Actor::Operator)
            .await
            .unwrap();
        assert!(c.store.get_api_key(k.id).await.unwrap().is_none());
        assert!(matches!(
            c.store.delete_api_key(k.id, &Actor::Operator).await,
            Err(StoreError::NotFound(_))
        ));
        let actions: Vec<String> = c
            .store
            .audit_entries(Some(b.account.id))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(
            actions.ends_with(&[
                "api_key.update".into(),
                "api_key.update".into(),
                "api_key.revoke".into(),
                "api_key.delete".into()
            ]),
            "{actions:?}"
        );
        assert!(c
            .store
            .verify_audit_chain(Some(b.account.id))
            .await
            .unwrap()
            .is_ok());
    }

    async fn users_sessions_and_second_factors(c: Ctx) {
        let u = c
            .store
            .create_user(
                UserId::new(),
                " Ann@Example.com ",
                Some("$argon2id$x"),
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert_eq!(u.email, "ann@example.com");
        assert!(matches!(
            c.store
                .create_user(UserId::new(), "ann@example.com", None, &Actor::Operator)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let digest = SecretDigest::of("token").to_hex();
        let s = c
            .store
            .create_session(
                NewSession {
                    id: LoginSessionId::new(),
                    user_id: u.id,
                    digest_hex: digest.clone(),
                    csrf_digest_hex: SecretDigest::of("csrf").to_hex(),
                    current_account: None,
                    expires_at: T0 + 1000,
                    signed_in_with: SignInMethod::Password,
                },
                "email:ann@example.com",
            )
            .await
            .unwrap();
        assert_eq!(
            c.store.session_by_digest(&digest).await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(
            c.store
                .session_by_digest(&SecretDigest::of("other").to_hex())
                .await
                .unwrap(),
            None
        );
        // Failures per subject in a window.
        c.store
            .record_login_failure(&["email:x".into(), "addr:1.2.3.4".into()], None, "t")
            .await
            .unwrap();
        c.clock.advance_ms(10);
        c.store
            .record_login_failure(&["email:x".into()], None, "t")
            .await
            .unwrap();
        assert_eq!(
            c.store.login_failures_since("email:x", T0).await.unwrap(),
            2
        );
        assert_eq!(
            c.store
                .login_failures_since("email:x", T0 + 5)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            c.store
                .login_failures_since("addr:1.2.3.4", T0)
                .await
                .unwrap(),
            1
        );
        // Counted attempts: refused at a subject's limit (nothing recorded then); a
        // forgiven attempt leaves no row.
        let subjects = vec![("pair:y|a".to_string(), 2), ("addr:a".to_string(), 10)];
        let first = c
            .store
            .begin_login_attempt(&subjects, T0)
            .await
            .unwrap()
            .expect("counted");
        c.store.forgive_login_attempt(&first).await.unwrap();
        assert_eq!(c.store.login_failures_since("addr:a", T0).await.unwrap(), 0);
        for _ in 0..2 {
            assert!(c
                .store
                .begin_login_attempt(&subjects, T0)
                .await
                .unwrap()
                .is_some());
        }
        assert_eq!(
            c.store.begin_login_attempt(&subjects, T0).await.unwrap(),
            None
        );
        assert_eq!(c.store.login_failures_since("addr:a", T0).await.unwrap(), 2);
        c.store
            .audit_login_failure(&["pair:y|a".into()], None, "bad_credentials")
            .await
            .unwrap();
        // TOTP: steps are accepted once, in increasing order; recovery codes once.
        c.store.begin_totp(u.id, "sealed-seed").await.unwrap();
        assert!(!c.store.get_user(u.id).await.unwrap().unwrap().mfa_enabled);
        assert!(c
            .store
            .confirm_totp(
                u.id,
                100,
                &["d1".into(), "d2".into()],
                s.id,
                &Actor::User(u.id)
            )
            .await
            .unwrap()
            .is_some());
        assert!(c.store.get_user(u.id).await.unwrap().unwrap().mfa_enabled);
        assert!(matches!(
            c.store.begin_totp(u.id, "again").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            !c.store.accept_totp_step(u.id, 100).await.unwrap(),
            "replay"
        );
        assert!(c.store.accept_totp_step(u.id, 101).await.unwrap());
        assert!(
            !c.store.accept_totp_step(u.id, 100).await.unwrap(),
            "older step"
        );
        assert!(c.store.use_recovery_code(u.id, "d1").await.unwrap());
        assert!(!c.store.use_recovery_code(u.id, "d1").await.unwrap());
        assert!(!c.store.use_recovery_code(u.id, "nope").await.unwrap());
        // Password change ends other sessions.
        c.store
            .set_password(u.id, "$argon2id$y", None, &Actor::User(u.id))
            .await
            .unwrap();
        assert_eq!(c.store.session_by_digest(&digest).await.unwrap(), None);
        assert!(c.store.verify_audit_chain(None).await.unwrap().is_ok());
    }

    async fn invites_count_against_member_limit_atomically(c: Ctx) {
        // Free: 2 members; the Owner is one.
        let b = new_account(&c.store, Plan::Free).await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = c.store.clone();
                let invite = NewInvite {
                    id: InviteId::new(),
                    account_id: b.account.id,
                    email: format!("p{i}@example.com"),
                    role: Role::Reader,
                    digest_hex: SecretDigest::of(&format!("invite{i}")).to_hex(),
                    expires_at: T0 + 1000,
                };
                let mail = Mail {
                    to: invite.email.clone(),
                    subject: "s".into(),
                    body: "b".into(),
                };
                tokio::spawn(
                    async move { store.create_invite(invite, mail, &Actor::Operator).await },
                )
            })
            .collect();
        let mut ok = Vec::new();
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(inv) => ok.push(inv),
                Err(StoreError::LimitReached { limit: 2, .. }) => limited += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!((ok.len(), limited), (1, 49));
        let outbox = c.store.outbox(true).await.unwrap();
        assert_eq!(outbox.len(), 1, "only the created invite's mail");
        // Accepting turns the pending invite into a member: the count stays at the limit.
        let i = ok[0].clone();
        let n: usize = i.email[1..].split('@').next().unwrap().parse().unwrap();
        let digest = SecretDigest::of(&format!("invite{n}")).to_hex();
        let acc = c
            .store
            .accept_invite(&digest, (UserId::new(), "h".into()))
            .await
            .unwrap();
        assert!(acc.created_user);
        assert!(matches!(
            c.store
                .accept_invite(&digest, (UserId::new(), "h".into()))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(c.store.member_list(b.account.id).await.unwrap().len(), 2);
        // Expired invites no longer count.
        c.store
            .remove_member(b.account.id, acc.user_id, &Actor::Operator)
            .await
            .unwrap();
        let mk = |k: &str| NewInvite {
            id: InviteId::new(),
            account_id: b.account.id,
            email: format!("{k}@example.com"),
            role: Role::Admin,
            digest_hex: SecretDigest::of(k).to_hex(),
            expires_at: c.clock.now_ms() + 10,
        };
        let mail = Mail {
            to: "x".into(),
            subject: "s".into(),
            body: "b".into(),
        };
        c.store
            .create_invite(mk("late"), mail.clone(), &Actor::Operator)
            .await
            .unwrap();
        assert!(c
            .store
            .create_invite(mk("more"), mail.clone(), &Actor::Operator)
            .await
            .is_err());
        c.clock.advance_ms(11);
        c.store
            .create_invite(mk("more"), mail, &Actor::Operator)
            .await
            .unwrap();
        let outbox = c.store.outbox(true).await.unwrap();
        // One sender at a time: a claim holds for its lease.
        assert!(c.store.claim_mail(&outbox[0].id, 60_000).await.unwrap());
        assert!(!c.store.claim_mail(&outbox[0].id, 60_000).await.unwrap());
        c.clock.advance_ms(60_001);
        assert!(
            c.store.claim_mail(&outbox[0].id, 60_000).await.unwrap(),
            "a stale claim is retried"
        );
        c.store.mark_mail_sent(&outbox[0].id).await.unwrap();
        assert!(
            !c.store.claim_mail(&outbox[0].id, 0).await.unwrap(),
            "sent mail is not sent again"
        );
        assert!(c
            .store
            .outbox(true)
            .await
            .unwrap()
            .iter()
            .all(|m| m.id != outbox[0].id));
        // The Owner cannot be removed.
        assert!(matches!(
            c.store
                .remove_member(b.account.id, b.owner, &Actor::Operator)
                .await,
            Err(StoreError::Conflict(_))
        ));
    }

    async fn rotation_and_deletion(c: Ctx) {
        let b = new_account(&c.store, Plan::Free).await;
        let k1 = c
            .store
            .create_api_key(new_key(b.project.id, "one"), &Actor::Operator)
            .await
            .unwrap();
        c.store
            .create_api_key(new_key(b.project.id, "two"), &Actor::Operator)
            .await
            .unwrap();
        // At the limit (2), a rotation still works: the successor takes the old key's place.
        let (old, new) = c
            .store
            .rotate_api_key(
                k1.id,
                new_key(b.project.id, "one-b"),
                60_000,
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert_eq!(old.replaced_by, Some(new.id));
        assert_eq!(old.expires_at, Some(T0 + 60_000));
        assert!(c
            .store
            .rotate_api_key(k1.id, new_key(b.project.id, "x"), 0, &Actor::Operator)
            .await
            .is_err());
        let p = c
            .store
            .principal_by_digest(&SecretDigest::of("one").to_hex())
            .await
            .unwrap()
            .unwrap();
        assert!(p.is_usable_at(T0 + 59_999) && !p.is_usable_at(T0 + 60_000));
        assert!(c
            .store
            .create_api_key(new_key(b.project.id, "three"), &Actor::Operator)
            .await
            .is_err());
        let sealed = c
            .store
            .reveal_api_key(new.id, &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(sealed, "sealed");
        let t = new_transcript(&c.store, b.project.id, new.id).await;
        // Deleting the project takes keys and transcripts with it.
        let deleted = c
            .store
            .delete_project(b.project.id, &Actor::Operator)
            .await
            .unwrap();
        assert!(deleted.upload_paths.is_empty());
        assert!(c.store.get_api_key(new.id).await.unwrap().is_none());
        assert!(c
            .store
            .get_transcript(b.project.id, t.id)
            .await
            .unwrap()
            .is_none());
        c.store
            .delete_account(b.account.id, &Actor::Operator)
            .await
            .unwrap();
        assert!(c.store.get_account(b.account.id).await.unwrap().is_none());
        let actions: Vec<String> = c
            .store
            .audit_entries(Some(b.account.id))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(
            actions.ends_with(&[
                "api_key.reveal".into(),
                "project.delete".into(),
                "account.delete".into()
            ]),
            "{actions:?}"
        );
        assert!(c
            .store
            .verify_audit_chain(Some(b.account.id))
            .await
            .unwrap()
            .is_ok());
    }
}

fn open_with(credential: StreamCredential, node: &str) -> OpenStreamSession {
    OpenStreamSession {
        id: hark_core::StreamSessionId::random(),
        credential,
        model: "whisper-tiny.en".into(),
        default_max_session_secs: 10_800,
        node_id: node.into(),
        webhook_url: None,
        webhook_auth_header_name: None,
        webhook_auth_header_sealed: None,
    }
}

async fn stream_token_redeems_exactly_once(c: Ctx) {
    let boot = new_account(&c.store, Plan::Payg).await;
    let key = c
        .store
        .create_api_key(new_key(boot.project.id, "k1"), &Actor::Operator)
        .await
        .unwrap();
    let token = |secret: &str, ttl_ms: i64| NewStreamToken {
        id: hark_core::StreamTokenId::new(),
        digest_hex: hark_core::keys::SecretDigest::of(secret).to_hex(),
        account_id: boot.account.id,
        project_id: boot.project.id,
        api_key_id: key.id,
        expires_at: T0 + ttl_ms,
        max_session_secs: 120,
    };
    c.store
        .create_stream_token(token("t1", 60_000))
        .await
        .unwrap();
    let by_token = |secret: &str| StreamCredential::Token {
        digest_hex: hark_core::keys::SecretDigest::of(secret).to_hex(),
    };
    c.store.heartbeat_stream_node("n1", 30_000).await.unwrap();
    let attempts = (0..50).map(|_| {
        let store = c.store.clone();
        let open = open_with(by_token("t1"), "n1");
        tokio::spawn(async move { store.open_stream_session(open).await.unwrap() })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| *e == StreamRefusal::TokenUsed));
    // The session carries the token's cap and is attributed to the minting key.
    assert_eq!(won[0].expires_at, T0 + 120_000);
    assert_eq!(won[0].api_key_id, key.id);
    let refuse = |secret: &str| {
        c.store
            .open_stream_session(open_with(by_token(secret), "n1"))
    };
    assert_eq!(
        refuse("unknown").await.unwrap(),
        Err(StreamRefusal::TokenUnknown)
    );
    c.store
        .create_stream_token(token("t2", 10_000))
        .await
        .unwrap();
    c.clock.advance_ms(10_000);
    assert_eq!(
        refuse("t2").await.unwrap(),
        Err(StreamRefusal::TokenExpired)
    );
    c.store
        .create_stream_token(token("t3", 60_000))
        .await
        .unwrap();
    c.store
        .revoke_api_key(key.id, &Actor::Operator)
        .await
        .unwrap();
    assert_eq!(refuse("t3").await.unwrap(), Err(StreamRefusal::KeyUnusable));
    let direct = StreamCredential::ApiKey {
        account_id: boot.account.id,
        project_id: boot.project.id,
        api_key_id: key.id,
    };
    assert_eq!(
        c.store
            .open_stream_session(open_with(direct, "n1"))
            .await
            .unwrap(),
        Err(StreamRefusal::KeyUnusable)
    );
}

async fn stream_rate_limit_and_lost_sessions(c: Ctx) {
    let boot = new_account(&c.store, Plan::Free).await;
    let key = c
        .store
        .create_api_key(new_key(boot.project.id, "k1"), &Actor::Operator)
        .await
        .unwrap();
    let direct = StreamCredential::ApiKey {
        account_id: boot.account.id,
        project_id: boot.project.id,
        api_key_id: key.id,
    };
    c.store.heartbeat_stream_node("n1", 30_000).await.unwrap();
    let mut opened = Vec::new();
    for _ in 0..5 {
        opened.push(
            c.store
                .open_stream_session(open_with(direct.clone(), "n1"))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Free: 5 per minute; a token is not consumed by a refused opening.
    c.store
        .create_stream_token(NewStreamToken {
            id: hark_core::StreamTokenId::new(),
            digest_hex: hark_core::keys::SecretDigest::of("tok").to_hex(),
            account_id: boot.account.id,
            project_id: boot.project.id,
            api_key_id: key.id,
            expires_at: T0 + 600_000,
            max_session_secs: 600,
        })
        .await
        .unwrap();
    let tok = StreamCredential::Token {
        digest_hex: hark_core::keys::SecretDigest::of("tok").to_hex(),
    };
    assert_eq!(
        c.store
            .open_stream_session(open_with(tok.clone(), "n1"))
            .await
            .unwrap(),
        Err(StreamRefusal::RateLimited { per_minute: 5 })
    );
    c.clock.advance_ms(60_001);
    assert!(c
        .store
        .open_stream_session(open_with(tok, "n1"))
        .await
        .unwrap()
        .is_ok());
    // One session closes normally: billed once, with its webhook.
    let first = opened[0].id;
    assert!(c
        .store
        .record_stream_progress(first, 4_000, "[]")
        .await
        .unwrap());
    // Its process reports when it ended (a close retried after a database outage is
    // billed up to then, not up to the retry).
    let first_ended_at = opened[0].started_at + 1_500;
    let close = CloseStreamSession {
        audio_ms: 5_000,
        final_turns_json: r#"[{"type":"Turn","transcript":"hi"}]"#.into(),
        reason: "terminated".into(),
        ended_at: Some(first_ended_at),
    };
    let closed = c
        .store
        .close_stream_session(first, close.clone())
        .await
        .unwrap();
    assert!(closed.is_some());
    assert!(c
        .store
        .close_stream_session(first, close)
        .await
        .unwrap()
        .is_none());
    assert!(!c
        .store
        .record_stream_progress(first, 9_000, "[]")
        .await
        .unwrap());
    // Process n1 stops renewing: its other sessions are closed by the reaper, once,
    // billed up to its last renewal.
    c.store.heartbeat_stream_node("n1", 30_000).await.unwrap();
    let renewed_at = T0 + 60_001;
    assert!(c
        .store
        .record_stream_progress(opened[1].id, 7_000, "[]")
        .await
        .unwrap());
    c.clock.advance_ms(29_000);
    assert_eq!(c.store.reap_stream_sessions("reaper").await.unwrap(), 0);
    c.clock.advance_ms(2_000);
    // n1 itself never takes its own sessions for lost, however late it renews.
    assert_eq!(c.store.reap_stream_sessions("n1").await.unwrap(), 0);
    assert_eq!(c.store.reap_stream_sessions("reaper").await.unwrap(), 5);
    assert_eq!(c.store.reap_stream_sessions("reaper").await.unwrap(), 0);
    let events = c.store.usage_events(boot.account.id).await.unwrap();
    assert_eq!(events.len(), 6);
    let reaped = events
        .iter()
        .find(|e| e.event.idempotency_key == format!("stream:{}", opened[1].id))
        .unwrap();
    assert_eq!(reaped.event.audio_ms, 7_000);
    assert_eq!(
        reaped.event.session_ms,
        Some(renewed_at - opened[1].started_at)
    );
    assert!(events.iter().all(|e| e.event.product == "streaming"));
    let first_event = events
        .iter()
        .find(|e| e.event.idempotency_key == format!("stream:{first}"))
        .unwrap();
    assert_eq!(first_event.event.session_ms, Some(1_500));
}

/// Issue 14 (papercuts a newcomer hit): reported figures, limit texts, the invite outbox.
mod papercuts {
    use super::*;

    conformance!(
        key_traffic_seconds_round_to_the_millisecond,
        key_limit_counts_the_account_without_revoked_or_expired_keys,
        ended_invites_leave_no_unsent_mail,
    );

    /// An invite's unsent mail goes when the invite ends (revoked, accepted, or its
    /// account deleted), in the same transaction; sent mail and other mail stay.
    async fn ended_invites_leave_no_unsent_mail(c: Ctx) {
        use hark_core::keys::SecretDigest;
        use hark_core::{InviteId, Role};
        let a = new_account(&c.store, Plan::Payg).await;
        let invite = |email: &str, token: &str| {
            (
                NewInvite {
                    id: InviteId::new(),
                    account_id: a.account.id,
                    email: email.into(),
                    role: Role::Reader,
                    digest_hex: SecretDigest::of(token).to_hex(),
                    expires_at: T0 + 86_400_000,
                },
                Mail {
                    to: email.into(),
                    subject: "invite".into(),
                    body: format!("token {token}"),
                },
            )
        };
        let unsent_to = |store: SqlStore| async move {
            let mut to: Vec<String> = store
                .outbox(true)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.mail.to)
                .collect();
            to.sort();
            to
        };
        let mut ids = Vec::new();
        for who in ["revoked", "accepted", "sent", "pending"] {
            let (new, mail) = invite(&format!("{who}@example.com"), who);
            ids.push(new.id);
            c.store
                .create_invite(new, mail, &Actor::Operator)
                .await
                .unwrap();
        }
        c.store
            .enqueue_mail(Mail {
                to: "notice@example.com".into(),
                subject: "notice".into(),
                body: "n".into(),
            })
            .await
            .unwrap();
        assert_eq!(unsent_to(c.store.clone()).await.len(), 5);
        let sent = c.store.outbox(true).await.unwrap();
        let sent = sent
            .iter()
            .find(|m| m.mail.to == "sent@example.com")
            .unwrap();
        c.store.mark_mail_sent(&sent.id).await.unwrap();

        assert!(c
            .store
            .delete_invite(a.account.id, ids[0], &Actor::Operator)
            .await
            .unwrap());
        c.store
            .accept_invite(
                &SecretDigest::of("accepted").to_hex(),
                (UserId::new(), "hash".into()),
            )
            .await
            .unwrap();
        // The sent invite ends too; its (sent) entry stays as the record of delivery.
        assert!(c
            .store
            .delete_invite(a.account.id, ids[2], &Actor::Operator)
            .await
            .unwrap());
        assert_eq!(
            unsent_to(c.store.clone()).await,
            ["notice@example.com", "pending@example.com"]
        );
        assert_eq!(c.store.outbox(false).await.unwrap().len(), 3);

        // Deleting the account drops the pending invite's mail with the invite.
        let accepted = c
            .store
            .members(a.account.id)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.email == "accepted@example.com")
            .unwrap();
        c.store
            .remove_member(a.account.id, accepted.user_id, &Actor::Operator)
            .await
            .unwrap();
        c.store
            .delete_account(a.account.id, &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(unsent_to(c.store.clone()).await, ["notice@example.com"]);
    }

    /// The key limit counts usable keys of every project of the account; revoked and
    /// expired keys free their place; the refusal names plan, limit and what counts.
    async fn key_limit_counts_the_account_without_revoked_or_expired_keys(c: Ctx) {
        let a = new_account(&c.store, Plan::Free).await;
        let second = c
            .store
            .create_project(
                a.account.id,
                NewProject {
                    id: ProjectId::new(),
                    name: "second".into(),
                    webhook_secret_sealed: "s".into(),
                },
                &Actor::Operator,
            )
            .await
            .unwrap();
        let mut expiring = new_key(a.project.id, "expiring");
        expiring.expires_at = Some(T0 + 1_000);
        c.store
            .create_api_key(expiring, &Actor::Operator)
            .await
            .unwrap();
        let revoked = c
            .store
            .create_api_key(new_key(second.id, "revoked"), &Actor::Operator)
            .await
            .unwrap();
        // Two keys over two projects: the Free plan's two are used up.
        let err = c
            .store
            .create_api_key(new_key(second.id, "third"), &Actor::Operator)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "this account's plan (free) allows at most 2 API keys (keys of all the account's projects count; revoked, expired and rotated-out keys do not); the operator can change the plan or raise the limit"
        );
        c.store
            .revoke_api_key(revoked.id, &Actor::Operator)
            .await
            .unwrap();
        c.store
            .create_api_key(new_key(second.id, "after revoke"), &Actor::Operator)
            .await
            .unwrap();
        assert!(matches!(
            c.store
                .create_api_key(new_key(second.id, "refused"), &Actor::Operator)
                .await,
            Err(StoreError::LimitReached { limit: 2, .. })
        ));
        c.clock.advance_ms(1_000);
        c.store
            .create_api_key(new_key(second.id, "after expiry"), &Actor::Operator)
            .await
            .unwrap();
    }

    /// Sums of stored seconds are reported to the millisecond: no `75.92637500000001`.
    async fn key_traffic_seconds_round_to_the_millisecond(c: Ctx) {
        let a = new_account(&c.store, Plan::Payg).await;
        let key = ApiKeyId::new();
        for (i, ms) in [30_100, 25_726, 20_100].into_iter().enumerate() {
            c.store
                .record_usage(NewUsageEvent {
                    idempotency_key: format!("transcript:{i}"),
                    account_id: a.account.id,
                    project_id: a.project.id,
                    api_key_id: key,
                    product: "speech_to_text".into(),
                    model: "whisper-tiny.en".into(),
                    audio_ms: ms,
                    session_ms: None,
                })
                .await
                .unwrap();
        }
        let traffic = c.store.key_traffic(a.project.id).await.unwrap();
        let seconds = traffic[&key].audio_seconds;
        assert_eq!(serde_json::json!(seconds).to_string(), "75.926");
    }
}

fn digest(token: &str) -> String {
    hark_core::keys::SecretDigest::of(token).to_hex()
}

fn first_account(email: &str) -> NewAccount {
    NewAccount {
        id: AccountId::new(),
        name: "First".into(),
        plan: Plan::Free,
        owner_id: UserId::new(),
        owner_email: email.into(),
        project: NewProject {
            id: ProjectId::new(),
            name: "Default project".into(),
            webhook_secret_sealed: "sealed".into(),
        },
    }
}

async fn setup_link_creates_first_account_once(c: Ctx) {
    let s = &c.store;
    assert_eq!(s.account_count().await.unwrap(), 0);
    for token in ["setup-a", "setup-b"] {
        s.create_auth_link(
            NewAuthLink {
                purpose: LinkPurpose::Setup,
                user_id: None,
                digest_hex: digest(token),
                expires_at: None,
            },
            None,
        )
        .await
        .unwrap();
    }
    // The wrong kind of use, or an unknown token, does nothing.
    assert!(matches!(
        s.use_password_link(&digest("setup-a"), LinkPurpose::PasswordReset, "h")
            .await,
        Err(StoreError::NotFound("link"))
    ));
    assert!(matches!(
        s.use_setup_link(&digest("nope"), first_account("x@example.com"), "h")
            .await,
        Err(StoreError::NotFound("link"))
    ));
    let boot = s
        .use_setup_link(
            &digest("setup-a"),
            first_account("First@Example.com"),
            "hash-1",
        )
        .await
        .unwrap();
    assert_eq!(s.account_count().await.unwrap(), 1);
    let owner = s.user_by_email("first@example.com").await.unwrap().unwrap();
    assert_eq!(owner.id, boot.owner);
    assert_eq!(owner.password_hash.as_deref(), Some("hash-1"));
    assert_eq!(
        s.role_of(boot.account.id, owner.id).await.unwrap(),
        Some(hark_core::Role::Owner)
    );
    // Used once; a second, still unused setup link cannot make another account.
    assert!(matches!(
        s.use_setup_link(&digest("setup-a"), first_account("again@example.com"), "h")
            .await,
        Err(StoreError::NotFound("link"))
    ));
    assert!(matches!(
        s.use_setup_link(&digest("setup-b"), first_account("again@example.com"), "h")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.account_count().await.unwrap(), 1);
    // The failed attempt rolled back: setup-b was not consumed by it either.
    let b = s.auth_link(&digest("setup-b")).await.unwrap().unwrap();
    assert!(b.used_at.is_none());
}

async fn password_links_work_once_and_expire(c: Ctx) {
    let s = &c.store;
    let boot = new_account(s, Plan::Free).await;
    let user = boot.owner;
    let link = |token: &str, purpose, ttl: Option<i64>| NewAuthLink {
        purpose,
        user_id: Some(user),
        digest_hex: digest(token),
        expires_at: ttl.map(|t| T0 + t),
    };
    let mail = Mail {
        to: "owner@example.com".into(),
        subject: "Reset".into(),
        body: "open reset-1".into(),
    };
    s.create_auth_link(
        link("reset-1", LinkPurpose::PasswordReset, Some(60_000)),
        Some(mail.clone()),
    )
    .await
    .unwrap();
    s.create_auth_link(
        link("reset-2", LinkPurpose::PasswordReset, Some(60_000)),
        None,
    )
    .await
    .unwrap();
    s.create_auth_link(link("set-1", LinkPurpose::SetPassword, None), None)
        .await
        .unwrap();
    // The mail went to the outbox with the link, in the same transaction.
    let outbox = s.outbox(true).await.unwrap();
    assert!(outbox.iter().any(|m| m.mail == mail));
    // A reset token cannot be used as a set-password token.
    assert!(matches!(
        s.use_password_link(&digest("reset-1"), LinkPurpose::SetPassword, "x")
            .await,
        Err(StoreError::NotFound("link"))
    ));
    assert_eq!(
        s.use_password_link(&digest("reset-1"), LinkPurpose::PasswordReset, "hash-2")
            .await
            .unwrap(),
        user
    );
    let u = s.get_user(user).await.unwrap().unwrap();
    assert_eq!(u.password_hash.as_deref(), Some("hash-2"));
    // Once only; and the password change voids the user's other open links.
    for (token, purpose) in [
        ("reset-1", LinkPurpose::PasswordReset),
        ("reset-2", LinkPurpose::PasswordReset),
        ("set-1", LinkPurpose::SetPassword),
    ] {
        assert!(
            matches!(
                s.use_password_link(&digest(token), purpose, "hash-3").await,
                Err(StoreError::NotFound("link"))
            ),
            "{token} still works"
        );
    }
    // Expiry follows the clock.
    s.create_auth_link(
        link("reset-3", LinkPurpose::PasswordReset, Some(60_000)),
        None,
    )
    .await
    .unwrap();
    c.clock.advance_ms(60_000);
    assert!(matches!(
        s.use_password_link(&digest("reset-3"), LinkPurpose::PasswordReset, "hash-4")
            .await,
        Err(StoreError::NotFound("link"))
    ));
    let u = s.get_user(user).await.unwrap().unwrap();
    assert_eq!(u.password_hash.as_deref(), Some("hash-2"));
}

async fn sign_up_never_takes_an_existing_email(c: Ctx) {
    let s = &c.store;
    let boot = s
        .create_account_with_owner(first_account("new@example.com"), "pw-hash")
        .await
        .unwrap();
    s.set_user_name(boot.owner, "  Ada Lovelace ")
        .await
        .unwrap();
    let user = s.user_by_email("new@example.com").await.unwrap().unwrap();
    assert_eq!(user.name, "Ada Lovelace");
    assert_eq!(user.id, boot.owner);
    assert_eq!(user.password_hash.as_deref(), Some("pw-hash"));
    assert_eq!(s.list_projects(boot.account.id).await.unwrap().len(), 1);
    assert!(matches!(
        s.create_account_with_owner(first_account("NEW@example.com"), "other")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.account_count().await.unwrap(), 1);
}

/// Hardening (issue 13).
mod hardening {
    use super::*;

    conformance!(
        key_creation_is_published_on_the_bus,
        tokens_are_checked_without_redeeming_and_capped_by_the_server,
        deleting_one_transcript_keeps_a_shared_upload_and_scrubs_everything,
    );

    /// Deleting a transcript never breaks another made from the same upload, and the
    /// scrubbed row keeps no parameters (the sealed webhook header) and no error text.
    async fn deleting_one_transcript_keeps_a_shared_upload_and_scrubs_everything(c: Ctx) {
        let a = new_account(&c.store, Plan::Payg).await;
        let up = Upload {
            id: UploadId::new(),
            account_id: a.account.id,
            project_id: a.project.id,
            api_key_id: ApiKeyId::new(),
            path: "/data/shared".into(),
            size_bytes: 10,
            created_at: T0,
        };
        c.store.create_upload(up.clone()).await.unwrap();
        let params =
            r#"{"webhook_url":"https://hooks.example/x","webhook_auth_header_sealed":"SEALED"}"#;
        let mut made = Vec::new();
        for _ in 0..2 {
            made.push(
                c.store
                    .create_transcript(NewTranscript {
                        id: TranscriptId::random(),
                        project_id: a.project.id,
                        api_key_id: ApiKeyId::new(),
                        audio_url: "http://x/upload/shared".into(),
                        upload_id: Some(up.id),
                        params: params.into(),
                    })
                    .await
                    .unwrap(),
            );
        }
        // The first fails with an error that quotes its URL.
        let job = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
        assert_eq!(job.transcript.id, made[0].id);
        assert!(c
            .store
            .finish_job(
                &job.job_id,
                "w",
                JobOutcome::Failed {
                    error: "could not fetch http://x/upload/shared?sig=secret".into(),
                },
                None,
            )
            .await
            .unwrap());
        let (scrubbed, upload) = c
            .store
            .delete_transcript(a.project.id, made[0].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(upload, None, "the other transcript still uses it");
        assert!(c.store.get_upload(up.id).await.unwrap().is_some());
        assert_eq!(scrubbed.params, "{}");
        assert!(
            !scrubbed.error.clone().unwrap_or_default().contains("http"),
            "{:?}",
            scrubbed.error
        );
        assert!(c.store.upload_paths().await.unwrap().contains(&up.path));
        // Deleting the last user releases it.
        let (_, upload) = c
            .store
            .delete_transcript(a.project.id, made[1].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(upload, Some(up.clone()));
        assert!(c.store.get_upload(up.id).await.unwrap().is_none());
        assert!(!c.store.upload_paths().await.unwrap().contains(&up.path));
    }

    /// A token is checked (before any session work) without being used up, and a
    /// session it opens never outlives the server's cap, whatever the token carries.
    async fn tokens_are_checked_without_redeeming_and_capped_by_the_server(c: Ctx) {
        let boot = new_account(&c.store, Plan::Payg).await;
        let key = c
            .store
            .create_api_key(new_key(boot.project.id, "k1"), &Actor::Operator)
            .await
            .unwrap();
        let digest = |secret: &str| hark_core::keys::SecretDigest::of(secret).to_hex();
        let token = |secret: &str, ttl_ms: i64| NewStreamToken {
            id: hark_core::StreamTokenId::new(),
            digest_hex: digest(secret),
            account_id: boot.account.id,
            project_id: boot.project.id,
            api_key_id: key.id,
            expires_at: T0 + ttl_ms,
            max_session_secs: 7_200,
        };
        c.store
            .create_stream_token(token("t1", 60_000))
            .await
            .unwrap();
        c.store
            .create_stream_token(token("t2", 1_000))
            .await
            .unwrap();
        assert_eq!(
            c.store.check_stream_token(&digest("nope")).await.unwrap(),
            Some(StreamRefusal::TokenUnknown)
        );
        for _ in 0..2 {
            assert_eq!(
                c.store.check_stream_token(&digest("t1")).await.unwrap(),
                None
            );
        }
        c.store.heartbeat_stream_node("n1", 30_000).await.unwrap();
        let mut open = open_with(
            StreamCredential::Token {
                digest_hex: digest("t1"),
            },
            "n1",
        );
        open.default_max_session_secs = 60;
        let opened = c.store.open_stream_session(open).await.unwrap().unwrap();
        assert_eq!(opened.expires_at, T0 + 60_000);
        assert_eq!(
            c.store.check_stream_token(&digest("t1")).await.unwrap(),
            Some(StreamRefusal::TokenUsed)
        );
        c.clock.advance_ms(1_000);
        assert_eq!(
            c.store.check_stream_token(&digest("t2")).await.unwrap(),
            Some(StreamRefusal::TokenExpired)
        );
        c.store
            .create_stream_token(token("t3", 60_000))
            .await
            .unwrap();
        c.store
            .revoke_api_key(key.id, &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(
            c.store.check_stream_token(&digest("t3")).await.unwrap(),
            Some(StreamRefusal::KeyUnusable)
        );
    }

    /// Creating a key is a credential change every node hears, so a node that briefly
    /// remembers a digest as unknown forgets it the moment the key exists.
    async fn key_creation_is_published_on_the_bus(c: Ctx) {
        let a = new_account(&c.store, Plan::Payg).await;
        let bus = c.store.credential_bus();
        let mut heard = bus.subscribe();
        let before = bus.heard();
        let key = c
            .store
            .create_api_key(new_key(a.project.id, "fresh"), &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(bus.heard(), before + 1);
        let got = heard.try_recv().expect("the creation was published");
        assert_eq!(got.change, CredentialChange::Key(key.id));
    }
}

async fn webhook_secret_rotates_with_an_overlap_and_is_audited(c: Ctx) {
    let s = &c.store;
    let a = new_account(s, Plan::Payg).await;
    let p = a.project.id;
    let fresh = s.webhook_signing_secrets(p).await.unwrap().unwrap();
    assert_eq!(fresh.current_sealed, "sealed");
    assert_eq!(fresh.previous_sealed, None);
    assert_eq!(fresh.rotated_at, None);
    assert!(s
        .webhook_signing_secrets(ProjectId::new())
        .await
        .unwrap()
        .is_none());

    // A rotation keeps the former secret for the overlap, by the clock.
    let actor = Actor::User(a.owner);
    let r = s
        .rotate_webhook_secret(p, "sealed-2", 60_000, &actor)
        .await
        .unwrap();
    assert_eq!(r.current_sealed, "sealed-2");
    assert_eq!(r.previous_sealed.as_deref(), Some("sealed"));
    assert_eq!(r.previous_until, Some(T0 + 60_000));
    assert_eq!(r.rotated_at, Some(T0));
    assert_eq!(r.previous_at(T0 + 59_999), Some("sealed"));
    assert_eq!(r.previous_at(T0 + 60_000), None);
    assert_eq!(s.webhook_signing_secrets(p).await.unwrap().unwrap(), r);
    // The sender's read (the current secret) follows the rotation.
    assert_eq!(
        s.project_webhook_secret(p).await.unwrap().as_deref(),
        Some("sealed-2")
    );

    // A rotation without overlap retires the former secret at once.
    c.clock.advance_ms(1000);
    let r = s
        .rotate_webhook_secret(p, "sealed-3", 0, &actor)
        .await
        .unwrap();
    assert_eq!(r.current_sealed, "sealed-3");
    assert_eq!(r.previous_sealed, None);
    assert_eq!(r.previous_until, None);
    assert_eq!(r.rotated_at, Some(T0 + 1000));

    let revealed = s.reveal_webhook_secrets(p, &actor).await.unwrap();
    assert_eq!(revealed, r);
    assert!(matches!(
        s.rotate_webhook_secret(ProjectId::new(), "x", 0, &actor)
            .await,
        Err(StoreError::NotFound("project"))
    ));

    let log = s
        .audit_query(
            a.account.id,
            &AuditFilter {
                action_prefix: Some("webhook_secret.".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "webhook_secret.rotate",
            "webhook_secret.rotate",
            "webhook_secret.reveal"
        ]
    );
    assert!(log
        .iter()
        .all(|e| e.actor == actor.label() && e.target == p.to_string()));
    assert_eq!(log[0].details["overlap_seconds"], 60);
}

async fn transcript_deleted_by_a_person_is_audited(c: Ctx) {
    let s = &c.store;
    let a = new_account(s, Plan::Payg).await;
    let other = new_account(s, Plan::Payg).await;
    let t = new_transcript(s, a.project.id, ApiKeyId::new()).await;
    let actor = Actor::User(a.owner);
    // Another project's id finds nothing and writes nothing.
    assert!(s
        .delete_transcript_as(other.project.id, t.id, &actor)
        .await
        .unwrap()
        .is_none());
    let (scrubbed, upload) = s
        .delete_transcript_as(a.project.id, t.id, &actor)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(scrubbed.audio_url, "http://deleted_by_user");
    assert!(scrubbed.deleted_at.is_some());
    assert_eq!(upload, None);
    let log = s
        .audit_query(
            a.account.id,
            &AuditFilter {
                action_prefix: Some("transcript.".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, "transcript.delete");
    assert_eq!(log[0].target, t.id.to_string());
    assert_eq!(log[0].actor, actor.label());
    let foreign = s
        .audit_query(
            other.account.id,
            &AuditFilter {
                action_prefix: Some("transcript.".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(foreign.is_empty());
}

/// Usage and spend (issue 11): priced events, hourly rollups, concurrency.
mod usage {
    use super::*;
    use hark_core::money::{Price, PriceTable, SPEECH_TO_TEXT, STREAMING};

    conformance!(
        events_are_priced_when_written_and_rolled_up_hourly,
        daily_and_monthly_rollups_agree_with_the_hourly_one,
        rollup_reads_group_filter_and_bucket,
        concurrent_usage_is_counted_once,
        account_deletion_keeps_usage,
    );

    const HOUR: i64 = 3_600_000;
    /// T0 is 08:00 UTC; the day starts 8 hours earlier.
    const DAY0: i64 = T0 - 8 * HOUR;

    fn prices() -> PriceTable {
        let p = |product: &str, model: &str, per_hour: i64, from: i64| Price {
            product: product.into(),
            model: model.into(),
            per_hour,
            effective_from: from,
        };
        PriceTable::new(vec![
            p(SPEECH_TO_TEXT, "*", 360_000, 0),
            // The price doubles at noon.
            p(SPEECH_TO_TEXT, "*", 720_000, DAY0 + 12 * HOUR),
            p(SPEECH_TO_TEXT, "best", 1_000_000, 0),
            p(STREAMING, "*", 180_000, 0),
        ])
    }

    fn event(
        key: &str,
        a: &Bootstrap,
        api_key: ApiKeyId,
        product: &str,
        model: &str,
        audio_ms: i64,
        session_ms: Option<i64>,
    ) -> NewUsageEvent {
        NewUsageEvent {
            idempotency_key: key.into(),
            account_id: a.account.id,
            project_id: a.project.id,
            api_key_id: api_key,
            product: product.into(),
            model: model.into(),
            audio_ms,
            session_ms,
        }
    }

    fn query(a: &Bootstrap, bucket: RollupBucket, group_by: Option<RollupGroup>) -> RollupQuery {
        RollupQuery {
            account: Some(a.account.id),
            from: DAY0,
            to: DAY0 + 24 * HOUR,
            bucket,
            group_by,
            projects: vec![],
            api_keys: vec![],
            products: vec![],
            models: vec![],
        }
    }

    async fn events_are_priced_when_written_and_rolled_up_hourly(c: Ctx) {
        let store = c.store.clone().with_prices(prices());
        let a = new_account(&store, Plan::Payg).await;
        let key = ApiKeyId::new();
        // 10:30: one hour of audio at 0.36/h.
        c.clock.set_ms(DAY0 + 10 * HOUR + 30 * 60_000);
        assert!(store
            .record_usage(event(
                "t1",
                &a,
                key,
                SPEECH_TO_TEXT,
                "tiny",
                3_600_000,
                None
            ))
            .await
            .unwrap());
        // 11:59:59.999: 30 minutes, still the morning price.
        c.clock.set_ms(DAY0 + 12 * HOUR - 1);
        store
            .record_usage(event(
                "t2",
                &a,
                key,
                SPEECH_TO_TEXT,
                "tiny",
                1_800_000,
                None,
            ))
            .await
            .unwrap();
        // 12:00: the afternoon price; a second of audio costs 0.72/3600 = 200 micros.
        c.clock.set_ms(DAY0 + 12 * HOUR);
        store
            .record_usage(event("t3", &a, key, SPEECH_TO_TEXT, "tiny", 1_000, None))
            .await
            .unwrap();
        // A model with its own price, and a streaming session billed by session time.
        store
            .record_usage(event("t4", &a, key, SPEECH_TO_TEXT, "best", 36_000, None))
            .await
            .unwrap();
        store
            .record_usage(event("s1", &a, key, STREAMING, "tiny", 5_000, Some(20_000)))
            .await
            .unwrap();
        // Written twice: counted once.
        assert!(!store
            .record_usage(event("t3", &a, key, SPEECH_TO_TEXT, "tiny", 1_000, None))
            .await
            .unwrap());
        let events = store.usage_events(a.account.id).await.unwrap();
        let priced: Vec<(i64, i64)> = events.iter().map(|e| (e.price_per_hour, e.cost)).collect();
        assert_eq!(
            priced,
            vec![
                (360_000, 360_000),
                (360_000, 180_000),
                (720_000, 200),
                (1_000_000, 10_000),
                (180_000, 1_000)
            ]
        );
        let hours = store
            .usage_rollup(&query(&a, RollupBucket::Hour, None))
            .await
            .unwrap();
        let by_hour: Vec<(i64, i64, i64, i64, i64, i64)> = hours
            .iter()
            .map(|r| {
                let t = &r.totals;
                (
                    r.bucket - DAY0,
                    t.audio_ms,
                    t.session_ms,
                    t.transcripts,
                    t.sessions,
                    t.cost,
                )
            })
            .collect();
        assert_eq!(
            by_hour,
            vec![
                (10 * HOUR, 3_600_000, 0, 1, 0, 360_000),
                (11 * HOUR, 1_800_000, 0, 1, 0, 180_000),
                (
                    12 * HOUR,
                    1_000 + 36_000 + 5_000,
                    20_000,
                    2,
                    1,
                    200 + 10_000 + 1_000
                ),
            ]
        );
        // The day splits its cost at the price change: 540 000 before noon, 11 200 after.
        let day = store
            .usage_rollup(&query(&a, RollupBucket::Day, None))
            .await
            .unwrap();
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].bucket, DAY0);
        assert_eq!(day[0].totals.cost, 540_000 + 11_200);
        // A later price change never rewrites what was written.
        let repriced = c.store.clone().with_prices(PriceTable::new(vec![]));
        c.clock.set_ms(DAY0 + 13 * HOUR);
        repriced
            .record_usage(event("t5", &a, key, SPEECH_TO_TEXT, "tiny", 1_000, None))
            .await
            .unwrap();
        let day = repriced
            .usage_rollup(&query(&a, RollupBucket::Day, None))
            .await
            .unwrap();
        assert_eq!(day[0].totals.cost, 551_200);
        assert_eq!(day[0].totals.transcripts, 5);
    }

    async fn rollup_reads_group_filter_and_bucket(c: Ctx) {
        let store = c.store.clone().with_prices(prices());
        let a = new_account(&store, Plan::Payg).await;
        let other = new_account(&store, Plan::Payg).await;
        let p2 = store
            .create_project(
                a.account.id,
                NewProject {
                    id: ProjectId::new(),
                    name: "second".into(),
                    webhook_secret_sealed: "s".into(),
                },
                &Actor::Operator,
            )
            .await
            .unwrap();
        let (k1, k2) = (ApiKeyId::new(), ApiKeyId::new());
        c.clock.set_ms(DAY0 + HOUR);
        store
            .record_usage(event("a", &a, k1, SPEECH_TO_TEXT, "tiny", 60_000, None))
            .await
            .unwrap();
        let mut e = event("b", &a, k2, STREAMING, "tiny", 10_000, Some(60_000));
        e.project_id = p2.id;
        store.record_usage(e).await.unwrap();
        c.clock.set_ms(DAY0 + 30 * HOUR);
        store
            .record_usage(event("c", &a, k1, SPEECH_TO_TEXT, "best", 3_600, None))
            .await
            .unwrap();
        store
            .record_usage(event(
                "x",
                &other,
                k1,
                SPEECH_TO_TEXT,
                "tiny",
                999_000,
                None,
            ))
            .await
            .unwrap();
        let mut q = query(&a, RollupBucket::Day, Some(RollupGroup::Product));
        q.to = DAY0 + 48 * HOUR;
        let rows = store.usage_rollup(&q).await.unwrap();
        let flat: Vec<(i64, String, i64, i64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.bucket - DAY0,
                    r.group.clone(),
                    r.totals.audio_ms,
                    r.totals.session_ms,
                    r.totals.cost,
                )
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                (0, "speech_to_text".into(), 60_000, 0, 6_000),
                (0, "streaming".into(), 10_000, 60_000, 3_000),
                (24 * HOUR, "speech_to_text".into(), 3_600, 0, 1_000),
            ]
        );
        q.group_by = Some(RollupGroup::Project);
        q.products = vec![STREAMING.into()];
        let rows = store.usage_rollup(&q).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].group, p2.id.to_string());
        assert_eq!(rows[0].totals.sessions, 1);
        q.products = vec![];
        q.group_by = Some(RollupGroup::ApiKey);
        q.models = vec!["best".into(), "tiny".into()];
        q.api_keys = vec![k1.to_string()];
        let rows = store.usage_rollup(&q).await.unwrap();
        let keys: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.group.clone(), r.totals.transcripts))
            .collect();
        assert_eq!(keys, vec![(k1.to_string(), 1), (k1.to_string(), 1)]);
        // The range is half-open and by hour: the second day alone.
        q.from = DAY0 + 24 * HOUR;
        q.api_keys = vec![];
        q.group_by = Some(RollupGroup::Model);
        let rows = store.usage_rollup(&q).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].group, "best");
        // The operator's view of every account, by account.
        let mut all = query(&a, RollupBucket::Day, Some(RollupGroup::Account));
        all.account = None;
        all.to = DAY0 + 48 * HOUR;
        let rows = store.usage_rollup(&all).await.unwrap();
        // Day buckets: account a has usage on both days.
        let mut accounts = std::collections::BTreeMap::<String, i64>::new();
        for r in &rows {
            *accounts.entry(r.group.clone()).or_default() += r.totals.audio_ms;
        }
        let accounts: Vec<(String, i64)> = accounts.into_iter().collect();
        assert_eq!(rows.len(), 3);
        let mut expected = vec![
            (a.account.id.to_string(), 73_600),
            (other.account.id.to_string(), 999_000),
        ];
        expected.sort();
        assert_eq!(accounts, expected);
    }

    /// Reads by day and by month take whole days and months from the coarser rollups
    /// and the partial ones from the hourly rollup: every range, aligned or not, gives
    /// the same figures per bucket and group as folding the hourly rows.
    async fn daily_and_monthly_rollups_agree_with_the_hourly_one(c: Ctx) {
        use hark_core::clock::month_bounds;
        use std::collections::BTreeMap;
        let store = c.store.clone().with_prices(prices());
        let a = new_account(&store, Plan::Payg).await;
        let key = ApiKeyId::new();
        // 80 events every 37 h 17 min from 40 days before T0: December to February.
        let first = T0 - 40 * 24 * HOUR;
        for i in 0..80_i64 {
            c.clock.set_ms(first + i * (37 * HOUR + 17 * 60_000));
            let (product, session) = if i % 3 == 0 {
                (STREAMING, Some(2_000 * (i + 1)))
            } else {
                (SPEECH_TO_TEXT, None)
            };
            let model = ["tiny", "best"][(i % 2) as usize];
            store
                .record_usage(event(
                    &format!("e{i}"),
                    &a,
                    key,
                    product,
                    model,
                    1_000 * (i + 1),
                    session,
                ))
                .await
                .unwrap();
        }
        type Folded = BTreeMap<(i64, String), (i64, i64, i64, i64, i64)>;
        let fold = |rows: &[RollupRow], bucket: &dyn Fn(i64) -> i64| -> Folded {
            let mut out = Folded::new();
            for r in rows {
                let e = out.entry((bucket(r.bucket), r.group.clone())).or_default();
                e.0 += r.totals.audio_ms;
                e.1 += r.totals.session_ms;
                e.2 += r.totals.transcripts;
                e.3 += r.totals.sessions;
                e.4 += r.totals.cost;
            }
            out
        };
        let day = |ms: i64| ms - ms.rem_euclid(24 * HOUR);
        let month = |ms: i64| month_bounds(ms).0;
        let jan = month(T0);
        let ranges = [
            // Unaligned on both ends, over three months.
            (first - 3 * HOUR, first + 75 * 24 * HOUR + 5 * HOUR),
            // Exactly one calendar month.
            (jan, month_bounds(jan).1),
            // Within one day (an event at 14:48 on 2027-01-12).
            (
                day(T0) - 3 * 24 * HOUR + 12 * HOUR,
                day(T0) - 3 * 24 * HOUR + 16 * HOUR,
            ),
            // From a month start to the middle of a day.
            (jan, T0 + 3 * HOUR),
            // Everything.
            (0, T0 + 365 * 24 * HOUR),
        ];
        for (from, to) in ranges {
            let read = |bucket: RollupBucket| {
                let mut q = query(&a, bucket, Some(RollupGroup::Model));
                q.from = from;
                q.to = to;
                q
            };
            let hourly = store.usage_rollup(&read(RollupBucket::Hour)).await.unwrap();
            let daily = store.usage_rollup(&read(RollupBucket::Day)).await.unwrap();
            let monthly = store
                .usage_rollup(&read(RollupBucket::Month))
                .await
                .unwrap();
            assert!(!hourly.is_empty(), "{from}..{to}");
            assert!(daily.iter().all(|r| r.bucket == day(r.bucket)));
            assert_eq!(fold(&daily, &day), fold(&hourly, &day), "days {from}..{to}");
            assert_eq!(
                fold(&monthly, &month),
                fold(&hourly, &month),
                "months {from}..{to}"
            );
        }
        // The whole ledger: 80 events, each counted once.
        let all = store
            .usage_rollup(&RollupQuery {
                from: 0,
                to: T0 + 365 * 24 * HOUR,
                ..query(&a, RollupBucket::Month, None)
            })
            .await
            .unwrap();
        let counted: i64 = all
            .iter()
            .map(|r| r.totals.transcripts + r.totals.sessions)
            .sum();
        assert_eq!(counted, 80);
    }

    async fn concurrent_usage_is_counted_once(c: Ctx) {
        let store = c.store.clone().with_prices(prices());
        let a = new_account(&store, Plan::Payg).await;
        let key = ApiKeyId::new();
        c.clock.set_ms(DAY0 + 3 * HOUR);
        // 200 jobs finishing at once, each reported twice (a retried completion).
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let store = store.clone();
                let e = event(
                    &format!("job:{}", i % 200),
                    &a,
                    key,
                    SPEECH_TO_TEXT,
                    "tiny",
                    1_000 + (i % 200) as i64,
                    None,
                );
                tokio::spawn(async move { store.record_usage(e).await.unwrap() })
            })
            .collect();
        let mut inserted = 0;
        for t in tasks {
            if t.await.unwrap() {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 200);
        let rows = store
            .usage_rollup(&query(&a, RollupBucket::Day, None))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let t = rows[0].totals;
        assert_eq!(t.transcripts, 200);
        // Sum of 1000..1200 ms.
        assert_eq!(t.audio_ms, (1_000..1_200).sum::<i64>());
        let events = store.usage_events(a.account.id).await.unwrap();
        assert_eq!(events.len(), 200);
        assert_eq!(t.cost, events.iter().map(|e| e.cost).sum::<i64>());
    }

    async fn account_deletion_keeps_usage(c: Ctx) {
        let store = c.store.clone().with_prices(prices());
        let a = new_account(&store, Plan::Payg).await;
        c.clock.set_ms(DAY0 + HOUR);
        store
            .record_usage(event(
                "kept",
                &a,
                ApiKeyId::new(),
                SPEECH_TO_TEXT,
                "tiny",
                10_000,
                None,
            ))
            .await
            .unwrap();
        store
            .delete_account(a.account.id, &Actor::Operator)
            .await
            .unwrap();
        assert!(store.get_account(a.account.id).await.unwrap().is_none());
        assert_eq!(store.usage_events(a.account.id).await.unwrap().len(), 1);
        let rows = store
            .usage_rollup(&query(&a, RollupBucket::Day, None))
            .await
            .unwrap();
        assert_eq!(rows[0].totals.audio_ms, 10_000);
    }
}

/// Credit balance and alerts (issue 11).
mod billing {
    use super::*;
    use hark_core::money::{Price, PriceTable, SPEECH_TO_TEXT};

    conformance!(
        balance_is_credits_minus_cost_and_blocks_prepaid_below_zero,
        blocked_account_runs_one_job_at_a_time,
        alerts_fire_once_per_period_under_concurrency,
    );

    /// One micro-unit per millisecond of audio.
    fn store(c: &Ctx) -> SqlStore {
        c.store
            .clone()
            .with_prices(PriceTable::new(vec![Price {
                product: SPEECH_TO_TEXT.into(),
                model: "*".into(),
                per_hour: 3_600_000,
                effective_from: 0,
            }]))
            .with_evaluation_credit(1_000)
    }

    fn usage(a: &Bootstrap, key: &str, audio_ms: i64) -> NewUsageEvent {
        NewUsageEvent {
            idempotency_key: key.into(),
            account_id: a.account.id,
            project_id: a.project.id,
            api_key_id: ApiKeyId::new(),
            product: SPEECH_TO_TEXT.into(),
            model: "tiny".into(),
            audio_ms,
            session_ms: None,
        }
    }

    async fn blocked(store: &SqlStore, secret: &str) -> bool {
        store
            .principal_by_digest(&hark_core::keys::SecretDigest::of(secret).to_hex())
            .await
            .unwrap()
            .unwrap()
            .balance_blocked
    }

    async fn balance_is_credits_minus_cost_and_blocks_prepaid_below_zero(c: Ctx) {
        let store = store(&c);
        let free = new_account(&store, Plan::Free).await;
        let payg = new_account(&store, Plan::Payg).await;
        store
            .create_api_key(new_key(free.project.id, "free-secret"), &Actor::Operator)
            .await
            .unwrap();
        // The evaluation credit goes to Free accounts only.
        assert_eq!(store.balance(free.account.id).await.unwrap().balance, 1_000);
        assert_eq!(store.balance(payg.account.id).await.unwrap().balance, 0);
        let credits = store.credits(free.account.id).await.unwrap();
        assert_eq!(credits.len(), 1);
        assert_eq!(
            (credits[0].amount, credits[0].kind.as_str()),
            (1_000, "evaluation")
        );
        store.record_usage(usage(&free, "a", 600)).await.unwrap();
        assert_eq!(store.balance(free.account.id).await.unwrap().balance, 400);
        assert!(!blocked(&store, "free-secret").await);
        // Crossing zero blocks the account and tells every node's key cache.
        let epoch = store.auth_epoch().await.unwrap();
        let mut heard = store.credential_bus().subscribe();
        store.record_usage(usage(&free, "b", 500)).await.unwrap();
        let b = store.balance(free.account.id).await.unwrap();
        assert_eq!((b.balance, b.month_spend, b.blocked), (-100, 1_100, true));
        assert!(blocked(&store, "free-secret").await);
        assert!(store.auth_epoch().await.unwrap() > epoch);
        // ... on the revocation bus, as the account's credential change.
        let mut changes = Vec::new();
        while let Ok(h) = heard.try_recv() {
            changes.push(h.change);
        }
        assert!(
            changes.contains(&CredentialChange::Account(free.account.id)),
            "{changes:?}"
        );
        // A credit that leaves it negative does not unblock; one that reaches zero does.
        let change = store
            .grant_credit(
                free.account.id,
                50,
                CreditKind::Operator,
                "part",
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert_eq!((change.before, change.after), (-100, -50));
        assert!(blocked(&store, "free-secret").await);
        store
            .grant_credit(
                free.account.id,
                50,
                CreditKind::Operator,
                "top up",
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert!(!blocked(&store, "free-secret").await);
        // Invoiced plans are never blocked; back to prepaid while negative blocks again.
        store.record_usage(usage(&free, "c", 10)).await.unwrap();
        assert!(blocked(&store, "free-secret").await);
        store
            .set_plan(
                free.account.id,
                Plan::Contracted,
                Default::default(),
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert!(!blocked(&store, "free-secret").await);
        store.record_usage(usage(&free, "d", 10_000)).await.unwrap();
        assert!(!blocked(&store, "free-secret").await);
        store
            .set_plan(
                free.account.id,
                Plan::Payg,
                Default::default(),
                &Actor::Operator,
            )
            .await
            .unwrap();
        assert!(blocked(&store, "free-secret").await);
        // The ledger holds every credit; the audit log records the operator's.
        let credits = store.credits(free.account.id).await.unwrap();
        let amounts: Vec<i64> = credits.iter().map(|c| c.amount).collect();
        assert_eq!(amounts, vec![1_000, 50, 50]);
        let audit = store.audit_entries(Some(free.account.id)).await.unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.action == "billing.credit")
                .count(),
            2
        );
        // Credits minus every cost.
        let b = store.balance(free.account.id).await.unwrap().balance;
        let (credited, spent) = (1_100, 1_100 + 10 + 10_000);
        assert_eq!(b, credited - spent);
    }

    async fn blocked_account_runs_one_job_at_a_time(c: Ctx) {
        let store = store(&c);
        let a = new_account(&store, Plan::Free).await;
        let key = ApiKeyId::new();
        for _ in 0..3 {
            new_transcript(&store, a.project.id, key).await;
        }
        store.record_usage(usage(&a, "x", 5_000)).await.unwrap();
        assert!(store.balance(a.account.id).await.unwrap().blocked);
        assert!(store.claim_job("w1", 60_000).await.unwrap().is_some());
        assert!(store.claim_job("w2", 60_000).await.unwrap().is_none());
        store
            .grant_credit(
                a.account.id,
                10_000,
                CreditKind::Operator,
                "top up",
                &Actor::Operator,
            )
            .await
            .unwrap();
        // Back to the Free plan's limit (5).
        assert!(store.claim_job("w2", 60_000).await.unwrap().is_some());
        assert!(store.claim_job("w3", 60_000).await.unwrap().is_some());
    }

    async fn alerts_fire_once_per_period_under_concurrency(c: Ctx) {
        let store = store(&c).with_currency("EUR");
        let a = new_account(&store, Plan::Payg).await;
        let owner_email = store.owner_email(a.account.id).await.unwrap().unwrap();
        store
            .grant_credit(
                a.account.id,
                1_000_000,
                CreditKind::Operator,
                "start",
                &Actor::Operator,
            )
            .await
            .unwrap();
        let alert =
            |kind: AlertKind, threshold: i64, project: Option<ProjectId>, hook: bool| NewAlert {
                id: format!("alert-{}", uuid::Uuid::new_v4().simple()),
                account_id: a.account.id,
                kind,
                threshold,
                project_id: project,
                api_key_id: None,
                webhook_url: hook.then(|| "https://hooks.example.com/usage".to_string()),
                signing_project_id: a.project.id,
            };
        // Spend above 0.05, audio above 60 s in a day, balance below 0.90.
        let spend = store
            .create_alert(
                alert(AlertKind::MonthSpendAbove, 50_000, None, true),
                &Actor::Operator,
            )
            .await
            .unwrap();
        let audio = store
            .create_alert(
                alert(
                    AlertKind::DailyAudioAbove,
                    60_000,
                    Some(a.project.id),
                    false,
                ),
                &Actor::Operator,
            )
            .await
            .unwrap();
        let low = store
            .create_alert(
                alert(AlertKind::BalanceBelow, 900_000, None, true),
                &Actor::Operator,
            )
            .await
            .unwrap();
        c.clock.set_ms(T0);
        // 100 concurrent events of 2 s: 200 s and 0.2 in all; every alert passes its line.
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                let e = usage(&a, &format!("e{i}"), 2_000);
                tokio::spawn(async move { store.record_usage(e).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        let mails = store.outbox(false).await.unwrap();
        let subjects: Vec<&str> = mails
            .iter()
            .filter(|m| m.mail.to == owner_email)
            .map(|m| m.mail.subject.as_str())
            .collect();
        assert_eq!(subjects.len(), 3, "{subjects:?}");
        assert_eq!(
            subjects
                .iter()
                .filter(|s| s.contains("this month passed 0.05 EUR"))
                .count(),
            1
        );
        assert_eq!(
            subjects
                .iter()
                .filter(|s| s.contains("passed 0.02 audio hours today"))
                .count(),
            1
        );
        assert_eq!(
            subjects
                .iter()
                .filter(|s| s.contains("below 0.90 EUR"))
                .count(),
            1
        );
        let hooks: Vec<String> =
            sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE account_id = $1")
                .bind(a.account.id.to_string())
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(hooks.len(), 2, "{hooks:?}");
        let kinds: Vec<String> = hooks
            .iter()
            .map(|h| {
                serde_json::from_str::<serde_json::Value>(h).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            kinds.contains(&"month_spend_above".to_string())
                && kinds.contains(&"balance_below".to_string())
        );
        let listed = store.list_alerts(a.account.id).await.unwrap();
        assert!(
            listed.iter().all(|x| x.last_fired_at == Some(T0)),
            "{listed:?}"
        );
        // More usage the same day: nothing new. The next day: the daily alert again.
        store
            .record_usage(usage(&a, "later", 61_000))
            .await
            .unwrap();
        assert_eq!(store.outbox(false).await.unwrap().len(), 3);
        c.clock.set_ms(T0 + 86_400_000);
        store
            .record_usage(usage(&a, "tomorrow", 61_000))
            .await
            .unwrap();
        let mails = store.outbox(false).await.unwrap();
        assert_eq!(mails.len(), 4);
        assert!(mails.iter().any(|m| m.mail.body.contains(&audio.id)));
        // A credit lifts the balance over the line: the balance alert re-arms and fires
        // again on the next fall.
        store
            .grant_credit(
                a.account.id,
                500_000,
                CreditKind::Operator,
                "top up",
                &Actor::Operator,
            )
            .await
            .unwrap();
        store
            .record_usage(usage(&a, "drain", 600_000))
            .await
            .unwrap();
        let mails = store.outbox(false).await.unwrap();
        assert_eq!(
            mails
                .iter()
                .filter(|m| m.mail.body.contains(&low.id))
                .count(),
            2
        );
        assert_eq!(
            mails
                .iter()
                .filter(|m| m.mail.body.contains(&spend.id))
                .count(),
            1
        );
        // Edit (re-arms) and delete.
        store
            .update_alert(
                a.account.id,
                &spend.id,
                AlertPatch {
                    threshold: Some(2_000_000),
                    webhook_url: Some(None),
                },
                &Actor::Operator,
            )
            .await
            .unwrap();
        let edited = store
            .list_alerts(a.account.id)
            .await
            .unwrap()
            .into_iter()
            .find(|x| x.id == spend.id)
            .unwrap();
        assert_eq!(
            (edited.threshold, edited.fired_period, edited.webhook_url),
            (2_000_000, None, None)
        );
        store
            .delete_alert(a.account.id, &audio.id, &Actor::Operator)
            .await
            .unwrap();
        assert_eq!(store.list_alerts(a.account.id).await.unwrap().len(), 2);
        assert!(matches!(
            store
                .delete_alert(a.account.id, &audio.id, &Actor::Operator)
                .await,
            Err(StoreError::NotFound(_))
        ));
    }
}

async fn new_session(c: &Ctx, user: UserId, token: &str, method: SignInMethod) -> LoginSession {
    c.store
        .create_session(
            NewSession {
                id: hark_core::LoginSessionId::new(),
                user_id: user,
                digest_hex: hark_core::keys::SecretDigest::of(token).to_hex(),
                csrf_digest_hex: hark_core::keys::SecretDigest::of("csrf").to_hex(),
                current_account: None,
                expires_at: T0 + 3_600_000,
                signed_in_with: method,
            },
            "pair:x|",
        )
        .await
        .expect("session")
}

async fn session_of(c: &Ctx, token: &str) -> Option<LoginSession> {
    c.store
        .session_by_digest(&hark_core::keys::SecretDigest::of(token).to_hex())
        .await
        .expect("read session")
}

/// "Require MFA" judges how a session signed in: the store keeps the method of each
/// session, reads a session from before the method was recorded as password-only, and
/// confirming a TOTP enrolment ends the person's other sessions and marks the one that
/// proved the factor.
async fn sessions_record_how_they_signed_in(c: Ctx) {
    let u = c
        .store
        .create_user(UserId::new(), "mia@example.com", None, &Actor::Operator)
        .await
        .unwrap();
    let other = c
        .store
        .create_user(UserId::new(), "noa@example.com", None, &Actor::Operator)
        .await
        .unwrap();
    let with_code = new_session(&c, u.id, "t-mfa", SignInMethod::Mfa).await;
    assert_eq!(with_code.signed_in_with, SignInMethod::Mfa);
    assert_eq!(
        session_of(&c, "t-mfa").await.map(|s| s.signed_in_with),
        Some(SignInMethod::Mfa)
    );
    let enrolling = new_session(&c, u.id, "t-enrol", SignInMethod::Password).await;
    assert_eq!(
        session_of(&c, "t-enrol").await.map(|s| s.signed_in_with),
        Some(SignInMethod::Password)
    );
    new_session(&c, other.id, "t-other-user", SignInMethod::Password).await;
    // A row written without the column (as before migration 0017) is password-only.
    sqlx::query(
        "INSERT INTO sessions (id, user_id, digest, csrf_digest, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hark_core::LoginSessionId::new().to_string())
    .bind(u.id.to_string())
    .bind(hark_core::keys::SecretDigest::of("t-old").to_hex())
    .bind(hark_core::keys::SecretDigest::of("csrf").to_hex())
    .bind(T0)
    .bind(T0 + 3_600_000)
    .execute(c.store.pool())
    .await
    .unwrap();
    assert_eq!(
        session_of(&c, "t-old").await.map(|s| s.signed_in_with),
        Some(SignInMethod::Password)
    );
    // Confirming enrolment: the two other sessions of this person end, the
    // enrolling one now counts as MFA, another person's session stays.
    c.store.begin_totp(u.id, "sealed-seed").await.unwrap();
    let ended = c
        .store
        .confirm_totp(u.id, 7, &["r1".into()], enrolling.id, &Actor::User(u.id))
        .await
        .unwrap();
    assert_eq!(ended, Some(2));
    assert_eq!(session_of(&c, "t-mfa").await, None);
    assert_eq!(session_of(&c, "t-old").await, None);
    assert_eq!(
        session_of(&c, "t-enrol").await.map(|s| s.signed_in_with),
        Some(SignInMethod::Mfa)
    );
    assert!(session_of(&c, "t-other-user").await.is_some());
    // A second confirmation changes nothing.
    new_session(&c, u.id, "t-later", SignInMethod::Password).await;
    assert_eq!(
        c.store
            .confirm_totp(u.id, 8, &["r2".into()], enrolling.id, &Actor::User(u.id))
            .await
            .unwrap(),
        None
    );
    assert!(session_of(&c, "t-later").await.is_some());
    assert!(c.store.verify_audit_chain(None).await.unwrap().is_ok());
}
