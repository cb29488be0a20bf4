//! Each project's webhook signing secret: its rotation state for every member, the
//! secret itself for Owners and Admins within minutes of re-authentication (audited),
//! and rotation with an overlap during which deliveries carry signatures under both
//! the new and the former secret.

use super::projects::project_in;
use super::views::Instant;
use super::{authorize, require_recent_reauth, Caller, Error, Result};
use crate::AppState;
use hark_core::{AccountId, Permission, ProjectId};
use hark_outbound::project_secret_seal_context;
use hark_store::WebhookSigningSecrets;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest overlap a rotation may ask for: a week.
pub const MAX_OVERLAP_SECS: i64 = 7 * 86_400;

/// A project's signing-secret state, without the secret.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookSecretStatus {
    #[schemars(with = "String")]
    pub project_id: ProjectId,
    /// When the secret was last rotated (`null`: never).
    pub rotated_at: Option<Instant>,
    /// While a former secret still signs: until when.
    pub previous_valid_until: Option<Instant>,
}

/// The signing secret (`whsec_...`) and, during an overlap, the former one.
#[derive(Clone, Serialize, JsonSchema)]
pub struct WebhookSecret {
    #[schemars(with = "String")]
    pub project_id: ProjectId,
    pub secret: String,
    /// The former secret while it still signs beside `secret`.
    pub previous_secret: Option<String>,
    pub previous_valid_until: Option<Instant>,
    pub rotated_at: Option<Instant>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("project_id", &self.project_id)
            .field("previous_valid_until", &self.previous_valid_until)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct RotateSecretInput {
    /// How long the former secret keeps signing beside the new one: 0 to 604800 s
    /// (default: the server's `webhook_secret_overlap_secs`, a day unless set).
    #[serde(default)]
    pub overlap_seconds: Option<i64>,
}

fn status_of(s: &WebhookSigningSecrets, now: i64) -> WebhookSecretStatus {
    WebhookSecretStatus {
        project_id: s.project_id,
        rotated_at: Instant::opt(s.rotated_at),
        previous_valid_until: s.previous_at(now).and(s.previous_until).map(Instant),
    }
}

fn open(state: &AppState, s: &WebhookSigningSecrets) -> Result<WebhookSecret> {
    let now = state.clock.now_ms();
    let context = project_secret_seal_context(s.project_id);
    let secret = state
        .master_key
        .open(&s.current_sealed, &context)
        .map_err(Error::internal)?;
    let previous_secret = s
        .previous_at(now)
        .map(|sealed| state.master_key.open(sealed, &context))
        .transpose()
        .map_err(Error::internal)?;
    let status = status_of(s, now);
    Ok(WebhookSecret {
        project_id: s.project_id,
        secret,
        previous_secret,
        previous_valid_until: status.previous_valid_until,
        rotated_at: status.rotated_at,
    })
}

/// The rotation state of the project's secret (every member).
pub async fn status(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
) -> Result<WebhookSecretStatus> {
    let auth = authorize(state, caller, account, Permission::ViewProjects).await?;
    let p = project_in(state, &auth, project).await?;
    let stored = state
        .store
        .webhook_signing_secrets(p.id)
        .await?
        .ok_or(Error::NotFound("project"))?;
    Ok(status_of(&stored, state.clock.now_ms()))
}

/// The secret itself: Owner and Admin (the key-reveal permission), within minutes of
/// re-authentication; every reveal is audited.
pub async fn reveal(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
) -> Result<WebhookSecret> {
    let auth = authorize(state, caller, account, Permission::RevealApiKeys).await?;
    require_recent_reauth(state, caller)?;
    let p = project_in(state, &auth, project).await?;
    let stored = state
        .store
        .reveal_webhook_secrets(p.id, &caller.actor())
        .await?;
    open(state, &stored)
}

/// A new secret now; the former one keeps signing for the overlap. Owner and Admin,
/// within minutes of re-authentication (the answer holds the new secret); audited.
pub async fn rotate(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    input: &RotateSecretInput,
) -> Result<WebhookSecret> {
    let auth = authorize(state, caller, account, Permission::ManageProjects).await?;
    require_recent_reauth(state, caller)?;
    let overlap = input
        .overlap_seconds
        .unwrap_or(state.config.webhook_secret_overlap_secs);
    if !(0..=MAX_OVERLAP_SECS).contains(&overlap) {
        return Err(Error::Invalid(format!(
            "overlap_seconds must be between 0 and {MAX_OVERLAP_SECS}"
        )));
    }
    let p = project_in(state, &auth, project).await?;
    let secret = hark_core::webhook_sign::generate_secret();
    let sealed = state
        .master_key
        .seal(&secret, &project_secret_seal_context(p.id));
    let stored = state
        .store
        .rotate_webhook_secret(p.id, &sealed, overlap * 1000, &caller.actor())
        .await?;
    open(state, &stored)
}
