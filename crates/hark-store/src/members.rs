//! Members of accounts: memberships of a person, roles, invites counted against the
//! plan's member limit atomically, ownership transfer, account settings, and the
//! outbox of mail waiting for the operator or the SMTP sender.

use crate::ledger::append_audit;
use crate::sql::{is_unique_violation, parse_id, AccountRow, ACCOUNT_SELECT_BY_ID};
use crate::users::normalize_email;
use crate::*;
use hark_core::clock::Millis;
use hark_core::{InviteId, Role, UserId};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

/// One account a person belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountMembership {
    pub account_id: AccountId,
    pub account_name: String,
    pub role: Role,
    pub require_mfa: bool,
}

/// A member as the Members list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub user_id: UserId,
    pub email: String,
    /// The name the person gave (empty when they gave none).
    pub name: String,
    pub role: Role,
    pub mfa_enabled: bool,
    pub joined_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub id: InviteId,
    pub account_id: AccountId,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub accepted_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewInvite {
    pub id: InviteId,
    pub account_id: AccountId,
    pub email: String,
    pub role: Role,
    pub digest_hex: String,
    pub expires_at: Millis,
}

/// A message to send (SMTP) or keep for the operator (outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: String,
    pub mail: Mail,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

/// What accepting an invite did.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub role: Role,
    pub created_user: bool,
}

fn invite_from_row(row: &AnyRow) -> StoreResult<Invite> {
    let role: String = row.try_get("role")?;
    Ok(Invite {
        id: parse_id(row, "id", InviteId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        email: row.try_get("email")?,
        role: role.parse().map_err(StoreError::Corrupt)?,
        invited_by: row.try_get("invited_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        accepted_at: row.try_get("accepted_at")?,
    })
}

/// Drops an ended invite's mail if it has not gone out: it would invite to nothing, and
/// its body holds the invite's token in clear.
pub(crate) async fn drop_unsent_invite_mail(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    invite: InviteId,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM outbox WHERE id = $1 AND sent_at IS NULL")
        .bind(invite.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const INVITE_COLUMNS: &str =
    "id, account_id, email, role, invited_by, created_at, expires_at, accepted_at";

pub(crate) async fn insert_mail(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    mail: &Mail,
    now: Millis,
) -> StoreResult<()> {
    insert_mail_as(tx, &uuid::Uuid::now_v7().to_string(), mail, now).await
}

/// Queues `mail` under the outbox id `id`. An invite's mail takes the invite's id (both
/// time-ordered UUIDs), so the mail can be dropped when the invite ends.
pub(crate) async fn insert_mail_as(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    mail: &Mail,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (id, to_addr, subject, body, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Memberships, invites, ownership, account settings and the mail outbox.
#[async_trait]
pub trait MemberStore: Send + Sync {
    async fn accounts_of_user(&self, user: UserId) -> StoreResult<Vec<AccountMembership>>;
    async fn role_of(&self, account: AccountId, user: UserId) -> StoreResult<Option<Role>>;
    async fn member_list(&self, account: AccountId) -> StoreResult<Vec<MemberRow>>;
    async fn set_member_role(
        &self,
        account: AccountId,
        user: UserId,
        role: Role,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Removes a non-Owner member and ends all of their sessions in the same transaction.
    async fn remove_member(
        &self,
        account: AccountId,
        user: UserId,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Creates an invite if members plus pending invites stay within the plan limit
    /// (checked atomically), with its mail in the same transaction.
    async fn create_invite(&self, new: NewInvite, mail: Mail, actor: &Actor)
        -> StoreResult<Invite>;
    /// Pending (not accepted, not expired) invites.
    async fn pending_invites(&self, account: AccountId) -> StoreResult<Vec<Invite>>;
    async fn invite_by_digest(&self, digest_hex: &str) -> StoreResult<Option<Invite>>;
    /// Deletes (revokes) a pending invite; false if there was none.
    async fn delete_invite(
        &self,
        account: AccountId,
        id: InviteId,
        actor: &Actor,
    ) -> StoreResult<bool>;
    /// Accepts a pending invite: links the user with the invite's email, or creates
    /// one with `new_user` (id, password hash).
    async fn accept_invite(
        &self,
        digest_hex: &str,
        new_user: (UserId, String),
    ) -> StoreResult<Accepted>;
    /// Support operation: `to_email` (a member) becomes Owner; the Owner becomes Admin.
    async fn transfer_ownership(
        &self,
        account: AccountId,
        to_email: &str,
        actor: &Actor,
    ) -> StoreResult<UserId>;
    /// The Owner's email: where billing notices go.
    async fn owner_email(&self, account: AccountId) -> StoreResult<Option<String>>;
    async fn update_account_settings(
        &self,
        account: AccountId,
        name: Option<&str>,
        require_mfa: Option<bool>,
        actor: &Actor,
    ) -> StoreResult<Account>;
    async fn enqueue_mail(&self, mail: Mail) -> StoreResult<()>;
    async fn outbox(&self, unsent_only: bool) -> StoreResult<Vec<OutboxEntry>>;
    /// Marks an entry delivered and clears its body (it may hold an invite token).
    async fn mark_mail_sent(&self, id: &str) -> StoreResult<()>;
    /// Takes an unsent entry for delivery unless another sender took it in the last
    /// `lease_ms`; true if this caller may send it.
    async fn claim_mail(&self, id: &str, lease_ms: i64) -> StoreResult<bool>;
}

#[async_trait]
impl MemberStore for SqlStore {
    async fn accounts_of_user(&self, user: UserId) -> StoreResult<Vec<AccountMembership>> {
        let rows = sqlx::query(
            "SELECT a.id, a.name, a.require_mfa, m.role FROM memberships m JOIN accounts a ON a.id = m.account_id \
             WHERE m.user_id = $1 ORDER BY m.created_at, a.id",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(AccountMembership {
                    account_id: parse_id(r, "id", AccountId::parse)?,
                    account_name: r.try_get("name")?,
                    role: role.parse().map_err(StoreError::Corrupt)?,
                    require_mfa: r.try_get::<i64, _>("require_mfa")? != 0,
                })
            })
            .collect()
    }

    async fn role_of(&self, account: AccountId, user: UserId) -> StoreResult<Option<Role>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2",
        )
        .bind(account.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?;
        role.map(|r| r.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    async fn member_list(&self, account: AccountId) -> StoreResult<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, u.name, m.role, m.created_at, \
             (SELECT count(*) FROM user_totp t WHERE t.user_id = m.user_id AND t.confirmed_at IS NOT NULL) AS mfa \
             FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(MemberRow {
                    user_id: parse_id(r, "user_id", UserId::parse)?,
                    email: r.try_get("email")?,
                    name: r.try_get("name")?,
                    role: role.parse().map_err(StoreError::Corrupt)?,
                    mfa_enabled: r.try_get::<i64, _>("mfa")? > 0,
                    joined_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn set_member_role(
        &self,
        account: AccountId,
        user: UserId,
        role: Role,
        actor: &Actor,
    ) -> StoreResult<()> {
        if role == Role::Owner {
            return Err(StoreError::Conflict(
                "ownership can only be transferred by the operator".into(),
            ));
        }
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2",
        )
        .bind(account.to_string())
        .bind(user.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        match current.as_deref() {
            None => return Err(StoreError::NotFound("member")),
            Some("owner") => {
                return Err(StoreError::Conflict(
                    "the Owner's role cannot be changed".into(),
                ))
            }
            Some(_) => {}
        }
        sqlx::query("UPDATE memberships SET role = $3 WHERE account_id = $1 AND user_id = $2")
            .bind(account.to_string())
            .bind(user.to_string())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "member.update",
            &user.to_string(),
            json!({"from": current, "to": role.as_str()}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_member(
        &self,
        account: AccountId,
        user: UserId,
        actor: &Actor,
    ) -> StoreResult<()> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2",
        )
        .bind(account.to_string())
        .bind(user.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        match current.as_deref() {
            None => return Err(StoreError::NotFound("member")),
            Some("owner") => {
                return Err(StoreError::Conflict(
                    "the Owner cannot be removed; ownership must be transferred first".into(),
                ))
            }
            Some(_) => {}
        }
        sqlx::query("DELETE FROM memberships WHERE account_id = $1 AND user_id = $2")
            .bind(account.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "member.remove",
            &user.to_string(),
            json!({"role": current, "sessions_ended": ended}),
            now,
        )
        .await?;
        self.notify_change(&mut tx, CredentialChange::User(user))
            .await?;
        self.commit_change(tx, CredentialChange::User(user)).await?;
        Ok(())
    }

    async fn create_invite(
        &self,
        new: NewInvite,
        mail: Mail,
        actor: &Actor,
    ) -> StoreResult<Invite> {
        if new.role == Role::Owner {
            return Err(StoreError::Conflict(
                "an invite cannot make an Owner".into(),
            ));
        }
        let now = self.now();
        let email = normalize_email(&new.email);
        let (mut tx, acct) = self.begin_for_account(new.account_id).await?;
        let members: i64 =
            sqlx::query_scalar("SELECT count(*) FROM memberships WHERE account_id = $1")
                .bind(new.account_id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM invites WHERE account_id = $1 AND accepted_at IS NULL AND expires_at > $2",
        )
        .bind(new.account_id.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let limit = i64::from(acct.0.limits.members);
        if members + pending >= limit {
            return Err(StoreError::LimitReached {
                plan: acct.0.plan,
                what: hark_core::plan::Limit::Members,
                limit,
            });
        }
        let already: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 AND u.email = $2",
        )
        .bind(new.account_id.to_string())
        .bind(&email)
        .fetch_one(&mut *tx)
        .await?;
        let invited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM invites WHERE account_id = $1 AND email = $2 AND accepted_at IS NULL AND expires_at > $3",
        )
        .bind(new.account_id.to_string())
        .bind(&email)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if already > 0 || invited > 0 {
            return Err(StoreError::Conflict(format!(
                "{email} is already a member or has a pending invite"
            )));
        }
        sqlx::query(
            "INSERT INTO invites (id, account_id, email, role, digest, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new.id.to_string())
        .bind(new.account_id.to_string())
        .bind(&email)
        .bind(new.role.as_str())
        .bind(&new.digest_hex)
        .bind(actor.label())
        .bind(now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_mail_as(&mut tx, &new.id.to_string(), &mail, now).await?;
        append_audit(
            &mut tx,
            Some(new.account_id),
            actor,
            "invite.create",
            &new.id.to_string(),
            json!({"email": email, "role": new.role.as_str(), "expires_at": new.expires_at}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Invite {
            id: new.id,
            account_id: new.account_id,
            email,
            role: new.role,
            invited_by: actor.label(),
            created_at: now,
            expires_at: new.expires_at,
            accepted_at: None,
        })
    }

    async fn pending_invites(&self, account: AccountId) -> StoreResult<Vec<Invite>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE account_id = $1 AND accepted_at IS NULL AND expires_at > $2 ORDER BY id"
        ))
        .bind(account.to_string())
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invite_from_row).collect()
    }

    async fn invite_by_digest(&self, digest_hex: &str) -> StoreResult<Option<Invite>> {
        let row = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE digest = $1"
        ))
        .bind(digest_hex)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(invite_from_row).transpose()
    }

    async fn delete_invite(
        &self,
        account: AccountId,
        id: InviteId,
        actor: &Actor,
    ) -> StoreResult<bool> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let deleted = sqlx::query(
            "DELETE FROM invites WHERE id = $1 AND account_id = $2 AND accepted_at IS NULL",
        )
        .bind(id.to_string())
        .bind(account.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        drop_unsent_invite_mail(&mut tx, id).await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "invite.delete",
            &id.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn accept_invite(
        &self,
        digest_hex: &str,
        new_user: (UserId, String),
    ) -> StoreResult<Accepted> {
        let now = self.now();
        let invite = self
            .invite_by_digest(digest_hex)
            .await?
            .ok_or(StoreError::NotFound("invite"))?;
        let (mut tx, _) = self.begin_for_account(invite.account_id).await?;
        // Claim it: exactly one acceptance of a pending, unexpired invite.
        let claimed = sqlx::query(
            "UPDATE invites SET accepted_at = $2 WHERE id = $1 AND accepted_at IS NULL AND expires_at > $2",
        )
        .bind(invite.id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Err(StoreError::NotFound("invite"));
        }
        drop_unsent_invite_mail(&mut tx, invite.id).await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(&invite.email)
            .fetch_optional(&mut *tx)
            .await?;
        let (user, created_user) = match existing {
            Some(id) => (
                UserId::parse(&id).ok_or_else(|| StoreError::Corrupt("users.id".into()))?,
                false,
            ),
            None => {
                sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(new_user.0.to_string())
                    .bind(&invite.email)
                    .bind(&new_user.1)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                (new_user.0, true)
            }
        };
        let inserted = sqlx::query(
            "INSERT INTO memberships (account_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(invite.account_id.to_string())
        .bind(user.to_string())
        .bind(invite.role.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(if is_unique_violation(&e) {
                StoreError::Conflict("already a member of this account".into())
            } else {
                e.into()
            });
        }
        append_audit(
            &mut tx,
            Some(invite.account_id),
            &Actor::User(user),
            "invite.accept",
            &invite.id.to_string(),
            json!({"user_id": user, "email": invite.email, "role": invite.role.as_str(), "created_user": created_user}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Accepted {
            user_id: user,
            account_id: invite.account_id,
            role: invite.role,
            created_user,
        })
    }

    async fn transfer_ownership(
        &self,
        account: AccountId,
        to_email: &str,
        actor: &Actor,
    ) -> StoreResult<UserId> {
        let now = self.now();
        let email = normalize_email(to_email);
        let (mut tx, acct) = self.begin_for_account(account).await?;
        let target = sqlx::query(
            "SELECT m.user_id, m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 AND u.email = $2",
        )
        .bind(account.to_string())
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("{email} is not a member of this account; invite them first")))?;
        let target_id = parse_id(&target, "user_id", UserId::parse)?;
        let target_role: String = target.try_get("role")?;
        if target_role == "owner" {
            return Err(StoreError::Conflict(format!(
                "{email} is already the Owner"
            )));
        }
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 AND m.role = 'owner'",
        )
        .bind(account.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        // Demote first: the partial unique index allows one Owner at a time.
        sqlx::query(
            "UPDATE memberships SET role = 'admin' WHERE account_id = $1 AND role = 'owner'",
        )
        .bind(account.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE memberships SET role = 'owner' WHERE account_id = $1 AND user_id = $2")
            .bind(account.to_string())
            .bind(target_id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_mail(
            &mut tx,
            &Mail {
                to: email.clone(),
                subject: format!("You are now the Owner of {}", acct.0.name),
                body: format!(
                    "Ownership of the Hark account \"{}\" ({account}) was transferred to you. Billing notices for this account now go to this address.",
                    acct.0.name
                ),
            },
            now,
        )
        .await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "account.transfer_ownership",
            &account.to_string(),
            json!({"from": previous, "to": email}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(target_id)
    }

    async fn owner_email(&self, account: AccountId) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 AND m.role = 'owner'",
        )
        .bind(account.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn update_account_settings(
        &self,
        account: AccountId,
        name: Option<&str>,
        require_mfa: Option<bool>,
        actor: &Actor,
    ) -> StoreResult<Account> {
        let now = self.now();
        let (mut tx, before) = self.begin_for_account(account).await?;
        if let Some(name) = name {
            sqlx::query("UPDATE accounts SET name = $2 WHERE id = $1")
                .bind(account.to_string())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(flag) = require_mfa {
            sqlx::query("UPDATE accounts SET require_mfa = $2 WHERE id = $1")
                .bind(account.to_string())
                .bind(i64::from(flag))
                .execute(&mut *tx)
                .await?;
        }
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "account.update",
            &account.to_string(),
            json!({"name": name, "require_mfa": require_mfa, "previous_name": before.0.name}),
            now,
        )
        .await?;
        let row = sqlx::query(ACCOUNT_SELECT_BY_ID)
            .bind(account.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let updated = AccountRow::decode(&row)?.0;
        tx.commit().await?;
        Ok(updated)
    }

    async fn enqueue_mail(&self, mail: Mail) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_mail(&mut tx, &mail, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn outbox(&self, unsent_only: bool) -> StoreResult<Vec<OutboxEntry>> {
        let sql = if unsent_only {
            "SELECT id, to_addr, subject, body, created_at, sent_at FROM outbox WHERE sent_at IS NULL ORDER BY id"
        } else {
            "SELECT id, to_addr, subject, body, created_at, sent_at FROM outbox ORDER BY id"
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    mail: Mail {
                        to: r.try_get("to_addr")?,
                        subject: r.try_get("subject")?,
                        body: r.try_get("body")?,
                    },
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                })
            })
            .collect()
    }

    async fn claim_mail(&self, id: &str, lease_ms: i64) -> StoreResult<bool> {
        let now = self.now();
        let r = sqlx::query(
            "UPDATE outbox SET claimed_at = $2 WHERE id = $1 AND sent_at IS NULL AND (claimed_at IS NULL OR claimed_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(now - lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn mark_mail_sent(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET sent_at = $2, body = '' WHERE id = $1")
            .bind(id)
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
