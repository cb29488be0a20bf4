//! The Billing page (Owner, Admin): plan and billing kind, the credit balance, this
//! month's spend, the Owner's billing email, the credit ledger, and the monthly
//! statements, each as a printable page and as CSV. Credits are granted by the operator
//! (`hark admin account credit`); a payment provider is not part of Hark.

use super::forms::when;
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::accounts::billing as billing_details;
use crate::manage::usage::balance::{balance, CreditView};
use crate::manage::usage::statement::{account_months, account_statement, Statement};
use crate::manage::{authorize, ids};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use hark_core::Permission;

pub struct MonthRow {
    pub month: String,
    pub page: String,
    pub csv: String,
}

#[derive(Template)]
#[template(path = "billing.html")]
pub struct BillingPage {
    pub chrome: Chrome,
    pub plan: String,
    pub prepaid: bool,
    pub currency: String,
    pub balance: String,
    pub negative: bool,
    pub refused: bool,
    pub month_spend: String,
    pub billing_email: Option<String>,
    pub credits: Vec<CreditView>,
    pub months: Vec<MonthRow>,
}

/// `GET /accounts/{account}/billing`.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
) -> DashResult<Response> {
    let caller = me.caller();
    let id = ids::account(&account);
    let auth = authorize(&state, &caller, id, Permission::ManageBilling).await?;
    let b = balance(&state, &caller, id).await?;
    let details = billing_details(&state, &caller, id).await?;
    let months = account_months(&state, &caller, id).await?.months;
    let base = format!("/accounts/{}", auth.account.id);
    let mut credits = b.credits;
    credits.reverse();
    let page = BillingPage {
        chrome: Chrome::signed_in(&state, &me, &token, "Billing")
            .await?
            .in_account(&auth.account, auth.role, "/billing"),
        plan: b.plan,
        prepaid: b.billing == "prepaid",
        currency: b.currency,
        negative: b.balance_micros < 0,
        balance: b.balance,
        refused: b.refused_for_balance,
        month_spend: b.month_spend,
        billing_email: details.billing_email,
        credits,
        months: months
            .into_iter()
            .map(|m| MonthRow {
                page: format!("{base}/billing/statements/{m}"),
                csv: format!("/api/v1/accounts/{}/statements/{m}/csv", auth.account.id),
                month: m,
            })
            .collect(),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Template)]
#[template(path = "statement.html")]
pub struct StatementPage {
    pub chrome: Chrome,
    pub s: Statement,
    pub billing_email: Option<String>,
    pub csv: String,
    pub back: String,
    pub issued: String,
}

/// `GET /accounts/{account}/billing/statements/{month}`: the printable statement (the
/// stylesheet drops the navigation when printed).
pub async fn statement(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, month)): Path<(String, String)>,
) -> DashResult<Response> {
    let caller = me.caller();
    let id = ids::account(&account);
    let auth = authorize(&state, &caller, id, Permission::ManageBilling).await?;
    let issued = account_statement(&state, &caller, id, &month).await?;
    let page = StatementPage {
        chrome: Chrome::signed_in(&state, &me, &token, &format!("Statement {month}"))
            .await?
            .in_account(&auth.account, auth.role, "/billing"),
        csv: format!(
            "/api/v1/accounts/{}/statements/{}/csv",
            auth.account.id, issued.statement.month
        ),
        back: format!("/accounts/{}/billing", auth.account.id),
        issued: when(state.clock.now_ms()),
        billing_email: issued.billing_email,
        s: issued.statement,
    };
    Ok(Html(page.render()?).into_response())
}
