//! Records the store reads and writes: plain data, no behaviour.

use hark_core::clock::Millis;
use hark_core::money::Micros;
use hark_core::plan::LimitOverrides;
use hark_core::scope::Scope;
use hark_core::{
    AccountId, ApiKeyId, Plan, PlanLimits, ProjectId, Role, TranscriptId, UploadId, UserId,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub plan: Plan,
    pub overrides: LimitOverrides,
    pub limits: PlanLimits,
    pub require_mfa: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub account_id: AccountId,
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: ProjectId,
    pub account_id: AccountId,
    pub name: String,
    pub created_at: Millis,
}

/// An API key as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub name: String,
    pub masked: String,
    pub created_by: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    /// Least-privilege scopes; empty means every scope.
    pub scopes: Vec<Scope>,
    /// Set when the key was rotated: its successor (the old key works until `expires_at`).
    pub replaced_by: Option<ApiKeyId>,
}

/// What a presented API key authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPrincipal {
    pub key_id: ApiKeyId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub limits: PlanLimits,
    /// Least-privilege scopes; empty means every scope.
    pub scopes: Vec<Scope>,
    /// The account is prepaid and its balance is negative: new work is refused.
    pub balance_blocked: bool,
}

impl KeyPrincipal {
    /// Whether this key may act under `scope` (the data plane asks before each action).
    pub fn allows(&self, scope: Scope) -> bool {
        hark_core::scope::allows(&self.scopes, scope)
    }

    pub fn is_usable_at(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A new API key: the caller generates the secret; the store keeps digest and sealed copy.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub project_id: ProjectId,
    pub name: String,
    pub digest_hex: String,
    pub sealed: String,
    pub masked: String,
    pub created_by: String,
    pub expires_at: Option<Millis>,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: UploadId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub path: String,
    pub size_bytes: i64,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptStatus {
    Queued,
    Processing,
    Completed,
    Error,
}

impl TranscriptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptStatus::Queued => "queued",
            TranscriptStatus::Processing => "processing",
            TranscriptStatus::Completed => "completed",
            TranscriptStatus::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TranscriptStatus::Queued,
            "processing" => TranscriptStatus::Processing,
            "completed" => TranscriptStatus::Completed,
            "error" => TranscriptStatus::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub id: TranscriptId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub status: TranscriptStatus,
    pub audio_url: String,
    pub upload_id: Option<UploadId>,
    /// The validated request options, as JSON.
    pub params: String,
    /// The engine's output, as JSON, once completed.
    pub result: Option<String>,
    pub error: Option<String>,
    pub speech_model_used: Option<String>,
    pub audio_duration: Option<f64>,
    pub webhook_status_code: Option<i64>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    pub deleted_at: Option<Millis>,
    /// Held back by the account's concurrency limit (computed when read).
    pub throttled: bool,
}

#[derive(Debug, Clone)]
pub struct NewTranscript {
    pub id: TranscriptId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub audio_url: String,
    pub upload_id: Option<UploadId>,
    pub params: String,
}

/// Filters of `GET /v2/transcript`.
#[derive(Debug, Clone, Default)]
pub struct TranscriptQuery {
    pub limit: u32,
    pub status: Option<TranscriptStatus>,
    /// Inclusive range of `created_at` (the UTC day asked for).
    pub created_between: Option<(Millis, Millis)>,
    pub before_id: Option<TranscriptId>,
    pub after_id: Option<TranscriptId>,
    pub throttled_only: bool,
}

/// A job a worker holds under lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub job_id: String,
    pub transcript: Transcript,
    pub attempts: i64,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Completed {
        result_json: String,
        speech_model_used: String,
        audio_duration: f64,
        usage: NewUsageEvent,
    },
    Failed {
        error: String,
    },
}

/// One billable use: a completed transcript or a closed streaming session.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsageEvent {
    pub idempotency_key: String,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    /// `speech_to_text` or `streaming` (see [`hark_core::money::PRODUCTS`]).
    pub product: String,
    pub model: String,
    /// Audio transcribed (speech-to-text) or received (streaming).
    pub audio_ms: i64,
    /// Wall-clock length of a streaming session (what streaming bills).
    pub session_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub event: NewUsageEvent,
    /// The price in force when it was written, micro-units per hour.
    pub price_per_hour: Micros,
    pub cost: Micros,
    pub created_at: Millis,
}

/// Bucket width of a rollup read. Rows come back with an instant inside their bucket
/// (hour start; day start; for months a day or month start, which the caller maps to
/// its calendar month), read from the coarsest rollup that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupBucket {
    Hour,
    Day,
    Month,
}

/// The dimension a rollup read groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupGroup {
    Account,
    Project,
    ApiKey,
    Product,
    Model,
}

/// A read of the rollups: `[from, to)` on whole hours, with `IN` filters
/// (empty = any). `account` `None` reads every account (the operator's export).
#[derive(Debug, Clone, PartialEq)]
pub struct RollupQuery {
    pub account: Option<AccountId>,
    pub from: Millis,
    pub to: Millis,
    pub bucket: RollupBucket,
    pub group_by: Option<RollupGroup>,
    pub projects: Vec<String>,
    pub api_keys: Vec<String>,
    pub products: Vec<String>,
    pub models: Vec<String>,
}

/// Sums over some usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub audio_ms: i64,
    pub session_ms: i64,
    pub transcripts: i64,
    pub sessions: i64,
    pub cost: Micros,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        self.audio_ms += other.audio_ms;
        self.session_ms += other.session_ms;
        self.transcripts += other.transcripts;
        self.sessions += other.sessions;
        self.cost += other.cost;
    }
}

/// Usage of one product, model and project over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLine {
    pub product: String,
    pub model: String,
    pub project_id: String,
    pub totals: UsageTotals,
}

/// One bucket and group of a rollup read (`group` empty when not grouped).
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub bucket: Millis,
    pub group: String,
    pub totals: UsageTotals,
}

/// A webhook to send after the transaction that produced it commits.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub auth_header_name: Option<String>,
    pub auth_header_sealed: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: String,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub transcript_id: Option<TranscriptId>,
    pub url: String,
    pub auth_header_name: Option<String>,
    pub auth_header_sealed: Option<String>,
    pub body: String,
    pub attempts: i64,
    pub created_at: Millis,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    Delivered {
        status: u16,
    },
    /// Permanent failure: a 4xx, or the attempts are used up.
    GaveUp {
        status: Option<u16>,
        error: String,
    },
    RetryAt {
        status: Option<u16>,
        error: String,
        at: Millis,
    },
}

/// Who did something, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Operator,
    User(UserId),
    ApiKey(ApiKeyId),
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Operator => "operator".into(),
            Actor::User(u) => format!("user:{u}"),
            Actor::ApiKey(k) => format!("api_key:{k}"),
            Actor::System => "system".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub account_id: Option<AccountId>,
    pub seq: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub created_at: Millis,
    pub hash: String,
}

/// What `hark admin init` creates in one transaction.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub account: Account,
    pub owner: UserId,
    pub project: Project,
}
