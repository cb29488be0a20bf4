//! The typed results of the management core. The JSON API serialises them as they are
//! and derives its OpenAPI schemas from them (so the document follows the code); the
//! dashboard renders the same values as HTML.

use hark_core::scope::Scope;
use hark_core::{AccountId, ApiKeyId, InviteId, LoginSessionId, Role, TranscriptId, UserId};
use hark_core::{Plan, ProjectId};
use hark_store::{Account, ApiKeyRecord, AuditEntry, Invite, MemberRow, Project, Transcript};
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::{Serialize, Serializer};

/// An instant (Unix milliseconds), written as an RFC 3339 UTC string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub i64);

impl Instant {
    pub fn rfc3339(self) -> String {
        hark_core::clock::from_millis(self.0)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    pub fn opt(ms: Option<i64>) -> Option<Instant> {
        ms.map(Instant)
    }
}

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl JsonSchema for Instant {
    fn schema_name() -> String {
        "Instant".into()
    }
    fn is_referenceable() -> bool {
        false
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(Some("date-time"), None)
    }
}

pub(crate) fn string_schema(format: Option<&str>, values: Option<&[&str]>) -> Schema {
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: format.map(str::to_string),
        enum_values: values.map(|v| v.iter().map(|s| serde_json::json!(s)).collect()),
        ..Default::default()
    }
    .into()
}

fn role_schema(_: &mut SchemaGenerator) -> Schema {
    string_schema(None, Some(&["owner", "admin", "reader"]))
}

/// The roles an invite or a role change can give (read in any case).
pub fn assignable_role_schema(_: &mut SchemaGenerator) -> Schema {
    let names = Role::ASSIGNABLE.map(Role::as_str);
    string_schema(None, Some(&names[..]))
}

pub(crate) fn scopes_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = SchemaObject {
        instance_type: Some(InstanceType::Array.into()),
        ..Default::default()
    };
    let _ = g;
    s.array().items = Some(
        string_schema(
            None,
            Some(&["transcripts:read", "transcripts:write", "streaming"]),
        )
        .into(),
    );
    s.into()
}

/// An optional list of scopes: absent or null leaves a key's scopes as they are.
pub(crate) fn optional_scopes_schema(g: &mut SchemaGenerator) -> Schema {
    match scopes_schema(g) {
        Schema::Object(mut s) => {
            s.instance_type = Some(vec![InstanceType::Array, InstanceType::Null].into());
            Schema::Object(s)
        }
        other => other,
    }
}

/// One page of a list: `next_cursor` is set when more follow.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// Seconds rounded to the millisecond (sums of floating-point seconds otherwise print
/// as `75.92637500000001`).
pub fn round_secs(secs: f64) -> f64 {
    hark_core::units::seconds_to_ms(secs)
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UserView {
    #[schemars(with = "String")]
    pub id: UserId,
    pub email: String,
    pub mfa_enabled: bool,
    pub created_at: Instant,
}

/// One account of the caller, with their role in it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AccountMembership {
    #[schemars(with = "String")]
    pub id: AccountId,
    pub name: String,
    #[schemars(schema_with = "role_schema")]
    pub role: Role,
    pub require_mfa: bool,
}

impl From<&hark_store::AccountMembership> for AccountMembership {
    fn from(a: &hark_store::AccountMembership) -> Self {
        AccountMembership {
            id: a.account_id,
            name: a.account_name.clone(),
            role: a.role,
            require_mfa: a.require_mfa,
        }
    }
}

/// The caller, their accounts and roles, and the session's current account.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Profile {
    pub user: UserView,
    pub accounts: Vec<AccountMembership>,
    #[schemars(with = "Option<String>")]
    pub current_account_id: Option<AccountId>,
    /// The caller belongs to an account that requires MFA and has none yet.
    pub mfa_enrollment_required: bool,
    /// The caller has MFA and belongs to an account that requires it, but this session
    /// signed in without it: sign in again with a code to act in that account.
    pub mfa_sign_in_required: bool,
}

/// A new login session. The session and CSRF secrets travel beside it (cookies, or
/// the body when a script asked for the token); they are not part of this view.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LoginResult {
    #[serde(flatten)]
    pub profile: Profile,
    pub csrf_token: String,
    #[schemars(with = "String")]
    pub session_id: LoginSessionId,
    pub expires_at: Instant,
    /// Present only when the request set `return_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Reauthenticated {
    pub reauthenticated_at: Instant,
    pub valid_until: Instant,
}

/// A TOTP enrolment in progress: the seed is shown here only.
#[derive(Clone, Serialize, JsonSchema)]
pub struct TotpEnrolment {
    pub secret: String,
    pub otpauth_uri: String,
    pub digits: u32,
    pub period: i64,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment").finish_non_exhaustive()
    }
}

/// MFA turned on: ten recovery codes, shown once.
#[derive(Clone, Serialize, JsonSchema)]
pub struct RecoveryCodes {
    pub mfa_enabled: bool,
    pub recovery_codes: Vec<String>,
    /// The confirming code is spent (each code works once): the next code, the first
    /// that signs in, starts here.
    pub next_code_at: Instant,
    /// How many other sessions of the person were signed out (this one stays, now
    /// counted as signed in with MFA).
    pub other_sessions_ended: u64,
    pub note: String,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodes")
            .field("mfa_enabled", &self.mfa_enabled)
            .field("other_sessions_ended", &self.other_sessions_ended)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteAccepted {
    #[schemars(with = "String")]
    pub account_id: AccountId,
    #[schemars(with = "String")]
    pub user_id: UserId,
    #[schemars(schema_with = "role_schema")]
    pub role: Role,
    pub created_user: bool,
    pub accepted_at: Instant,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AccountLimits {
    pub projects: u32,
    pub api_keys: u32,
    pub members: u32,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AccountView {
    #[schemars(with = "String")]
    pub id: AccountId,
    pub name: String,
    #[schemars(with = "String")]
    pub plan: Plan,
    pub require_mfa: bool,
    #[schemars(schema_with = "role_schema")]
    pub your_role: Role,
    pub limits: AccountLimits,
    pub created_at: Instant,
}

impl AccountView {
    pub fn new(a: &Account, role: Role) -> Self {
        AccountView {
            id: a.id,
            name: a.name.clone(),
            plan: a.plan,
            require_mfa: a.require_mfa,
            your_role: role,
            limits: AccountLimits {
                projects: a.limits.projects,
                api_keys: a.limits.api_keys,
                members: a.limits.members,
            },
            created_at: Instant(a.created_at),
        }
    }
}

/// Every limit in force for an account (its plan's, with any operator overrides).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BillingLimits {
    pub projects: u32,
    pub api_keys: u32,
    pub members: u32,
    pub concurrent_jobs: u32,
    pub streaming_sessions_per_minute: u32,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Billing {
    #[schemars(with = "String")]
    pub plan: Plan,
    pub limits: BillingLimits,
    /// The Owner's email: billing mail goes there.
    pub billing_email: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Member {
    #[schemars(with = "String")]
    pub user_id: UserId,
    pub email: String,
    /// The name the person gave (empty when they gave none).
    pub name: String,
    #[schemars(schema_with = "role_schema")]
    pub role: Role,
    pub mfa_enabled: bool,
    pub joined_at: Instant,
}

impl From<&MemberRow> for Member {
    fn from(m: &MemberRow) -> Self {
        Member {
            user_id: m.user_id,
            email: m.email.clone(),
            name: m.name.clone(),
            role: m.role,
            mfa_enabled: m.mfa_enabled,
            joined_at: Instant(m.joined_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InviteStatus {
    Pending,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteView {
    #[schemars(with = "String")]
    pub id: InviteId,
    pub email: String,
    #[schemars(schema_with = "role_schema")]
    pub role: Role,
    pub invited_by: String,
    pub created_at: Instant,
    pub expires_at: Instant,
    pub status: InviteStatus,
}

impl From<&Invite> for InviteView {
    fn from(i: &Invite) -> Self {
        InviteView {
            id: i.id,
            email: i.email.clone(),
            role: i.role,
            invited_by: i.invited_by.clone(),
            created_at: Instant(i.created_at),
            expires_at: Instant(i.expires_at),
            status: InviteStatus::Pending,
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProjectView {
    #[schemars(with = "String")]
    pub id: ProjectId,
    #[schemars(with = "String")]
    pub account_id: AccountId,
    pub name: String,
    pub created_at: Instant,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> Self {
        ProjectView {
            id: p.id,
            account_id: p.account_id,
            name: p.name.clone(),
            created_at: Instant(p.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TranscriptSummary {
    #[schemars(with = "String")]
    pub id: TranscriptId,
    pub status: String,
    pub audio_url: String,
    pub audio_duration: Option<f64>,
    pub created_at: Instant,
    pub completed_at: Option<Instant>,
    #[schemars(with = "String")]
    pub api_key_id: ApiKeyId,
}

impl From<&Transcript> for TranscriptSummary {
    fn from(t: &Transcript) -> Self {
        TranscriptSummary {
            id: t.id,
            status: t.status.as_str().to_string(),
            audio_url: t.audio_url.clone(),
            audio_duration: t.audio_duration.map(round_secs),
            created_at: Instant(t.created_at),
            completed_at: Instant::opt(t.completed_at),
            api_key_id: t.api_key_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Rotating,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub fn of(k: &ApiKeyRecord, now: i64) -> Self {
        if k.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if k.expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else if k.replaced_by.is_some() {
            KeyStatus::Rotating
        } else {
            KeyStatus::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Rotating => "rotating",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// An API key as lists show it: masked, never the secret.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApiKeyView {
    #[schemars(with = "String")]
    pub id: ApiKeyId,
    #[schemars(with = "String")]
    pub project_id: ProjectId,
    pub name: String,
    pub masked_key: String,
    pub created_by: String,
    pub created_at: Instant,
    pub last_used_at: Option<Instant>,
    pub expires_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
    #[schemars(schema_with = "scopes_schema")]
    pub scopes: Vec<Scope>,
    #[schemars(with = "Option<String>")]
    pub replaced_by: Option<ApiKeyId>,
    pub status: KeyStatus,
}

impl ApiKeyView {
    pub fn new(k: &ApiKeyRecord, now: i64) -> Self {
        ApiKeyView {
            id: k.id,
            project_id: k.project_id,
            name: k.name.clone(),
            masked_key: k.masked.clone(),
            created_by: k.created_by.clone(),
            created_at: Instant(k.created_at),
            last_used_at: Instant::opt(k.last_used_at),
            expires_at: Instant::opt(k.expires_at),
            revoked_at: Instant::opt(k.revoked_at),
            scopes: k.scopes.clone(),
            replaced_by: k.replaced_by,
            status: KeyStatus::of(k, now),
        }
    }
}

/// What one key has been used for.
#[derive(Debug, Clone, Copy, Default, Serialize, JsonSchema)]
pub struct Traffic {
    pub transcripts: i64,
    pub audio_seconds: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    pub traffic: Traffic,
}

/// A key just made: the only time its secret is in a response.
#[derive(Clone, Serialize, JsonSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The full key, to send as the `Authorization` header.
    #[serde(rename = "key")]
    pub secret: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A revealed key (after re-authentication; audited).
#[derive(Clone, Serialize, JsonSchema)]
pub struct RevealedKey {
    #[schemars(with = "String")]
    pub id: ApiKeyId,
    pub key: String,
}

impl std::fmt::Debug for RevealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Rotation {
    pub old: ApiKeyView,
    pub new: NewApiKey,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub created_at: Instant,
    pub hash: String,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(e: &AuditEntry) -> Self {
        AuditEntryView {
            seq: e.seq,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            details: e.details.clone(),
            created_at: Instant(e.created_at),
            hash: e.hash.clone(),
        }
    }
}
