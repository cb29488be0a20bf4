//! The webhook outbox: deliveries written with the change that caused them, claimed
//! under a lease by a sender, retried on schedule.

use crate::sql::{parse_id, parse_opt_id, Backend};
use crate::*;
use hark_core::clock::Millis;
use sqlx::{Any, Row, Transaction};

pub(crate) async fn insert_delivery(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    project: &str,
    transcript: Option<&str>,
    webhook: &NewWebhook,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, account_id, project_id, transcript_id, url, auth_header_name, \
         auth_header_sealed, body, state, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(account)
    .bind(project)
    .bind(transcript)
    .bind(&webhook.url)
    .bind(&webhook.auth_header_name)
    .bind(&webhook.auth_header_sealed)
    .bind(&webhook.body)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn enqueue_webhook(
        &self,
        account: AccountId,
        project: ProjectId,
        webhook: NewWebhook,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_delivery(
            &mut tx,
            &account.to_string(),
            &project.to_string(),
            None,
            &webhook,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_webhook(&self, lease_ms: i64) -> StoreResult<Option<WebhookDelivery>> {
        let now = self.now();
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.pool.begin().await?;
        // Claiming is a single conditional update on SQLite (serialised by its write
        // lock) and a skip-locked select then update on PostgreSQL.
        let row = sqlx::query(&format!(
            "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (lease_expires_at IS NULL OR lease_expires_at < $1) ORDER BY next_attempt_at, id LIMIT 1{lock}"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET lease_expires_at = $2, attempts = attempts + 1 WHERE id = $1 \
             AND state = 'pending' AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
             RETURNING id, account_id, project_id, transcript_id, url, auth_header_name, auth_header_sealed, body, attempts, created_at",
        )
        .bind(&id)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = claimed else { return Ok(None) };
        let delivery = WebhookDelivery {
            id: r.try_get("id")?,
            account_id: parse_id(&r, "account_id", AccountId::parse)?,
            project_id: parse_id(&r, "project_id", ProjectId::parse)?,
            transcript_id: parse_opt_id(&r, "transcript_id", TranscriptId::parse)?,
            url: r.try_get("url")?,
            auth_header_name: r.try_get("auth_header_name")?,
            auth_header_sealed: r.try_get("auth_header_sealed")?,
            body: r.try_get("body")?,
            attempts: r.try_get("attempts")?,
            created_at: r.try_get("created_at")?,
        };
        tx.commit().await?;
        Ok(Some(delivery))
    }

    async fn record_delivery(&self, id: &str, result: DeliveryResult) -> StoreResult<()> {
        let (state, status, error, next): (&str, Option<u16>, Option<String>, Option<Millis>) =
            match result {
                DeliveryResult::Delivered { status } => ("delivered", Some(status), None, None),
                DeliveryResult::GaveUp { status, error } => ("failed", status, Some(error), None),
                DeliveryResult::RetryAt { status, error, at } => {
                    ("pending", status, Some(error), Some(at))
                }
            };
        let status = status.map(i64::from);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, last_status_code = COALESCE($3, last_status_code), last_error = $4, \
             next_attempt_at = COALESCE($5, next_attempt_at), lease_expires_at = NULL WHERE id = $1 RETURNING transcript_id",
        )
        .bind(id)
        .bind(state)
        .bind(status)
        .bind(error)
        .bind(next)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(row), Some(status)) = (row, status) {
            let transcript: Option<String> = row.try_get("transcript_id")?;
            if let Some(transcript) = transcript {
                sqlx::query("UPDATE transcripts SET webhook_status_code = $2 WHERE id = $1")
                    .bind(transcript)
                    .bind(status)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
