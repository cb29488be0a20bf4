//! JSON and CSV handlers for usage reports, the credit balance, alerts and statements:
//! thin wrappers over [`crate::manage::usage`], which checks permissions and holds
//! every rule.

use super::principal::{JsonBody, QueryParams};
use super::{MgmtError, MgmtResult, Page, PageQuery};
use crate::manage::usage::alerts::{self, AlertInput, AlertUpdate, AlertView};
use crate::manage::usage::balance::{self, BalanceView};
use crate::manage::usage::statement::{self, IssuedStatement, StatementMonths};
use crate::manage::usage::{account_report, report_csv, ts, UsageReport};
use crate::manage::{ids, Caller};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The query string as pairs, in order (filters may repeat).
fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /api/v1/accounts/{account}/usage`.
pub async fn usage_json(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> MgmtResult<Json<UsageReport>> {
    Ok(Json(
        account_report(&state, &caller, ids::account(&account), &pairs(raw)).await?,
    ))
}

/// `GET /api/v1/accounts/{account}/usage.csv`: the same query as CSV.
pub async fn usage_csv(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> MgmtResult<Response> {
    let report = account_report(&state, &caller, ids::account(&account), &pairs(raw)).await?;
    let disposition = format!(
        "attachment; filename=\"usage-{}-{}.csv\"",
        report.account_id,
        ts(report.from).replace(':', "")
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (CONTENT_DISPOSITION, disposition),
            (HeaderName::from_static("x-usage-as-of"), ts(report.as_of)),
        ],
        report_csv(&report),
    )
        .into_response())
}

/// `GET /api/v1/accounts/{account}/balance`.
pub async fn balance_json(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> MgmtResult<Json<BalanceView>> {
    Ok(Json(
        balance::balance(&state, &caller, ids::account(&account)).await?,
    ))
}

/// `GET /api/v1/accounts/{account}/alerts`.
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<AlertView>>> {
    let alerts = alerts::list(&state, &caller, ids::account(&account)).await?;
    Ok(Json(page.page(alerts, |a| a.id.clone())?))
}

/// `POST /api/v1/accounts/{account}/alerts`.
pub async fn create_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    JsonBody(input): JsonBody<AlertInput>,
) -> MgmtResult<(StatusCode, Json<AlertView>)> {
    let view = alerts::create(&state, &caller, ids::account(&account), input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `PATCH /api/v1/accounts/{account}/alerts/{alert}`.
pub async fn update_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, alert)): Path<(String, String)>,
    JsonBody(input): JsonBody<AlertUpdate>,
) -> MgmtResult<Json<AlertView>> {
    Ok(Json(
        alerts::update(&state, &caller, ids::account(&account), &alert, input).await?,
    ))
}

/// `DELETE /api/v1/accounts/{account}/alerts/{alert}`.
pub async fn delete_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, alert)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    alerts::delete(&state, &caller, ids::account(&account), &alert).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/statements`.
pub async fn list_statements(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> MgmtResult<Json<StatementMonths>> {
    Ok(Json(
        statement::account_months(&state, &caller, ids::account(&account)).await?,
    ))
}

async fn issued(
    state: &AppState,
    caller: &Caller,
    account: &str,
    month: &str,
) -> MgmtResult<IssuedStatement> {
    statement::account_statement(state, caller, ids::account(account), month).await
}

/// `GET /api/v1/accounts/{account}/statements/{month}`: `{"billing_email", "statement"}`,
/// the statement exactly as frozen (its stored bytes, not re-serialised).
pub async fn statement_json(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, month)): Path<(String, String)>,
) -> MgmtResult<Response> {
    let issued = issued(&state, &caller, &account, &month).await?;
    let email = serde_json::to_string(&issued.billing_email).map_err(MgmtError::internal)?;
    let body = format!(
        "{{\"billing_email\":{email},\"statement\":{}}}",
        issued.document
    );
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/accounts/{account}/statements/{month}/csv`.
pub async fn statement_csv(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, month)): Path<(String, String)>,
) -> MgmtResult<Response> {
    let issued = issued(&state, &caller, &account, &month).await?;
    let disposition = format!(
        "attachment; filename=\"statement-{}-{}.csv\"",
        issued.statement.account_id, issued.statement.month
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        statement::statement_csv(&issued),
    )
        .into_response())
}
