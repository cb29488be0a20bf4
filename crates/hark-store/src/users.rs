//! People: users with passwords, login sessions (stored as digests), TOTP second
//! factors and recovery codes, and failed-login records for throttling.

use crate::ledger::append_audit;
use crate::sql::{is_unique_violation, parse_id, parse_opt_id};
use crate::*;
use hark_core::clock::Millis;
use hark_core::keys::SecretDigest;
use hark_core::{LoginSessionId, UserId};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A person who can sign in.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    /// The name the person gave (empty when they gave none).
    pub name: String,
    /// Argon2id PHC string; `None` for a user who never set a password.
    pub password_hash: Option<String>,
    pub created_at: Millis,
    /// A confirmed TOTP factor exists.
    pub mfa_enabled: bool,
}

/// The audit entry of a failed sign-in (installation log: the subjects name an email and
/// an address, not a secret).
async fn audit_login_failure(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    subjects: &[String],
    user: Option<UserId>,
    reason: &str,
    now: Millis,
) -> StoreResult<()> {
    append_audit(
        tx,
        None,
        &Actor::System,
        "user.login_failed",
        &user.map(|u| u.to_string()).unwrap_or_default(),
        json!({"subjects": subjects, "reason": reason}),
        now,
    )
    .await
}

/// The rows one counted sign-in attempt left (see [`UserStore::begin_login_attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    pub row_ids: Vec<String>,
}

/// A login session as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct LoginSession {
    pub id: LoginSessionId,
    pub user_id: UserId,
    pub csrf_digest: String,
    pub current_account: Option<AccountId>,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// When the person last re-entered a password or TOTP code in this session.
    pub reauth_at: Option<Millis>,
    /// How the session signed in (an account's "Require MFA" admits only
    /// [`SignInMethod::Mfa`]).
    pub signed_in_with: SignInMethod,
}

/// How a login session proved who its person is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMethod {
    /// A password (or a single-use link) alone. Also every session that existed before
    /// the method was recorded: the safe default.
    Password,
    /// A password and a TOTP or recovery code, or a session that confirmed a TOTP
    /// enrolment (it proved the new factor there).
    Mfa,
}

impl SignInMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInMethod::Password => "password",
            SignInMethod::Mfa => "mfa",
        }
    }

    /// The stored text; anything unknown counts as the weaker method.
    pub fn parse(stored: &str) -> Self {
        match stored {
            "mfa" => SignInMethod::Mfa,
            _ => SignInMethod::Password,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: LoginSessionId,
    pub user_id: UserId,
    pub digest_hex: String,
    pub csrf_digest_hex: String,
    pub current_account: Option<AccountId>,
    pub expires_at: Millis,
    pub signed_in_with: SignInMethod,
}

/// A user's TOTP factor: the seed is sealed under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct TotpRecord {
    pub seed_sealed: String,
    pub confirmed_at: Option<Millis>,
    pub last_step: i64,
}

/// Failed-login records older than this are deleted (throttling windows are shorter).
pub const FAILURE_RETENTION_MS: Millis = 24 * 3_600_000;

/// Normal form of an email address for storage and lookup.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

const USER_SELECT: &str = "SELECT u.id, u.email, u.name, u.password_hash, u.created_at, \
     (SELECT count(*) FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS mfa FROM users u";

fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: parse_id(row, "id", UserId::parse)?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        mfa_enabled: row.try_get::<i64, _>("mfa")? > 0,
    })
}

fn session_from_row(row: &AnyRow) -> StoreResult<LoginSession> {
    Ok(LoginSession {
        id: parse_id(row, "id", LoginSessionId::parse)?,
        user_id: parse_id(row, "user_id", UserId::parse)?,
        csrf_digest: row.try_get("csrf_digest")?,
        current_account: parse_opt_id(row, "current_account_id", AccountId::parse)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        reauth_at: row.try_get("reauth_at")?,
        signed_in_with: SignInMethod::parse(&row.try_get::<String, _>("signed_in_with")?),
    })
}

/// Users, sessions, second factors and login throttling.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user; `Conflict` if the email is taken.
    async fn create_user(
        &self,
        id: UserId,
        email: &str,
        password_hash: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<User>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Sets the password and ends every session of the user except `keep`.
    async fn set_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep: Option<LoginSessionId>,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Sets the name a person goes by (shown to the members of their accounts).
    async fn set_user_name(&self, user: UserId, name: &str) -> StoreResult<()>;
    /// Operator support: change a user's email.
    async fn change_email(&self, old: &str, new: &str, actor: &Actor) -> StoreResult<User>;

    /// Records a failed login for each subject and audits it (installation log).
    async fn record_login_failure(
        &self,
        subjects: &[String],
        user: Option<UserId>,
        reason: &str,
    ) -> StoreResult<()>;
    /// Failed logins of `subject` at or after `since`.
    async fn login_failures_since(&self, subject: &str, since: Millis) -> StoreResult<i64>;
    /// Counts a sign-in attempt against each `(subject, limit)` before its credential is
    /// checked. When some subject already has `limit` attempts at or after `since`,
    /// nothing is recorded and the answer is `None`; otherwise one row per subject is
    /// recorded, and it stays as a failure unless [`UserStore::forgive_login_attempt`]
    /// removes it. Serialised with every other write, so concurrent attempts (on any
    /// node) can never together pass more than `limit`.
    async fn begin_login_attempt(
        &self,
        subjects: &[(String, i64)],
        since: Millis,
    ) -> StoreResult<Option<LoginAttempt>>;
    /// The attempt succeeded (or was not a guess): its rows go.
    async fn forgive_login_attempt(&self, attempt: &LoginAttempt) -> StoreResult<()>;
    /// Audits a failed attempt (installation log; the subjects name an email and an
    /// address, not a secret).
    async fn audit_login_failure(
        &self,
        subjects: &[String],
        user: Option<UserId>,
        reason: &str,
    ) -> StoreResult<()>;

    /// Creates a session after a successful login, audited in the same transaction;
    /// clears the email's failure count.
    async fn create_session(
        &self,
        new: NewSession,
        email_subject: &str,
    ) -> StoreResult<LoginSession>;
    /// The session whose token digest this is (expired ones too; the caller checks).
    async fn session_by_digest(&self, digest_hex: &str) -> StoreResult<Option<LoginSession>>;
    async fn delete_session(&self, id: LoginSessionId, actor: &Actor) -> StoreResult<()>;
    async fn set_session_account(&self, id: LoginSessionId, account: AccountId) -> StoreResult<()>;
    async fn set_session_reauth(&self, id: LoginSessionId, at: Millis) -> StoreResult<()>;

    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>>;
    /// Starts (or restarts) enrolment; `Conflict` if a confirmed factor exists.
    async fn begin_totp(&self, user: UserId, seed_sealed: &str) -> StoreResult<()>;
    /// Confirms enrolment at `step`, stores the recovery code digests, ends every other
    /// session of the user and marks `keep` (the session that proved the new factor) as
    /// signed in with MFA, in one transaction. The number of sessions ended, or `None`
    /// when the factor was already confirmed (nothing changes then).
    async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        recovery_digests: &[String],
        keep: LoginSessionId,
        actor: &Actor,
    ) -> StoreResult<Option<u64>>;
    /// Accepts a verified step if it is later than the last accepted one (atomic), so a
    /// code is good once.
    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
    /// Uses a recovery code once (atomic).
    async fn use_recovery_code(&self, user: UserId, digest_hex: &str) -> StoreResult<bool>;
    async fn disable_totp(&self, user: UserId, actor: &Actor) -> StoreResult<()>;
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(
        &self,
        id: UserId,
        email: &str,
        password_hash: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<User> {
        let now = self.now();
        let email = normalize_email(email);
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(&email)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(if is_unique_violation(&e) {
                StoreError::Conflict("a user with this email exists".into())
            } else {
                e.into()
            });
        }
        append_audit(
            &mut tx,
            None,
            actor,
            "user.create",
            &id.to_string(),
            json!({"email": email}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(User {
            id,
            email,
            name: String::new(),
            password_hash: password_hash.map(str::to_string),
            created_at: now,
            mfa_enabled: false,
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("{USER_SELECT} WHERE u.email = $1"))
            .bind(normalize_email(email))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("{USER_SELECT} WHERE u.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn set_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep: Option<LoginSessionId>,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user.to_string())
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user.to_string())
            .bind(keep.map(|k| k.to_string()).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            None,
            actor,
            "user.password_change",
            &user.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_name(&self, user: UserId, name: &str) -> StoreResult<()> {
        let updated = sqlx::query("UPDATE users SET name = $2 WHERE id = $1")
            .bind(user.to_string())
            .bind(name.trim())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        Ok(())
    }

    async fn change_email(&self, old: &str, new: &str, actor: &Actor) -> StoreResult<User> {
        let now = self.now();
        let (old, new) = (normalize_email(old), normalize_email(new));
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE users SET email = $2 WHERE email = $1")
            .bind(&old)
            .bind(&new)
            .execute(&mut *tx)
            .await;
        match updated {
            Ok(r) if r.rows_affected() == 0 => return Err(StoreError::NotFound("user")),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{new} is already used by another user"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(&format!("{USER_SELECT} WHERE u.email = $1"))
            .bind(&new)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        append_audit(
            &mut tx,
            None,
            actor,
            "user.change_email",
            &user.id.to_string(),
            json!({"from": old, "to": new}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn record_login_failure(
        &self,
        subjects: &[String],
        user: Option<UserId>,
        reason: &str,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        // Only recent failures matter for throttling; older ones are dropped here.
        sqlx::query("DELETE FROM login_failures WHERE created_at < $1")
            .bind(now - FAILURE_RETENTION_MS)
            .execute(&mut *tx)
            .await?;
        for subject in subjects {
            sqlx::query("INSERT INTO login_failures (id, subject, created_at) VALUES ($1, $2, $3)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(subject)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        // The subjects name an email and an address, not a secret.
        audit_login_failure(&mut tx, subjects, user, reason, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin_login_attempt(
        &self,
        subjects: &[(String, i64)],
        since: Millis,
    ) -> StoreResult<Option<LoginAttempt>> {
        let now = self.now();
        // `begin_write` takes the store's write lock first, so the counts below cannot
        // go stale before the rows are inserted.
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM login_failures WHERE created_at < $1")
            .bind(now - FAILURE_RETENTION_MS)
            .execute(&mut *tx)
            .await?;
        for (subject, limit) in subjects {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM login_failures WHERE subject = $1 AND created_at >= $2",
            )
            .bind(subject)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            if n >= *limit {
                return Ok(None);
            }
        }
        let mut row_ids = Vec::with_capacity(subjects.len());
        for (subject, _) in subjects {
            let id = uuid::Uuid::now_v7().to_string();
            sqlx::query("INSERT INTO login_failures (id, subject, created_at) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(subject)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            row_ids.push(id);
        }
        tx.commit().await?;
        Ok(Some(LoginAttempt { row_ids }))
    }

    async fn forgive_login_attempt(&self, attempt: &LoginAttempt) -> StoreResult<()> {
        for id in &attempt.row_ids {
            sqlx::query("DELETE FROM login_failures WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn audit_login_failure(
        &self,
        subjects: &[String],
        user: Option<UserId>,
        reason: &str,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        audit_login_failure(&mut tx, subjects, user, reason, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn login_failures_since(&self, subject: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM login_failures WHERE subject = $1 AND created_at >= $2",
        )
        .bind(subject)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn create_session(
        &self,
        new: NewSession,
        email_subject: &str,
    ) -> StoreResult<LoginSession> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        // Expired sessions are useless; remove them as new ones are made.
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, digest, csrf_digest, current_account_id, created_at, expires_at, signed_in_with) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new.id.to_string())
        .bind(new.user_id.to_string())
        .bind(&new.digest_hex)
        .bind(&new.csrf_digest_hex)
        .bind(new.current_account.map(|a| a.to_string()))
        .bind(now)
        .bind(new.expires_at)
        .bind(new.signed_in_with.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(email_subject)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            None,
            &Actor::User(new.user_id),
            "user.login",
            &new.user_id.to_string(),
            json!({"session_id": new.id, "signed_in_with": new.signed_in_with.as_str()}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(LoginSession {
            id: new.id,
            user_id: new.user_id,
            csrf_digest: new.csrf_digest_hex,
            current_account: new.current_account,
            created_at: now,
            expires_at: new.expires_at,
            reauth_at: None,
            signed_in_with: new.signed_in_with,
        })
    }

    async fn session_by_digest(&self, digest_hex: &str) -> StoreResult<Option<LoginSession>> {
        let row = sqlx::query(
            "SELECT id, user_id, digest, csrf_digest, current_account_id, created_at, expires_at, reauth_at, \
             signed_in_with FROM sessions WHERE digest = $1",
        )
        .bind(digest_hex)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("digest")?;
        match (
            SecretDigest::from_hex(&stored),
            SecretDigest::from_hex(digest_hex),
        ) {
            (Some(a), Some(b)) if a.ct_eq(&b) => Ok(Some(session_from_row(&row)?)),
            _ => Ok(None),
        }
    }

    async fn delete_session(&self, id: LoginSessionId, actor: &Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            None,
            actor,
            "user.logout",
            &id.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_session_account(&self, id: LoginSessionId, account: AccountId) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET current_account_id = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(account.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_session_reauth(&self, id: LoginSessionId, at: Millis) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET reauth_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>> {
        let row = sqlx::query(
            "SELECT seed_sealed, confirmed_at, last_step FROM user_totp WHERE user_id = $1",
        )
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TotpRecord {
                seed_sealed: r.try_get("seed_sealed")?,
                confirmed_at: r.try_get("confirmed_at")?,
                last_step: r.try_get("last_step")?,
            })
        })
        .transpose()
    }

    async fn begin_totp(&self, user: UserId, seed_sealed: &str) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        )
        .bind(user.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if confirmed > 0 {
            return Err(StoreError::Conflict(
                "MFA is already enabled; disable it first".into(),
            ));
        }
        sqlx::query("DELETE FROM user_totp WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO user_totp (user_id, seed_sealed, created_at) VALUES ($1, $2, $3)")
            .bind(user.to_string())
            .bind(seed_sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        recovery_digests: &[String],
        keep: LoginSessionId,
        actor: &Actor,
    ) -> StoreResult<Option<u64>> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE user_totp SET confirmed_at = $2, last_step = $3 WHERE user_id = $1 AND confirmed_at IS NULL",
        )
        .bind(user.to_string())
        .bind(now)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        // Whoever held another session may not know of the new factor: they sign in
        // again, with it. The session that proved the factor now counts as MFA.
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user.to_string())
            .bind(keep.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE sessions SET signed_in_with = $3 WHERE id = $1 AND user_id = $2")
            .bind(keep.to_string())
            .bind(user.to_string())
            .bind(SignInMethod::Mfa.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        for d in recovery_digests {
            sqlx::query("INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2)")
                .bind(user.to_string())
                .bind(d)
                .execute(&mut *tx)
                .await?;
        }
        append_audit(
            &mut tx,
            None,
            actor,
            "user.mfa_enable",
            &user.to_string(),
            json!({"other_sessions_ended": ended}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE user_totp SET last_step = $2 WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
        )
        .bind(user.to_string())
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn use_recovery_code(&self, user: UserId, digest_hex: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND digest = $2 AND used_at IS NULL",
        )
        .bind(user.to_string())
        .bind(digest_hex)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let used = r.rows_affected() == 1;
        if used {
            append_audit(
                &mut tx,
                None,
                &Actor::User(user),
                "user.recovery_code_used",
                &user.to_string(),
                json!({}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(used)
    }

    async fn disable_totp(&self, user: UserId, actor: &Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM user_totp WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            None,
            actor,
            "user.mfa_disable",
            &user.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
