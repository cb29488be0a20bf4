//! The append-only ledgers: the hash-chained audit log, and the usage events with the
//! hourly rollups that reports read (kept current in the event's own transaction).

use crate::sql::parse_id;
use crate::*;
use hark_core::clock::{month_bounds, Millis};
use hark_core::money;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

/// The chain's starting point for every account.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_key(account: Option<AccountId>) -> String {
    account.map(|a| a.to_string()).unwrap_or_default()
}

/// Length-prefixed fields, so no choice of field contents can collide with another.
#[allow(clippy::too_many_arguments)]
fn entry_hash(
    prev: &str,
    account: &str,
    seq: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    created_at: Millis,
) -> String {
    let mut h = Sha256::new();
    for field in [
        prev.as_bytes(),
        account.as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.update(seq.to_le_bytes());
    h.update(created_at.to_le_bytes());
    hex::encode(h.finalize())
}

/// Appends an audit entry inside the caller's transaction, so it commits with the
/// change it records. The caller's transaction already holds the account's lock.
pub(crate) async fn append_audit(
    tx: &mut Transaction<'static, Any>,
    account: Option<AccountId>,
    actor: &Actor,
    action: &str,
    target: &str,
    details: serde_json::Value,
    now: Millis,
) -> StoreResult<()> {
    let key = chain_key(account);
    let last = sqlx::query(
        "SELECT seq, hash FROM audit_log WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(&key)
    .fetch_optional(&mut **tx)
    .await?;
    let (seq, prev) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")? + 1,
            row.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_string()),
    };
    let details = details.to_string();
    let actor = actor.label();
    let hash = entry_hash(&prev, &key, seq, &actor, action, target, &details, now);
    sqlx::query(
        "INSERT INTO audit_log (id, account_id, seq, actor, action, target, details, created_at, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(AuditId::new().to_string())
    .bind(&key)
    .bind(seq)
    .bind(&actor)
    .bind(action)
    .bind(target)
    .bind(&details)
    .bind(now)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

use hark_core::AuditId;

#[async_trait]
impl AuditStore for SqlStore {
    async fn audit_entries(&self, account: Option<AccountId>) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT account_id, seq, actor, action, target, details, created_at, hash FROM audit_log \
             WHERE account_id = $1 ORDER BY seq",
        )
        .bind(chain_key(account))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                let acct: String = r.try_get("account_id")?;
                Ok(AuditEntry {
                    account_id: AccountId::parse(&acct),
                    seq: r.try_get("seq")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                    created_at: r.try_get("created_at")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn verify_audit_chain(
        &self,
        account: Option<AccountId>,
    ) -> StoreResult<Result<usize, String>> {
        let key = chain_key(account);
        let rows = sqlx::query(
            "SELECT seq, actor, action, target, details, created_at, prev_hash, hash FROM audit_log \
             WHERE account_id = $1 ORDER BY seq",
        )
        .bind(&key)
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS.to_string();
        for (i, r) in rows.iter().enumerate() {
            let seq: i64 = r.try_get("seq")?;
            let expected_seq = i as i64 + 1;
            if seq != expected_seq {
                return Ok(Err(format!(
                    "entry {expected_seq} is missing (found {seq} next)"
                )));
            }
            let stored_prev: String = r.try_get("prev_hash")?;
            let stored_hash: String = r.try_get("hash")?;
            let computed = entry_hash(
                &prev,
                &key,
                seq,
                &r.try_get::<String, _>("actor")?,
                &r.try_get::<String, _>("action")?,
                &r.try_get::<String, _>("target")?,
                &r.try_get::<String, _>("details")?,
                r.try_get("created_at")?,
            );
            if stored_prev != prev || stored_hash != computed {
                return Ok(Err(format!("entry {seq} was altered")));
            }
            prev = stored_hash;
        }
        Ok(Ok(rows.len()))
    }
}

impl SqlStore {
    /// Appends the event (priced by the table at `now`) and adds it to its hourly
    /// rollup, charges the balance and evaluates alerts, inside the caller's
    /// transaction; the balance change, or `None` if its idempotency key exists
    /// (nothing is written). Commit with [`SqlStore::balance_committed`].
    pub(crate) async fn insert_usage(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &NewUsageEvent,
        now: Millis,
    ) -> StoreResult<Option<BalanceChange>> {
        let streaming = event.product == money::STREAMING;
        let billable_ms = if streaming {
            event.session_ms.unwrap_or(0)
        } else {
            event.audio_ms
        };
        let price = self.prices.per_hour(&event.product, &event.model, now);
        let cost = money::cost_of(price, billable_ms);
        let result = sqlx::query(
            "INSERT INTO usage_events (id, idempotency_key, account_id, project_id, api_key_id, product, model, \
             audio_ms, session_ms, price_per_hour, cost, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&event.idempotency_key)
        .bind(event.account_id.to_string())
        .bind(event.project_id.to_string())
        .bind(event.api_key_id.to_string())
        .bind(&event.product)
        .bind(&event.model)
        .bind(event.audio_ms.max(0))
        .bind(event.session_ms.map(|s| s.max(0)))
        .bind(price)
        .bind(cost)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(None);
        }
        let (transcripts, sessions) = if streaming { (0_i64, 1_i64) } else { (1, 0) };
        // The hourly, daily and monthly rollups, in this transaction.
        for (table, start) in [
            (Rollup::Hourly, now - now.rem_euclid(HOUR_MS)),
            (Rollup::Daily, now - now.rem_euclid(DAY_MS)),
            (Rollup::Monthly, month_bounds(now).0),
        ] {
            let (name, column) = (table.table(), table.column());
            sqlx::query(&format!(
                "INSERT INTO {name} (account_id, {column}, project_id, api_key_id, product, model, \
                 audio_ms, session_ms, transcripts, sessions, cost) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (account_id, {column}, project_id, api_key_id, product, model) DO UPDATE SET \
                 audio_ms = {name}.audio_ms + excluded.audio_ms, \
                 session_ms = {name}.session_ms + excluded.session_ms, \
                 transcripts = {name}.transcripts + excluded.transcripts, \
                 sessions = {name}.sessions + excluded.sessions, \
                 cost = {name}.cost + excluded.cost"
            ))
            .bind(event.account_id.to_string())
            .bind(start)
            .bind(event.project_id.to_string())
            .bind(event.api_key_id.to_string())
            .bind(&event.product)
            .bind(&event.model)
            .bind(event.audio_ms.max(0))
            .bind(event.session_ms.unwrap_or(0).max(0))
            .bind(transcripts)
            .bind(sessions)
            .bind(cost)
            .execute(&mut **tx)
            .await?;
        }
        let balance = self
            .change_balance(tx, event.account_id, -cost, cost, now)
            .await?;
        self.evaluate_alerts(
            tx,
            event.account_id,
            crate::alerts::AlertTrigger {
                balance,
                month_spend: balance.month_spend,
                usage: Some(event),
            },
            now,
        )
        .await?;
        Ok(Some(balance))
    }
}

pub const HOUR_MS: Millis = 3_600_000;
pub const DAY_MS: Millis = 86_400_000;

/// The three rollup tables, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollup {
    Hourly,
    Daily,
    Monthly,
}

impl Rollup {
    fn table(self) -> &'static str {
        match self {
            Rollup::Hourly => "usage_hourly",
            Rollup::Daily => "usage_daily",
            Rollup::Monthly => "usage_monthly",
        }
    }
    fn column(self) -> &'static str {
        match self {
            Rollup::Hourly => "hour_start",
            Rollup::Daily => "day_start",
            Rollup::Monthly => "month_start",
        }
    }
}

/// The pieces of `[from, to)` (whole hours) each read from the coarsest rollup whose
/// rows lie wholly inside it and are no coarser than `bucket`: whole calendar months
/// from the monthly rollup (month buckets only), whole days from the daily one (day
/// and month buckets), the rest hour by hour.
fn rollup_plan(from: Millis, to: Millis, bucket: RollupBucket) -> Vec<(Rollup, Millis, Millis)> {
    fn days(from: Millis, to: Millis, out: &mut Vec<(Rollup, Millis, Millis)>) {
        let first = from + (DAY_MS - from.rem_euclid(DAY_MS)) % DAY_MS;
        let last = to - to.rem_euclid(DAY_MS);
        if first < last {
            if from < first {
                out.push((Rollup::Hourly, from, first));
            }
            out.push((Rollup::Daily, first, last));
            if last < to {
                out.push((Rollup::Hourly, last, to));
            }
        } else if from < to {
            out.push((Rollup::Hourly, from, to));
        }
    }
    let mut out = Vec::new();
    match bucket {
        RollupBucket::Hour => out.push((Rollup::Hourly, from, to)),
        RollupBucket::Day => days(from, to, &mut out),
        RollupBucket::Month => {
            let (m0, m0_end) = month_bounds(from);
            let first = if m0 == from { m0 } else { m0_end };
            let last = month_bounds(to).0;
            if first < last {
                days(from, first, &mut out);
                out.push((Rollup::Monthly, first, last));
                days(last, to, &mut out);
            } else {
                days(from, to, &mut out);
            }
        }
    }
    out
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(&self, event: NewUsageEvent) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let change = self.insert_usage(&mut tx, &event, self.now()).await?;
        self.balance_committed(
            tx,
            event.account_id,
            change.is_some_and(|c| c.refusal_changed),
        )
        .await?;
        Ok(change.is_some())
    }

    async fn usage_events(&self, account: AccountId) -> StoreResult<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT idempotency_key, account_id, project_id, api_key_id, product, model, audio_ms, session_ms, \
             price_per_hour, cost, created_at FROM usage_events WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageEvent {
                    event: NewUsageEvent {
                        idempotency_key: r.try_get("idempotency_key")?,
                        account_id: parse_id(r, "account_id", AccountId::parse)?,
                        project_id: parse_id(r, "project_id", ProjectId::parse)?,
                        api_key_id: parse_id(r, "api_key_id", ApiKeyId::parse)?,
                        product: r.try_get("product")?,
                        model: r.try_get("model")?,
                        audio_ms: r.try_get("audio_ms")?,
                        session_ms: r.try_get("session_ms")?,
                    },
                    price_per_hour: r.try_get("price_per_hour")?,
                    cost: r.try_get("cost")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn usage_lines(
        &self,
        account: AccountId,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<UsageLine>> {
        let rows = sqlx::query(
            "SELECT product, model, project_id, CAST(SUM(audio_ms) AS BIGINT) AS audio_ms, \
             CAST(SUM(session_ms) AS BIGINT) AS session_ms, CAST(SUM(transcripts) AS BIGINT) AS transcripts, \
             CAST(SUM(sessions) AS BIGINT) AS sessions, CAST(SUM(cost) AS BIGINT) AS cost \
             FROM usage_hourly WHERE account_id = $1 AND hour_start >= $2 AND hour_start < $3 \
             GROUP BY product, model, project_id ORDER BY product, model, project_id",
        )
        .bind(account.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageLine {
                    product: r.try_get("product")?,
                    model: r.try_get("model")?,
                    project_id: r.try_get("project_id")?,
                    totals: UsageTotals {
                        audio_ms: r.try_get("audio_ms")?,
                        session_ms: r.try_get("session_ms")?,
                        transcripts: r.try_get("transcripts")?,
                        sessions: r.try_get("sessions")?,
                        cost: r.try_get("cost")?,
                    },
                })
            })
            .collect()
    }

    async fn frozen_statement(
        &self,
        account: AccountId,
        month_start: Millis,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM statements WHERE account_id = $1 AND month_start = $2",
        )
        .bind(account.to_string())
        .bind(month_start)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn freeze_statement(
        &self,
        account: AccountId,
        month_start: Millis,
        body: &str,
    ) -> StoreResult<String> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO statements (account_id, month_start, body, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, month_start) DO NOTHING",
        )
        .bind(account.to_string())
        .bind(month_start)
        .bind(body)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        let stored: String = sqlx::query_scalar(
            "SELECT body FROM statements WHERE account_id = $1 AND month_start = $2",
        )
        .bind(account.to_string())
        .bind(month_start)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn billed_accounts(&self) -> StoreResult<Vec<AccountId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT account_id FROM balances UNION SELECT account_id FROM usage_hourly \
             UNION SELECT account_id FROM statements ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.iter().filter_map(|i| AccountId::parse(i)).collect())
    }

    async fn usage_rollup(&self, query: &RollupQuery) -> StoreResult<Vec<RollupRow>> {
        let group = query.group_by.map(|g| match g {
            RollupGroup::Account => "account_id",
            RollupGroup::Project => "project_id",
            RollupGroup::ApiKey => "api_key_id",
            RollupGroup::Product => "product",
            RollupGroup::Model => "model",
        });
        // One SELECT per piece of the plan, in one round trip; rows of one bucket
        // from different pieces are added up by the caller.
        let mut ints: Vec<i64> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut next = 1;
        let param = |next: &mut usize| {
            let p = format!("${next}");
            *next += 1;
            p
        };
        let account: Vec<String> = query.account.iter().map(|a| a.to_string()).collect();
        let mut parts = Vec::new();
        for (rollup, from, to) in rollup_plan(query.from, query.to, query.bucket) {
            let column = rollup.column();
            // Hours and days fold into days when days are asked for; months come
            // back as their start (the caller maps any instant to its bucket).
            let bucket = match (rollup, query.bucket) {
                (Rollup::Hourly, RollupBucket::Day | RollupBucket::Month) => {
                    format!("{column} - ({column} % {DAY_MS})")
                }
                _ => column.to_string(),
            };
            let (pf, pt) = (param(&mut next), param(&mut next));
            ints.push(from);
            ints.push(to);
            let mut sql = format!(
                "SELECT {bucket} AS bucket, {} AS grp, CAST(SUM(audio_ms) AS BIGINT) AS audio_ms, \
                 CAST(SUM(session_ms) AS BIGINT) AS session_ms, CAST(SUM(transcripts) AS BIGINT) AS transcripts, \
                 CAST(SUM(sessions) AS BIGINT) AS sessions, CAST(SUM(cost) AS BIGINT) AS cost \
                 FROM {} WHERE {column} >= {pf} AND {column} < {pt}",
                group.unwrap_or("CAST('' AS TEXT)"),
                rollup.table(),
            );
            for (col, values) in [
                ("account_id", &account),
                ("project_id", &query.projects),
                ("api_key_id", &query.api_keys),
                ("product", &query.products),
                ("model", &query.models),
            ] {
                if values.is_empty() {
                    continue;
                }
                let params: Vec<String> = values
                    .iter()
                    .map(|v| {
                        texts.push(v.clone());
                        param(&mut next)
                    })
                    .collect();
                sql.push_str(&format!(" AND {col} IN ({})", params.join(", ")));
            }
            sql.push_str(match query.group_by {
                // A key belongs to one project: grouping by both gives the same groups,
                // in the order of the primary key (no sort on SQLite).
                Some(RollupGroup::ApiKey) => " GROUP BY 1, project_id, 2",
                Some(_) => " GROUP BY 1, 2",
                None => " GROUP BY 1",
            });
            parts.push((sql, ints.len(), texts.len()));
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = parts
            .iter()
            .enumerate()
            .map(|(n, (p, _, _))| format!("SELECT * FROM ({p}) AS piece{n}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        // Parameters in the order they were numbered: each piece's range, then its texts.
        let mut q = sqlx::query(&sql);
        let (mut i, mut t) = (0, 0);
        for (_, int_end, text_end) in &parts {
            for v in &ints[i..*int_end] {
                q = q.bind(*v);
            }
            for v in &texts[t..*text_end] {
                q = q.bind(v.clone());
            }
            i = *int_end;
            t = *text_end;
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(RollupRow {
                    bucket: r.try_get("bucket")?,
                    group: r.try_get("grp")?,
                    totals: UsageTotals {
                        audio_ms: r.try_get("audio_ms")?,
                        session_ms: r.try_get("session_ms")?,
                        transcripts: r.try_get("transcripts")?,
                        sessions: r.try_get("sessions")?,
                        cost: r.try_get("cost")?,
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2027-01-15T08:00:00Z, and the months around it.
    const T0: Millis = 1_800_000_000_000;
    const JAN: Millis = 1_798_761_600_000;
    const FEB: Millis = JAN + 31 * DAY_MS;
    const DEC: Millis = JAN - 31 * DAY_MS;

    #[test]
    fn plans_read_whole_months_and_days_from_the_coarse_rollups() {
        use Rollup::*;
        let day0 = T0 - 8 * HOUR_MS;
        // Hour buckets: the hourly rollup only.
        assert_eq!(
            rollup_plan(DEC + HOUR_MS, FEB, RollupBucket::Hour),
            vec![(Hourly, DEC + HOUR_MS, FEB)]
        );
        // Day buckets over partial days at both ends.
        assert_eq!(
            rollup_plan(
                day0 - 3 * HOUR_MS,
                day0 + DAY_MS + 5 * HOUR_MS,
                RollupBucket::Day
            ),
            vec![
                (Hourly, day0 - 3 * HOUR_MS, day0),
                (Daily, day0, day0 + DAY_MS),
                (Hourly, day0 + DAY_MS, day0 + DAY_MS + 5 * HOUR_MS),
            ]
        );
        // Within one day: hours only.
        assert_eq!(
            rollup_plan(day0 + HOUR_MS, day0 + 9 * HOUR_MS, RollupBucket::Day),
            vec![(Hourly, day0 + HOUR_MS, day0 + 9 * HOUR_MS)]
        );
        // Month buckets: December's tail by day and hour, January whole, February's
        // head by day and hour.
        assert_eq!(
            rollup_plan(
                JAN - DAY_MS - HOUR_MS,
                FEB + DAY_MS + HOUR_MS,
                RollupBucket::Month
            ),
            vec![
                (Hourly, JAN - DAY_MS - HOUR_MS, JAN - DAY_MS),
                (Daily, JAN - DAY_MS, JAN),
                (Monthly, JAN, FEB),
                (Daily, FEB, FEB + DAY_MS),
                (Hourly, FEB + DAY_MS, FEB + DAY_MS + HOUR_MS),
            ]
        );
        // Aligned months: the monthly rollup alone.
        assert_eq!(
            rollup_plan(DEC, FEB, RollupBucket::Month),
            vec![(Monthly, DEC, FEB)]
        );
    }
}
