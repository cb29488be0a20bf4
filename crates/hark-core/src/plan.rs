//! Plans and their limits, member roles, and the one permission table every
//! management action goes through.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Payg,
    Contracted,
    Enterprise,
}

impl Plan {
    pub const ALL: [Plan; 4] = [Plan::Free, Plan::Payg, Plan::Contracted, Plan::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Payg => "payg",
            Plan::Contracted => "contracted",
            Plan::Enterprise => "enterprise",
        }
    }

    /// The published limits of the plan. Enterprise limits are "custom": these are
    /// the starting values an operator overrides per account.
    pub fn default_limits(self) -> PlanLimits {
        let (projects, api_keys, members) = match self {
            Plan::Free => (2, 2, 2),
            Plan::Payg => (2, 4, 20),
            Plan::Contracted => (5, 25, 20),
            Plan::Enterprise => (100, 1000, 20),
        };
        let paid = self != Plan::Free;
        PlanLimits {
            projects,
            api_keys,
            members,
            concurrent_jobs: if paid { 200 } else { 5 },
            streaming_sessions_per_minute: if paid { 100 } else { 5 },
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan '{0}' (expected free, payg, contracted or enterprise)")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPlan(s.to_string()))
    }
}

/// The numeric limits in force for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLimits {
    pub projects: u32,
    pub api_keys: u32,
    /// Active members plus pending invites.
    pub members: u32,
    /// Transcription jobs running at once; the rest wait FIFO, throttled.
    pub concurrent_jobs: u32,
    pub streaming_sessions_per_minute: u32,
}

/// A limit that refuses a write when reached (the others throttle or close streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Projects,
    ApiKeys,
    Members,
}

impl Limit {
    /// The limit's name, as `hark admin account set-plan --limit NAME=N` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Projects => "projects",
            Limit::ApiKeys => "api_keys",
            Limit::Members => "members",
        }
    }

    /// What counts toward the limit, in the words a user reads in a refusal.
    pub fn what_counts(self) -> &'static str {
        match self {
            Limit::Projects => "every project of the account counts",
            Limit::ApiKeys => {
                "keys of all the account's projects count; revoked, expired and rotated-out keys do not"
            }
            Limit::Members => "active members and pending invites count",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Limit::Projects => "projects",
            Limit::ApiKeys => "API keys",
            Limit::Members => "members",
        }
    }
}

/// The refusal of a write that would pass an account's limit: it names the plan, the
/// limit and what counts toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this account's plan ({plan}) allows at most {max} {noun} ({counts}); the operator can change the plan or raise the limit",
    noun = .limit.noun(),
    counts = .limit.what_counts()
)]
pub struct LimitReached {
    pub plan: Plan,
    pub limit: Limit,
    pub max: i64,
}

/// Per-account overrides of the plan's limits (Enterprise "custom" limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming_sessions_per_minute: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitOverrideError {
    #[error("expected NAME=NUMBER, got '{0}'")]
    Syntax(String),
    #[error("unknown limit '{0}' (expected projects, api_keys, members, concurrent_jobs or streaming_sessions_per_minute)")]
    UnknownName(String),
}

impl LimitOverrides {
    /// Applies one `name=value` setting, as the operator CLI takes it.
    pub fn set(&mut self, assignment: &str) -> Result<(), LimitOverrideError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| LimitOverrideError::Syntax(assignment.to_string()))?;
        let value: u32 = value
            .trim()
            .parse()
            .map_err(|_| LimitOverrideError::Syntax(assignment.to_string()))?;
        let slot = match name.trim().replace('-', "_").as_str() {
            "projects" => &mut self.projects,
            "api_keys" | "keys" => &mut self.api_keys,
            "members" => &mut self.members,
            "concurrent_jobs" => &mut self.concurrent_jobs,
            "streaming_sessions_per_minute" => &mut self.streaming_sessions_per_minute,
            other => return Err(LimitOverrideError::UnknownName(other.to_string())),
        };
        *slot = Some(value);
        Ok(())
    }

    pub fn apply(&self, base: PlanLimits) -> PlanLimits {
        PlanLimits {
            projects: self.projects.unwrap_or(base.projects),
            api_keys: self.api_keys.unwrap_or(base.api_keys),
            members: self.members.unwrap_or(base.members),
            concurrent_jobs: self.concurrent_jobs.unwrap_or(base.concurrent_jobs),
            streaming_sessions_per_minute: self
                .streaming_sessions_per_minute
                .unwrap_or(base.streaming_sessions_per_minute),
        }
    }
}

/// A member's role in an account. Written in lowercase; read in any case (`"Reader"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Reader,
}

impl Role {
    /// The roles an invite or a role change can give: ownership moves only by transfer.
    pub const ASSIGNABLE: [Role; 2] = [Role::Admin, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }

    /// The refusal of a role that cannot be given, listing those that can.
    pub fn assignable_choices() -> String {
        format!(
            "role must be one of: {}",
            Role::ASSIGNABLE.map(Role::as_str).join(", ")
        )
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "reader" => Ok(Role::Reader),
            _ => Err(format!("unknown role '{s}'")),
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every management action, named after the seed's permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ViewMembers,
    ViewProjects,
    ViewApiKeys,
    ViewUsage,
    ViewTranscripts,
    ManageMembers,
    ManageProjects,
    ManageApiKeys,
    ManageAlerts,
    RevealApiKeys,
    ManageBilling,
    ManageSettings,
    ViewAuditLog,
    DeleteAccount,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewMembers => "view_members",
            Permission::ViewProjects => "view_projects",
            Permission::ViewApiKeys => "view_api_keys",
            Permission::ViewUsage => "view_usage",
            Permission::ViewTranscripts => "view_transcripts",
            Permission::ManageMembers => "manage_members",
            Permission::ManageProjects => "manage_projects",
            Permission::ManageApiKeys => "manage_api_keys",
            Permission::ManageAlerts => "manage_alerts",
            Permission::RevealApiKeys => "reveal_api_keys",
            Permission::ManageBilling => "manage_billing",
            Permission::ManageSettings => "manage_settings",
            Permission::ViewAuditLog => "view_audit_log",
            Permission::DeleteAccount => "delete_account",
        }
    }
}

/// The one permission function: does `role` allow `permission`?
pub fn role_allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match permission {
        ViewMembers | ViewProjects | ViewApiKeys | ViewUsage | ViewTranscripts => true,
        ManageMembers | ManageProjects | ManageApiKeys | ManageAlerts | RevealApiKeys
        | ManageBilling | ManageSettings | ViewAuditLog => {
            matches!(role, Role::Owner | Role::Admin)
        }
        DeleteAccount => role == Role::Owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_limits_per_plan() {
        let l = |p: Plan| p.default_limits();
        assert_eq!(
            (
                l(Plan::Free).projects,
                l(Plan::Free).api_keys,
                l(Plan::Free).members
            ),
            (2, 2, 2)
        );
        assert_eq!(
            (
                l(Plan::Payg).projects,
                l(Plan::Payg).api_keys,
                l(Plan::Payg).members
            ),
            (2, 4, 20)
        );
        assert_eq!(
            (
                l(Plan::Contracted).projects,
                l(Plan::Contracted).api_keys,
                l(Plan::Contracted).members
            ),
            (5, 25, 20)
        );
        assert_eq!(l(Plan::Enterprise).members, 20);
        assert_eq!(l(Plan::Free).concurrent_jobs, 5);
        assert_eq!(l(Plan::Payg).concurrent_jobs, 200);
    }

    #[test]
    fn overrides_apply_and_reject_bad_input() {
        let mut o = LimitOverrides::default();
        o.set("projects=9").unwrap();
        o.set("api-keys=40").unwrap();
        let limits = o.apply(Plan::Enterprise.default_limits());
        assert_eq!((limits.projects, limits.api_keys), (9, 40));
        assert!(o.set("projects").is_err());
        assert!(o.set("projects=-1").is_err());
        assert!(matches!(
            o.set("bogus=1"),
            Err(LimitOverrideError::UnknownName(_))
        ));
    }

    #[test]
    fn seed_permission_table() {
        use Permission::*;
        for p in [
            ViewMembers,
            ViewProjects,
            ViewApiKeys,
            ViewUsage,
            ViewTranscripts,
        ] {
            for r in [Role::Owner, Role::Admin, Role::Reader] {
                assert!(role_allows(r, p));
            }
        }
        for p in [
            ManageMembers,
            ManageProjects,
            ManageApiKeys,
            ManageAlerts,
            ManageBilling,
        ] {
            assert!(role_allows(Role::Owner, p));
            assert!(role_allows(Role::Admin, p));
            assert!(!role_allows(Role::Reader, p));
        }
        assert!(role_allows(Role::Owner, DeleteAccount));
        assert!(!role_allows(Role::Admin, DeleteAccount));
        assert!(!role_allows(Role::Reader, DeleteAccount));
    }

    #[test]
    fn limit_refusals_name_plan_limit_and_what_counts() {
        let e = LimitReached {
            plan: Plan::Free,
            limit: Limit::ApiKeys,
            max: 2,
        };
        assert_eq!(
            e.to_string(),
            "this account's plan (free) allows at most 2 API keys (keys of all the account's projects count; revoked, expired and rotated-out keys do not); the operator can change the plan or raise the limit"
        );
        for l in [Limit::Projects, Limit::ApiKeys, Limit::Members] {
            let mut o = LimitOverrides::default();
            assert!(o.set(&format!("{}=3", l.name())).is_ok());
        }
    }

    #[test]
    fn roles_read_in_any_case_and_write_in_lowercase() {
        for (text, role) in [
            ("\"Reader\"", Role::Reader),
            ("\"ADMIN\"", Role::Admin),
            ("\"owner\"", Role::Owner),
        ] {
            let parsed: Role = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, role);
            assert_eq!(
                serde_json::to_string(&parsed).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert!(serde_json::from_str::<Role>("\"boss\"").is_err());
        assert_eq!(
            Role::assignable_choices(),
            "role must be one of: admin, reader"
        );
    }

    #[test]
    fn plan_parses_case_insensitively() {
        assert_eq!("PAYG".parse::<Plan>().unwrap(), Plan::Payg);
        assert!("gold".parse::<Plan>().is_err());
    }
}
