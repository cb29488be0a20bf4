//! Webhook delivery from a real SQLite outbox to a local receiver.

mod common;

use async_trait::async_trait;
use hark_core::clock::{Clock, ManualClock};
use hark_core::seal::MasterKey;
use hark_core::{AccountId, ApiKeyId, Plan, ProjectId, TranscriptId, UserId};
use hark_outbound::{
    auth_header_seal_context, project_secret_seal_context, OutboundClient, OutboundPolicy,
    SigningSecrets, StoreSigningSecrets, WebhookConfig, WebhookSender,
};
use hark_store::testing::TestDatabase;
use hark_store::*;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_800_000_000_000;

struct Ctx {
    _db: TestDatabase,
    store: SqlStore,
    clock: Arc<ManualClock>,
    key: Arc<MasterKey>,
    account: AccountId,
    project: ProjectId,
    secret: String,
    server: common::TestServer,
}

impl Ctx {
    async fn new() -> Self {
        let db = TestDatabase::sqlite().await;
        let clock = Arc::new(ManualClock::new(T0));
        let store = db.open(clock.clone()).await.unwrap();
        let key = Arc::new(MasterKey::from_hex(&MasterKey::generate_hex()).unwrap());
        let secret = hark_core::webhook_sign::generate_secret();
        let project = ProjectId::new();
        let boot = store
            .create_account(
                NewAccount {
                    id: AccountId::new(),
                    name: "Acme".into(),
                    plan: Plan::Payg,
                    owner_id: UserId::new(),
                    owner_email: "owner@example.com".into(),
                    project: NewProject {
                        id: project,
                        name: "default".into(),
                        webhook_secret_sealed: key
                            .seal(&secret, &project_secret_seal_context(project)),
                    },
                },
                &Actor::Operator,
            )
            .await
            .unwrap();
        Self {
            _db: db,
            account: boot.account.id,
            project,
            store,
            clock,
            key,
            secret,
            server: common::start().await,
        }
    }

    fn sender(&self, config: WebhookConfig) -> WebhookSender {
        let client = OutboundClient::new(OutboundPolicy {
            allowlist: vec!["127.0.0.1/32".parse().unwrap()],
            ..OutboundPolicy::default()
        })
        .unwrap();
        let secrets = StoreSigningSecrets {
            store: Arc::new(self.store.clone()),
            master_key: self.key.clone(),
        };
        WebhookSender::new(
            Arc::new(self.store.clone()),
            client,
            self.key.clone(),
            self.clock.clone(),
            Arc::new(secrets),
            config,
        )
    }

    async fn enqueue(&self, url: String, auth: Option<(&str, &str)>) {
        let (name, sealed) = match auth {
            Some((n, v)) => (
                Some(n.to_string()),
                Some(
                    self.key
                        .seal(v, &auth_header_seal_context(None, self.project)),
                ),
            ),
            None => (None, None),
        };
        self.store
            .enqueue_webhook(
                self.account,
                self.project,
                NewWebhook {
                    url,
                    auth_header_name: name,
                    auth_header_sealed: sealed,
                    body: r#"{"transcript_id":"abc","status":"completed"}"#.into(),
                },
            )
            .await
            .unwrap();
    }
}

fn fast() -> WebhookConfig {
    WebhookConfig::default()
}

#[tokio::test]
async fn delivers_signed_with_auth_header_and_query() {
    let c = Ctx::new().await;
    c.enqueue(
        c.server.url("/hook?customer_id=123&x=y"),
        Some(("X-Hark-Auth", "s3cret value")),
    )
    .await;
    let sender = c.sender(fast());
    let result = sender.deliver_next().await.unwrap();
    assert_eq!(result, Some(DeliveryResult::Delivered { status: 200 }));
    assert!(!sender.deliver_once().await.unwrap(), "nothing left");
    let got = c.server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.body, r#"{"transcript_id":"abc","status":"completed"}"#);
    assert_eq!(r.query.as_deref(), Some("customer_id=123&x=y"));
    let h = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-hark-auth"), "s3cret value");
    let id = h("webhook-id");
    assert!(!id.is_empty());
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    assert_eq!(ts, T0 / 1000);
    assert!(hark_core::webhook_sign::verify(
        &c.secret,
        &id,
        ts,
        r.body.as_bytes(),
        &h("webhook-signature")
    ));
    assert!(!hark_core::webhook_sign::verify(
        &c.secret,
        &id,
        ts + 1,
        r.body.as_bytes(),
        &h("webhook-signature")
    ));
}

#[tokio::test]
async fn unsigned_without_a_secret_and_no_auth_header_without_one() {
    struct NoSecrets;
    #[async_trait]
    impl SigningSecrets for NoSecrets {
        async fn secrets(&self, _project: ProjectId, _now: i64) -> Vec<String> {
            Vec::new()
        }
    }
    let c = Ctx::new().await;
    c.enqueue(c.server.url("/hook"), None).await;
    let sender = WebhookSender::new(
        Arc::new(c.store.clone()),
        OutboundClient::new(OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        })
        .unwrap(),
        c.key.clone(),
        c.clock.clone(),
        Arc::new(NoSecrets),
        fast(),
    );
    assert!(sender.deliver_once().await.unwrap());
    let r = &c.server.received()[0];
    assert!(r.headers.get("webhook-signature").is_none());
    assert!(r.headers.get("webhook-id").is_some());
    assert!(r.headers.get("x-hark-auth").is_none());
    assert_eq!(r.query, None);
}

#[tokio::test]
async fn a_500_then_200_is_delivered_on_the_second_attempt() {
    let c = Ctx::new().await;
    c.server.answer(&[500]);
    c.enqueue(c.server.url("/hook"), None).await;
    let sender = c.sender(fast());
    let first = sender.deliver_next().await.unwrap();
    assert!(
        matches!(
            first,
            Some(DeliveryResult::RetryAt { status: Some(500), at, .. }) if at == T0 + 10_000
        ),
        "{first:?}"
    );
    assert!(!sender.deliver_once().await.unwrap(), "not due before 10 s");
    c.clock.advance_ms(9_999);
    assert!(!sender.deliver_once().await.unwrap(), "not due before 10 s");
    c.clock.advance_ms(1);
    assert_eq!(
        sender.deliver_next().await.unwrap(),
        Some(DeliveryResult::Delivered { status: 200 })
    );
    c.clock.advance_ms(60_000);
    assert!(!sender.deliver_once().await.unwrap());
    let got = c.server.received();
    assert_eq!(got.len(), 2);
    // The same message id on each attempt, a fresh timestamp.
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(
        got[1].headers["webhook-timestamp"].to_str().unwrap(),
        ((T0 + 10_000) / 1000).to_string()
    );
}

#[tokio::test]
async fn a_4xx_gives_up_after_one_attempt() {
    let c = Ctx::new().await;
    c.server.answer(&[404]);
    c.enqueue(c.server.url("/hook"), None).await;
    let sender = c.sender(fast());
    assert!(matches!(
        sender.deliver_next().await.unwrap(),
        Some(DeliveryResult::GaveUp {
            status: Some(404),
            ..
        })
    ));
    c.clock.advance_ms(3_600_000);
    assert!(!sender.deliver_once().await.unwrap());
    assert_eq!(c.server.received().len(), 1);
}

#[tokio::test]
async fn ten_failures_give_up() {
    let c = Ctx::new().await;
    c.server.answer(&[503; 20]);
    c.enqueue(c.server.url("/hook"), None).await;
    let sender = c.sender(fast());
    for attempt in 1..=10 {
        let result = sender.deliver_next().await.unwrap();
        if attempt < 10 {
            assert!(
                matches!(
                    result,
                    Some(DeliveryResult::RetryAt {
                        status: Some(503),
                        ..
                    })
                ),
                "attempt {attempt}: {result:?}"
            );
        } else {
            assert!(
                matches!(
                    result,
                    Some(DeliveryResult::GaveUp {
                        status: Some(503),
                        ..
                    })
                ),
                "attempt {attempt}: {result:?}"
            );
        }
        c.clock.advance_ms(10_000);
    }
    c.clock.advance_ms(3_600_000);
    assert!(!sender.deliver_once().await.unwrap());
    assert_eq!(c.server.received().len(), 10);
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let c = Ctx::new().await;
    *c.server.shared.hook_delay.lock().unwrap() = Duration::from_secs(3);
    c.enqueue(c.server.url("/hook"), None).await;
    let sender = c.sender(WebhookConfig {
        timeout: Duration::from_millis(300),
        ..fast()
    });
    let started = std::time::Instant::now();
    let result = sender.deliver_next().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(result, Some(DeliveryResult::RetryAt { status: None, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn forbidden_targets_give_up_at_once() {
    let c = Ctx::new().await;
    let port = c.server.addr.port();
    c.enqueue(format!("http://127.0.0.2:{port}/hook"), None)
        .await;
    c.enqueue(format!("http://[::1]:{port}/hook"), None).await;
    c.enqueue("http://169.254.169.254/latest".into(), None)
        .await;
    c.enqueue("ftp://example.com/x".into(), None).await;
    let sender = c.sender(fast());
    for _ in 0..4 {
        let result = sender.deliver_next().await.unwrap();
        match result {
            Some(DeliveryResult::GaveUp {
                status: None,
                error,
            }) => {
                assert!(error.contains("refused"), "{error}");
                assert!(
                    !error.contains("/hook") && !error.contains("/latest"),
                    "{error}"
                );
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
    }
    assert!(c.server.received().is_empty());
}

#[tokio::test]
async fn a_transcript_webhook_records_its_status_code() {
    let c = Ctx::new().await;
    let t = c
        .store
        .create_transcript(NewTranscript {
            id: TranscriptId::random(),
            project_id: c.project,
            api_key_id: ApiKeyId::new(),
            audio_url: "https://example.com/a.wav".into(),
            upload_id: None,
            params: "{}".into(),
        })
        .await
        .unwrap();
    let job = c.store.claim_job("w", 60_000).await.unwrap().unwrap();
    let hook = NewWebhook {
        url: c.server.url("/hook?customer=1"),
        auth_header_name: Some("Authorization".into()),
        auth_header_sealed: Some(c.key.seal(
            "Bearer abc",
            &auth_header_seal_context(Some(t.id), c.project),
        )),
        body: format!(r#"{{"transcript_id":"{}","status":"error"}}"#, t.id),
    };
    assert!(c
        .store
        .finish_job(
            &job.job_id,
            "w",
            JobOutcome::Failed {
                error: "no model".into()
            },
            Some(hook)
        )
        .await
        .unwrap());
    c.server.answer(&[202]);
    let sender = c.sender(fast());
    assert_eq!(
        sender.deliver_next().await.unwrap(),
        Some(DeliveryResult::Delivered { status: 202 })
    );
    let r = &c.server.received()[0];
    assert_eq!(r.headers["authorization"], "Bearer abc");
    let t = c
        .store
        .get_transcript(c.project, t.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.webhook_status_code, Some(202));
}

#[tokio::test]
async fn run_delivers_in_the_background_and_stops() {
    let c = Ctx::new().await;
    for _ in 0..3 {
        c.enqueue(c.server.url("/hook"), None).await;
    }
    let sender = c.sender(WebhookConfig {
        poll_interval: Duration::from_millis(20),
        ..fast()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sender.run(async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.server.received().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.server.received().len(), 3);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let _ = c.clock.now_ms();
}

#[tokio::test]
async fn during_a_rotation_overlap_both_secrets_sign_then_only_the_new_one() {
    const DAY_MS: i64 = 86_400_000;
    let c = Ctx::new().await;
    let new_secret = hark_core::webhook_sign::generate_secret();
    c.store
        .rotate_webhook_secret(
            c.project,
            &c.key
                .seal(&new_secret, &project_secret_seal_context(c.project)),
            DAY_MS,
            &Actor::Operator,
        )
        .await
        .unwrap();
    let sender = c.sender(fast());
    let verify = |secret: &str, r: &common::Received| {
        let h = |name: &str| r.headers[name].to_str().unwrap().to_string();
        hark_core::webhook_sign::verify(
            secret,
            &h("webhook-id"),
            h("webhook-timestamp").parse().unwrap(),
            r.body.as_bytes(),
            &h("webhook-signature"),
        )
    };

    // Within the overlap: two `v1,` entries, each secret verifies.
    c.clock.advance_ms(DAY_MS - 1);
    c.enqueue(c.server.url("/hook"), None).await;
    assert!(sender.deliver_once().await.unwrap());
    let during = c.server.received()[0].clone();
    let header = during.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(header.split(' ').count(), 2, "{header}");
    assert!(header.split(' ').all(|s| s.starts_with("v1,")), "{header}");
    assert!(verify(&new_secret, &during), "the new secret verifies");
    assert!(verify(&c.secret, &during), "the old secret still verifies");

    // Once the overlap has ended only the new secret signs.
    c.clock.advance_ms(1);
    c.enqueue(c.server.url("/hook"), None).await;
    assert!(sender.deliver_once().await.unwrap());
    let after = c.server.received()[1].clone();
    let header = after.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(header.split(' ').count(), 1, "{header}");
    assert!(verify(&new_secret, &after));
    assert!(
        !verify(&c.secret, &after),
        "the old secret no longer verifies"
    );
}
