//! Hark's persistence: narrow storage traits and one SQL implementation that runs on
//! SQLite (embedded default) and PostgreSQL (several nodes), each with its own migrations.
//!
//! Every data-plane read or write takes the caller's `ProjectId`, so a handler cannot
//! reach another tenant's rows by accident: a foreign object answers exactly as a
//! missing one.

mod alerts;
mod billing;
pub mod blobs;
pub mod bus;
mod jobs;
mod ledger;
mod links;
mod manage;
mod members;
mod migrations;
pub mod model;
mod signing;
mod sql;
mod streaming;
mod tenancy;
pub mod testing;
mod transcripts;
mod users;
mod webhooks;

pub use alerts::{Alert, AlertKind, AlertPatch, AlertStore, NewAlert};
use async_trait::async_trait;
pub use billing::{Balance, BalanceChange, BillingStore, Credit, CreditKind};
pub use bus::{CredentialBus, CredentialChange, Heard};
use hark_core::clock::Millis;
use hark_core::plan::LimitOverrides;
use hark_core::{AccountId, ApiKeyId, Plan, ProjectId, TranscriptId, UploadId, UserId};
pub use ledger::{DAY_MS, HOUR_MS};
pub use links::{AuthLink, LinkPurpose, LinkStore, NewAuthLink};
pub use manage::{AuditFilter, Deleted, KeyTraffic, ManageStore};
pub use members::{
    Accepted, AccountMembership, Invite, Mail, MemberRow, MemberStore, NewInvite, OutboxEntry,
};
pub use model::*;
pub use signing::{SigningSecretStore, WebhookSigningSecrets};
pub use sql::{Backend, SqlStore, DEFAULT_EVALUATION_CREDIT};
use std::sync::Arc;
pub use streaming::*;
pub use users::{
    normalize_email, LoginAttempt, LoginSession, NewSession, SignInMethod, TotpRecord, User,
    UserStore,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A write would pass the account's limit (the text comes from `hark_core::plan`).
    #[error("{}", hark_core::plan::LimitReached { plan: *plan, limit: *what, max: *limit })]
    LimitReached {
        plan: hark_core::Plan,
        what: hark_core::plan::Limit,
        limit: i64,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A new account with its first Owner and first project.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: AccountId,
    pub name: String,
    pub plan: Plan,
    pub owner_id: UserId,
    pub owner_email: String,
    pub project: NewProject,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: ProjectId,
    pub name: String,
    pub webhook_secret_sealed: String,
}

/// Accounts, their members and projects.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_account(&self, new: NewAccount, actor: &Actor) -> StoreResult<Bootstrap>;
    async fn get_account(&self, id: AccountId) -> StoreResult<Option<Account>>;
    async fn set_plan(
        &self,
        id: AccountId,
        plan: Plan,
        overrides: LimitOverrides,
        actor: &Actor,
    ) -> StoreResult<Account>;
    async fn members(&self, id: AccountId) -> StoreResult<Vec<Membership>>;
    /// Creates a project if the account is below its project limit (checked atomically).
    async fn create_project(
        &self,
        account: AccountId,
        new: NewProject,
        actor: &Actor,
    ) -> StoreResult<Project>;
    async fn list_projects(&self, account: AccountId) -> StoreResult<Vec<Project>>;
    async fn get_project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    /// The project's sealed webhook signing secret.
    async fn project_webhook_secret(&self, id: ProjectId) -> StoreResult<Option<String>>;
}

/// API keys and the lookup every request's authentication does.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Creates a key if the account is below its key limit (checked atomically).
    async fn create_api_key(&self, new: NewApiKey, actor: &Actor) -> StoreResult<ApiKeyRecord>;
    async fn list_api_keys(&self, project: ProjectId) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKeyRecord>>;
    async fn revoke_api_key(&self, id: ApiKeyId, actor: &Actor) -> StoreResult<ApiKeyRecord>;
    /// The key whose digest this is, whatever its state (the caller checks usability).
    async fn principal_by_digest(&self, digest_hex: &str) -> StoreResult<Option<KeyPrincipal>>;
    async fn touch_last_used(&self, uses: &[(ApiKeyId, Millis)]) -> StoreResult<()>;
    /// A counter bumped by every credential change, for cache invalidation.
    async fn auth_epoch(&self) -> StoreResult<i64>;
    /// The cluster's master-key check value: `proposed` is stored if none is yet, and
    /// the stored one is returned (the first node to start sets it).
    async fn master_key_check(&self, proposed: &str) -> StoreResult<String>;
    /// This process's end of the revocation bus: every credential change committed
    /// through any node is published on it.
    fn credential_bus(&self) -> Arc<CredentialBus>;
    /// Keeps this process connected to the bus (runs for as long as the process does;
    /// returns at once where the bus is in-process).
    async fn listen_for_credential_changes(&self);
}

/// Uploads and transcripts of one project.
#[async_trait]
pub trait TranscriptStore: Send + Sync {
    async fn create_upload(&self, upload: Upload) -> StoreResult<()>;
    /// Inserts the upload unless the account's uploads would then hold more than
    /// `quota_bytes` (false), atomically under the account's lock.
    async fn create_upload_within_quota(
        &self,
        upload: Upload,
        quota_bytes: i64,
    ) -> StoreResult<bool>;
    /// The bytes of the account's stored uploads.
    async fn upload_bytes(&self, account: AccountId) -> StoreResult<i64>;
    /// Deletes the uploads created before `created_before` that no live (undeleted)
    /// transcript uses; returns them so the caller removes their files.
    async fn expire_uploads(&self, created_before: Millis) -> StoreResult<Vec<Upload>>;
    /// The files of every stored upload (to find files no row refers to).
    async fn upload_paths(&self) -> StoreResult<Vec<String>>;
    /// Any project's upload: the caller decides between "missing" and "forbidden".
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>>;
    /// Inserts the transcript and its queued job in one transaction.
    async fn create_transcript(&self, new: NewTranscript) -> StoreResult<Transcript>;
    async fn get_transcript(
        &self,
        project: ProjectId,
        id: TranscriptId,
    ) -> StoreResult<Option<Transcript>>;
    async fn list_transcripts(
        &self,
        project: ProjectId,
        query: &TranscriptQuery,
    ) -> StoreResult<Vec<Transcript>>;
    /// Scrubs the transcript (audio URL, result, parameters, error text), cancels its
    /// job and forgets its upload unless another live transcript uses it; returns the
    /// scrubbed transcript and the upload whose file the caller must remove (after
    /// this commits).
    async fn delete_transcript(
        &self,
        project: ProjectId,
        id: TranscriptId,
    ) -> StoreResult<Option<(Transcript, Option<Upload>)>>;
}

/// The transcription queue: rows claimed under a lease.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Claims the oldest runnable job whose account is under its concurrency limit.
    async fn claim_job(&self, worker: &str, lease_ms: i64) -> StoreResult<Option<ClaimedJob>>;
    async fn extend_lease(&self, job_id: &str, worker: &str, lease_ms: i64) -> StoreResult<bool>;
    /// How many jobs wait to be claimed (all accounts, all nodes).
    async fn queued_jobs(&self) -> StoreResult<i64>;
    /// Commits the outcome, its usage event and its webhook in one transaction, only
    /// if `worker` still holds the lease. Returns whether it committed.
    async fn finish_job(
        &self,
        job_id: &str,
        worker: &str,
        outcome: JobOutcome,
        webhook: Option<NewWebhook>,
    ) -> StoreResult<bool>;
}

/// The webhook outbox.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn enqueue_webhook(
        &self,
        account: AccountId,
        project: ProjectId,
        webhook: NewWebhook,
    ) -> StoreResult<()>;
    async fn claim_due_webhook(&self, lease_ms: i64) -> StoreResult<Option<WebhookDelivery>>;
    async fn record_delivery(&self, id: &str, result: DeliveryResult) -> StoreResult<()>;
}

/// The usage ledger.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Appends the event unless one with its idempotency key exists; returns whether it did.
    async fn record_usage(&self, event: NewUsageEvent) -> StoreResult<bool>;
    async fn usage_events(&self, account: AccountId) -> StoreResult<Vec<UsageEvent>>;
    /// Sums of the hourly rollups by bucket (and group): never reads raw events.
    async fn usage_rollup(&self, query: &RollupQuery) -> StoreResult<Vec<RollupRow>>;
    /// Sums by product, model and project over `[from, to)` (statement line items).
    async fn usage_lines(
        &self,
        account: AccountId,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<UsageLine>>;
    /// A frozen statement, if one was stored.
    async fn frozen_statement(
        &self,
        account: AccountId,
        month_start: Millis,
    ) -> StoreResult<Option<String>>;
    /// Stores `body` unless a statement of that month exists; returns the stored one.
    async fn freeze_statement(
        &self,
        account: AccountId,
        month_start: Millis,
        body: &str,
    ) -> StoreResult<String>;
    /// Every account with usage, credits or statements (deleted ones included).
    async fn billed_accounts(&self) -> StoreResult<Vec<AccountId>>;
}

/// The append-only, hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn audit_entries(&self, account: Option<AccountId>) -> StoreResult<Vec<AuditEntry>>;
    /// Checks the chain; `Err` names the first entry that does not fit.
    async fn verify_audit_chain(
        &self,
        account: Option<AccountId>,
    ) -> StoreResult<Result<usize, String>>;
}

/// Everything the server needs from storage.
pub trait Store:
    AccountStore
    + KeyStore
    + TranscriptStore
    + JobStore
    + WebhookStore
    + UsageStore
    + AuditStore
    + StreamStore
    + UserStore
    + MemberStore
    + ManageStore
    + LinkStore
    + SigningSecretStore
    + BillingStore
    + AlertStore
{
}
impl<
        T: AccountStore
            + KeyStore
            + TranscriptStore
            + JobStore
            + WebhookStore
            + UsageStore
            + AuditStore
            + StreamStore
            + UserStore
            + MemberStore
            + ManageStore
            + LinkStore
            + SigningSecretStore
            + BillingStore
            + AlertStore,
    > Store for T
{
}
