//! Management writes over projects, keys and whole accounts that go beyond creation:
//! rename and delete a project, delete an account, rotate and reveal keys, and the
//! filtered audit-log query the management API serves.

use crate::ledger::append_audit;
use crate::*;
use hark_core::clock::Millis;
use serde_json::json;
use sqlx::Row;

/// Filters of the audit-log query; entries come in `seq` order after `after_seq`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action_prefix: Option<String>,
    pub actor: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub after_seq: Option<i64>,
    pub limit: u32,
}

/// A key's traffic: transcripts it created and the audio it was billed for (seconds,
/// rounded to the millisecond).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyTraffic {
    pub transcripts: i64,
    pub audio_seconds: f64,
}

/// What a deletion left for the caller to remove from disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deleted {
    pub upload_paths: Vec<String>,
}

#[async_trait]
pub trait ManageStore: Send + Sync {
    async fn rename_project(
        &self,
        project: ProjectId,
        name: &str,
        actor: &Actor,
    ) -> StoreResult<Project>;
    /// Deletes the project with its keys (bumping the auth epoch), uploads, transcripts,
    /// jobs and webhooks; returns the upload files to remove.
    async fn delete_project(&self, project: ProjectId, actor: &Actor) -> StoreResult<Deleted>;
    /// Deletes the account and everything in it if `user` is its only member.
    async fn delete_account(&self, account: AccountId, actor: &Actor) -> StoreResult<Deleted>;
    /// Issues `new` as the successor of `old`; `old` keeps working until now + grace.
    async fn rotate_api_key(
        &self,
        old: ApiKeyId,
        new: NewApiKey,
        grace_ms: Millis,
        actor: &Actor,
    ) -> StoreResult<(ApiKeyRecord, ApiKeyRecord)>;
    /// The key's sealed copy, with the reveal audited in the same transaction.
    async fn reveal_api_key(&self, key: ApiKeyId, actor: &Actor) -> StoreResult<String>;
    /// Renames a key and/or replaces its scopes; a scope change reaches every node's
    /// cache at once (the principal carries the scopes).
    async fn update_api_key(
        &self,
        key: ApiKeyId,
        name: Option<&str>,
        scopes: Option<&[hark_core::scope::Scope]>,
        actor: &Actor,
    ) -> StoreResult<ApiKeyRecord>;
    /// Deletes a key that no longer works (revoked, expired, or rotated and past its
    /// grace); a live key must be revoked first (`Conflict`). Transcripts and usage
    /// keep naming its id.
    async fn delete_api_key(&self, key: ApiKeyId, actor: &Actor) -> StoreResult<()>;
    async fn audit_query(
        &self,
        account: AccountId,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes (scrubs) a transcript of `project` as the management API does, audited
    /// as `transcript.delete` in the same transaction; `None` when there is none.
    async fn delete_transcript_as(
        &self,
        project: ProjectId,
        id: TranscriptId,
        actor: &Actor,
    ) -> StoreResult<Option<(Transcript, Option<Upload>)>>;
    /// Traffic per key of the project.
    async fn key_traffic(
        &self,
        project: ProjectId,
    ) -> StoreResult<std::collections::HashMap<ApiKeyId, KeyTraffic>>;
}

async fn upload_paths(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    column: &str,
    id: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(&format!("SELECT path FROM uploads WHERE {column} = $1"))
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("path")?)).collect()
}

#[async_trait]
impl ManageStore for SqlStore {
    async fn rename_project(
        &self,
        project: ProjectId,
        name: &str,
        actor: &Actor,
    ) -> StoreResult<Project> {
        let now = self.now();
        let before = self
            .get_project(project)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let (mut tx, _) = self.begin_for_account(before.account_id).await?;
        sqlx::query("UPDATE projects SET name = $2 WHERE id = $1")
            .bind(project.to_string())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            Some(before.account_id),
            actor,
            "project.rename",
            &project.to_string(),
            json!({"from": before.name, "to": name}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Project {
            name: name.to_string(),
            ..before
        })
    }

    async fn delete_project(&self, project: ProjectId, actor: &Actor) -> StoreResult<Deleted> {
        let now = self.now();
        let before = self
            .get_project(project)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let (mut tx, _) = self.begin_for_account(before.account_id).await?;
        let id = project.to_string();
        let upload_paths = upload_paths(&mut tx, "project_id", &id).await?;
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE project_id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        // Live sessions are billed before their rows go.
        self.close_sessions_of(&mut tx, "project_id", &id, "the project was deleted", now)
            .await?;
        // Children first, so neither backend depends on cascade order.
        for sql in [
            "DELETE FROM webhook_deliveries WHERE project_id = $1",
            "DELETE FROM jobs WHERE transcript_id IN (SELECT id FROM transcripts WHERE project_id = $1)",
            "DELETE FROM transcripts WHERE project_id = $1",
            "DELETE FROM uploads WHERE project_id = $1",
            "DELETE FROM api_keys WHERE project_id = $1",
            "DELETE FROM projects WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        self.bump_auth_epoch(&mut tx, CredentialChange::Project(project))
            .await?;
        append_audit(
            &mut tx,
            Some(before.account_id),
            actor,
            "project.delete",
            &id,
            json!({"name": before.name, "keys_revoked": keys, "uploads": upload_paths.len()}),
            now,
        )
        .await?;
        self.commit_change(tx, CredentialChange::Project(project))
            .await?;
        Ok(Deleted { upload_paths })
    }

    async fn delete_account(&self, account: AccountId, actor: &Actor) -> StoreResult<Deleted> {
        let now = self.now();
        let (mut tx, acct) = self.begin_for_account(account).await?;
        let id = account.to_string();
        let members: i64 =
            sqlx::query_scalar("SELECT count(*) FROM memberships WHERE account_id = $1")
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
        if members > 1 {
            return Err(StoreError::Conflict(format!(
                "the account has {} other member(s); remove them before deleting the account",
                members - 1
            )));
        }
        let upload_paths = upload_paths(&mut tx, "account_id", &id).await?;
        self.close_sessions_of(&mut tx, "account_id", &id, "the account was deleted", now)
            .await?;
        for sql in [
            "DELETE FROM webhook_deliveries WHERE account_id = $1",
            "DELETE FROM jobs WHERE account_id = $1",
            "DELETE FROM transcripts WHERE account_id = $1",
            "DELETE FROM uploads WHERE account_id = $1",
            "DELETE FROM api_keys WHERE account_id = $1",
            "DELETE FROM projects WHERE account_id = $1",
            // Unsent invite mail carries the invite's id (and its token in clear).
            "DELETE FROM outbox WHERE sent_at IS NULL AND id IN (SELECT id FROM invites WHERE account_id = $1)",
            "DELETE FROM invites WHERE account_id = $1",
            "DELETE FROM memberships WHERE account_id = $1",
            "UPDATE sessions SET current_account_id = NULL WHERE current_account_id = $1",
            "DELETE FROM accounts WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        self.bump_auth_epoch(&mut tx, CredentialChange::Account(account))
            .await?;
        // The audit chain outlives the account: it records the deletion.
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "account.delete",
            &id,
            json!({"name": acct.0.name, "uploads": upload_paths.len()}),
            now,
        )
        .await?;
        self.commit_change(tx, CredentialChange::Account(account))
            .await?;
        Ok(Deleted { upload_paths })
    }

    async fn rotate_api_key(
        &self,
        old: ApiKeyId,
        new: NewApiKey,
        grace_ms: Millis,
        actor: &Actor,
    ) -> StoreResult<(ApiKeyRecord, ApiKeyRecord)> {
        let now = self.now();
        let key = self
            .get_api_key(old)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let (mut tx, _) = self.begin_for_account(key.account_id).await?;
        // Re-read under the lock: only a live, not yet rotated key can be rotated.
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL AND replaced_by IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(old.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if live == 0 {
            return Err(StoreError::Conflict(
                "only a live key that has not been rotated can be rotated".into(),
            ));
        }
        let grace_end = now + grace_ms.max(0);
        // The successor takes the old key's place in the count, so no limit check.
        crate::tenancy::insert_api_key(&mut tx, &new, key.account_id, key.project_id, now).await?;
        sqlx::query(
            "UPDATE api_keys SET replaced_by = $2, expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END WHERE id = $1",
        )
        .bind(old.to_string())
        .bind(new.id.to_string())
        .bind(grace_end)
        .execute(&mut *tx)
        .await?;
        self.bump_auth_epoch(&mut tx, CredentialChange::Key(old))
            .await?;
        append_audit(
            &mut tx,
            Some(key.account_id),
            actor,
            "api_key.rotate",
            &old.to_string(),
            json!({"new_key_id": new.id, "grace_ms": grace_ms, "old_expires_at": grace_end, "masked": new.masked}),
            now,
        )
        .await?;
        self.commit_change(tx, CredentialChange::Key(old)).await?;
        let old_rec = self
            .get_api_key(old)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let new_rec = self
            .get_api_key(new.id)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        Ok((old_rec, new_rec))
    }

    async fn delete_transcript_as(
        &self,
        project: ProjectId,
        id: TranscriptId,
        actor: &Actor,
    ) -> StoreResult<Option<(Transcript, Option<Upload>)>> {
        let now = self.now();
        let Some(p) = self.get_project(project).await? else {
            return Ok(None);
        };
        let (mut tx, _) = self.begin_for_account(p.account_id).await?;
        let Some(upload) = crate::transcripts::scrub_transcript(&mut tx, project, id, now).await?
        else {
            return Ok(None);
        };
        append_audit(
            &mut tx,
            Some(p.account_id),
            actor,
            "transcript.delete",
            &id.to_string(),
            json!({"project_id": project}),
            now,
        )
        .await?;
        tx.commit().await?;
        let transcript = self
            .get_transcript(project, id)
            .await?
            .ok_or(StoreError::NotFound("transcript"))?;
        Ok(Some((transcript, upload)))
    }

    async fn reveal_api_key(&self, key: ApiKeyId, actor: &Actor) -> StoreResult<String> {
        let now = self.now();
        let record = self
            .get_api_key(key)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let (mut tx, _) = self.begin_for_account(record.account_id).await?;
        let sealed: String = sqlx::query_scalar("SELECT sealed FROM api_keys WHERE id = $1")
            .bind(key.to_string())
            .fetch_one(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            Some(record.account_id),
            actor,
            "api_key.reveal",
            &key.to_string(),
            json!({"project_id": record.project_id, "masked": record.masked}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(sealed)
    }

    async fn update_api_key(
        &self,
        key: ApiKeyId,
        name: Option<&str>,
        scopes: Option<&[hark_core::scope::Scope]>,
        actor: &Actor,
    ) -> StoreResult<ApiKeyRecord> {
        let now = self.now();
        let before = self
            .get_api_key(key)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let (mut tx, _) = self.begin_for_account(before.account_id).await?;
        let new_name = name.unwrap_or(&before.name);
        let new_scopes = scopes
            .map(<[_]>::to_vec)
            .unwrap_or_else(|| before.scopes.clone());
        sqlx::query("UPDATE api_keys SET name = $2, scopes = $3 WHERE id = $1")
            .bind(key.to_string())
            .bind(new_name)
            .bind(hark_core::scope::encode(&new_scopes))
            .execute(&mut *tx)
            .await?;
        let scopes_changed = new_scopes != before.scopes;
        append_audit(
            &mut tx,
            Some(before.account_id),
            actor,
            "api_key.update",
            &key.to_string(),
            json!({
                "project_id": before.project_id,
                "masked": before.masked,
                "name": {"from": before.name, "to": new_name},
                "scopes": {"from": hark_core::scope::encode(&before.scopes), "to": hark_core::scope::encode(&new_scopes)},
            }),
            now,
        )
        .await?;
        if scopes_changed {
            self.bump_auth_epoch(&mut tx, CredentialChange::Key(key))
                .await?;
            self.commit_change(tx, CredentialChange::Key(key)).await?;
        } else {
            tx.commit().await?;
        }
        Ok(ApiKeyRecord {
            name: new_name.to_string(),
            scopes: new_scopes,
            ..before
        })
    }

    async fn delete_api_key(&self, key: ApiKeyId, actor: &Actor) -> StoreResult<()> {
        let now = self.now();
        let record = self
            .get_api_key(key)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let (mut tx, _) = self.begin_for_account(record.account_id).await?;
        // Re-read under the account lock: a key that still works cannot be deleted.
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(key.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if live > 0 {
            return Err(StoreError::Conflict(
                "revoke the key before deleting it".into(),
            ));
        }
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(key.to_string())
            .execute(&mut *tx)
            .await?;
        self.bump_auth_epoch(&mut tx, CredentialChange::Key(key))
            .await?;
        append_audit(
            &mut tx,
            Some(record.account_id),
            actor,
            "api_key.delete",
            &key.to_string(),
            json!({"project_id": record.project_id, "name": record.name, "masked": record.masked}),
            now,
        )
        .await?;
        self.commit_change(tx, CredentialChange::Key(key)).await?;
        Ok(())
    }

    async fn key_traffic(
        &self,
        project: ProjectId,
    ) -> StoreResult<std::collections::HashMap<ApiKeyId, KeyTraffic>> {
        let mut out: std::collections::HashMap<ApiKeyId, KeyTraffic> = Default::default();
        let rows = sqlx::query(
            "SELECT api_key_id, count(*) AS n FROM transcripts WHERE project_id = $1 GROUP BY api_key_id",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let id = crate::sql::parse_id(r, "api_key_id", ApiKeyId::parse)?;
            out.entry(id).or_default().transcripts = r.try_get("n")?;
        }
        let rows = sqlx::query(
            "SELECT api_key_id, CAST(sum(audio_ms) AS BIGINT) AS s FROM usage_events WHERE project_id = $1 GROUP BY api_key_id",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let id = crate::sql::parse_id(r, "api_key_id", ApiKeyId::parse)?;
            out.entry(id).or_default().audio_seconds =
                r.try_get::<Option<i64>, _>("s")?.unwrap_or(0) as f64 / 1000.0;
        }
        Ok(out)
    }

    async fn audit_query(
        &self,
        account: AccountId,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT account_id, seq, actor, action, target, details, created_at, hash FROM audit_log WHERE account_id = $1 AND seq > $2",
        );
        let mut n = 2;
        let mut binds: Vec<String> = Vec::new();
        let mut nums: Vec<i64> = vec![filter.after_seq.unwrap_or(0)];
        if let Some(a) = &filter.action_prefix {
            n += 1;
            sql.push_str(&format!(" AND substr(action, 1, {}) = ${n}", a.len()));
            binds.push(a.clone());
        }
        if let Some(a) = &filter.actor {
            n += 1;
            sql.push_str(&format!(" AND actor = ${n}"));
            binds.push(a.clone());
        }
        // Numbers after strings, in parameter order.
        let mut num_sql = String::new();
        if let Some(s) = filter.since {
            n += 1;
            num_sql.push_str(&format!(" AND created_at >= ${n}"));
            nums.push(s);
        }
        if let Some(u) = filter.until {
            n += 1;
            num_sql.push_str(&format!(" AND created_at < ${n}"));
            nums.push(u);
        }
        sql.push_str(&num_sql);
        sql.push_str(&format!(
            " ORDER BY seq LIMIT {}",
            filter.limit.clamp(1, 1000)
        ));
        let mut q = sqlx::query(&sql).bind(account.to_string()).bind(nums[0]);
        for b in &binds {
            q = q.bind(b);
        }
        for v in &nums[1..] {
            q = q.bind(*v);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                Ok(AuditEntry {
                    account_id: Some(account),
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
}
