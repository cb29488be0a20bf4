//! Accounts, members, projects and API keys, with plan limits enforced atomically.

use crate::ledger::append_audit;
use crate::sql::{
    is_unique_violation, limits_from_row, parse_id, AccountRow, ACCOUNT_SELECT_BY_ID,
};
use crate::*;
use hark_core::clock::Millis;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

const PROJECT_COLUMNS: &str = "id, account_id, name, created_at";
const KEY_COLUMNS: &str =
    "id, account_id, project_id, name, masked, created_by, created_at, expires_at, revoked_at, last_used_at, scopes, replaced_by";

fn project_from_row(row: &AnyRow) -> StoreResult<Project> {
    Ok(Project {
        id: parse_id(row, "id", ProjectId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: parse_id(row, "id", ApiKeyId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        project_id: parse_id(row, "project_id", ProjectId::parse)?,
        name: row.try_get("name")?,
        masked: row.try_get("masked")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        scopes: scopes_from_row(row)?,
        replaced_by: crate::sql::parse_opt_id(row, "replaced_by", ApiKeyId::parse)?,
    })
}

pub(crate) fn scopes_from_row(row: &AnyRow) -> StoreResult<Vec<hark_core::scope::Scope>> {
    let stored: String = row.try_get("scopes")?;
    hark_core::scope::decode(&stored).map_err(StoreError::Corrupt)
}

impl SqlStore {
    /// Inserts an account with its Owner (an existing user with that email, or a new one
    /// with `owner_password_hash`) and first project, audited, inside `tx`. With a
    /// password hash the email must be new (`Conflict` otherwise): a sign-up never
    /// takes over someone's login.
    pub(crate) async fn insert_account(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        new: NewAccount,
        owner_password_hash: Option<&str>,
        actor: &Actor,
        now: Millis,
    ) -> StoreResult<Bootstrap> {
        let limits = new.plan.default_limits();
        let email = new.owner_email.trim().to_lowercase();
        sqlx::query(
            "INSERT INTO accounts (id, name, plan, limit_overrides, max_projects, max_api_keys, max_members, \
             max_concurrent_jobs, max_stream_sessions_per_minute, created_at) VALUES ($1, $2, $3, '{}', $4, $5, $6, $7, $8, $9)",
        )
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(new.plan.as_str())
        .bind(i64::from(limits.projects))
        .bind(i64::from(limits.api_keys))
        .bind(i64::from(limits.members))
        .bind(i64::from(limits.concurrent_jobs))
        .bind(i64::from(limits.streaming_sessions_per_minute))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // The owner may already exist (a person can belong to several accounts).
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&mut **tx)
            .await?;
        let owner = match existing {
            Some(_) if owner_password_hash.is_some() => {
                return Err(StoreError::Conflict(
                    "a user with this email exists: sign in instead".into(),
                ))
            }
            Some(id) => UserId::parse(&id).ok_or_else(|| StoreError::Corrupt("users.id".into()))?,
            None => {
                sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(new.owner_id.to_string())
                    .bind(&email)
                    .bind(owner_password_hash)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                new.owner_id
            }
        };
        sqlx::query("INSERT INTO memberships (account_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(new.id.to_string())
            .bind(owner.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        let project = Self::insert_project(tx, new.id, &new.project, now).await?;
        self.change_balance(tx, new.id, 0, 0, now).await?;
        if new.plan == Plan::Free && self.evaluation_credit > 0 {
            self.insert_credit(
                tx,
                new.id,
                self.evaluation_credit,
                crate::billing::CreditKind::Evaluation,
                "evaluation credit",
                &Actor::System,
                now,
            )
            .await?;
        }
        append_audit(
            tx,
            Some(new.id),
            actor,
            "account.create",
            &new.id.to_string(),
            json!({"name": new.name, "plan": new.plan.as_str(), "owner_email": email, "project_id": project.id}),
            now,
        )
        .await?;
        let row = sqlx::query(ACCOUNT_SELECT_BY_ID)
            .bind(new.id.to_string())
            .fetch_one(&mut **tx)
            .await?;
        let account = AccountRow::decode(&row)?.0;
        Ok(Bootstrap {
            account,
            owner,
            project,
        })
    }

    async fn insert_project(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        account: AccountId,
        new: &NewProject,
        now: Millis,
    ) -> StoreResult<Project> {
        sqlx::query(
            "INSERT INTO projects (id, account_id, name, webhook_secret_sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new.id.to_string())
        .bind(account.to_string())
        .bind(&new.name)
        .bind(&new.webhook_secret_sealed)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(Project {
            id: new.id,
            account_id: account,
            name: new.name.clone(),
            created_at: now,
        })
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, new: NewAccount, actor: &Actor) -> StoreResult<Bootstrap> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let boot = self.insert_account(&mut tx, new, None, actor, now).await?;
        tx.commit().await?;
        Ok(boot)
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        let row = sqlx::query(ACCOUNT_SELECT_BY_ID)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| AccountRow::decode(&r).map(|a| a.0)).transpose()
    }

    async fn set_plan(
        &self,
        id: AccountId,
        plan: Plan,
        overrides: LimitOverrides,
        actor: &Actor,
    ) -> StoreResult<Account> {
        let now = self.now();
        let (mut tx, before) = self.begin_for_account(id).await?;
        let limits = overrides.apply(plan.default_limits());
        let overrides_json = serde_json::to_string(&overrides)
            .map_err(|e| StoreError::Corrupt(format!("overrides: {e}")))?;
        sqlx::query(
            "UPDATE accounts SET plan = $2, limit_overrides = $3, max_projects = $4, max_api_keys = $5, max_members = $6, \
             max_concurrent_jobs = $7, max_stream_sessions_per_minute = $8 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(plan.as_str())
        .bind(&overrides_json)
        .bind(i64::from(limits.projects))
        .bind(i64::from(limits.api_keys))
        .bind(i64::from(limits.members))
        .bind(i64::from(limits.concurrent_jobs))
        .bind(i64::from(limits.streaming_sessions_per_minute))
        .execute(&mut *tx)
        .await?;
        // Invoiced plans are never refused for balance; prepaid ones are below zero.
        self.sync_balance_block(&mut tx, id).await?;
        // Cached principals carry the account's limits.
        self.bump_auth_epoch(&mut tx, CredentialChange::Account(id))
            .await?;
        append_audit(
            &mut tx,
            Some(id),
            actor,
            "account.set_plan",
            &id.to_string(),
            json!({"from": before.0.plan.as_str(), "to": plan.as_str(), "limits": limits}),
            now,
        )
        .await?;
        let row = sqlx::query(ACCOUNT_SELECT_BY_ID)
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let account = AccountRow::decode(&row)?.0;
        self.commit_change(tx, CredentialChange::Account(id))
            .await?;
        Ok(account)
    }

    async fn members(&self, id: AccountId) -> StoreResult<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT m.account_id, m.user_id, u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.account_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(Membership {
                    account_id: parse_id(r, "account_id", AccountId::parse)?,
                    user_id: parse_id(r, "user_id", UserId::parse)?,
                    email: r.try_get("email")?,
                    role: role.parse().map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    async fn create_project(
        &self,
        account: AccountId,
        new: NewProject,
        actor: &Actor,
    ) -> StoreResult<Project> {
        let now = self.now();
        let (mut tx, acct) = self.begin_for_account(account).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE account_id = $1")
            .bind(account.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let limit = i64::from(acct.0.limits.projects);
        if count >= limit {
            return Err(StoreError::LimitReached {
                plan: acct.0.plan,
                what: hark_core::plan::Limit::Projects,
                limit,
            });
        }
        let project = Self::insert_project(&mut tx, account, &new, now).await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "project.create",
            &new.id.to_string(),
            json!({"name": new.name}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(project)
    }

    async fn list_projects(&self, account: AccountId) -> StoreResult<Vec<Project>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn get_project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn project_webhook_secret(&self, id: ProjectId) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT webhook_secret_sealed FROM projects WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// Inserts a key row (a digest collision is a conflict, not a database error).
pub(crate) async fn insert_api_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewApiKey,
    account: AccountId,
    project: ProjectId,
    now: Millis,
) -> StoreResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, account_id, project_id, name, digest, sealed, masked, created_by, created_at, expires_at, scopes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(new.id.to_string())
    .bind(account.to_string())
    .bind(project.to_string())
    .bind(&new.name)
    .bind(&new.digest_hex)
    .bind(&new.sealed)
    .bind(&new.masked)
    .bind(&new.created_by)
    .bind(now)
    .bind(new.expires_at)
    .bind(hark_core::scope::encode(&new.scopes))
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("duplicate key".into())),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn create_api_key(&self, new: NewApiKey, actor: &Actor) -> StoreResult<ApiKeyRecord> {
        let now = self.now();
        let project = self
            .get_project(new.project_id)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let (mut tx, acct) = self.begin_for_account(project.account_id).await?;
        // Revoked and expired keys, and rotated ones in their grace period, no longer count.
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL AND replaced_by IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(project.account_id.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let limit = i64::from(acct.0.limits.api_keys);
        if count >= limit {
            return Err(StoreError::LimitReached {
                plan: acct.0.plan,
                what: hark_core::plan::Limit::ApiKeys,
                limit,
            });
        }
        insert_api_key(&mut tx, &new, project.account_id, new.project_id, now).await?;
        append_audit(
            &mut tx,
            Some(project.account_id),
            actor,
            "api_key.create",
            &new.id.to_string(),
            json!({"project_id": new.project_id, "name": new.name, "masked": new.masked, "expires_at": new.expires_at, "scopes": hark_core::scope::encode(&new.scopes)}),
            now,
        )
        .await?;
        // Told to every node (no epoch bump: nothing cached is stale), so a node that
        // remembers this key's digest as unknown forgets that at once.
        self.notify_change(&mut tx, CredentialChange::Key(new.id))
            .await?;
        self.commit_change(tx, CredentialChange::Key(new.id))
            .await?;
        Ok(ApiKeyRecord {
            id: new.id,
            account_id: project.account_id,
            project_id: new.project_id,
            name: new.name,
            masked: new.masked,
            created_by: new.created_by,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
            scopes: new.scopes,
            replaced_by: None,
        })
    }

    async fn list_api_keys(&self, project: ProjectId) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 ORDER BY id"
        ))
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_api_key(&self, id: ApiKeyId, actor: &Actor) -> StoreResult<ApiKeyRecord> {
        let now = self.now();
        let key = self
            .get_api_key(id)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        let (mut tx, _) = self.begin_for_account(key.account_id).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.bump_auth_epoch(&mut tx, CredentialChange::Key(id))
            .await?;
        append_audit(
            &mut tx,
            Some(key.account_id),
            actor,
            "api_key.revoke",
            &id.to_string(),
            json!({"project_id": key.project_id, "masked": key.masked}),
            now,
        )
        .await?;
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let record = key_from_row(&row)?;
        self.commit_change(tx, CredentialChange::Key(id)).await?;
        Ok(record)
    }

    async fn principal_by_digest(&self, digest_hex: &str) -> StoreResult<Option<KeyPrincipal>> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.project_id, k.digest, k.expires_at, k.revoked_at, k.scopes, a.max_projects, a.max_api_keys, \
             a.max_members, a.max_concurrent_jobs, a.max_stream_sessions_per_minute, a.balance_blocked \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.digest = $1",
        )
        .bind(digest_hex)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        // The index found it; compare in constant time anyway, so the answer does not
        // depend on how much of a guessed digest matched.
        let stored: String = row.try_get("digest")?;
        let (Some(stored), Some(given)) = (
            hark_core::keys::SecretDigest::from_hex(&stored),
            hark_core::keys::SecretDigest::from_hex(digest_hex),
        ) else {
            return Ok(None);
        };
        if !stored.ct_eq(&given) {
            return Ok(None);
        }
        Ok(Some(KeyPrincipal {
            key_id: parse_id(&row, "id", ApiKeyId::parse)?,
            account_id: parse_id(&row, "account_id", AccountId::parse)?,
            project_id: parse_id(&row, "project_id", ProjectId::parse)?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            limits: limits_from_row(&row)?,
            scopes: scopes_from_row(&row)?,
            balance_blocked: row.try_get::<i64, _>("balance_blocked")? != 0,
        }))
    }

    async fn touch_last_used(&self, uses: &[(ApiKeyId, Millis)]) -> StoreResult<()> {
        for (id, at) in uses {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
                .bind(id.to_string())
                .bind(*at)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn auth_epoch(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT epoch FROM auth_epoch WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn master_key_check(&self, proposed: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO cluster_settings (name, value) VALUES ('master_key_check', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(proposed)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar(
                "SELECT value FROM cluster_settings WHERE name = 'master_key_check'",
            )
            .fetch_one(&self.pool)
            .await?,
        )
    }

    fn credential_bus(&self) -> Arc<CredentialBus> {
        self.bus.clone()
    }

    async fn listen_for_credential_changes(&self) {
        self.run_credential_listener().await;
    }
}
