//! Uploads and transcripts, always scoped by the caller's project.

use crate::sql::{parse_id, parse_opt_id};
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Columns of a transcript plus whether it is held back by its account's
/// concurrency limit (queued while the account's running jobs fill its limit).
pub(crate) const TRANSCRIPT_SELECT: &str = "SELECT t.id, t.account_id, t.project_id, t.api_key_id, t.status, t.audio_url, \
     t.upload_id, t.params, t.result, t.error, t.speech_model_used, t.audio_duration, t.webhook_status_code, \
     t.created_at, t.completed_at, t.deleted_at, \
     CAST(CASE WHEN t.status = 'queued' AND (SELECT count(*) FROM jobs r WHERE r.account_id = t.account_id \
     AND r.state = 'running') >= (CASE WHEN a.balance_blocked = 1 THEN 1 ELSE a.max_concurrent_jobs END) THEN 1 ELSE 0 END AS BIGINT) AS throttled \
     FROM transcripts t JOIN accounts a ON a.id = t.account_id";

pub(crate) fn transcript_from_row(row: &AnyRow) -> StoreResult<Transcript> {
    let status: String = row.try_get("status")?;
    Ok(Transcript {
        id: parse_id(row, "id", TranscriptId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        project_id: parse_id(row, "project_id", ProjectId::parse)?,
        api_key_id: parse_id(row, "api_key_id", ApiKeyId::parse)?,
        status: TranscriptStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("transcript status {status}")))?,
        audio_url: row.try_get("audio_url")?,
        upload_id: parse_opt_id(row, "upload_id", UploadId::parse)?,
        params: row.try_get("params")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        speech_model_used: row.try_get("speech_model_used")?,
        audio_duration: row.try_get("audio_duration")?,
        webhook_status_code: row.try_get("webhook_status_code")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        deleted_at: row.try_get("deleted_at")?,
        throttled: row.try_get::<i64, _>("throttled")? != 0,
    })
}

fn upload_from_row(row: &AnyRow) -> StoreResult<Upload> {
    Ok(Upload {
        id: parse_id(row, "id", UploadId::parse)?,
        account_id: parse_id(row, "account_id", AccountId::parse)?,
        project_id: parse_id(row, "project_id", ProjectId::parse)?,
        api_key_id: parse_id(row, "api_key_id", ApiKeyId::parse)?,
        path: row.try_get("path")?,
        size_bytes: row.try_get("size_bytes")?,
        created_at: row.try_get("created_at")?,
    })
}

const UPLOAD_SELECT: &str =
    "SELECT id, account_id, project_id, api_key_id, path, size_bytes, created_at FROM uploads";

async fn insert_upload(conn: &mut sqlx::AnyConnection, upload: &Upload) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO uploads (id, account_id, project_id, api_key_id, path, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(upload.id.to_string())
    .bind(upload.account_id.to_string())
    .bind(upload.project_id.to_string())
    .bind(upload.api_key_id.to_string())
    .bind(&upload.path)
    .bind(upload.size_bytes)
    .bind(upload.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SqlStore {
    async fn transcript_position(
        &self,
        project: ProjectId,
        id: TranscriptId,
    ) -> StoreResult<Option<(i64, String)>> {
        let row =
            sqlx::query("SELECT created_at, id FROM transcripts WHERE project_id = $1 AND id = $2")
                .bind(project.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((r.try_get("created_at")?, r.try_get("id")?)))
            .transpose()
    }
}

#[async_trait]
impl TranscriptStore for SqlStore {
    async fn create_upload(&self, upload: Upload) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_upload(&mut conn, &upload).await
    }

    async fn create_upload_within_quota(
        &self,
        upload: Upload,
        quota_bytes: i64,
    ) -> StoreResult<bool> {
        // The account row's lock serialises concurrent uploads of one account.
        let (mut tx, _) = self.begin_for_account(upload.account_id).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM uploads WHERE account_id = $1",
        )
        .bind(upload.account_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if held.saturating_add(upload.size_bytes) > quota_bytes {
            return Ok(false);
        }
        insert_upload(&mut tx, &upload).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn upload_bytes(&self, account: AccountId) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM uploads WHERE account_id = $1",
        )
        .bind(account.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn expire_uploads(&self, created_before: Millis) -> StoreResult<Vec<Upload>> {
        const UNUSED: &str = "created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM transcripts t WHERE t.upload_id = uploads.id AND t.deleted_at IS NULL)";
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!("{UPLOAD_SELECT} WHERE {UNUSED}"))
            .bind(created_before)
            .fetch_all(&mut *tx)
            .await?;
        let expired = rows
            .iter()
            .map(upload_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        for upload in &expired {
            sqlx::query(&format!("DELETE FROM uploads WHERE id = $2 AND {UNUSED}"))
                .bind(created_before)
                .bind(upload.id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(expired)
    }

    async fn upload_paths(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT path FROM uploads")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>> {
        let row = sqlx::query(&format!("{UPLOAD_SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn create_transcript(&self, new: NewTranscript) -> StoreResult<Transcript> {
        let now = self.now();
        let project = self
            .get_project(new.project_id)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO transcripts (id, account_id, project_id, api_key_id, status, audio_url, upload_id, params, created_at) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8)",
        )
        .bind(new.id.to_string())
        .bind(project.account_id.to_string())
        .bind(new.project_id.to_string())
        .bind(new.api_key_id.to_string())
        .bind(&new.audio_url)
        .bind(new.upload_id.map(|u| u.to_string()))
        .bind(&new.params)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO jobs (id, transcript_id, account_id, state, created_at) VALUES ($1, $2, $3, 'queued', $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(new.id.to_string())
        .bind(project.account_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_transcript(new.project_id, new.id)
            .await?
            .ok_or(StoreError::NotFound("transcript"))
    }

    async fn get_transcript(
        &self,
        project: ProjectId,
        id: TranscriptId,
    ) -> StoreResult<Option<Transcript>> {
        let row = sqlx::query(&format!(
            "{TRANSCRIPT_SELECT} WHERE t.project_id = $1 AND t.id = $2"
        ))
        .bind(project.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(transcript_from_row).transpose()
    }

    async fn list_transcripts(
        &self,
        project: ProjectId,
        query: &TranscriptQuery,
    ) -> StoreResult<Vec<Transcript>> {
        let mut params = Params::default();
        let mut sql = format!(
            "{TRANSCRIPT_SELECT} WHERE t.project_id = {}",
            params.text(project.to_string())
        );
        if let Some((from, to)) = query.created_between {
            sql.push_str(&format!(
                " AND t.created_at >= {} AND t.created_at <= {}",
                params.int(from),
                params.int(to)
            ));
        }
        // Cursors compare (created_at, id), the list's order.
        for (cursor, op) in [(query.before_id, '<'), (query.after_id, '>')] {
            let Some(cursor) = cursor else { continue };
            let Some((at, id)) = self.transcript_position(project, cursor).await? else {
                return Ok(Vec::new());
            };
            let (a, b) = (params.int(at), params.text(id));
            sql.push_str(&format!(
                " AND (t.created_at {op} {a} OR (t.created_at = {a} AND t.id {op} {b}))"
            ));
        }
        if query.throttled_only {
            sql.push_str(" AND t.status = 'queued'");
        } else if let Some(status) = query.status {
            sql.push_str(&format!(
                " AND t.status = {}",
                params.text(status.as_str().to_string())
            ));
        }
        // With only after_id, take the oldest page newer than it, then show it newest first.
        let ascending = query.after_id.is_some() && query.before_id.is_none();
        let order = if ascending { "ASC" } else { "DESC" };
        sql.push_str(&format!(
            " ORDER BY t.created_at {order}, t.id {order} LIMIT {}",
            query.limit.clamp(1, 1000)
        ));
        let rows = params
            .bind_all(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<Transcript> = rows
            .iter()
            .map(transcript_from_row)
            .collect::<StoreResult<_>>()?;
        if query.throttled_only {
            out.retain(|t| t.throttled);
        }
        if ascending {
            out.reverse();
        }
        Ok(out)
    }

    async fn delete_transcript(
        &self,
        project: ProjectId,
        id: TranscriptId,
    ) -> StoreResult<Option<(Transcript, Option<Upload>)>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let Some(upload) = scrub_transcript(&mut tx, project, id, now).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        let transcript = self
            .get_transcript(project, id)
            .await?
            .ok_or(StoreError::NotFound("transcript"))?;
        Ok(Some((transcript, upload)))
    }
}

/// Scrubs a transcript of `project` inside `tx` (text, audio URL; a queued job is
/// cancelled; its upload row removed): `None` when there is no such transcript, else
/// the removed upload (whose file the caller deletes).
pub(crate) async fn scrub_transcript(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    project: ProjectId,
    id: TranscriptId,
    now: hark_core::clock::Millis,
) -> StoreResult<Option<Option<Upload>>> {
    // Nothing of the request stays: not the parameters (webhook URL, the sealed
    // webhook header), nor an error that may quote the audio URL.
    let scrubbed = sqlx::query(
        "UPDATE transcripts SET audio_url = 'http://deleted_by_user', result = NULL, params = '{}', \
         error = CASE WHEN error IS NULL THEN NULL ELSE 'Deleted by user.' END, \
         deleted_at = COALESCE(deleted_at, $3) WHERE project_id = $1 AND id = $2",
    )
    .bind(project.to_string())
    .bind(id.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if scrubbed.rows_affected() == 0 {
        return Ok(None);
    }
    // A queued job is cancelled; a running one finds the transcript deleted and
    // discards its result (see finish_job).
    sqlx::query("UPDATE jobs SET state = 'done' WHERE transcript_id = $1 AND state = 'queued'")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    let upload_id: Option<String> =
        sqlx::query_scalar("SELECT upload_id FROM transcripts WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut **tx)
            .await?;
    let mut upload = None;
    if let Some(upload_id) = upload_id {
        let row = sqlx::query(&format!(
            "{UPLOAD_SELECT} WHERE id = $1 AND project_id = $2"
        ))
        .bind(&upload_id)
        .bind(project.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        // Another transcript made from the same upload keeps it.
        let shared: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM transcripts WHERE upload_id = $1 AND id <> $2 AND deleted_at IS NULL",
        )
        .bind(&upload_id)
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await?;
        if let (Some(row), 0) = (row, shared) {
            upload = Some(upload_from_row(&row)?);
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(&upload_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(Some(upload))
}

/// Positional parameters of a query built at run time; each call returns its `$N`.
#[derive(Default)]
struct Params(Vec<Param>);

enum Param {
    Int(i64),
    Text(String),
}

impl Params {
    fn int(&mut self, v: i64) -> String {
        self.0.push(Param::Int(v));
        format!("${}", self.0.len())
    }
    fn text(&mut self, v: String) -> String {
        self.0.push(Param::Text(v));
        format!("${}", self.0.len())
    }
    fn bind_all<'q>(
        self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for p in self.0 {
            q = match p {
                Param::Int(v) => q.bind(v),
                Param::Text(v) => q.bind(v),
            };
        }
        q
    }
}
