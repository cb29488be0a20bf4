//! The transcription queue: FIFO jobs claimed under a lease, at most the account's
//! concurrency limit running at once; a job whose worker died is claimed again once
//! its lease expires, and its completion commits once.

use crate::sql::Backend;
use crate::transcripts::{transcript_from_row, TRANSCRIPT_SELECT};
use crate::*;
use sqlx::Row;

/// How many candidates one claim call tries before reporting nothing to do; a
/// candidate is skipped when another node filled its account's limit first.
const CLAIM_ATTEMPTS: usize = 4;

impl SqlStore {
    async fn try_claim(
        &self,
        worker: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<Option<ClaimedJob>>> {
        let now = self.now();
        let mut tx = match self.backend {
            // Take SQLite's write lock first so the counts below cannot go stale.
            Backend::Sqlite => self.begin_write().await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF j SKIP LOCKED",
        };
        let candidate = sqlx::query(&format!(
            "SELECT j.id, j.account_id FROM jobs j JOIN accounts a ON a.id = j.account_id \
             WHERE (j.state = 'queued' OR (j.state = 'running' AND j.lease_expires_at < $1)) \
             AND (SELECT count(*) FROM jobs r WHERE r.account_id = j.account_id AND r.state = 'running' \
                  AND r.lease_expires_at >= $1) < (CASE WHEN a.balance_blocked = 1 THEN 1 ELSE a.max_concurrent_jobs END) \
             ORDER BY j.id LIMIT 1{lock}"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(candidate) = candidate else {
            return Ok(Some(None));
        };
        let job_id: String = candidate.try_get("id")?;
        let account_id: String = candidate.try_get("account_id")?;
        if self.backend == Backend::Postgres {
            // Serialise claims per account, then count again: another node may have
            // claimed a job of this account since the candidate query's snapshot.
            sqlx::query("UPDATE accounts SET lock_version = lock_version + 1 WHERE id = $1")
                .bind(&account_id)
                .execute(&mut *tx)
                .await?;
            let has_room: i64 = sqlx::query_scalar(
                "SELECT CAST(CASE WHEN (SELECT count(*) FROM jobs r WHERE r.account_id = $1 AND r.state = 'running' \
                 AND r.lease_expires_at >= $2) < (CASE WHEN a.balance_blocked = 1 THEN 1 ELSE a.max_concurrent_jobs END) THEN 1 ELSE 0 END AS BIGINT) FROM accounts a WHERE a.id = $1",
            )
            .bind(&account_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if has_room == 0 {
                return Ok(None);
            }
        }
        let claimed = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires_at = $3, attempts = attempts + 1 \
             WHERE id = $1 AND (state = 'queued' OR (state = 'running' AND lease_expires_at < $4)) RETURNING transcript_id, attempts",
        )
        .bind(&job_id)
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        let transcript_id: String = claimed.try_get("transcript_id")?;
        let attempts: i64 = claimed.try_get("attempts")?;
        sqlx::query(
            "UPDATE transcripts SET status = 'processing' WHERE id = $1 AND status = 'queued'",
        )
        .bind(&transcript_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("{TRANSCRIPT_SELECT} WHERE t.id = $1"))
            .bind(&transcript_id)
            .fetch_one(&mut *tx)
            .await?;
        let transcript = transcript_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(Some(ClaimedJob {
            job_id,
            transcript,
            attempts,
        })))
    }
}

#[async_trait]
impl JobStore for SqlStore {
    async fn claim_job(&self, worker: &str, lease_ms: i64) -> StoreResult<Option<ClaimedJob>> {
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(result) = self.try_claim(worker, lease_ms).await? {
                return Ok(result);
            }
        }
        Ok(None)
    }

    async fn queued_jobs(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn extend_lease(&self, job_id: &str, worker: &str, lease_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(job_id)
        .bind(worker)
        .bind(self.now() + lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_job(
        &self,
        job_id: &str,
        worker: &str,
        outcome: JobOutcome,
        webhook: Option<NewWebhook>,
    ) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        // First statement writes: on SQLite it takes the write lock before any read.
        let released = sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING transcript_id, account_id",
        )
        .bind(job_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(released) = released else {
            // The lease was lost (expired and claimed by another worker): discard.
            return Ok(false);
        };
        let transcript_id: String = released.try_get("transcript_id")?;
        let updated = match &outcome {
            JobOutcome::Completed { result_json, speech_model_used, audio_duration, .. } => {
                sqlx::query(
                    "UPDATE transcripts SET status = 'completed', result = $2, speech_model_used = $3, audio_duration = $4, \
                     error = NULL, completed_at = $5 WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(&transcript_id)
                .bind(result_json)
                .bind(speech_model_used)
                .bind(*audio_duration)
                .bind(now)
                .execute(&mut *tx)
                .await?
            }
            JobOutcome::Failed { error } => {
                sqlx::query(
                    "UPDATE transcripts SET status = 'error', error = $2, completed_at = $3 WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(&transcript_id)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?
            }
        };
        let live = updated.rows_affected() == 1;
        let mut charged = None;
        if live {
            if let JobOutcome::Completed { usage, .. } = &outcome {
                charged = self
                    .insert_usage(&mut tx, usage, now)
                    .await?
                    .map(|c| (usage.account_id, c.refusal_changed));
            }
            if let Some(webhook) = webhook {
                let row =
                    sqlx::query("SELECT account_id, project_id FROM transcripts WHERE id = $1")
                        .bind(&transcript_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let account: String = row.try_get("account_id")?;
                let project: String = row.try_get("project_id")?;
                crate::webhooks::insert_delivery(
                    &mut tx,
                    &account,
                    &project,
                    Some(&transcript_id),
                    &webhook,
                    now,
                )
                .await?;
            }
        }
        match charged {
            Some((account, refusal_changed)) => {
                self.balance_committed(tx, account, refusal_changed).await?
            }
            None => tx.commit().await?,
        }
        Ok(true)
    }
}
