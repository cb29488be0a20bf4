//! Usage alerts: their storage, and their evaluation inside the transaction that
//! writes usage or credit. A firing is a conditional update of the alert's period, so
//! of any number of concurrent writes exactly one fires it per period; its mail (to
//! the account's Owners and Admins, through the outbox) and its webhook commit with it.

use crate::billing::BalanceChange;
use crate::ledger::{append_audit, DAY_MS};
use crate::members::insert_mail;
use crate::sql::{parse_id, parse_opt_id};
use crate::*;
use hark_core::clock::{month_bounds, Millis};
use hark_core::money::format_amount;
use serde_json::json;
use sqlx::{Any, Row, Transaction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// The credit balance falls below `threshold` micro-units.
    BalanceBelow,
    /// Spend in the current UTC calendar month passes `threshold` micro-units.
    MonthSpendAbove,
    /// One project's or key's audio in a UTC day passes `threshold` milliseconds.
    DailyAudioAbove,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BalanceBelow => "balance_below",
            AlertKind::MonthSpendAbove => "month_spend_above",
            AlertKind::DailyAudioAbove => "daily_audio_above",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "balance_below" => AlertKind::BalanceBelow,
            "month_spend_above" => AlertKind::MonthSpendAbove,
            "daily_audio_above" => AlertKind::DailyAudioAbove,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub id: String,
    pub account_id: AccountId,
    pub kind: AlertKind,
    pub threshold: i64,
    pub project_id: Option<ProjectId>,
    pub api_key_id: Option<ApiKeyId>,
    pub webhook_url: Option<String>,
    pub signing_project_id: ProjectId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub account_id: AccountId,
    pub kind: AlertKind,
    pub threshold: i64,
    pub project_id: Option<ProjectId>,
    pub api_key_id: Option<ApiKeyId>,
    pub webhook_url: Option<String>,
    pub signing_project_id: ProjectId,
    pub fired_period: Option<Millis>,
    pub last_fired_at: Option<Millis>,
    pub created_by: String,
    pub created_at: Millis,
}

/// A change to an alert: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertPatch {
    pub threshold: Option<i64>,
    /// `Some(None)` removes the webhook.
    pub webhook_url: Option<Option<String>>,
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn create_alert(&self, new: NewAlert, actor: &Actor) -> StoreResult<Alert>;
    async fn list_alerts(&self, account: AccountId) -> StoreResult<Vec<Alert>>;
    /// Changes an alert of `account`; a changed threshold re-arms it.
    async fn update_alert(
        &self,
        account: AccountId,
        id: &str,
        patch: AlertPatch,
        actor: &Actor,
    ) -> StoreResult<Alert>;
    async fn delete_alert(&self, account: AccountId, id: &str, actor: &Actor) -> StoreResult<()>;
}

const ALERT_COLUMNS: &str =
    "id, account_id, kind, threshold, project_id, api_key_id, webhook_url, \
     signing_project_id, fired_period, last_fired_at, created_by, created_at";

fn decode_alert(r: &sqlx::any::AnyRow) -> StoreResult<Alert> {
    let kind: String = r.try_get("kind")?;
    Ok(Alert {
        id: r.try_get("id")?,
        account_id: parse_id(r, "account_id", AccountId::parse)?,
        kind: AlertKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("alert kind {kind}")))?,
        threshold: r.try_get("threshold")?,
        project_id: parse_opt_id(r, "project_id", ProjectId::parse)?,
        api_key_id: parse_opt_id(r, "api_key_id", ApiKeyId::parse)?,
        webhook_url: r.try_get("webhook_url")?,
        signing_project_id: parse_id(r, "signing_project_id", ProjectId::parse)?,
        fired_period: r.try_get("fired_period")?,
        last_fired_at: r.try_get("last_fired_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

/// What just changed, for alert evaluation.
pub(crate) struct AlertTrigger<'a> {
    pub balance: BalanceChange,
    pub month_spend: i64,
    /// The usage event written, if the change was usage.
    pub usage: Option<&'a NewUsageEvent>,
}

impl SqlStore {
    /// Evaluates the account's alerts after a balance change, inside its transaction
    /// (which holds the account's balance row, so evaluations of one account are
    /// serialised); fires each at most once per period.
    pub(crate) async fn evaluate_alerts(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: AccountId,
        trigger: AlertTrigger<'_>,
        now: Millis,
    ) -> StoreResult<()> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account.to_string())
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let alert = decode_alert(row)?;
            let (period, value) = match alert.kind {
                AlertKind::BalanceBelow => {
                    if trigger.balance.after >= alert.threshold {
                        if alert.fired_period.is_some() {
                            // Back above the line: the next fall fires again.
                            sqlx::query(
                                "UPDATE usage_alerts SET fired_period = NULL WHERE id = $1",
                            )
                            .bind(&alert.id)
                            .execute(&mut **tx)
                            .await?;
                        }
                        continue;
                    }
                    (0, trigger.balance.after)
                }
                AlertKind::MonthSpendAbove => {
                    if trigger.usage.is_none() || trigger.month_spend <= alert.threshold {
                        continue;
                    }
                    (month_bounds(now).0, trigger.month_spend)
                }
                AlertKind::DailyAudioAbove => {
                    let Some(usage) = trigger.usage else { continue };
                    let (column, id) = match (alert.project_id, alert.api_key_id) {
                        (Some(p), _) if p == usage.project_id => ("project_id", p.to_string()),
                        (_, Some(k)) if k == usage.api_key_id => ("api_key_id", k.to_string()),
                        _ => continue,
                    };
                    let day = now - now.rem_euclid(DAY_MS);
                    let audio: i64 = sqlx::query_scalar(&format!(
                        "SELECT CAST(COALESCE(SUM(audio_ms), 0) AS BIGINT) FROM usage_hourly \
                         WHERE account_id = $1 AND hour_start >= $2 AND hour_start < $3 AND {column} = $4"
                    ))
                    .bind(account.to_string())
                    .bind(day)
                    .bind(day + DAY_MS)
                    .bind(&id)
                    .fetch_one(&mut **tx)
                    .await?;
                    if audio <= alert.threshold {
                        continue;
                    }
                    (day, audio)
                }
            };
            let fired = sqlx::query(
                "UPDATE usage_alerts SET fired_period = $2, last_fired_at = $3 \
                 WHERE id = $1 AND (fired_period IS NULL OR fired_period <> $2)",
            )
            .bind(&alert.id)
            .bind(period)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            if fired.rows_affected() == 1 {
                self.notify_alert(tx, &alert, value, period, now).await?;
            }
        }
        Ok(())
    }

    /// Mails the Owners and Admins and queues the webhook of a fired alert.
    async fn notify_alert(
        &self,
        tx: &mut Transaction<'static, Any>,
        alert: &Alert,
        value: i64,
        period: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let currency = &self.currency;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM accounts WHERE id = $1")
            .bind(alert.account_id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        let name = name.unwrap_or_default();
        let hours = |ms: i64| format!("{:.2}", ms as f64 / 3_600_000.0);
        let (subject, line) = match alert.kind {
            AlertKind::BalanceBelow => (
                format!(
                    "Hark: the credit balance of {name} is below {} {currency}",
                    format_amount(alert.threshold)
                ),
                format!(
                    "The credit balance is {} {currency}, below your alert's {} {currency}.",
                    format_amount(value),
                    format_amount(alert.threshold)
                ),
            ),
            AlertKind::MonthSpendAbove => (
                format!(
                    "Hark: spend of {name} this month passed {} {currency}",
                    format_amount(alert.threshold)
                ),
                format!(
                    "Spend this month is {} {currency}, above your alert's {} {currency}.",
                    format_amount(value),
                    format_amount(alert.threshold)
                ),
            ),
            AlertKind::DailyAudioAbove => {
                let what = match (alert.project_id, alert.api_key_id) {
                    (Some(p), _) => format!("project {p}"),
                    (_, Some(k)) => format!("API key {k}"),
                    _ => "usage".into(),
                };
                (
                    format!("Hark: {what} of {name} passed {} audio hours today", hours(alert.threshold)),
                    format!("{what} has transcribed {} hours of audio today (UTC), above your alert's {} hours.", hours(value), hours(alert.threshold)),
                )
            }
        };
        let body = format!(
            "{line}\n\nAccount: {name} ({})\nAlert: {} ({})\n\nThis alert fires once per period; see it in the Alerts settings.\n",
            alert.account_id,
            alert.kind.as_str(),
            alert.id
        );
        let recipients: Vec<String> = sqlx::query_scalar(
            "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.account_id = $1 AND m.role IN ('owner', 'admin') ORDER BY u.email",
        )
        .bind(alert.account_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        for to in recipients {
            insert_mail(
                tx,
                &Mail {
                    to,
                    subject: subject.clone(),
                    body: body.clone(),
                },
                now,
            )
            .await?;
        }
        if let Some(url) = &alert.webhook_url {
            let payload = json!({
                "type": "usage.alert",
                "alert_id": alert.id,
                "account_id": alert.account_id,
                "kind": alert.kind.as_str(),
                "threshold": alert.threshold,
                "value": value,
                "unit": if alert.kind == AlertKind::DailyAudioAbove { "milliseconds" } else { "micro_units" },
                "currency": currency.as_ref(),
                "project_id": alert.project_id,
                "api_key_id": alert.api_key_id,
                "period_start": period,
                "fired_at": now,
            });
            crate::webhooks::insert_delivery(
                tx,
                &alert.account_id.to_string(),
                &alert.signing_project_id.to_string(),
                None,
                &NewWebhook {
                    url: url.clone(),
                    auth_header_name: None,
                    auth_header_sealed: None,
                    body: payload.to_string(),
                },
                now,
            )
            .await?;
        }
        Ok(())
    }

    async fn alert_in(
        tx: &mut Transaction<'static, Any>,
        account: AccountId,
        id: &str,
    ) -> StoreResult<Alert> {
        let row = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE id = $1 AND account_id = $2"
        ))
        .bind(id)
        .bind(account.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| decode_alert(&r))
            .transpose()?
            .ok_or(StoreError::NotFound("alert"))
    }
}

fn alert_json(a: &Alert) -> serde_json::Value {
    json!({"kind": a.kind.as_str(), "threshold": a.threshold, "project_id": a.project_id,
           "api_key_id": a.api_key_id, "webhook": a.webhook_url.is_some()})
}

#[async_trait]
impl AlertStore for SqlStore {
    async fn create_alert(&self, new: NewAlert, actor: &Actor) -> StoreResult<Alert> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(new.account_id).await?;
        sqlx::query(
            "INSERT INTO usage_alerts (id, account_id, kind, threshold, project_id, api_key_id, webhook_url, \
             signing_project_id, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&new.id)
        .bind(new.account_id.to_string())
        .bind(new.kind.as_str())
        .bind(new.threshold)
        .bind(new.project_id.map(|p| p.to_string()))
        .bind(new.api_key_id.map(|k| k.to_string()))
        .bind(&new.webhook_url)
        .bind(new.signing_project_id.to_string())
        .bind(actor.label())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let alert = Self::alert_in(&mut tx, new.account_id, &new.id).await?;
        append_audit(
            &mut tx,
            Some(new.account_id),
            actor,
            "alert.create",
            &new.id,
            alert_json(&alert),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(alert)
    }

    async fn list_alerts(&self, account: AccountId) -> StoreResult<Vec<Alert>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE account_id = $1 ORDER BY created_at, id"
        ))
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_alert).collect()
    }

    async fn update_alert(
        &self,
        account: AccountId,
        id: &str,
        patch: AlertPatch,
        actor: &Actor,
    ) -> StoreResult<Alert> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let before = Self::alert_in(&mut tx, account, id).await?;
        if let Some(threshold) = patch.threshold {
            if threshold != before.threshold {
                sqlx::query(
                    "UPDATE usage_alerts SET threshold = $2, fired_period = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(threshold)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(url) = &patch.webhook_url {
            sqlx::query("UPDATE usage_alerts SET webhook_url = $2 WHERE id = $1")
                .bind(id)
                .bind(url)
                .execute(&mut *tx)
                .await?;
        }
        let alert = Self::alert_in(&mut tx, account, id).await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "alert.update",
            id,
            alert_json(&alert),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(alert)
    }

    async fn delete_alert(&self, account: AccountId, id: &str, actor: &Actor) -> StoreResult<()> {
        let now = self.now();
        let (mut tx, _) = self.begin_for_account(account).await?;
        let alert = Self::alert_in(&mut tx, account, id).await?;
        sqlx::query("DELETE FROM usage_alerts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            Some(account),
            actor,
            "alert.delete",
            id,
            alert_json(&alert),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
