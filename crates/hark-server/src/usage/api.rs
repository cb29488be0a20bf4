//! The JSON and CSV endpoints of usage reports, the balance and alerts: thin
//! wrappers over the transport-free functions of [`super`].

use super::{report, report_csv, ReportInput, UsageReport};
use crate::management::principal::{authorize, JsonBody, QueryParams, UserCtx};
use crate::management::MgmtResult;
use crate::management::{MgmtError, Page, PageQuery};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hark_core::Permission;
use hark_store::Actor;

fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn run(
    state: &AppState,
    ctx: &UserCtx,
    account: &str,
    raw: Option<String>,
) -> MgmtResult<UsageReport> {
    let auth = authorize(state, ctx, account, Permission::ViewUsage).await?;
    let input = ReportInput::from_pairs(&pairs(raw), state.clock.now_ms())?;
    report(state, auth.account.id, &input).await
}

/// `GET /api/v1/accounts/{account}/balance`: Owners and Admins.
pub async fn balance_json(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
) -> MgmtResult<Json<super::balance::BalanceView>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageBilling).await?;
    Ok(Json(
        super::balance::balance(&state, auth.account.id, auth.account.plan).await?,
    ))
}

/// `GET /api/v1/accounts/{account}/usage`.
pub async fn usage_json(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> MgmtResult<Json<UsageReport>> {
    Ok(Json(run(&state, &ctx, &account, raw).await?))
}

/// `GET /api/v1/accounts/{account}/usage.csv`: the same query as CSV.
pub async fn usage_csv(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> MgmtResult<Response> {
    let report = run(&state, &ctx, &account, raw).await?;
    let disposition = format!(
        "attachment; filename=\"usage-{}-{}.csv\"",
        report.account_id,
        crate::management::ts(report.from).replace(':', "")
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (CONTENT_DISPOSITION, disposition),
            (
                axum::http::HeaderName::from_static("x-usage-as-of"),
                crate::management::ts(report.as_of),
            ),
        ],
        report_csv(&report),
    )
        .into_response())
}

/// `GET /api/v1/accounts/{account}/alerts`: everyone in the account may view.
pub async fn list_alerts(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<super::alerts::AlertView>>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewUsage).await?;
    let alerts = super::alerts::list(&state, auth.account.id).await?;
    Ok(Json(page.page(alerts, |a| a.id.clone())?))
}

/// `POST /api/v1/accounts/{account}/alerts`: Owners and Admins.
pub async fn create_alert(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    JsonBody(input): JsonBody<super::alerts::AlertInput>,
) -> MgmtResult<(StatusCode, Json<super::alerts::AlertView>)> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageAlerts).await?;
    let actor = Actor::User(ctx.user.id);
    let view = super::alerts::create(&state, &actor, auth.account.id, input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `PATCH /api/v1/accounts/{account}/alerts/{alert}`: Owners and Admins.
pub async fn update_alert(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, alert)): Path<(String, String)>,
    JsonBody(input): JsonBody<super::alerts::AlertUpdate>,
) -> MgmtResult<Json<super::alerts::AlertView>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageAlerts).await?;
    let actor = Actor::User(ctx.user.id);
    Ok(Json(
        super::alerts::update(&state, &actor, auth.account.id, &alert, input).await?,
    ))
}

/// `DELETE /api/v1/accounts/{account}/alerts/{alert}`: Owners and Admins.
pub async fn delete_alert(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, alert)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageAlerts).await?;
    let actor = Actor::User(ctx.user.id);
    super::alerts::delete(&state, &actor, auth.account.id, &alert).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/statements`: the months with a statement.
pub async fn list_statements(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
) -> MgmtResult<Json<serde_json::Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageBilling).await?;
    let months =
        super::statement::months(state.store.as_ref(), auth.account.id, state.clock.now_ms())
            .await?;
    Ok(Json(serde_json::json!({ "months": months })))
}

async fn issued(
    state: &AppState,
    ctx: &UserCtx,
    account: &str,
    month: &str,
) -> MgmtResult<super::statement::IssuedStatement> {
    let auth = authorize(state, ctx, account, Permission::ManageBilling).await?;
    let start = super::statement::parse_month(month)?;
    super::statement::statement(
        state.store.as_ref(),
        &state.config.billing.currency,
        auth.account.id,
        start,
        state.clock.now_ms(),
    )
    .await
}

/// `GET /api/v1/accounts/{account}/statements/{month}`: `{"billing_email", "statement"}`,
/// the statement exactly as frozen.
pub async fn statement_json(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, month)): Path<(String, String)>,
) -> MgmtResult<Response> {
    let issued = issued(&state, &ctx, &account, &month).await?;
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
    ctx: UserCtx,
    Path((account, month)): Path<(String, String)>,
) -> MgmtResult<Response> {
    let issued = issued(&state, &ctx, &account, &month).await?;
    let disposition = format!(
        "attachment; filename=\"statement-{}-{}.csv\"",
        issued.statement.account_id, issued.statement.month
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        super::statement::statement_csv(&issued),
    )
        .into_response())
}
