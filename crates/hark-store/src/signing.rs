//! Each project's webhook signing secret (sealed under the master key with the project
//! id as context): read by the sender, revealed (audited) and rotated with an overlap
//! during which the former secret still signs beside the new one.

use crate::ledger::append_audit;
use crate::*;
use hark_core::clock::Millis;
use serde_json::json;
use sqlx::Row;

/// A project's signing secrets as stored (sealed). After a rotation, `previous_sealed`
/// signs beside `current_sealed` until `previous_until`; one former secret is kept, so
/// a second rotation within the overlap retires the oldest at once.
#[derive(Clone, PartialEq)]
pub struct WebhookSigningSecrets {
    pub project_id: ProjectId,
    pub current_sealed: String,
    pub previous_sealed: Option<String>,
    pub previous_until: Option<Millis>,
    pub rotated_at: Option<Millis>,
}

impl WebhookSigningSecrets {
    /// The former secret while its overlap lasts at `now`.
    pub fn previous_at(&self, now: Millis) -> Option<&str> {
        match (&self.previous_sealed, self.previous_until) {
            (Some(sealed), Some(until)) if now < until => Some(sealed.as_str()),
            _ => None,
        }
    }
}

impl std::fmt::Debug for WebhookSigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSigningSecrets")
            .field("project_id", &self.project_id)
            .field("previous_until", &self.previous_until)
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait SigningSecretStore: Send + Sync {
    /// The project's sealed signing secrets (`None` when there is no such project).
    async fn webhook_signing_secrets(
        &self,
        project: ProjectId,
    ) -> StoreResult<Option<WebhookSigningSecrets>>;
    /// The same, with the reveal audited (`webhook_secret.reveal`) in one transaction.
    async fn reveal_webhook_secrets(
        &self,
        project: ProjectId,
        actor: &Actor,
    ) -> StoreResult<WebhookSigningSecrets>;
    /// Makes `new_sealed` the current secret; the former one keeps signing for
    /// `overlap_ms` (0: retired at once). Audited as `webhook_secret.rotate`.
    async fn rotate_webhook_secret(
        &self,
        project: ProjectId,
        new_sealed: &str,
        overlap_ms: Millis,
        actor: &Actor,
    ) -> StoreResult<WebhookSigningSecrets>;
}

const SECRETS_SELECT: &str = "SELECT id, webhook_secret_sealed, webhook_secret_previous_sealed, \
     webhook_secret_previous_until, webhook_secret_rotated_at FROM projects WHERE id = $1";

fn secrets_from_row(row: &sqlx::any::AnyRow) -> StoreResult<WebhookSigningSecrets> {
    Ok(WebhookSigningSecrets {
        project_id: crate::sql::parse_id(row, "id", ProjectId::parse)?,
        current_sealed: row.try_get("webhook_secret_sealed")?,
        previous_sealed: row.try_get("webhook_secret_previous_sealed")?,
        previous_until: row.try_get("webhook_secret_previous_until")?,
        rotated_at: row.try_get("webhook_secret_rotated_at")?,
    })
}

impl SqlStore {
    async fn project_or_missing(&self, project: ProjectId) -> StoreResult<Project> {
        self.get_project(project)
            .await?
            .ok_or(StoreError::NotFound("project"))
    }
}

#[async_trait]
impl SigningSecretStore for SqlStore {
    async fn webhook_signing_secrets(
        &self,
        project: ProjectId,
    ) -> StoreResult<Option<WebhookSigningSecrets>> {
        let row = sqlx::query(SECRETS_SELECT)
            .bind(project.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(secrets_from_row).transpose()
    }

    async fn reveal_webhook_secrets(
        &self,
        project: ProjectId,
        actor: &Actor,
    ) -> StoreResult<WebhookSigningSecrets> {
        let now = self.now();
        let p = self.project_or_missing(project).await?;
        let (mut tx, _) = self.begin_for_account(p.account_id).await?;
        let row = sqlx::query(SECRETS_SELECT)
            .bind(project.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let secrets = secrets_from_row(&row)?;
        append_audit(
            &mut tx,
            Some(p.account_id),
            actor,
            "webhook_secret.reveal",
            &project.to_string(),
            json!({"project_id": project}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(secrets)
    }

    async fn rotate_webhook_secret(
        &self,
        project: ProjectId,
        new_sealed: &str,
        overlap_ms: Millis,
        actor: &Actor,
    ) -> StoreResult<WebhookSigningSecrets> {
        let now = self.now();
        let p = self.project_or_missing(project).await?;
        let (mut tx, _) = self.begin_for_account(p.account_id).await?;
        let overlap_ms = overlap_ms.max(0);
        let (previous, until) = if overlap_ms > 0 {
            (Some("webhook_secret_sealed"), Some(now + overlap_ms))
        } else {
            (None, None)
        };
        let updated = sqlx::query(&format!(
            "UPDATE projects SET webhook_secret_previous_sealed = {}, \
             webhook_secret_previous_until = $2, webhook_secret_sealed = $3, \
             webhook_secret_rotated_at = $4 WHERE id = $1",
            previous.unwrap_or("NULL")
        ))
        .bind(project.to_string())
        .bind(until)
        .bind(new_sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("project"));
        }
        append_audit(
            &mut tx,
            Some(p.account_id),
            actor,
            "webhook_secret.rotate",
            &project.to_string(),
            json!({"project_id": project, "overlap_seconds": overlap_ms / 1000}),
            now,
        )
        .await?;
        let row = sqlx::query(SECRETS_SELECT)
            .bind(project.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let secrets = secrets_from_row(&row)?;
        tx.commit().await?;
        Ok(secrets)
    }
}
