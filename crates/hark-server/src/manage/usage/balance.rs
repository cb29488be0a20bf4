//! The credit balance as the billing pages and API show it: balance, the month's
//! spend, whether the plan is prepaid (refused below zero) or invoiced, and the credit
//! ledger. Owners and Admins only (the billing permission).

use super::ts;
use crate::manage::{authorize, Caller, Result};
use crate::AppState;
use hark_core::money::format_amount;
use hark_core::{AccountId, Permission, Plan};
use hark_store::Credit;
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CreditView {
    pub id: String,
    pub amount: String,
    pub amount_micros: i64,
    pub kind: String,
    pub note: String,
    pub created_at: String,
}

impl From<&Credit> for CreditView {
    fn from(c: &Credit) -> Self {
        Self {
            id: c.id.clone(),
            amount: format_amount(c.amount),
            amount_micros: c.amount,
            kind: c.kind.clone(),
            note: c.note.clone(),
            created_at: ts(c.created_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BalanceView {
    pub account_id: String,
    pub currency: String,
    pub plan: String,
    /// `prepaid` (Free, PAYG: refused while the balance is negative) or `invoiced`.
    #[schemars(schema_with = "billing_kind_schema")]
    pub billing: &'static str,
    pub balance: String,
    pub balance_micros: i64,
    pub month_spend: String,
    pub month_spend_micros: i64,
    /// New transcripts, uploads and streaming sessions are refused.
    pub refused_for_balance: bool,
    pub credits: Vec<CreditView>,
}

/// Prepaid plans spend credit and are refused below zero; invoiced ones never are.
pub fn is_prepaid(plan: Plan) -> bool {
    matches!(plan, Plan::Free | Plan::Payg)
}

fn billing_kind_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    crate::manage::views::string_schema(None, Some(&["prepaid", "invoiced"]))
}

/// The account's balance, this month's spend and the credit ledger.
pub async fn balance(state: &AppState, caller: &Caller, account: AccountId) -> Result<BalanceView> {
    let auth = authorize(state, caller, account, Permission::ManageBilling).await?;
    let (account, plan) = (auth.account.id, auth.account.plan);
    let b = state.store.balance(account).await?;
    let credits = state.store.credits(account).await?;
    Ok(BalanceView {
        account_id: account.to_string(),
        currency: state.config.billing.currency.clone(),
        plan: plan.as_str().into(),
        billing: if is_prepaid(plan) {
            "prepaid"
        } else {
            "invoiced"
        },
        balance: format_amount(b.balance),
        balance_micros: b.balance,
        month_spend: format_amount(b.month_spend),
        month_spend_micros: b.month_spend,
        refused_for_balance: b.blocked,
        credits: credits.iter().map(CreditView::from).collect(),
    })
}
