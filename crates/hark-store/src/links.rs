//! One-time links: the first-run setup link, the set-password link of `hark admin
//! init`, and mailed password resets. Tokens are stored as digests; using a link is
//! atomic with what it does (the account it creates, the password it sets), so a link
//! works exactly once.

use crate::ledger::append_audit;
use crate::members::insert_mail;
use crate::sql::parse_opt_id;
use crate::*;
use hark_core::clock::Millis;
use hark_core::UserId;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What a one-time link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// First run: creates the first account and its Owner.
    Setup,
    /// An Owner made by `hark admin init` chooses a password.
    SetPassword,
    /// "Forgot password", by mail.
    PasswordReset,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Setup => "setup",
            LinkPurpose::SetPassword => "set_password",
            LinkPurpose::PasswordReset => "password_reset",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "setup" => Ok(LinkPurpose::Setup),
            "set_password" => Ok(LinkPurpose::SetPassword),
            "password_reset" => Ok(LinkPurpose::PasswordReset),
            other => Err(StoreError::Corrupt(format!("auth_links.purpose '{other}'"))),
        }
    }
}

/// A stored link (never its token).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthLink {
    pub id: String,
    pub purpose: LinkPurpose,
    pub user_id: Option<UserId>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub used_at: Option<Millis>,
}

impl AuthLink {
    /// Not used and not expired at `now`.
    pub fn usable(&self, now: Millis) -> bool {
        self.used_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Clone)]
pub struct NewAuthLink {
    pub purpose: LinkPurpose,
    pub user_id: Option<UserId>,
    pub digest_hex: String,
    pub expires_at: Option<Millis>,
}

fn link_from_row(row: &AnyRow) -> StoreResult<AuthLink> {
    let purpose: String = row.try_get("purpose")?;
    Ok(AuthLink {
        id: row.try_get("id")?,
        purpose: LinkPurpose::parse(&purpose)?,
        user_id: parse_opt_id(row, "user_id", UserId::parse)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

/// One-time links and the account creations that do not come from the operator.
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// How many accounts exist (first run is when there are none).
    async fn account_count(&self) -> StoreResult<i64>;
    /// Stores a link, with its mail (a reset) in the same transaction, audited.
    async fn create_auth_link(&self, new: NewAuthLink, mail: Option<Mail>)
        -> StoreResult<AuthLink>;
    /// The link whose digest this is, in whatever state (the caller checks `usable`).
    async fn auth_link(&self, digest_hex: &str) -> StoreResult<Option<AuthLink>>;
    /// Uses a set-password or reset link: sets the user's password and ends all their
    /// sessions, once. `NotFound("link")` when the link is unusable or of another kind.
    async fn use_password_link(
        &self,
        digest_hex: &str,
        purpose: LinkPurpose,
        password_hash: &str,
    ) -> StoreResult<UserId>;
    /// Uses the setup link: creates the first account with its Owner (with this
    /// password), once, and only while no account exists (`Conflict` otherwise).
    async fn use_setup_link(
        &self,
        digest_hex: &str,
        new: NewAccount,
        password_hash: &str,
    ) -> StoreResult<Bootstrap>;
    /// Self-service sign-up: a new account whose Owner is a new user with this
    /// password (`Conflict` when the email is taken).
    async fn create_account_with_owner(
        &self,
        new: NewAccount,
        password_hash: &str,
    ) -> StoreResult<Bootstrap>;
}

impl SqlStore {
    /// Marks the link used if it is usable and of `purpose`; the link as it was.
    async fn take_link(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        digest_hex: &str,
        purpose: LinkPurpose,
        now: Millis,
    ) -> StoreResult<AuthLink> {
        let row = sqlx::query(
            "SELECT id, purpose, user_id, created_at, expires_at, used_at FROM auth_links WHERE digest = $1",
        )
        .bind(digest_hex)
        .fetch_optional(&mut **tx)
        .await?;
        let link = row
            .as_ref()
            .map(link_from_row)
            .transpose()?
            .filter(|l| l.purpose == purpose && l.usable(now))
            .ok_or(StoreError::NotFound("link"))?;
        // The guard in the WHERE clause makes a concurrent second use lose.
        let taken =
            sqlx::query("UPDATE auth_links SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                .bind(&link.id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        if taken.rows_affected() != 1 {
            return Err(StoreError::NotFound("link"));
        }
        Ok(link)
    }
}

#[async_trait]
impl LinkStore for SqlStore {
    async fn account_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM accounts")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_auth_link(
        &self,
        new: NewAuthLink,
        mail: Option<Mail>,
    ) -> StoreResult<AuthLink> {
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_links (id, purpose, user_id, digest, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(new.purpose.as_str())
        .bind(new.user_id.map(|u| u.to_string()))
        .bind(&new.digest_hex)
        .bind(now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some(mail) = &mail {
            insert_mail(&mut tx, mail, now).await?;
        }
        append_audit(
            &mut tx,
            None,
            &Actor::System,
            "auth_link.create",
            &new.user_id.map(|u| u.to_string()).unwrap_or_default(),
            json!({"link_id": id, "purpose": new.purpose.as_str(), "expires_at": new.expires_at}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(AuthLink {
            id,
            purpose: new.purpose,
            user_id: new.user_id,
            created_at: now,
            expires_at: new.expires_at,
            used_at: None,
        })
    }

    async fn auth_link(&self, digest_hex: &str) -> StoreResult<Option<AuthLink>> {
        let row = sqlx::query(
            "SELECT id, purpose, user_id, created_at, expires_at, used_at FROM auth_links WHERE digest = $1",
        )
        .bind(digest_hex)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    async fn use_password_link(
        &self,
        digest_hex: &str,
        purpose: LinkPurpose,
        password_hash: &str,
    ) -> StoreResult<UserId> {
        if purpose == LinkPurpose::Setup {
            return Err(StoreError::NotFound("link"));
        }
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let link = Self::take_link(&mut tx, digest_hex, purpose, now).await?;
        let user = link.user_id.ok_or(StoreError::NotFound("link"))?;
        let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user.to_string())
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("link"));
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        // Any other reset link of this user is void once the password changed.
        sqlx::query("UPDATE auth_links SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(user.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            None,
            &Actor::User(user),
            "user.password_set_by_link",
            &user.to_string(),
            json!({"link_id": link.id, "purpose": purpose.as_str()}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn use_setup_link(
        &self,
        digest_hex: &str,
        new: NewAccount,
        password_hash: &str,
    ) -> StoreResult<Bootstrap> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        Self::take_link(&mut tx, digest_hex, LinkPurpose::Setup, now).await?;
        let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?;
        if accounts > 0 {
            return Err(StoreError::Conflict(
                "this installation is already set up: sign in instead".into(),
            ));
        }
        let owner = new.owner_id;
        let boot = self
            .insert_account(&mut tx, new, Some(password_hash), &Actor::User(owner), now)
            .await?;
        tx.commit().await?;
        Ok(boot)
    }

    async fn create_account_with_owner(
        &self,
        new: NewAccount,
        password_hash: &str,
    ) -> StoreResult<Bootstrap> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let owner = new.owner_id;
        let boot = self
            .insert_account(&mut tx, new, Some(password_hash), &Actor::User(owner), now)
            .await?;
        tx.commit().await?;
        Ok(boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_until_used_or_expired() {
        let mut link = AuthLink {
            id: "x".into(),
            purpose: LinkPurpose::Setup,
            user_id: None,
            created_at: 0,
            expires_at: None,
            used_at: None,
        };
        assert!(link.usable(10));
        link.expires_at = Some(10);
        assert!(!link.usable(10));
        assert!(link.usable(9));
        link.used_at = Some(5);
        assert!(!link.usable(9));
    }
}
