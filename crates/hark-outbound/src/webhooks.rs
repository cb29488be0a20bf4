//! The webhook sender: claims due deliveries from the outbox and POSTs them, signed by
//! the Standard Webhooks scheme, under AssemblyAI's delivery rules.
//!
//! Rules: 2xx within the timeout (10 s) is delivered; a 4xx is a permanent failure;
//! anything else (5xx, 3xx, timeout, network error) is retried `retry_delay` (10 s)
//! later, up to `max_attempts` (10) attempts in total. Redirects are not followed. A
//! target the SSRF policy refuses, an unparsable URL or an auth header that cannot be
//! unsealed is given up at once. Logs name the target's host only, never its path,
//! query string or any header value.

use crate::client::{log_host, OutboundClient};
use crate::error::OutboundError;
use async_trait::async_trait;
use hark_core::clock::Clock;
use hark_core::seal::MasterKey;
use hark_core::{ProjectId, TranscriptId};
use hark_store::{DeliveryResult, SigningSecretStore, StoreError, WebhookDelivery, WebhookStore};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The context under which a delivery's `auth_header_sealed` is sealed: the
/// transcript id (its `Display` form) when the delivery belongs to a transcript,
/// otherwise `webhook-auth:<project id>` (streaming sessions, whose id the outbox does
/// not keep). Seal with `master_key.seal(value, &auth_header_seal_context(..))`.
pub fn auth_header_seal_context(transcript: Option<TranscriptId>, project: ProjectId) -> String {
    match transcript {
        Some(t) => t.to_string(),
        None => format!("webhook-auth:{project}"),
    }
}

/// The context under which [`StoreSigningSecrets`] expects a project's webhook signing
/// secret (`NewProject::webhook_secret_sealed`) to be sealed: the project id.
pub fn project_secret_seal_context(project: ProjectId) -> String {
    project.to_string()
}

/// Where the sender finds a project's signing secrets (`whsec_...`, plaintext).
#[async_trait]
pub trait SigningSecrets: Send + Sync {
    /// The secrets that sign a delivery of `project` at `now` (Unix ms): the current
    /// one first, then a former one during its rotation overlap. Empty sends the
    /// webhook unsigned.
    async fn secrets(&self, project: ProjectId, now: i64) -> Vec<String>;
}

/// Signing secrets read from the store and unsealed with the master key under
/// [`project_secret_seal_context`].
pub struct StoreSigningSecrets {
    pub store: Arc<dyn SigningSecretStore>,
    pub master_key: Arc<MasterKey>,
}

#[async_trait]
impl SigningSecrets for StoreSigningSecrets {
    async fn secrets(&self, project: ProjectId, now: i64) -> Vec<String> {
        let stored = match self.store.webhook_signing_secrets(project).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a project's webhook secret");
                return Vec::new();
            }
        };
        let context = project_secret_seal_context(project);
        std::iter::once(stored.current_sealed.as_str())
            .chain(stored.previous_at(now))
            .filter_map(|sealed| match self.master_key.open(sealed, &context) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot unseal a project's webhook secret");
                    None
                }
            })
            .collect()
    }
}

/// The delivery rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Time allowed for one attempt (default 10 s).
    pub timeout: Duration,
    /// Attempts in total before giving up (default 10).
    pub max_attempts: i64,
    /// Delay between attempts (default 10 s).
    pub retry_delay: Duration,
    /// Lease taken on a claimed delivery, in ms; must exceed `timeout` (default 60 s).
    pub lease_ms: i64,
    /// How often an idle sender looks for due deliveries (default 200 ms).
    pub poll_interval: Duration,
    /// Deliveries in flight at once in [`WebhookSender::run`] (default 4).
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 10,
            retry_delay: Duration::from_secs(10),
            lease_ms: 60_000,
            poll_interval: Duration::from_millis(200),
            concurrency: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends the webhook outbox.
#[derive(Clone)]
pub struct WebhookSender {
    store: Arc<dyn WebhookStore>,
    client: OutboundClient,
    master_key: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    secrets: Arc<dyn SigningSecrets>,
    config: WebhookConfig,
}

/// What one attempt came to, before the retry rule is applied.
enum Attempt {
    Delivered(u16),
    Permanent(Option<u16>, String),
    Transient(Option<u16>, String),
}

impl WebhookSender {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        client: OutboundClient,
        master_key: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        secrets: Arc<dyn SigningSecrets>,
        config: WebhookConfig,
    ) -> Self {
        Self {
            store,
            client,
            master_key,
            clock,
            secrets,
            config,
        }
    }

    /// Delivers due webhooks until `shutdown` completes (e.g. `token.cancelled()`),
    /// then waits for the attempts in flight.
    pub async fn run<F: Future<Output = ()>>(self, shutdown: F) {
        let sender = Arc::new(self);
        let permits = Arc::new(tokio::sync::Semaphore::new(
            sender.config.concurrency.max(1),
        ));
        let mut in_flight = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            while in_flight.try_join_next().is_some() {}
            let idle = match sender.store.claim_due_webhook(sender.config.lease_ms).await {
                Ok(Some(delivery)) => {
                    let sender = sender.clone();
                    in_flight.spawn(async move {
                        if let Err(e) = sender.send_and_record(delivery).await {
                            tracing::warn!(error = %e, "cannot record a webhook delivery");
                        }
                        drop(permit);
                    });
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a webhook delivery");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(sender.config.poll_interval) => {}
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims one due delivery, sends it and records the outcome; returns whether
    /// there was one.
    pub async fn deliver_once(&self) -> Result<bool, WebhookError> {
        Ok(self.deliver_next().await?.is_some())
    }

    /// Like [`deliver_once`](Self::deliver_once), returning the recorded outcome.
    pub async fn deliver_next(&self) -> Result<Option<DeliveryResult>, WebhookError> {
        match self.store.claim_due_webhook(self.config.lease_ms).await? {
            Some(delivery) => Ok(Some(self.send_and_record(delivery).await?)),
            None => Ok(None),
        }
    }

    async fn send_and_record(
        &self,
        delivery: WebhookDelivery,
    ) -> Result<DeliveryResult, WebhookError> {
        let host = log_host(&delivery.url);
        let attempt = self.attempt(&delivery).await;
        let result = match attempt {
            Attempt::Delivered(status) => DeliveryResult::Delivered { status },
            Attempt::Permanent(status, error) => DeliveryResult::GaveUp { status, error },
            Attempt::Transient(status, error) if delivery.attempts >= self.config.max_attempts => {
                DeliveryResult::GaveUp {
                    status,
                    error: format!("{error} (gave up after {} attempts)", delivery.attempts),
                }
            }
            Attempt::Transient(status, error) => {
                let delay = i64::try_from(self.config.retry_delay.as_millis()).unwrap_or(i64::MAX);
                DeliveryResult::RetryAt {
                    status,
                    error,
                    at: self.clock.now_ms().saturating_add(delay),
                }
            }
        };
        match &result {
            DeliveryResult::Delivered { status } => {
                tracing::info!(delivery = %delivery.id, host = %host, status, attempt = delivery.attempts, "webhook delivered")
            }
            DeliveryResult::GaveUp { status, error } => {
                tracing::warn!(delivery = %delivery.id, host = %host, ?status, error = %error, attempt = delivery.attempts, "webhook given up")
            }
            DeliveryResult::RetryAt { status, error, .. } => {
                tracing::info!(delivery = %delivery.id, host = %host, ?status, error = %error, attempt = delivery.attempts, "webhook will be retried")
            }
        }
        self.store
            .record_delivery(&delivery.id, result.clone())
            .await?;
        Ok(result)
    }

    async fn attempt(&self, delivery: &WebhookDelivery) -> Attempt {
        let url = match self.client.check_url(&delivery.url) {
            Ok(url) => url,
            Err(e) => return Attempt::Permanent(None, format!("webhook target refused: {e}")),
        };
        let headers = match self.headers(delivery).await {
            Ok(h) => h,
            Err(why) => return Attempt::Permanent(None, why),
        };
        let request = self
            .client
            .direct()
            .post(url)
            .headers(headers)
            .timeout(self.config.timeout)
            .body(delivery.body.clone())
            .send();
        // The request's own timeout covers connecting and the answer; this one also
        // bounds the secure resolution, which runs outside reqwest's timer.
        let response = match tokio::time::timeout(self.config.timeout, request).await {
            Err(_) => return Attempt::Transient(None, "timed out".into()),
            Ok(Err(e)) => {
                return match OutboundError::from_reqwest(e) {
                    e @ (OutboundError::Forbidden(_) | OutboundError::BadUrl(_)) => {
                        Attempt::Permanent(None, format!("webhook target refused: {e}"))
                    }
                    e => Attempt::Transient(None, e.to_string()),
                }
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        drop(response);
        match status {
            200..=299 => Attempt::Delivered(status),
            400..=499 => Attempt::Permanent(
                Some(status),
                format!("the receiver answered {status}; not retried"),
            ),
            _ => Attempt::Transient(Some(status), format!("the receiver answered {status}")),
        }
    }

    async fn headers(&self, delivery: &WebhookDelivery) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        if let (Some(name), Some(sealed)) =
            (&delivery.auth_header_name, &delivery.auth_header_sealed)
        {
            let context = auth_header_seal_context(delivery.transcript_id, delivery.project_id);
            let value = self
                .master_key
                .open(sealed, &context)
                .map_err(|e| format!("cannot unseal the webhook auth header: {e}"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                "the webhook auth header name is not a valid header name".to_string()
            })?;
            if [
                reqwest::header::HOST,
                reqwest::header::CONTENT_LENGTH,
                reqwest::header::TRANSFER_ENCODING,
                reqwest::header::CONNECTION,
            ]
            .contains(&name)
            {
                return Err(format!(
                    "the webhook auth header may not be {name}, which the sender controls"
                ));
            }
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                "the webhook auth header value is not a valid header value".to_string()
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let id = HeaderValue::from_str(&delivery.id)
            .map_err(|_| "the delivery id is not a valid header value".to_string())?;
        headers.insert(HeaderName::from_static("webhook-id"), id);
        headers.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(timestamp),
        );
        // During a rotation's overlap the header carries one signature per secret,
        // space-separated, so receivers holding either secret verify it.
        let signatures: Vec<String> = self
            .secrets
            .secrets(delivery.project_id, self.clock.now_ms())
            .await
            .iter()
            .filter_map(|secret| {
                let sig = hark_core::webhook_sign::sign(
                    secret,
                    &delivery.id,
                    timestamp,
                    delivery.body.as_bytes(),
                );
                if sig.is_none() {
                    tracing::warn!(delivery = %delivery.id, "a webhook secret of the project is malformed; not signing with it");
                }
                sig
            })
            .collect();
        if !signatures.is_empty() {
            match HeaderValue::from_str(&signatures.join(" ")) {
                Ok(sig) => {
                    headers.insert(HeaderName::from_static("webhook-signature"), sig);
                }
                Err(_) => {
                    tracing::warn!(delivery = %delivery.id, "the webhook signature is not a valid header value; sending unsigned")
                }
            }
        }
        Ok(headers)
    }
}
