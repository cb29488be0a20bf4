//! Delivery of the mail outbox over SMTP (lettre). Mail is written to the outbox in
//! the same transaction as the change that causes it; this task sends unsent entries
//! and marks them sent, retrying failures on the next sweep. Without SMTP
//! configuration nothing runs and the operator reads the outbox (`hark admin outbox`).

use crate::config::SmtpConfig;
use hark_store::Mail;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp configuration: {0}")]
    Config(String),
    #[error("could not build the message: {0}")]
    Message(String),
    #[error("smtp delivery failed: {0}")]
    Send(String),
}

/// A configured SMTP sender.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// `None` when SMTP is not configured.
    pub fn from_config(c: &SmtpConfig) -> Result<Option<Self>, MailError> {
        if c.host.is_empty() {
            return Ok(None);
        }
        let builder = match c.security.as_str() {
            "starttls" | "" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| MailError::Config(e.to_string()))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| MailError::Config(e.to_string()))?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
            other => {
                return Err(MailError::Config(format!(
                    "smtp.security must be starttls, tls or none, not '{other}'"
                )))
            }
        };
        let mut builder = builder.port(c.port).timeout(Some(Duration::from_secs(10)));
        if !c.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                c.username.clone(),
                c.password.expose().to_string(),
            ));
        }
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| MailError::Config(format!("smtp.from: {e}")))?;
        Ok(Some(Self {
            transport: builder.build(),
            from,
        }))
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| MailError::Message(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .body(mail.body.clone())
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Send(e.to_string()))
    }
}

/// How long a claimed entry is left to its sender before another may retry it.
pub const CLAIM_LEASE_MS: i64 = 60_000;

/// Sends the outbox every `interval` until shutdown.
pub async fn run_outbox_sender(
    store: Arc<dyn hark_store::Store>,
    mailer: SmtpMailer,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let entries = match store.outbox(true).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the mail outbox");
                continue;
            }
        };
        for entry in entries {
            match store.claim_mail(&entry.id, CLAIM_LEASE_MS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, id = %entry.id, "could not claim mail");
                    continue;
                }
            }
            match mailer.send(&entry.mail).await {
                Ok(()) => {
                    if let Err(e) = store.mark_mail_sent(&entry.id).await {
                        tracing::warn!(error = %e, id = %entry.id, "could not mark mail sent");
                    }
                }
                // The body may hold an invite token: log the id, never the content.
                Err(e) => tracing::warn!(error = %e, id = %entry.id, "mail not sent; will retry"),
            }
        }
    }
}
