//! The playground's rules: an Owner or Admin (the roles that may reveal a key) acts as
//! one live API key of a project, so uploads, transcripts and streaming tokens made
//! from the dashboard count as that key's usage; and follows a transcript made that way.

use super::{authorize, Authorized, Caller, Error, Result};
use crate::render;
use crate::AppState;
use hark_core::{AccountId, ApiKeyId, Permission, ProjectId, TranscriptId};
use hark_store::{ApiKeyRecord, KeyPrincipal, Project};

/// What the playground page offers: the account's projects, the chosen one and its
/// live keys.
#[derive(Debug, Clone)]
pub struct Playground {
    pub auth: Authorized,
    pub projects: Vec<Project>,
    /// The chosen project (the first one when none or an unknown one was asked for).
    pub project: Option<Project>,
    /// The chosen project's keys that work now (not revoked, not expired).
    pub keys: Vec<ApiKeyRecord>,
}

/// The playground of `account` for `project` (Owner, Admin).
pub async fn overview(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: Option<ProjectId>,
) -> Result<Playground> {
    let auth = authorize(state, caller, account, Permission::RevealApiKeys).await?;
    let projects = state.store.list_projects(auth.account.id).await?;
    let chosen = project
        .and_then(|id| projects.iter().find(|p| p.id == id))
        .or_else(|| projects.first())
        .cloned();
    let keys = match &chosen {
        Some(p) => {
            let now = state.clock.now_ms();
            let mut keys: Vec<ApiKeyRecord> = state
                .store
                .list_api_keys(p.id)
                .await?
                .into_iter()
                .filter(|k| usable(k, now))
                .collect();
            // A project may hold thousands of keys; the choice offers the most recent.
            keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
            keys.truncate(PLAYGROUND_KEYS);
            keys
        }
        None => Vec::new(),
    };
    Ok(Playground {
        auth,
        projects,
        project: chosen,
        keys,
    })
}

/// How many live keys the playground offers (the most recently created).
pub const PLAYGROUND_KEYS: usize = 100;

fn usable(k: &ApiKeyRecord, now: i64) -> bool {
    k.revoked_at.is_none() && k.expires_at.is_none_or(|e| now < e)
}

/// The project `project` of the authorised account (another account's answers as missing).
async fn project_in(state: &AppState, auth: &Authorized, project: ProjectId) -> Result<Project> {
    state
        .store
        .get_project(project)
        .await?
        .filter(|p| p.account_id == auth.account.id)
        .ok_or(Error::NotFound("project"))
}

/// The principal the data plane would see for `key`, a live key of `project` of
/// `account`: the caller (Owner, Admin) then acts as that key. A key of another
/// project or account answers as missing; a revoked or expired one is refused.
pub async fn acting_key(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    key: ApiKeyId,
) -> Result<KeyPrincipal> {
    let auth = authorize(state, caller, account, Permission::RevealApiKeys).await?;
    let p = project_in(state, &auth, project).await?;
    let k = state
        .store
        .get_api_key(key)
        .await?
        .filter(|k| k.project_id == p.id)
        .ok_or(Error::NotFound("API key"))?;
    if !usable(&k, state.clock.now_ms()) {
        return Err(Error::Invalid(
            "this API key is revoked or expired: choose a live key".into(),
        ));
    }
    // The playground spends as the key would: a prepaid account with a negative
    // balance is refused here as on the API.
    let balance_blocked = state.store.balance(auth.account.id).await?.blocked;
    Ok(KeyPrincipal {
        balance_blocked,
        key_id: k.id,
        account_id: auth.account.id,
        project_id: p.id,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        limits: auth.account.limits,
        scopes: k.scopes.clone(),
    })
}

/// A transcript as the playground shows it.
#[derive(Debug, Clone)]
pub struct PlaygroundTranscript {
    pub auth: Authorized,
    pub id: TranscriptId,
    pub project: Project,
    /// `queued`, `processing`, `completed` or `error`, as `/v2/transcript` says.
    pub status: String,
    pub text: Option<String>,
    pub error: Option<String>,
}

impl PlaygroundTranscript {
    /// Whether the status can still change.
    pub fn pending(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "processing")
    }
}

/// A transcript of `project` (every role that may view transcripts), rendered as
/// `GET /v2/transcript/{id}` renders it.
pub async fn transcript(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    id: TranscriptId,
) -> Result<PlaygroundTranscript> {
    let auth = authorize(state, caller, account, Permission::ViewTranscripts).await?;
    let p = project_in(state, &auth, project).await?;
    let t = state
        .store
        .get_transcript(p.id, id)
        .await?
        .ok_or(Error::NotFound("transcript"))?;
    let json = render::transcript(&t);
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
    Ok(PlaygroundTranscript {
        auth,
        id: t.id,
        project: p,
        status: field("status").unwrap_or_else(|| t.status.as_str().to_string()),
        text: field("text"),
        error: field("error"),
    })
}
