//! Accounts and their people: the caller's accounts, account settings and deletion,
//! billing details, members (role change, removal) and invites (create, list,
//! revoke, accept).

use super::principal::{authorize, require_recent_reauth, JsonBody, QueryParams, UserCtx};
use super::sessions::{hash_password, password_matches};
use super::{opt_ts, ts, MgmtError, MgmtResult, PageQuery, INVITE_TTL_MS};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{InviteId, Permission, Role, UserId};
use hark_store::{Account, Actor, Invite, Mail, NewInvite};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

pub fn account_json(a: &Account, role: Role) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "plan": a.plan.as_str(),
        "require_mfa": a.require_mfa,
        "your_role": role.as_str(),
        "limits": {"projects": a.limits.projects, "api_keys": a.limits.api_keys, "members": a.limits.members},
        "created_at": ts(a.created_at),
    })
}

fn invite_json(i: &Invite) -> Value {
    json!({
        "id": i.id, "email": i.email, "role": i.role.as_str(), "invited_by": i.invited_by,
        "created_at": ts(i.created_at), "expires_at": ts(i.expires_at), "status": "pending",
    })
}

/// Removes upload files (missing ones are fine) and the now-empty project folders.
pub async fn remove_files(state: &AppState, paths: &[String], project_dirs: &[PathBuf]) {
    for p in paths {
        match tokio::fs::remove_file(p).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(error = %e, path = %p, "could not delete an uploaded file"),
        }
    }
    for dir in project_dirs {
        if dir.starts_with(&state.uploads_dir) {
            match tokio::fs::remove_dir_all(dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(error = %e, path = %dir.display(), "could not delete a project's upload folder")
                }
            }
        }
    }
}

/// `GET /api/v1/accounts`: the accounts the caller belongs to, with their role.
pub async fn list_accounts(
    State(state): State<AppState>,
    ctx: UserCtx,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let accounts = state.store.accounts_of_user(ctx.user.id).await?;
    let items: Vec<Value> = accounts
        .iter()
        .map(|a| json!({"id": a.account_id, "name": a.account_name, "role": a.role.as_str(), "require_mfa": a.require_mfa}))
        .collect();
    Ok(Json(json!(page.page(items, |v| v["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())?)))
}

/// `GET /api/v1/accounts/{account}`.
pub async fn get_account(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewProjects).await?;
    Ok(Json(account_json(&auth.account, auth.role)))
}

#[derive(Deserialize)]
pub struct AccountUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub require_mfa: Option<bool>,
}

/// `PATCH /api/v1/accounts/{account}`: name and "Require MFA for all members".
pub async fn update_account(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<AccountUpdate>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageSettings).await?;
    if let Some(name) = &req.name {
        validate_name(name)?;
    }
    if req.require_mfa == Some(true) && !ctx.user.mfa_enabled {
        return Err(MgmtError::Conflict(
            "enable MFA on your own login before requiring it for all members".into(),
        ));
    }
    let updated = state
        .store
        .update_account_settings(
            auth.account.id,
            req.name.as_deref(),
            req.require_mfa,
            &Actor::User(ctx.user.id),
        )
        .await?;
    Ok(Json(account_json(&updated, auth.role)))
}

pub fn validate_name(name: &str) -> MgmtResult<()> {
    let n = name.trim().chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) {
        return Err(MgmtError::Invalid(
            "name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(())
}

/// `DELETE /api/v1/accounts/{account}`: the sole member (Owner), after re-authentication,
/// deletes the account with every project, key, transcript, upload file and membership.
pub async fn delete_account(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::DeleteAccount).await?;
    require_recent_reauth(&state, &ctx)?;
    let projects = state.store.list_projects(auth.account.id).await?;
    let deleted = state
        .store
        .delete_account(auth.account.id, &Actor::User(ctx.user.id))
        .await?;
    state.auth.clear();
    let dirs: Vec<PathBuf> = projects
        .iter()
        .map(|p| state.uploads_dir.join(p.id.to_string()))
        .collect();
    remove_files(&state, &deleted.upload_paths, &dirs).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/billing`: plan, limits and where billing mail goes.
pub async fn billing(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageBilling).await?;
    let email = state.store.owner_email(auth.account.id).await?;
    Ok(Json(json!({
        "plan": auth.account.plan.as_str(),
        "limits": auth.account.limits,
        "billing_email": email,
    })))
}

/// `GET /api/v1/accounts/{account}/members`: members with role and MFA status.
pub async fn list_members(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewMembers).await?;
    let members = state.store.member_list(auth.account.id).await?;
    let items: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "user_id": m.user_id, "email": m.email, "role": m.role.as_str(),
                "mfa_enabled": m.mfa_enabled, "joined_at": ts(m.joined_at),
            })
        })
        .collect();
    Ok(Json(json!(page.page(items, |v| v["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_string())?)))
}

#[derive(Deserialize)]
pub struct MemberUpdate {
    pub role: Role,
}

/// `PATCH /api/v1/accounts/{account}/members/{user}`: change a non-Owner's role.
pub async fn update_member(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, user)): Path<(String, String)>,
    JsonBody(req): JsonBody<MemberUpdate>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageMembers).await?;
    let user = UserId::parse(&user).ok_or(MgmtError::NotFound("member"))?;
    state
        .store
        .set_member_role(auth.account.id, user, req.role, &Actor::User(ctx.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/accounts/{account}/members/{user}`: removes a non-Owner member and
/// ends their sessions at once.
pub async fn remove_member(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, user)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageMembers).await?;
    let user = UserId::parse(&user).ok_or(MgmtError::NotFound("member"))?;
    state
        .store
        .remove_member(auth.account.id, user, &Actor::User(ctx.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/accounts/{account}/invites`: pending invites.
pub async fn list_invites(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    QueryParams(page): QueryParams<PageQuery>,
) -> MgmtResult<Json<Value>> {
    let auth = authorize(&state, &ctx, &account, Permission::ViewMembers).await?;
    let items: Vec<Value> = state
        .store
        .pending_invites(auth.account.id)
        .await?
        .iter()
        .map(invite_json)
        .collect();
    Ok(Json(json!(page.page(items, |v| v["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())?)))
}

#[derive(Deserialize)]
pub struct InviteRequest {
    pub email: String,
    #[serde(default)]
    pub role: Option<Role>,
}

/// `POST /api/v1/accounts/{account}/invites`: role defaults to Reader; the token
/// goes out by mail (outbox), never in the response.
pub async fn create_invite(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path(account): Path<String>,
    JsonBody(req): JsonBody<InviteRequest>,
) -> MgmtResult<(StatusCode, Json<Value>)> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageMembers).await?;
    let email = req.email.trim();
    if email.len() > 254
        || !email.contains('@')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(MgmtError::Invalid("email is not a valid address".into()));
    }
    let role = req.role.unwrap_or(Role::Reader);
    if role == Role::Owner {
        return Err(MgmtError::Invalid(
            "invite as admin or reader; ownership is transferred by the operator".into(),
        ));
    }
    let token = keys::generate(SecretKind::TempToken);
    let mail = Mail {
        to: hark_store::normalize_email(email),
        subject: format!("You are invited to {} on Hark", auth.account.name),
        body: format!(
            "{} invited you to the Hark account \"{}\" as {}.\n\nAccept within 7 days: POST {}/api/v1/invites/accept with {{\"token\": \"{}\", \"password\": \"...\"}}\n",
            ctx.user.email,
            auth.account.name,
            role.as_str(),
            state.public_base_url,
            token.expose()
        ),
    };
    let invite = state
        .store
        .create_invite(
            NewInvite {
                id: InviteId::new(),
                account_id: auth.account.id,
                email: email.to_string(),
                role,
                digest_hex: SecretDigest::of(token.expose()).to_hex(),
                expires_at: state.clock.now_ms() + INVITE_TTL_MS,
            },
            mail,
            &Actor::User(ctx.user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(invite_json(&invite))))
}

/// `DELETE /api/v1/accounts/{account}/invites/{invite}`: revokes a pending invite.
pub async fn delete_invite(
    State(state): State<AppState>,
    ctx: UserCtx,
    Path((account, invite)): Path<(String, String)>,
) -> MgmtResult<StatusCode> {
    let auth = authorize(&state, &ctx, &account, Permission::ManageMembers).await?;
    let id = InviteId::parse(&invite).ok_or(MgmtError::NotFound("invite"))?;
    if !state
        .store
        .delete_invite(auth.account.id, id, &Actor::User(ctx.user.id))
        .await?
    {
        return Err(MgmtError::NotFound("invite"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct AcceptRequest {
    pub token: Secret,
    pub password: Secret,
}

/// `POST /api/v1/invites/accept`: with the mailed token. A new email becomes a user
/// with this password; an existing user proves it is them with their password.
pub async fn accept_invite(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<AcceptRequest>,
) -> MgmtResult<Json<Value>> {
    if !keys::is_well_formed(SecretKind::TempToken, req.token.expose()) {
        return Err(MgmtError::NotFound("invite"));
    }
    let digest = SecretDigest::of(req.token.expose()).to_hex();
    let invite = state
        .store
        .invite_by_digest(&digest)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > state.clock.now_ms())
        .ok_or(MgmtError::NotFound("invite"))?;
    let existing = state.store.user_by_email(&invite.email).await?;
    let hash = match &existing {
        Some(user) => {
            if !password_matches(Some(user), &req.password).await? {
                return Err(MgmtError::BadCredentials);
            }
            String::new()
        }
        None => hash_password(&req.password).await?,
    };
    let accepted = state
        .store
        .accept_invite(&digest, (UserId::new(), hash))
        .await?;
    Ok(Json(json!({
        "account_id": accepted.account_id,
        "user_id": accepted.user_id,
        "role": accepted.role.as_str(),
        "created_user": accepted.created_user,
        "accepted_at": opt_ts(Some(state.clock.now_ms())),
    })))
}
