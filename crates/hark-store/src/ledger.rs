//! The append-only ledgers: the hash-chained audit log and the usage events.

use crate::sql::parse_id;
use crate::*;
use hark_core::clock::Millis;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

/// The chain's starting point for every account.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_key(account: Option<AccountId>) -> String {
    account.map(|a| a.to_string()).unwrap_or_default()
}

/// Length-prefixed fields, so no choice of field contents can collide with another.
#[allow(clippy::too_many_arguments)]
fn entry_hash(
    prev: &str,
    account: &str,
    seq: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    created_at: Millis,
) -> String {
    let mut h = Sha256::new();
    for field in [
        prev.as_bytes(),
        account.as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.update(seq.to_le_bytes());
    h.update(created_at.to_le_bytes());
    hex::encode(h.finalize())
}

/// Appends an audit entry inside the caller's transaction, so it commits with the
/// change it records. The caller's transaction already holds the account's lock.
pub(crate) async fn append_audit(
    tx: &mut Transaction<'static, Any>,
    account: Option<AccountId>,
    actor: &Actor,
    action: &str,
    target: &str,
    details: serde_json::Value,
    now: Millis,
) -> StoreResult<()> {
    let key = chain_key(account);
    let last = sqlx::query(
        "SELECT seq, hash FROM audit_log WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(&key)
    .fetch_optional(&mut **tx)
    .await?;
    let (seq, prev) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")? + 1,
            row.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_string()),
    };
    let details = details.to_string();
    let actor = actor.label();
    let hash = entry_hash(&prev, &key, seq, &actor, action, target, &details, now);
    sqlx::query(
        "INSERT INTO audit_log (id, account_id, seq, actor, action, target, details, created_at, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(AuditId::new().to_string())
    .bind(&key)
    .bind(seq)
    .bind(&actor)
    .bind(action)
    .bind(target)
    .bind(&details)
    .bind(now)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

use hark_core::AuditId;

#[async_trait]
impl AuditStore for SqlStore {
    async fn audit_entries(&self, account: Option<AccountId>) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT account_id, seq, actor, action, target, details, created_at, hash FROM audit_log \
             WHERE account_id = $1 ORDER BY seq",
        )
        .bind(chain_key(account))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                let acct: String = r.try_get("account_id")?;
                Ok(AuditEntry {
                    account_id: AccountId::parse(&acct),
                    seq: r.try_get("seq")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                    created_at: r.try_get("created_at")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn verify_audit_chain(
        &self,
        account: Option<AccountId>,
    ) -> StoreResult<Result<usize, String>> {
        let key = chain_key(account);
        let rows = sqlx::query(
            "SELECT seq, actor, action, target, details, created_at, prev_hash, hash FROM audit_log \
             WHERE account_id = $1 ORDER BY seq",
        )
        .bind(&key)
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS.to_string();
        for (i, r) in rows.iter().enumerate() {
            let seq: i64 = r.try_get("seq")?;
            let expected_seq = i as i64 + 1;
            if seq != expected_seq {
                return Ok(Err(format!(
                    "entry {expected_seq} is missing (found {seq} next)"
                )));
            }
            let stored_prev: String = r.try_get("prev_hash")?;
            let stored_hash: String = r.try_get("hash")?;
            let computed = entry_hash(
                &prev,
                &key,
                seq,
                &r.try_get::<String, _>("actor")?,
                &r.try_get::<String, _>("action")?,
                &r.try_get::<String, _>("target")?,
                &r.try_get::<String, _>("details")?,
                r.try_get("created_at")?,
            );
            if stored_prev != prev || stored_hash != computed {
                return Ok(Err(format!("entry {seq} was altered")));
            }
            prev = stored_hash;
        }
        Ok(Ok(rows.len()))
    }
}

pub(crate) async fn insert_usage(
    tx: &mut Transaction<'static, Any>,
    event: &NewUsageEvent,
    now: Millis,
) -> StoreResult<bool> {
    let result = sqlx::query(
        "INSERT INTO usage_events (id, idempotency_key, account_id, project_id, api_key_id, product, model, \
         audio_seconds, session_seconds, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&event.idempotency_key)
    .bind(event.account_id.to_string())
    .bind(event.project_id.to_string())
    .bind(event.api_key_id.to_string())
    .bind(&event.product)
    .bind(&event.model)
    .bind(event.audio_seconds)
    .bind(event.session_seconds)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(&self, event: NewUsageEvent) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_usage(&mut tx, &event, self.now()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn usage_events(&self, account: AccountId) -> StoreResult<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT idempotency_key, account_id, project_id, api_key_id, product, model, audio_seconds, session_seconds, \
             created_at FROM usage_events WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageEvent {
                    event: NewUsageEvent {
                        idempotency_key: r.try_get("idempotency_key")?,
                        account_id: parse_id(r, "account_id", AccountId::parse)?,
                        project_id: parse_id(r, "project_id", ProjectId::parse)?,
                        api_key_id: parse_id(r, "api_key_id", ApiKeyId::parse)?,
                        product: r.try_get("product")?,
                        model: r.try_get("model")?,
                        audio_seconds: r.try_get("audio_seconds")?,
                        session_seconds: r.try_get("session_seconds")?,
                    },
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
