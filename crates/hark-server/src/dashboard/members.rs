//! The Members page: members with role, MFA status and joining date, pending invites,
//! "Invite Member" then "Send Invite", role changes, removal behind a confirmation, and
//! "N of M members" (active and pending) against the plan.

use super::error::see_other;
use super::forms::{on_form, when, ConfirmPage};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::accounts::{self as core, InviteInput, MemberUpdate};
use crate::manage::{authorize, ids};
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::plan::role_allows;
use hark_core::{Permission, Role};
use serde::Deserialize;

pub struct MemberRowView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub owner: bool,
    pub admin: bool,
    pub mfa: &'static str,
    pub joined: String,
    pub is_me: bool,
}

/// Rows per page of each list.
const PER_PAGE: usize = 25;

/// The `page`-th (1-based) window of `items`, and the next page's number if any.
fn window<T>(items: Vec<T>, page: usize) -> (Vec<T>, Option<usize>) {
    let page = page.max(1);
    let has_more = items.len() > page * PER_PAGE;
    let rows = items
        .into_iter()
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    (rows, has_more.then_some(page + 1))
}

#[derive(Deserialize, Default)]
pub struct MembersQuery {
    pub notice: Option<String>,
    /// 1-based pages of the members and of the pending invites.
    pub page: Option<usize>,
    pub invites: Option<usize>,
}

pub struct InviteRowView {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub invited_by: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "members.html")]
pub struct MembersPage {
    pub chrome: Chrome,
    pub base: String,
    pub members: Vec<MemberRowView>,
    pub invites: Vec<InviteRowView>,
    /// Active and pending, against the plan.
    pub counted: usize,
    pub next_members: Option<String>,
    pub next_invites: Option<String>,
    pub max_members: u32,
    pub can_manage: bool,
    pub error: Option<String>,
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        Role::Reader => "Reader",
    }
}

async fn render(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    q: &MembersQuery,
    error: Option<String>,
) -> DashResult<String> {
    let auth = authorize(
        state,
        &me.caller(),
        ids::account(account),
        Permission::ViewMembers,
    )
    .await?;
    let members = state.store.member_list(auth.account.id).await?;
    let invites = state.store.pending_invites(auth.account.id).await?;
    let counted = members.len() + invites.len();
    let inviter = |label: &str| {
        label
            .strip_prefix("user:")
            .and_then(hark_core::UserId::parse)
            .and_then(|id| members.iter().find(|m| m.user_id == id))
            .map(|m| m.email.clone())
            .unwrap_or_else(|| label.to_string())
    };
    let base = format!("/accounts/{}", auth.account.id);
    let (member_rows, next_members) = window(members.iter().collect(), q.page.unwrap_or(1));
    let (invite_rows, next_invites) = window(invites.iter().collect(), q.invites.unwrap_or(1));
    let page = MembersPage {
        chrome: Chrome::signed_in(state, me, token, "Members")
            .await?
            .in_account(&auth.account, auth.role, "/members")
            .with_notice(q.notice.as_deref()),
        counted,
        next_members: next_members.map(|n| format!("{base}/members?page={n}")),
        next_invites: next_invites.map(|n| format!("{base}/members?invites={n}#pending")),
        base,
        members: member_rows
            .iter()
            .map(|m| MemberRowView {
                id: m.user_id.to_string(),
                name: m.name.clone(),
                email: m.email.clone(),
                role: role_label(m.role),
                owner: m.role == Role::Owner,
                admin: m.role == Role::Admin,
                mfa: if m.mfa_enabled {
                    "Enabled"
                } else {
                    "Not set up"
                },
                joined: when(m.joined_at),
                is_me: m.user_id == me.user.id,
            })
            .collect(),
        invites: invite_rows
            .iter()
            .map(|i| InviteRowView {
                id: i.id.to_string(),
                email: i.email.clone(),
                role: role_label(i.role),
                invited_by: inviter(&i.invited_by),
                expires: when(i.expires_at),
            })
            .collect(),
        max_members: auth.account.limits.members,
        can_manage: role_allows(auth.role, Permission::ManageMembers),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/members`.
pub async fn list(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<MembersQuery>,
) -> DashResult<Response> {
    let html = render(&state, &me, &token, &account, &q, None).await?;
    Ok(Html(html).into_response())
}

async fn form_failed(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    e: MgmtError,
) -> DashResult<Response> {
    let (status, message) = on_form(e)?;
    let q = MembersQuery::default();
    let html = render(state, me, token, account, &q, Some(message)).await?;
    Ok((status, Html(html)).into_response())
}

fn parse_role(raw: &str) -> Result<Role, MgmtError> {
    raw.parse::<Role>()
        .ok()
        .filter(|r| Role::ASSIGNABLE.contains(r))
        .ok_or_else(|| MgmtError::Invalid(Role::assignable_choices()))
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: String,
}

/// `POST /accounts/{account}/members/invite`: "Send Invite".
pub async fn invite(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Form(form): Form<InviteForm>,
) -> DashResult<Response> {
    let sent = match parse_role(if form.role.is_empty() {
        "reader"
    } else {
        &form.role
    }) {
        Ok(role) => {
            let input = InviteInput {
                email: form.email,
                role: Some(role),
            };
            core::create_invite(&state, &me.caller(), ids::account(&account), &input).await
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => Ok(see_other(&format!(
            "/accounts/{account}/members?notice=invite_sent"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    pub role: String,
}

/// `POST /accounts/{account}/members/{user}/role`.
pub async fn change_role(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, user)): Path<(String, String)>,
    Form(form): Form<RoleForm>,
) -> DashResult<Response> {
    let changed = match parse_role(&form.role) {
        Ok(role) => {
            let input = MemberUpdate { role };
            core::update_member(
                &state,
                &me.caller(),
                ids::account(&account),
                ids::user(&user),
                &input,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match changed {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/members?notice=role_changed"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}

/// `GET /accounts/{account}/members/{user}/remove`: the confirmation.
pub async fn remove_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, user)): Path<(String, String)>,
) -> DashResult<Response> {
    let auth = authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::ManageMembers,
    )
    .await?;
    let target = ids::user(&user);
    let member = state
        .store
        .member_list(auth.account.id)
        .await?
        .into_iter()
        .find(|m| m.user_id == target)
        .ok_or(MgmtError::NotFound("member"))?;
    ConfirmPage {
        chrome: Chrome::signed_in(&state, &me, &token, "Remove member")
            .await?
            .in_account(&auth.account, auth.role, "/members"),
        heading: format!("Remove {} from {}?", member.email, auth.account.name),
        consequences: "They lose access to this account at once and their sessions end. To return, they need a new invite.".into(),
        action: format!("/accounts/{}/members/{}/remove", auth.account.id, member.user_id),
        button: "Remove member".into(),
        type_name: None,
        ask_password: false,
        back: format!("/accounts/{}/members", auth.account.id),
        error: None,
    }
    .respond(StatusCode::OK)
}

/// `POST /accounts/{account}/members/{user}/remove`.
pub async fn remove(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, user)): Path<(String, String)>,
) -> DashResult<Response> {
    match core::remove_member(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::user(&user),
    )
    .await
    {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/members?notice=member_removed"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}

/// `POST /accounts/{account}/invites/{invite}/delete`: a pending invite stops working.
pub async fn delete_invite(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, invite)): Path<(String, String)>,
) -> DashResult<Response> {
    match core::delete_invite(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::invite(&invite),
    )
    .await
    {
        Ok(()) => Ok(see_other(&format!(
            "/accounts/{account}/members?notice=invite_deleted"
        ))),
        Err(e) => form_failed(&state, &me, &token, &account, e).await,
    }
}
