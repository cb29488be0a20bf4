//! The SQL store: connection, migrations, dialect differences and row decoding shared
//! by the per-area implementations.

use crate::bus::{CredentialBus, CredentialChange};
use crate::{StoreError, StoreResult};
use hark_core::clock::{Clock, Millis};
use hark_core::money::{Micros, PriceTable};

/// The evaluation credit of a new Free account unless configured: 50.00.
pub const DEFAULT_EVALUATION_CREDIT: Micros = 50_000_000;
use hark_core::plan::LimitOverrides;
use hark_core::{AccountId, Plan, PlanLimits};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One store over either backend. SQL is written to run on both (numbered `$N`
/// parameters, integers for instants and flags); where the dialects differ the
/// code branches on [`Backend`].
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) bus: Arc<CredentialBus>,
    /// Where the credential listener connects (PostgreSQL only).
    #[cfg(feature = "postgres")]
    listen_url: Option<String>,
    /// Prices each usage event as it is written.
    pub(crate) prices: Arc<PriceTable>,
    /// Credit given to every new Free account, micro-units.
    pub(crate) evaluation_credit: Micros,
    /// The currency label of every amount (alert mails and webhooks).
    pub(crate) currency: Arc<str>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl SqlStore {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            if !cfg!(feature = "postgres") {
                return Err(StoreError::Conflict(hark_core::not_in_this_build(
                    "PostgreSQL support",
                    "postgres",
                )));
            }
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Conflict(format!(
                "unsupported database URL scheme in '{}': use sqlite: or postgres:",
                url.split(':').next().unwrap_or_default()
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; NORMAL sync is durable
                        // across application crashes, which is what WAL needs.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        Ok(Self {
            pool,
            backend,
            clock,
            // One node on SQLite: the in-process bus hears every change of this store.
            bus: Arc::new(CredentialBus::new(backend == Backend::Sqlite)),
            // Named, so operators (and tests) can tell the listener's connection apart.
            #[cfg(feature = "postgres")]
            listen_url: (backend == Backend::Postgres).then(|| {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}application_name=hark-credential-listener")
            }),
            prices: Arc::new(PriceTable::builtin()),
            evaluation_credit: DEFAULT_EVALUATION_CREDIT,
            currency: Arc::from("USD"),
        })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let store = Self::connect(url, clock).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        crate::migrations::migrator(self.backend)
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Uses `prices` (instead of the built-in ones) for the usage written from now on.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// Gives new Free accounts `micros` of evaluation credit (zero: none).
    pub fn with_evaluation_credit(mut self, micros: Micros) -> Self {
        self.evaluation_credit = micros;
        self
    }

    /// Names amounts in `currency` (a label; nothing is converted).
    pub fn with_currency(mut self, currency: &str) -> Self {
        self.currency = Arc::from(currency);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw pool, for tests that inspect or tamper with rows.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Begins a transaction whose first statement takes the account's row lock, so
    /// limit checks on that account are serialised: a row lock on PostgreSQL, the
    /// database write lock on SQLite (taken before any read, so no stale snapshot).
    pub(crate) async fn begin_for_account(
        &self,
        account: AccountId,
    ) -> StoreResult<(Transaction<'static, Any>, AccountRow)> {
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE accounts SET lock_version = lock_version + 1 WHERE id = $1")
                .bind(account.to_string())
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("account"));
        }
        let row = sqlx::query(ACCOUNT_SELECT_BY_ID)
            .bind(account.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let account = AccountRow::decode(&row)?;
        Ok((tx, account))
    }

    /// Begins a transaction that writes first (see `begin_for_account`), for writes
    /// not tied to one account.
    pub(crate) async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE auth_epoch SET epoch = epoch WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Marks cached credentials as stale inside `tx`: bumps the auth epoch (the
    /// fallback every node polls) and, on PostgreSQL, notifies every node's listener
    /// of `change` (delivered only if and when `tx` commits).
    pub(crate) async fn bump_auth_epoch(
        &self,
        tx: &mut Transaction<'static, Any>,
        change: CredentialChange,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await?;
        self.notify_change(tx, change).await
    }

    /// Publishes `change` on PostgreSQL inside `tx` (delivered at commit) without
    /// touching the auth epoch: for changes no node caches keys for (a member removed).
    pub(crate) async fn notify_change(
        &self,
        tx: &mut Transaction<'static, Any>,
        change: CredentialChange,
    ) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            // Wrapped: the Any driver cannot decode pg_notify's `void` column.
            sqlx::query("SELECT count(*) AS n FROM (SELECT pg_notify($1, $2)) AS sent")
                .bind(crate::bus::CHANNEL)
                .bind(crate::bus::notification(change, self.now()))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Commits a transaction that bumped the auth epoch and tells this process's
    /// subscribers at once (other nodes hear the notification sent at commit).
    pub(crate) async fn commit_change(
        &self,
        tx: Transaction<'static, Any>,
        change: CredentialChange,
    ) -> StoreResult<()> {
        tx.commit().await?;
        self.bus.deliver(crate::bus::Heard {
            change,
            committed_at: Some(self.now()),
        });
        Ok(())
    }

    /// Keeps the credential listener connected (PostgreSQL; returns at once on SQLite,
    /// whose bus is in-process and always connected).
    pub(crate) async fn run_credential_listener(&self) {
        #[cfg(feature = "postgres")]
        if let Some(url) = &self.listen_url {
            crate::bus::listen_postgres(url.clone(), self.bus.clone()).await;
        }
    }
}

pub(crate) const ACCOUNT_SELECT_BY_ID: &str = "SELECT id, name, plan, limit_overrides, max_projects, max_api_keys, max_members, \
     max_concurrent_jobs, max_stream_sessions_per_minute, require_mfa, created_at FROM accounts WHERE id = $1";

/// An account row as stored.
pub(crate) struct AccountRow(pub crate::Account);

impl AccountRow {
    pub(crate) fn decode(row: &AnyRow) -> StoreResult<Self> {
        let plan: String = row.try_get("plan")?;
        let overrides: String = row.try_get("limit_overrides")?;
        Ok(Self(crate::Account {
            id: parse_id(row, "id", AccountId::parse)?,
            name: row.try_get("name")?,
            plan: Plan::from_str(&plan).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            overrides: serde_json::from_str::<LimitOverrides>(&overrides)
                .map_err(|e| StoreError::Corrupt(format!("limit_overrides: {e}")))?,
            limits: limits_from_row(row)?,
            require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
            created_at: row.try_get("created_at")?,
        }))
    }
}

/// Reads the materialised limit columns of an accounts row (also used in joins).
pub(crate) fn limits_from_row(row: &AnyRow) -> StoreResult<PlanLimits> {
    let get = |col: &str| -> StoreResult<u32> {
        let v: i64 = row.try_get(col)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range")))
    };
    Ok(PlanLimits {
        projects: get("max_projects")?,
        api_keys: get("max_api_keys")?,
        members: get("max_members")?,
        concurrent_jobs: get("max_concurrent_jobs")?,
        streaming_sessions_per_minute: get("max_stream_sessions_per_minute")?,
    })
}

pub(crate) fn parse_id<T>(row: &AnyRow, col: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: String = row.try_get(col)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{col} is not an id: {text}")))
}

pub(crate) fn parse_opt_id<T>(
    row: &AnyRow,
    col: &str,
    parse: fn(&str) -> Option<T>,
) -> StoreResult<Option<T>> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| parse(&t).ok_or_else(|| StoreError::Corrupt(format!("{col} is not an id: {t}"))))
        .transpose()
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
