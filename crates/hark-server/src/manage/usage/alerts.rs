//! Usage alerts as the API and dashboard manage them: typed input, validation and
//! views over the store's alerts. Readers view; Owners and Admins create, edit and
//! delete (the seed's permission row).

use super::{opt_ts, ts};
use crate::manage::{authorize, Caller, Error, Result};
use crate::AppState;
use hark_core::money::{format_amount, parse_amount};
use hark_core::{AccountId, ApiKeyId, Permission, ProjectId};
use hark_store::{Actor, Alert, AlertKind, AlertPatch, NewAlert};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /accounts/{account}/alerts`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertInput {
    /// `balance_below`, `month_spend_above` or `daily_audio_above`.
    pub kind: String,
    /// Decimal text: an amount (money alerts) or audio hours (`daily_audio_above`).
    pub threshold: String,
    /// `daily_audio_above`: the project or the API key to watch (exactly one).
    pub project_id: Option<String>,
    pub api_key_id: Option<String>,
    /// Also POST a signed webhook here when it fires.
    pub webhook_url: Option<String>,
}

/// `PATCH /accounts/{account}/alerts/{id}`: a new threshold re-arms the alert;
/// `webhook_url: null` removes the webhook.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertUpdate {
    pub threshold: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(rename = "Alert")]
pub struct AlertView {
    pub id: String,
    #[schemars(schema_with = "kind_schema")]
    pub kind: &'static str,
    /// As given: an amount in `currency`, or audio hours.
    pub threshold: String,
    pub currency: Option<String>,
    pub project_id: Option<String>,
    pub api_key_id: Option<String>,
    pub webhook_url: Option<String>,
    /// When it last fired, and whether it is waiting for the next period (or, for a
    /// balance alert, for the balance to recover) before it can fire again.
    pub last_fired_at: Option<String>,
    pub fired_this_period: bool,
    pub created_by: String,
    pub created_at: String,
}

fn kind_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    crate::manage::views::string_schema(
        None,
        Some(&["balance_below", "month_spend_above", "daily_audio_above"]),
    )
}

/// Audio hours as decimal text to milliseconds (exactly: parsed as micro-hours).
fn hours_to_ms(text: &str) -> Result<i64> {
    let micro_hours = parse_amount(text).map_err(|e| {
        Error::Invalid(format!(
            "threshold: {}",
            e.to_string().replace("amount", "number of hours")
        ))
    })?;
    // One micro-hour is 3.6 ms.
    Ok((i128::from(micro_hours) * 36 / 10) as i64)
}

fn ms_to_hours(ms: i64) -> String {
    // Milliseconds to micro-hours (rounded), shown with up to six decimals.
    format_amount((i128::from(ms) * 10 / 36) as i64)
}

fn view(state: &AppState, a: &Alert) -> AlertView {
    let money = a.kind != AlertKind::DailyAudioAbove;
    AlertView {
        id: a.id.clone(),
        kind: a.kind.as_str(),
        threshold: if money {
            format_amount(a.threshold)
        } else {
            ms_to_hours(a.threshold)
        },
        currency: money.then(|| state.config.billing.currency.clone()),
        project_id: a.project_id.map(|p| p.to_string()),
        api_key_id: a.api_key_id.map(|k| k.to_string()),
        webhook_url: a.webhook_url.clone(),
        last_fired_at: opt_ts(a.last_fired_at),
        fired_this_period: a.fired_period.is_some_and(|p| match a.kind {
            AlertKind::BalanceBelow => true,
            AlertKind::MonthSpendAbove => {
                p == hark_core::clock::month_bounds(state.clock.now_ms()).0
            }
            AlertKind::DailyAudioAbove => {
                let now = state.clock.now_ms();
                p == now - now.rem_euclid(hark_store::DAY_MS)
            }
        }),
        created_by: a.created_by.clone(),
        created_at: ts(a.created_at),
    }
}

fn threshold_of(kind: AlertKind, text: &str) -> Result<i64> {
    let value = if kind == AlertKind::DailyAudioAbove {
        hours_to_ms(text)?
    } else {
        parse_amount(text).map_err(|e| Error::Invalid(format!("threshold: {e}")))?
    };
    if value < 0 || (kind != AlertKind::BalanceBelow && value == 0) {
        return Err(Error::Invalid(
            "threshold must be positive (a balance alert may use 0)".into(),
        ));
    }
    Ok(value)
}

fn check_webhook(url: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(Error::Invalid(
            "webhook_url must be an absolute http(s) URL".into(),
        )),
    }
}

/// The account's alerts: everyone in the account may view them.
pub async fn list(state: &AppState, caller: &Caller, account: AccountId) -> Result<Vec<AlertView>> {
    let auth = authorize(state, caller, account, Permission::ViewUsage).await?;
    let alerts = state.store.list_alerts(auth.account.id).await?;
    Ok(alerts.iter().map(|a| view(state, a)).collect())
}

/// The most alerts one account may have.
pub const MAX_ALERTS: usize = 50;

/// Creates an alert (Owners and Admins).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    input: AlertInput,
) -> Result<AlertView> {
    let auth = authorize(state, caller, account, Permission::ManageAlerts).await?;
    let (account, actor) = (auth.account.id, &caller.actor());
    let kind = AlertKind::parse(&input.kind).ok_or_else(|| {
        Error::Invalid(format!(
            "kind '{}' is not one of balance_below, month_spend_above, daily_audio_above",
            input.kind
        ))
    })?;
    let threshold = threshold_of(kind, &input.threshold)?;
    if let Some(url) = &input.webhook_url {
        check_webhook(url)?;
    }
    let projects = state.store.list_projects(account).await?;
    let first_project = || {
        projects
            .iter()
            .min_by_key(|p| (p.created_at, p.id.to_string()))
            .map(|p| p.id)
            .ok_or(Error::NotFound("project"))
    };
    // (watched project, watched key, project whose secret signs the webhook)
    let (project_id, api_key_id, signing) = match (kind, &input.project_id, &input.api_key_id) {
        (AlertKind::DailyAudioAbove, Some(p), None) => {
            let id = ProjectId::parse(p)
                .filter(|id| projects.iter().any(|x| x.id == *id))
                .ok_or(Error::NotFound("project"))?;
            (Some(id), None, id)
        }
        (AlertKind::DailyAudioAbove, None, Some(k)) => {
            let key = match ApiKeyId::parse(k) {
                Some(id) => state.store.get_api_key(id).await?,
                None => None,
            };
            let key = key
                .filter(|key| key.account_id == account)
                .ok_or(Error::NotFound("API key"))?;
            (None, Some(key.id), key.project_id)
        }
        (AlertKind::DailyAudioAbove, _, _) => {
            return Err(Error::Invalid(
                "a daily_audio_above alert watches exactly one of project_id or api_key_id".into(),
            ))
        }
        (_, None, None) => (None, None, first_project()?),
        _ => {
            return Err(Error::Invalid(
                "project_id and api_key_id apply only to daily_audio_above alerts".into(),
            ))
        }
    };
    finish(
        state,
        actor,
        account,
        kind,
        threshold,
        project_id,
        api_key_id,
        input.webhook_url,
        signing,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &AppState,
    actor: &Actor,
    account: AccountId,
    kind: AlertKind,
    threshold: i64,
    project_id: Option<ProjectId>,
    api_key_id: Option<ApiKeyId>,
    webhook_url: Option<String>,
    signing_project_id: ProjectId,
) -> Result<AlertView> {
    if state.store.list_alerts(account).await?.len() >= MAX_ALERTS {
        return Err(Error::LimitReached(format!(
            "an account may have at most {MAX_ALERTS} alerts"
        )));
    }
    let alert = state
        .store
        .create_alert(
            NewAlert {
                id: uuid::Uuid::now_v7().to_string(),
                account_id: account,
                kind,
                threshold,
                project_id,
                api_key_id,
                webhook_url,
                signing_project_id,
            },
            actor,
        )
        .await?;
    Ok(view(state, &alert))
}

/// Changes an alert's threshold (which re-arms it) or webhook (Owners and Admins).
pub async fn update(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    id: &str,
    input: AlertUpdate,
) -> Result<AlertView> {
    let auth = authorize(state, caller, account, Permission::ManageAlerts).await?;
    let (account, actor) = (auth.account.id, &caller.actor());
    let current = state
        .store
        .list_alerts(account)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(Error::NotFound("alert"))?;
    let threshold = input
        .threshold
        .as_deref()
        .map(|t| threshold_of(current.kind, t))
        .transpose()?;
    if let Some(Some(url)) = &input.webhook_url {
        check_webhook(url)?;
    }
    let alert = state
        .store
        .update_alert(
            account,
            id,
            AlertPatch {
                threshold,
                webhook_url: input.webhook_url,
            },
            actor,
        )
        .await?;
    Ok(view(state, &alert))
}

/// Deletes an alert (Owners and Admins).
pub async fn delete(state: &AppState, caller: &Caller, account: AccountId, id: &str) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageAlerts).await?;
    state
        .store
        .delete_alert(auth.account.id, id, &caller.actor())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_convert_exactly() {
        assert_eq!(hours_to_ms("1").unwrap(), 3_600_000);
        assert_eq!(hours_to_ms("0.5").unwrap(), 1_800_000);
        assert_eq!(hours_to_ms("2.25").unwrap(), 8_100_000);
        assert_eq!(ms_to_hours(8_100_000), "2.25");
        assert!(hours_to_ms("two").is_err());
    }
}
