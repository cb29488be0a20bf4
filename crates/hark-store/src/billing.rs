//! The credit balance: the append-only credit ledger, each account's running balance
//! (credits minus the cost of usage, kept in the transaction of every credit and usage
//! event), and the flag that refuses a prepaid account while its balance is negative.

use crate::ledger::append_audit;
use crate::sql::parse_id;
use crate::*;
use hark_core::clock::{month_bounds, Millis};
use hark_core::money::Micros;
use serde_json::json;
use sqlx::{Any, Row, Transaction};

/// Why a credit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    /// Given once to every new Free account.
    Evaluation,
    /// Granted by the operator (`hark admin account credit`).
    Operator,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Evaluation => "evaluation",
            CreditKind::Operator => "operator",
        }
    }
}

/// One entry of the credit ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub id: String,
    pub account_id: AccountId,
    pub amount: Micros,
    pub kind: String,
    pub note: String,
    pub actor: String,
    pub created_at: Millis,
}

/// An account's balance now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub balance: Micros,
    /// Cost of usage in the current UTC calendar month.
    pub month_spend: Micros,
    /// Refused for a negative balance (prepaid plans only).
    pub blocked: bool,
}

/// A balance before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceChange {
    pub before: Micros,
    pub after: Micros,
    /// Spend in the current UTC month after the change.
    pub month_spend: Micros,
    /// The change flipped the account's refusal flag: once the transaction commits,
    /// the account's cached principals must go (see `SqlStore::balance_committed`).
    pub refusal_changed: bool,
}

/// Credits and balances.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Appends a credit (negative to correct one) and applies it to the balance.
    async fn grant_credit(
        &self,
        account: AccountId,
        amount: Micros,
        kind: CreditKind,
        note: &str,
        actor: &Actor,
    ) -> StoreResult<BalanceChange>;
    /// The balance; zero for an account that never had credit or usage.
    async fn balance(&self, account: AccountId) -> StoreResult<Balance>;
    /// The credit ledger, oldest first.
    async fn credits(&self, account: AccountId) -> StoreResult<Vec<Credit>>;
}

/// SQL: 1 when a plan column `plan` with balance `bal` must be refused.
const BLOCK_EXPR: &str = "CASE WHEN plan IN ('free', 'payg') AND {bal} < 0 THEN 1 ELSE 0 END";

impl SqlStore {
    /// Adds `delta` to the balance (a usage cost is a negative delta counted in the
    /// month's spend) and returns the balance before and after. Concurrent changes
    /// of one account serialise on its balance row.
    pub(crate) async fn change_balance(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: AccountId,
        delta: Micros,
        spend: Micros,
        now: Millis,
    ) -> StoreResult<BalanceChange> {
        let month = month_bounds(now).0;
        let row = sqlx::query(
            "INSERT INTO balances (account_id, balance, month_start, month_spend) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id) DO UPDATE SET balance = balances.balance + excluded.balance, \
             month_spend = CASE WHEN balances.month_start = excluded.month_start \
                 THEN balances.month_spend + excluded.month_spend ELSE excluded.month_spend END, \
             month_start = excluded.month_start \
             RETURNING balance, month_spend",
        )
        .bind(account.to_string())
        .bind(delta)
        .bind(month)
        .bind(spend)
        .fetch_one(&mut **tx)
        .await?;
        let after: i64 = row.try_get("balance")?;
        let mut change = BalanceChange {
            before: after - delta,
            after,
            month_spend: row.try_get("month_spend")?,
            refusal_changed: false,
        };
        if (change.before < 0) != (change.after < 0) {
            change.refusal_changed = self.sync_balance_block(tx, account).await?;
        }
        Ok(change)
    }

    /// Sets the account's refusal flag from its plan and balance; when it changes
    /// (the answer), the change is published on the revocation bus with `tx` so every
    /// node drops the account's cached principals (the flag travels with the key).
    pub(crate) async fn sync_balance_block(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: AccountId,
    ) -> StoreResult<bool> {
        let bal =
            "COALESCE((SELECT b.balance FROM balances b WHERE b.account_id = accounts.id), 0)";
        let block = BLOCK_EXPR.replace("{bal}", bal);
        let changed = sqlx::query(&format!(
            "UPDATE accounts SET balance_blocked = {block} WHERE id = $1 AND balance_blocked <> {block}"
        ))
        .bind(account.to_string())
        .execute(&mut **tx)
        .await?;
        let flipped = changed.rows_affected() > 0;
        if flipped {
            self.bump_auth_epoch(tx, CredentialChange::Account(account))
                .await?;
        }
        Ok(flipped)
    }

    /// Commits `tx`, which changed `account`'s balance; when the change flipped its
    /// refusal flag, this node's subscribers hear it at once (other nodes hear the
    /// notification sent with the commit).
    pub(crate) async fn balance_committed(
        &self,
        tx: Transaction<'static, Any>,
        account: AccountId,
        refusal_changed: bool,
    ) -> StoreResult<()> {
        if refusal_changed {
            self.commit_change(tx, CredentialChange::Account(account))
                .await
        } else {
            Ok(tx.commit().await?)
        }
    }

    /// Appends a credit inside the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_credit(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: AccountId,
        amount: Micros,
        kind: CreditKind,
        note: &str,
        actor: &Actor,
        now: Millis,
    ) -> StoreResult<BalanceChange> {
        sqlx::query(
            "INSERT INTO credits (id, account_id, amount, kind, note, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(account.to_string())
        .bind(amount)
        .bind(kind.as_str())
        .bind(note)
        .bind(actor.label())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        self.change_balance(tx, account, amount, 0, now).await
    }
}

#[async_trait]
impl BillingStore for SqlStore {
    async fn grant_credit(
        &self,
        account: AccountId,
        amount: Micros,
        kind: CreditKind,
        note: &str,
        actor: &Actor,
    ) -> StoreResult<BalanceChange> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let change = self
            .insert_credit(&mut tx, account, amount, kind, note, actor, now)
            .await?;
        self.evaluate_alerts(
            &mut tx,
            account,
            crate::alerts::AlertTrigger {
                balance: change,
                month_spend: change.month_spend,
                usage: None,
            },
            now,
        )
        .await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "billing.credit",
            &account.to_string(),
            json!({"amount_micros": amount, "kind": kind.as_str(), "note": note, "balance_micros": change.after}),
            now,
        )
        .await?;
        self.balance_committed(tx, account, change.refusal_changed)
            .await?;
        Ok(change)
    }

    async fn balance(&self, account: AccountId) -> StoreResult<Balance> {
        let row = sqlx::query(
            "SELECT b.balance, b.month_start, b.month_spend, \
             (SELECT a.balance_blocked FROM accounts a WHERE a.id = b.account_id) AS blocked \
             FROM balances b WHERE b.account_id = $1",
        )
        .bind(account.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Balance {
                balance: 0,
                month_spend: 0,
                blocked: false,
            });
        };
        let month_start: Millis = row.try_get("month_start")?;
        let current = month_bounds(self.now()).0;
        Ok(Balance {
            balance: row.try_get("balance")?,
            month_spend: if month_start == current {
                row.try_get("month_spend")?
            } else {
                0
            },
            blocked: row.try_get::<Option<i64>, _>("blocked")?.unwrap_or(0) != 0,
        })
    }

    async fn credits(&self, account: AccountId) -> StoreResult<Vec<Credit>> {
        let rows = sqlx::query(
            "SELECT id, account_id, amount, kind, note, actor, created_at FROM credits \
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Credit {
                    id: r.try_get("id")?,
                    account_id: parse_id(r, "account_id", AccountId::parse)?,
                    amount: r.try_get("amount")?,
                    kind: r.try_get("kind")?,
                    note: r.try_get("note")?,
                    actor: r.try_get("actor")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
