//! Accounts and their people: the caller's accounts, account settings and deletion,
//! billing details, members (role change, removal) and invites (create, list, revoke,
//! accept).

use super::sessions::{hash_password, password_matches};
use super::views::{
    AccountMembership, AccountView, Billing, BillingLimits, Instant, InviteAccepted, InviteView,
    Member, Page,
};
use super::INVITE_TTL_MS;
use super::{authorize, require_recent_reauth, validate_name, Caller, Error, PageQuery, Result};
use crate::AppState;
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::{AccountId, InviteId, Permission, Role, UserId};
use hark_store::{Mail, NewInvite};
use serde::Deserialize;

/// The accounts the caller belongs to, with their role in each.
pub async fn list_accounts(
    state: &AppState,
    caller: &Caller,
    page: &PageQuery,
) -> Result<Page<AccountMembership>> {
    let accounts = state.store.accounts_of_user(caller.user.id).await?;
    page.page(
        accounts.iter().map(AccountMembership::from).collect(),
        |a| a.id.to_string(),
    )
}

pub async fn get_account(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
) -> Result<AccountView> {
    let auth = authorize(state, caller, account, Permission::ViewProjects).await?;
    Ok(AccountView::new(&auth.account, auth.role))
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct AccountUpdate {
    #[serde(default)]
    pub name: Option<String>,
    /// "Require MFA for all members".
    #[serde(default)]
    pub require_mfa: Option<bool>,
}

/// Renames the account and/or sets "Require MFA for all members" (which the caller can
/// only turn on with MFA on their own login).
pub async fn update_account(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    input: &AccountUpdate,
) -> Result<AccountView> {
    let auth = authorize(state, caller, account, Permission::ManageSettings).await?;
    if let Some(name) = &input.name {
        validate_name(name)?;
    }
    if input.require_mfa == Some(true) && !caller.signed_in_with_mfa() {
        // Else the change would shut its author out of the account at once.
        return Err(Error::Conflict(
            "enable MFA on your own login, and sign in with it, before requiring it for all members".into(),
        ));
    }
    let updated = state
        .store
        .update_account_settings(
            auth.account.id,
            input.name.as_deref(),
            input.require_mfa,
            &caller.actor(),
        )
        .await?;
    Ok(AccountView::new(&updated, auth.role))
}

/// The sole member (Owner), after re-authentication, deletes the account with every
/// project, key, transcript, upload file and membership.
pub async fn delete_account(state: &AppState, caller: &Caller, account: AccountId) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::DeleteAccount).await?;
    require_recent_reauth(state, caller)?;
    let projects = state.store.list_projects(auth.account.id).await?;
    let deleted = state
        .store
        .delete_account(auth.account.id, &caller.actor())
        .await?;
    state.auth.clear();
    let folders: Vec<String> = projects.iter().map(|p| p.id.to_string()).collect();
    crate::uploads::remove_objects(state, &deleted.upload_paths, &folders).await;
    Ok(())
}

/// Plan, limits and where billing mail goes (the Owner's email).
pub async fn billing(state: &AppState, caller: &Caller, account: AccountId) -> Result<Billing> {
    let auth = authorize(state, caller, account, Permission::ManageBilling).await?;
    let billing_email = state.store.owner_email(auth.account.id).await?;
    let l = auth.account.limits;
    Ok(Billing {
        plan: auth.account.plan,
        limits: BillingLimits {
            projects: l.projects,
            api_keys: l.api_keys,
            members: l.members,
            concurrent_jobs: l.concurrent_jobs,
            streaming_sessions_per_minute: l.streaming_sessions_per_minute,
        },
        billing_email,
    })
}

/// Members with role and MFA status.
pub async fn list_members(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    page: &PageQuery,
) -> Result<Page<Member>> {
    let auth = authorize(state, caller, account, Permission::ViewMembers).await?;
    let members = state.store.member_list(auth.account.id).await?;
    page.page(members.iter().map(Member::from).collect(), |m| {
        m.user_id.to_string()
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct MemberUpdate {
    /// `admin` or `reader`, in any case.
    #[schemars(schema_with = "super::views::assignable_role_schema")]
    pub role: Role,
}

/// Changes a non-Owner member's role.
pub async fn update_member(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    user: UserId,
    input: &MemberUpdate,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageMembers).await?;
    if !Role::ASSIGNABLE.contains(&input.role) {
        return Err(Error::Invalid(Role::assignable_choices()));
    }
    state
        .store
        .set_member_role(auth.account.id, user, input.role, &caller.actor())
        .await?;
    Ok(())
}

/// Removes a non-Owner member; their sessions end at once.
pub async fn remove_member(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    user: UserId,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageMembers).await?;
    state
        .store
        .remove_member(auth.account.id, user, &caller.actor())
        .await?;
    Ok(())
}

/// Pending invites.
pub async fn list_invites(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    page: &PageQuery,
) -> Result<Page<InviteView>> {
    let auth = authorize(state, caller, account, Permission::ViewMembers).await?;
    let invites = state.store.pending_invites(auth.account.id).await?;
    page.page(invites.iter().map(InviteView::from).collect(), |i| {
        i.id.to_string()
    })
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct InviteInput {
    pub email: String,
    /// `admin` or `reader`, in any case; defaults to reader.
    #[serde(default)]
    #[schemars(schema_with = "super::views::assignable_role_schema")]
    pub role: Option<Role>,
}

/// Invites an email as Admin or Reader (Reader by default); the token goes out by mail
/// (outbox, same transaction), never in the result. Counts against the member limit.
pub async fn create_invite(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    input: &InviteInput,
) -> Result<InviteView> {
    let auth = authorize(state, caller, account, Permission::ManageMembers).await?;
    let email = input.email.trim();
    if email.len() > 254
        || !email.contains('@')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid("email is not a valid address".into()));
    }
    let role = input.role.unwrap_or(Role::Reader);
    if !Role::ASSIGNABLE.contains(&role) {
        return Err(Error::Invalid(Role::assignable_choices()));
    }
    let token = keys::generate(SecretKind::Invite);
    let mail = Mail {
        to: hark_store::normalize_email(email),
        subject: format!("You are invited to {} on Hark", auth.account.name),
        body: format!(
            "{} invited you to the Hark account \"{}\" as {}.\n\nOpen this link within 7 days to accept (it works once):\n{}/invite/{}\n",
            caller.user.email,
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
            &caller.actor(),
        )
        .await?;
    Ok(InviteView::from(&invite))
}

/// Revokes a pending invite.
pub async fn delete_invite(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    invite: InviteId,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageMembers).await?;
    if !state
        .store
        .delete_invite(auth.account.id, invite, &caller.actor())
        .await?
    {
        return Err(Error::NotFound("invite"));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct AcceptInput {
    #[schemars(with = "String")]
    pub token: Secret,
    #[schemars(with = "String")]
    pub password: Secret,
}

/// Accepts an invite with the mailed token. A new email becomes a user with this
/// password; an existing user proves it is them with their password.
pub async fn accept_invite(state: &AppState, input: &AcceptInput) -> Result<InviteAccepted> {
    // Invites mailed before invites had their own prefix stay valid until they end.
    if !keys::is_well_formed_or_legacy(SecretKind::Invite, input.token.expose()) {
        return Err(Error::NotFound("invite"));
    }
    let digest = SecretDigest::of(input.token.expose()).to_hex();
    let invite = state
        .store
        .invite_by_digest(&digest)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > state.clock.now_ms())
        .ok_or(Error::NotFound("invite"))?;
    let existing = state.store.user_by_email(&invite.email).await?;
    let hash = match &existing {
        Some(user) => {
            if !password_matches(Some(user), &input.password).await? {
                return Err(Error::WrongPassword);
            }
            String::new()
        }
        None => hash_password(&input.password).await?,
    };
    let accepted = state
        .store
        .accept_invite(&digest, (UserId::new(), hash))
        .await?;
    Ok(InviteAccepted {
        account_id: accepted.account_id,
        user_id: accepted.user_id,
        role: accepted.role,
        created_user: accepted.created_user,
        accepted_at: Instant(state.clock.now_ms()),
    })
}
