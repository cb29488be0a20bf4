//! Streaming storage: single-use temporary tokens and live-session rows with their
//! lease, new-session rate limit, and the once-only close that bills the session.

use crate::sql::{parse_id, parse_opt_id};
use crate::webhooks::insert_delivery;
use crate::*;
use hark_core::clock::Millis;
use hark_core::{StreamSessionId, StreamTokenId};
use sqlx::{Any, Row, Transaction};

/// A token minted by `GET /v3/token`; only its digest is stored.
#[derive(Debug, Clone)]
pub struct NewStreamToken {
    pub id: StreamTokenId,
    pub digest_hex: String,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub expires_at: Millis,
    pub max_session_secs: i64,
}

/// How a session's opener authenticated.
#[derive(Debug, Clone)]
pub enum StreamCredential {
    /// An API key the caller has already verified.
    ApiKey {
        account_id: AccountId,
        project_id: ProjectId,
        api_key_id: ApiKeyId,
    },
    /// A temporary token, by digest; redeemed by opening the session.
    Token { digest_hex: String },
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct OpenStreamSession {
    pub id: StreamSessionId,
    pub credential: StreamCredential,
    pub model: String,
    /// The server's session cap: sessions opened with an API key get it, tokens carry
    /// their own but never beyond it.
    pub default_max_session_secs: i64,
    /// The serving process (see [`StreamStore::heartbeat_stream_node`]).
    pub node_id: String,
    pub webhook_url: Option<String>,
    pub webhook_auth_header_name: Option<String>,
    /// Sealed by the caller (the store never sees the value in clear).
    pub webhook_auth_header_sealed: Option<String>,
}

/// An open session as the serving node needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedStreamSession {
    pub id: StreamSessionId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub token_id: Option<StreamTokenId>,
    pub started_at: Millis,
    /// When the session cap is reached.
    pub expires_at: Millis,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRefusal {
    TokenUnknown,
    TokenExpired,
    TokenUsed,
    /// The key that minted the token (or opened the session) is revoked or expired.
    KeyUnusable,
    /// The account opened its plan's number of sessions in the last minute.
    RateLimited {
        per_minute: u32,
    },
    /// The account is prepaid and its balance is negative.
    BalanceNegative,
}

/// What the serving node reports when a session ends.
#[derive(Debug, Clone)]
pub struct CloseStreamSession {
    pub audio_ms: i64,
    /// The session's final turns as a JSON array (wire format), for the webhook.
    pub final_turns_json: String,
    pub reason: String,
    /// When the session ended as its process saw it; `None`: now. A close retried after
    /// a database outage is billed up to the end, not up to the retry.
    pub ended_at: Option<Millis>,
}

/// A session row.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSessionRecord {
    pub id: StreamSessionId,
    pub account_id: AccountId,
    pub project_id: ProjectId,
    pub api_key_id: ApiKeyId,
    pub token_id: Option<StreamTokenId>,
    pub model: String,
    pub node_id: String,
    pub started_at: Millis,
    pub expires_at: Millis,
    pub audio_ms: i64,
    pub ended_at: Option<Millis>,
    pub end_reason: Option<String>,
}

/// The window the new-session rate limit counts over.
pub const STREAM_RATE_WINDOW_MS: Millis = 60_000;

/// Temporary tokens and live sessions.
#[async_trait]
pub trait StreamStore: Send + Sync {
    async fn create_stream_token(&self, token: NewStreamToken) -> StoreResult<()>;
    /// Why the token with this digest could not open a session now (`None`: it could),
    /// read without redeeming it: checked before a session costs any work.
    async fn check_stream_token(&self, digest_hex: &str) -> StoreResult<Option<StreamRefusal>>;
    /// Redeems the token (if any), checks the account's new-session rate and inserts the
    /// session row, all in one transaction: of any number of concurrent openings with
    /// one token exactly one succeeds, and a refused opening consumes nothing.
    async fn open_stream_session(
        &self,
        open: OpenStreamSession,
    ) -> StoreResult<Result<OpenedStreamSession, StreamRefusal>>;
    /// Stores the sealed value of the session webhook's auth header.
    async fn set_stream_webhook_auth(&self, id: StreamSessionId, sealed: &str) -> StoreResult<()>;
    /// Renews the serving process's lease (one row per process, whatever its sessions).
    async fn heartbeat_stream_node(&self, node_id: &str, lease_ms: i64) -> StoreResult<()>;
    /// Records a session's progress; false once the session is closed.
    async fn record_stream_progress(
        &self,
        id: StreamSessionId,
        audio_ms: i64,
        final_turns_json: &str,
    ) -> StoreResult<bool>;
    /// Closes the session once: its usage event and webhook commit with the close.
    /// Returns the closed row, or `None` if it was already closed.
    async fn close_stream_session(
        &self,
        id: StreamSessionId,
        close: CloseStreamSession,
    ) -> StoreResult<Option<StreamSessionRecord>>;
    /// Closes (and bills, up to their node's last heartbeat) the open sessions of
    /// processes whose lease lapsed, never those of `own_node`: a running process does
    /// not take itself for dead, even if it stalled past its lease.
    async fn reap_stream_sessions(&self, own_node: &str) -> StoreResult<usize>;
    async fn get_stream_session(
        &self,
        id: StreamSessionId,
    ) -> StoreResult<Option<StreamSessionRecord>>;
}

const SESSION_COLUMNS: &str = "id, account_id, project_id, api_key_id, token_id, model, node_id, \
     started_at, expires_at, audio_ms, ended_at, end_reason";

fn decode_session(row: &sqlx::any::AnyRow) -> StoreResult<StreamSessionRecord> {
    Ok(StreamSessionRecord {
        id: parse_id(row, "id", StreamSessionId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        project_id: parse_id(row, "project_id", ProjectId::parse)?,
        api_key_id: parse_id(row, "api_key_id", ApiKeyId::parse)?,
        token_id: parse_opt_id(row, "token_id", StreamTokenId::parse)?,
        model: row.try_get("model")?,
        node_id: row.try_get("node_id")?,
        started_at: row.try_get("started_at")?,
        expires_at: row.try_get("expires_at")?,
        audio_ms: row.try_get("audio_ms")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
    })
}

/// SQL true when the key `api_key_id` is neither revoked nor expired at `$now`.
const KEY_USABLE: &str =
    "EXISTS (SELECT 1 FROM api_keys k WHERE k.id = {col} AND k.revoked_at IS NULL \
     AND (k.expires_at IS NULL OR k.expires_at > {now}))";

fn key_usable(col: &str, now_param: &str) -> String {
    KEY_USABLE.replace("{col}", col).replace("{now}", now_param)
}

impl SqlStore {
    /// Closes one session inside `tx` if still open; bills it and queues its webhook.
    /// Closes and bills one open session inside `tx`: the closed record and whether
    /// its cost flipped the account's refusal flag (commit with `balance_committed`).
    async fn close_session_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: StreamSessionId,
        close: &CloseStreamSession,
        ended_at: Millis,
    ) -> StoreResult<Option<(StreamSessionRecord, bool)>> {
        let updated = sqlx::query(
            "UPDATE stream_sessions SET ended_at = $1, audio_ms = $2, final_turns = $3, end_reason = $4 \
             WHERE id = $5 AND ended_at IS NULL",
        )
        .bind(ended_at)
        .bind(close.audio_ms)
        .bind(&close.final_turns_json)
        .bind(&close.reason)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS}, webhook_url, webhook_auth_header_name, webhook_auth_header_sealed \
             FROM stream_sessions WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await?;
        let record = decode_session(&row)?;
        let session_ms = (ended_at - record.started_at).max(0);
        // The event is stamped when it is written (a reaped session is written after
        // its end), so no report hour that was already complete ever changes.
        let charged = self
            .insert_usage(
                tx,
                &NewUsageEvent {
                    idempotency_key: format!("stream:{id}"),
                    account_id: record.account_id,
                    project_id: record.project_id,
                    api_key_id: record.api_key_id,
                    product: hark_core::money::STREAMING.into(),
                    model: record.model.clone(),
                    audio_ms: close.audio_ms.max(0),
                    session_ms: Some(session_ms),
                },
                self.now().max(ended_at),
            )
            .await?;
        let refusal_changed = charged.is_some_and(|c| c.refusal_changed);
        let webhook_url: Option<String> = row.try_get("webhook_url")?;
        if let Some(url) = webhook_url {
            let messages: serde_json::Value = serde_json::from_str(&close.final_turns_json)
                .map_err(|e| StoreError::Corrupt(format!("final turns: {e}")))?;
            let body = serde_json::json!({"session_id": id.to_string(), "messages": messages});
            insert_delivery(
                tx,
                &record.account_id.to_string(),
                &record.project_id.to_string(),
                None,
                &NewWebhook {
                    url,
                    auth_header_name: row.try_get("webhook_auth_header_name")?,
                    auth_header_sealed: row.try_get("webhook_auth_header_sealed")?,
                    body: body.to_string(),
                },
                ended_at,
            )
            .await?;
        }
        Ok(Some((record, refusal_changed)))
    }

    /// Closes and bills, inside `tx`, every open session whose `column` (`project_id`
    /// or `account_id`) is `id`: used before those rows are deleted, so each session is
    /// billed exactly once (up to now, for the audio saved with its last progress) and
    /// the node holding it finds it already closed.
    pub(crate) async fn close_sessions_of(
        &self,
        tx: &mut Transaction<'static, Any>,
        column: &'static str,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> StoreResult<usize> {
        let rows = sqlx::query(&format!(
            "SELECT id, audio_ms, final_turns FROM stream_sessions WHERE {column} = $1 AND ended_at IS NULL"
        ))
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        let mut closed = 0;
        for row in rows {
            let session = parse_id(&row, "id", StreamSessionId::parse)?;
            let close = CloseStreamSession {
                audio_ms: row.try_get("audio_ms")?,
                final_turns_json: row.try_get("final_turns")?,
                reason: reason.to_string(),
                ended_at: None,
            };
            if self
                .close_session_in(tx, session, &close, now)
                .await?
                .is_some()
            {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Tells apart why a token did not redeem.
    async fn token_refusal(
        tx: &mut Transaction<'static, Any>,
        digest_hex: &str,
        now: Millis,
    ) -> StoreResult<StreamRefusal> {
        let row = sqlx::query(&format!(
            "SELECT expires_at, redeemed_at, {} AS key_ok FROM stream_tokens t WHERE t.digest = $1",
            key_usable("t.api_key_id", "$2")
        ))
        .bind(digest_hex)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Ok(StreamRefusal::TokenUnknown);
        };
        let redeemed: Option<Millis> = row.try_get("redeemed_at")?;
        let expires_at: Millis = row.try_get("expires_at")?;
        let key_ok: bool = match row.try_get::<bool, _>("key_ok") {
            Ok(b) => b,
            Err(_) => row.try_get::<i64, _>("key_ok")? != 0,
        };
        Ok(if redeemed.is_some() {
            StreamRefusal::TokenUsed
        } else if !key_ok {
            StreamRefusal::KeyUnusable
        } else if expires_at <= now {
            StreamRefusal::TokenExpired
        } else {
            // It redeemed for someone else between our update and this read.
            StreamRefusal::TokenUsed
        })
    }
}

#[async_trait]
impl StreamStore for SqlStore {
    async fn create_stream_token(&self, token: NewStreamToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO stream_tokens (id, digest, account_id, project_id, api_key_id, expires_at, \
             max_session_secs, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.to_string())
        .bind(&token.digest_hex)
        .bind(token.account_id.to_string())
        .bind(token.project_id.to_string())
        .bind(token.api_key_id.to_string())
        .bind(token.expires_at)
        .bind(token.max_session_secs)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn check_stream_token(&self, digest_hex: &str) -> StoreResult<Option<StreamRefusal>> {
        let now = self.now();
        let row = sqlx::query(&format!(
            "SELECT expires_at, redeemed_at, {} AS key_ok FROM stream_tokens t WHERE t.digest = $1",
            key_usable("t.api_key_id", "$2")
        ))
        .bind(digest_hex)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Some(StreamRefusal::TokenUnknown));
        };
        let redeemed: Option<Millis> = row.try_get("redeemed_at")?;
        let expires_at: Millis = row.try_get("expires_at")?;
        let key_ok: bool = match row.try_get::<bool, _>("key_ok") {
            Ok(b) => b,
            Err(_) => row.try_get::<i64, _>("key_ok")? != 0,
        };
        Ok(if redeemed.is_some() {
            Some(StreamRefusal::TokenUsed)
        } else if !key_ok {
            Some(StreamRefusal::KeyUnusable)
        } else if expires_at <= now {
            Some(StreamRefusal::TokenExpired)
        } else {
            None
        })
    }

    async fn open_stream_session(
        &self,
        open: OpenStreamSession,
    ) -> StoreResult<Result<OpenedStreamSession, StreamRefusal>> {
        let now = self.now();
        // Which account to lock: the key's, or the token's.
        let (account_id, key_row) = match &open.credential {
            StreamCredential::ApiKey { account_id, .. } => (*account_id, None),
            StreamCredential::Token { digest_hex } => {
                let row = sqlx::query(
                    "SELECT id, account_id, project_id, api_key_id, max_session_secs FROM stream_tokens WHERE digest = $1",
                )
                .bind(digest_hex)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(Err(StreamRefusal::TokenUnknown));
                };
                (parse_id(&row, "account_id", AccountId::parse)?, Some(row))
            }
        };
        let (mut tx, account) = match self.begin_for_account(account_id).await {
            Ok(ok) => ok,
            // The account went away with its tokens.
            Err(StoreError::NotFound(_)) => return Ok(Err(StreamRefusal::TokenUnknown)),
            Err(e) => return Err(e),
        };
        let blocked: i64 = sqlx::query_scalar("SELECT balance_blocked FROM accounts WHERE id = $1")
            .bind(account_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if blocked != 0 {
            // Rolled back: a refused opening consumes no token.
            return Ok(Err(StreamRefusal::BalanceNegative));
        }
        let (project_id, api_key_id, token_id, max_session_secs) = match (&open.credential, key_row)
        {
            (
                StreamCredential::ApiKey {
                    project_id,
                    api_key_id,
                    ..
                },
                _,
            ) => {
                let usable =
                    sqlx::query(&format!("SELECT 1 AS one WHERE {}", key_usable("$1", "$2")))
                        .bind(api_key_id.to_string())
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                if usable.is_none() {
                    return Ok(Err(StreamRefusal::KeyUnusable));
                }
                (
                    *project_id,
                    *api_key_id,
                    None,
                    open.default_max_session_secs,
                )
            }
            (StreamCredential::Token { digest_hex }, Some(row)) => {
                let redeemed = sqlx::query(&format!(
                    "UPDATE stream_tokens SET redeemed_at = $1, session_id = $2 WHERE digest = $3 \
                     AND redeemed_at IS NULL AND expires_at > $1 AND {}",
                    key_usable("stream_tokens.api_key_id", "$1")
                ))
                .bind(now)
                .bind(open.id.to_string())
                .bind(digest_hex)
                .execute(&mut *tx)
                .await?;
                if redeemed.rows_affected() != 1 {
                    let refusal = Self::token_refusal(&mut tx, digest_hex, now).await?;
                    return Ok(Err(refusal));
                }
                (
                    parse_id(&row, "project_id", ProjectId::parse)?,
                    parse_id(&row, "api_key_id", ApiKeyId::parse)?,
                    Some(parse_id(&row, "id", StreamTokenId::parse)?),
                    // The token's own cap, within the server's.
                    row.try_get::<i64, _>("max_session_secs")?
                        .min(open.default_max_session_secs),
                )
            }
            (StreamCredential::Token { .. }, None) => {
                return Err(StoreError::Corrupt("token row missing".into()))
            }
        };
        let per_minute = account.0.limits.streaming_sessions_per_minute;
        let recent: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM stream_sessions WHERE account_id = $1 AND started_at > $2",
        )
        .bind(account_id.to_string())
        .bind(now - STREAM_RATE_WINDOW_MS)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if recent >= i64::from(per_minute) {
            // Dropping the transaction rolls the redemption back.
            return Ok(Err(StreamRefusal::RateLimited { per_minute }));
        }
        let expires_at = now + max_session_secs.max(1) * 1000;
        sqlx::query(
            "INSERT INTO stream_sessions (id, account_id, project_id, api_key_id, token_id, model, node_id, \
             started_at, expires_at, webhook_url, webhook_auth_header_name, webhook_auth_header_sealed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(open.id.to_string())
        .bind(account_id.to_string())
        .bind(project_id.to_string())
        .bind(api_key_id.to_string())
        .bind(token_id.map(|t| t.to_string()))
        .bind(&open.model)
        .bind(&open.node_id)
        .bind(now)
        .bind(expires_at)
        .bind(&open.webhook_url)
        .bind(&open.webhook_auth_header_name)
        .bind(&open.webhook_auth_header_sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(OpenedStreamSession {
            id: open.id,
            account_id,
            project_id,
            api_key_id,
            token_id,
            started_at: now,
            expires_at,
        }))
    }

    async fn set_stream_webhook_auth(&self, id: StreamSessionId, sealed: &str) -> StoreResult<()> {
        sqlx::query("UPDATE stream_sessions SET webhook_auth_header_sealed = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn heartbeat_stream_node(&self, node_id: &str, lease_ms: i64) -> StoreResult<()> {
        let now = self.now();
        let updated = sqlx::query(
            "UPDATE stream_nodes SET last_seen_at = $1, lease_expires_at = $2 WHERE id = $3",
        )
        .bind(now)
        .bind(now + lease_ms)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO stream_nodes (id, started_at, last_seen_at, lease_expires_at) VALUES ($1, $2, $2, $3)",
            )
            .bind(node_id)
            .bind(now)
            .bind(now + lease_ms)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn record_stream_progress(
        &self,
        id: StreamSessionId,
        audio_ms: i64,
        final_turns_json: &str,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE stream_sessions SET audio_ms = $1, final_turns = $2 WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(audio_ms)
        .bind(final_turns_json)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn close_stream_session(
        &self,
        id: StreamSessionId,
        close: CloseStreamSession,
    ) -> StoreResult<Option<StreamSessionRecord>> {
        let ended_at = close.ended_at.unwrap_or_else(|| self.now());
        let mut tx = self.pool.begin().await?;
        let closed = self.close_session_in(&mut tx, id, &close, ended_at).await?;
        let refusal_changed = closed.as_ref().is_some_and(|c| c.1);
        match &closed {
            Some((record, _)) => {
                self.balance_committed(tx, record.account_id, refusal_changed)
                    .await?
            }
            None => tx.commit().await?,
        }
        Ok(closed.map(|c| c.0))
    }

    async fn reap_stream_sessions(&self, own_node: &str) -> StoreResult<usize> {
        let now = self.now();
        // Sessions of dead processes, and of processes that never registered.
        let rows = sqlx::query(
            "SELECT s.id, s.started_at, s.expires_at, s.audio_ms, s.final_turns, n.last_seen_at \
             FROM stream_sessions s LEFT JOIN stream_nodes n ON n.id = s.node_id \
             WHERE s.ended_at IS NULL AND s.node_id <> $2 AND (n.id IS NULL OR n.lease_expires_at < $1) \
             ORDER BY s.started_at LIMIT 500",
        )
        .bind(now)
        .bind(own_node)
        .fetch_all(&self.pool)
        .await?;
        let mut closed = 0;
        for row in rows {
            let id = parse_id(&row, "id", StreamSessionId::parse)?;
            let started_at: Millis = row.try_get("started_at")?;
            let expires_at: Millis = row.try_get("expires_at")?;
            let last_seen: Option<Millis> = row.try_get("last_seen_at")?;
            // Billed up to the last moment its node was known to be alive.
            let ended_at = last_seen
                .unwrap_or(started_at)
                .clamp(started_at, expires_at);
            let close = CloseStreamSession {
                audio_ms: row.try_get("audio_ms")?,
                final_turns_json: row.try_get("final_turns")?,
                reason: "lost: the serving process stopped".into(),
                ended_at: Some(ended_at),
            };
            let mut tx = self.pool.begin().await?;
            match self.close_session_in(&mut tx, id, &close, ended_at).await? {
                Some((record, refusal_changed)) => {
                    closed += 1;
                    self.balance_committed(tx, record.account_id, refusal_changed)
                        .await?;
                }
                None => tx.commit().await?,
            }
        }
        // Rows of processes long gone and with nothing left open.
        sqlx::query(
            "DELETE FROM stream_nodes WHERE lease_expires_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM stream_sessions s WHERE s.node_id = stream_nodes.id AND s.ended_at IS NULL)",
        )
        .bind(now - 3_600_000)
        .execute(&self.pool)
        .await?;
        Ok(closed)
    }

    async fn get_stream_session(
        &self,
        id: StreamSessionId,
    ) -> StoreResult<Option<StreamSessionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM stream_sessions WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_session).transpose()
    }
}
