//! JSON handlers for accounts and their people: accounts, settings, deletion, billing
//! details, members and invites ([`crate::manage::accounts`]).

use super::principal::{JsonBody, QueryParams};
use super::MgmtResult;
use crate::manage::accounts::{
    self as core, AcceptInput, AccountUpdate, InviteInput, MemberUpdate,
};
use crate::manage::views::{
    AccountMembership, AccountView, Billing, InviteAccepted, InviteView, Member, Page,
};
use crate::manage::{ids, Caller, PageQuery};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

/// `GET /api/v1/accounts`.
pub async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<AccountMembership>>> {
    Ok(Json(core::list_accounts(&state, &caller, &page).await?))
}

/// `GET /api/v1/accounts/{account}`.
pub async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> MgmtResult<Json<AccountView>> {
    Ok(Json(
        core::get_account(&state, &caller, ids::account(&account)).await?,
    ))
}

/// `PATCH /api/v1/accounts/{account}`.
pub async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<AccountUpdate>,
) -> MgmtResult<Json<AccountView>> {
    Ok(Json(
        core::update_account(&state, &caller, ids::account(&account), &req).await?,
    ))
}

/// `DELETE /api/v1/accounts/{account}`.
pub async fn delete_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> MgmtResult<StatusCode> {
    core::delete_account(&state, &caller, ids::account(&account)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/billing`.
pub async fn billing(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
) -> MgmtResult<Json<Billing>> {
    Ok(Json(
        core::billing(&state, &caller, ids::account(&account)).await?,
    ))
}

/// `GET /api/v1/accounts/{account}/members`.
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<Member>>> {
    Ok(Json(
        core::list_members(&state, &caller, ids::account(&account), &page).await?,
    ))
}

/// `PATCH /api/v1/accounts/{account}/members/{user}`.
pub async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, user)): Path<(String, String)>,
    JsonBody(req): JsonBody<MemberUpdate>,
) -> MgmtResult<StatusCode> {
    core::update_member(
        &state,
        &caller,
        ids::account(&account),
        ids::user(&user),
        &req,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/accounts/{account}/members/{user}`.
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, user)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    core::remove_member(&state, &caller, ids::account(&account), ids::user(&user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/invites`.
pub async fn list_invites(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Page<InviteView>>> {
    Ok(Json(
        core::list_invites(&state, &caller, ids::account(&account), &page).await?,
    ))
}

/// `POST /api/v1/accounts/{account}/invites`.
pub async fn create_invite(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<InviteInput>,
) -> MgmtResult<(StatusCode, Json<InviteView>)> {
    let invite = core::create_invite(&state, &caller, ids::account(&account), &req).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

/// `DELETE /api/v1/accounts/{account}/invites/{invite}`.
pub async fn delete_invite(
    State(state): State<AppState>,
    caller: Caller,
    Path((account, invite)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    core::delete_invite(
        &state,
        &caller,
        ids::account(&account),
        ids::invite(&invite),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/invites/accept`.
pub async fn accept_invite(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<AcceptInput>,
) -> MgmtResult<Json<InviteAccepted>> {
    Ok(Json(core::accept_invite(&state, &req).await?))
}
