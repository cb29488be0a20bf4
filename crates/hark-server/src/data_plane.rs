//! The AssemblyAI-compatible REST surface: uploads, transcripts and their views.

use crate::auth::ApiPrincipal;
use crate::error::{ApiError, ApiResult};
use crate::params::{parse_body, StoredParams};
use crate::render;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hark_core::{views, TranscriptId, UploadId};
use hark_store::{NewTranscript, Transcript, TranscriptQuery, TranscriptStatus, Upload};
use serde_json::{json, Value};
use std::collections::HashMap;

/// `POST /v2/upload`: the raw body, streamed to disk.
/// Reads and discards (a bounded part of) a refused upload's body before the refusal is
/// sent: closing a connection with unread data resets it, and the client may then lose
/// the 401/429 answer and see only "server disconnected".
async fn drain_refused_body(body: Body) {
    drain_stream(body.into_data_stream()).await;
}

/// Reads and discards a bounded rest of a body stream (see `drain_refused_body`).
async fn drain_stream(mut stream: axum::body::BodyDataStream) {
    const MAX_DRAIN_BYTES: usize = 16 << 20;
    let mut seen = 0usize;
    let drain = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > MAX_DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

pub async fn upload(
    State(state): State<AppState>,
    principal: Result<ApiPrincipal, ApiError>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let who = match principal {
        Ok(ApiPrincipal(who)) => who,
        Err(refusal) => {
            drain_refused_body(body).await;
            return Err(refusal);
        }
    };
    if let Err(refusal) = ApiError::check_balance(&who) {
        drain_refused_body(body).await;
        return Err(refusal);
    }
    let quota = i64::try_from(state.config.upload_quota_bytes).unwrap_or(i64::MAX);
    if quota > 0 && state.store.upload_bytes(who.account_id).await? >= quota {
        drain_refused_body(body).await;
        return Err(quota_refusal(quota));
    }
    let id = UploadId::new();
    let key = hark_store::blobs::upload_key(&who.project_id.to_string(), &id.to_string());
    let idle = std::time::Duration::from_secs(state.config.upload_idle_timeout_secs.max(1));
    let size = receive_body(&state, body, &key, idle).await?;
    let record = Upload {
        id,
        account_id: who.account_id,
        project_id: who.project_id,
        api_key_id: who.key_id,
        path: key.clone(),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        created_at: state.clock.now_ms(),
    };
    let stored = if quota > 0 {
        state.store.create_upload_within_quota(record, quota).await
    } else {
        state.store.create_upload(record).await.map(|()| true)
    };
    match stored {
        Ok(true) => {}
        Ok(false) => {
            crate::uploads::remove_objects(&state, &[key], &[]).await;
            return Err(quota_refusal(quota));
        }
        Err(e) => {
            crate::uploads::remove_objects(&state, &[key], &[]).await;
            return Err(e.into());
        }
    }
    Ok(Json(
        json!({ "upload_url": format!("{}/v2/upload/{id}", state.public_base_url) }),
    ))
}

fn quota_refusal(quota: i64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "Upload refused: this account's uploads would exceed its storage quota of {quota} bytes; \
         deleting transcripts frees their uploads, and unused uploads expire"
    ))
}

/// Streams the body into a new object at `key`: each chunk is passed on as it
/// arrives (the S3 backend sends it in parts), so no upload is ever held whole in
/// memory. On any refusal the object is abandoned and nothing of it stays.
async fn receive_body(
    state: &AppState,
    body: Body,
    key: &str,
    idle: std::time::Duration,
) -> ApiResult<u64> {
    let mut writer = match state.blobs.create(key).await {
        Ok(writer) => writer,
        Err(e) => {
            drain_refused_body(body).await;
            return Err(ApiError::blob(e));
        }
    };
    match stream_body(writer.as_mut(), body, state.config.max_upload_bytes, idle).await {
        Ok(0) => {
            abandon(writer).await;
            Err(ApiError::bad_request("Upload body is empty"))
        }
        Ok(_) => writer.finish().await.map_err(ApiError::blob),
        Err(e) => {
            abandon(writer).await;
            Err(e)
        }
    }
}

async fn abandon(writer: Box<dyn hark_store::blobs::BlobWriter>) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "could not abort a refused upload");
    }
}

async fn stream_body(
    writer: &mut dyn hark_store::blobs::BlobWriter,
    body: Body,
    max_bytes: u64,
    idle: std::time::Duration,
) -> ApiResult<u64> {
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    loop {
        // A body that stalls holds a connection and an upload: it gets `idle` per chunk.
        let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
            return Err(ApiError::UploadTimedOut(idle.as_secs()));
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("Upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "Upload exceeds the maximum size of {max_bytes} bytes"
            )));
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == SNIFF_BYTES {
                refuse_non_audio(&head)?;
            }
        }
        if let Err(e) = writer.write(chunk).await {
            // Out of space, say: the refusal must reach a client still sending.
            let refusal = ApiError::blob(e);
            drain_stream(stream).await;
            return Err(refusal);
        }
    }
    if head.len() < SNIFF_BYTES {
        refuse_non_audio(&head)?;
    }
    Ok(size)
}

/// How much of an upload is looked at to refuse content that is plainly not audio.
const SNIFF_BYTES: usize = 64;

/// Refuses an upload whose first bytes are recognisably something else (text, JSON,
/// an image, an archive...). Unrecognised binary content is kept: only decoding can
/// judge it, and a transcript of it ends in AssemblyAI's "does not contain audio" error.
fn refuse_non_audio(head: &[u8]) -> ApiResult<()> {
    match hark_audio::non_audio_kind(head) {
        Some(kind) => Err(ApiError::bad_request(format!(
            "File does not appear to contain audio. File type is {kind} (unknown)."
        ))),
        None => Ok(()),
    }
}

/// The upload an `audio_url` names, if it is one of this server's upload URLs.
fn upload_id_of(state: &AppState, audio_url: &str) -> Option<Result<UploadId, ()>> {
    let rest = audio_url
        .strip_prefix(&state.public_base_url)?
        .strip_prefix("/v2/upload/")?;
    Some(UploadId::parse(rest.trim_end_matches('/')).ok_or(()))
}

/// `POST /v2/transcript`.
pub async fn create(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    ApiError::check_balance(&who)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("Request body is too large".into())
        }
        _ => ApiError::bad_request(format!("Could not read request body: {e}")),
    })?;
    let request = parse_body(&body)?;
    let mut params: StoredParams = request.validate(|requested| state.resolve_model(requested))?;
    let upload_id = match upload_id_of(&state, request.audio_url.trim()) {
        Some(Ok(id)) => {
            let upload = state.store.get_upload(id).await?;
            // Another project's upload is refused exactly as a missing one.
            match upload {
                Some(u) if u.project_id == who.project_id => Some(id),
                _ => return Err(ApiError::UploadForbidden),
            }
        }
        Some(Err(())) => return Err(ApiError::UploadForbidden),
        None => {
            let parsed = url::Url::parse(request.audio_url.trim())
                .map_err(|_| ApiError::bad_request("audio_url is not a valid URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(ApiError::bad_request(
                    "audio_url must be an http or https URL",
                ));
            }
            None
        }
    };
    let id = TranscriptId::random();
    if let Some(value) = &request.webhook_auth_header_value {
        let context = hark_outbound::auth_header_seal_context(Some(id), who.project_id);
        params.webhook_auth_header_sealed = Some(state.master_key.seal(value.expose(), &context));
    }
    let stored = serde_json::to_string(&params).map_err(ApiError::internal)?;
    let transcript = state
        .store
        .create_transcript(NewTranscript {
            id,
            project_id: who.project_id,
            api_key_id: who.key_id,
            audio_url: request.audio_url.trim().to_string(),
            upload_id,
            params: stored,
        })
        .await?;
    state.jobs_available.notify_waiters();
    Ok(Json(render::transcript(&transcript)))
}

async fn find(state: &AppState, who: &hark_store::KeyPrincipal, id: &str) -> ApiResult<Transcript> {
    let id = TranscriptId::parse(id).ok_or(ApiError::TranscriptNotFound)?;
    state
        .store
        .get_transcript(who.project_id, id)
        .await?
        .ok_or(ApiError::TranscriptNotFound)
}

/// `GET /v2/transcript/{id}`.
pub async fn get(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    transcript_json(&state, &who, &id).await.map(Json)
}

/// The work of `GET /v2/transcript/{id}` once the caller is known (public so the
/// authentication-overhead benchmark can measure it without authentication).
pub async fn transcript_json(
    state: &AppState,
    who: &hark_store::KeyPrincipal,
    id: &str,
) -> ApiResult<Value> {
    Ok(render::transcript(&find(state, who, id).await?))
}

/// `DELETE /v2/transcript/{id}`: scrubs the transcript and removes its uploaded file.
pub async fn delete(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = TranscriptId::parse(&id).ok_or(ApiError::TranscriptNotFound)?;
    let (transcript, upload) = state
        .store
        .delete_transcript(who.project_id, id)
        .await?
        .ok_or(ApiError::TranscriptNotFound)?;
    // After the commit: a failed deletion leaves an object the next start sweeps.
    if let Some(upload) = upload {
        crate::uploads::remove_objects(&state, &[upload.path], &[]).await;
    }
    Ok(Json(render::transcript(&transcript)))
}

fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn parse_bool(name: &str, v: &str) -> ApiResult<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be true or false"
        ))),
    }
}

/// The query of `GET /v2/transcript`, checked: what to ask the store for, and the
/// filters the paging links carry on.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub query: TranscriptQuery,
    /// `limit` and the filters given, as they go into `prev_url`/`next_url`/`current_url`.
    pub kept: Vec<(String, String)>,
}

/// Parses and checks the raw query string of `GET /v2/transcript` (public so the fuzz
/// target and the property tests drive exactly what the handler runs).
pub fn list_params(raw: Option<&str>) -> ApiResult<ListParams> {
    let q = parse_query(raw);
    let limit = match q.get("limit") {
        None => 10,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "limit must be an integer between 1 and 200",
                ))
            }
        },
    };
    let status = q
        .get("status")
        .map(|s| {
            TranscriptStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be one of queued, processing, completed, error")
            })
        })
        .transpose()?;
    let created_between = q
        .get("created_on")
        .map(|d| {
            let date =
                time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
                    .map_err(|_| {
                        ApiError::bad_request("created_on must be a date in the form YYYY-MM-DD")
                    })?;
            let start = date.midnight().assume_utc().unix_timestamp() * 1000;
            Ok::<_, ApiError>((start, start + 86_400_000 - 1))
        })
        .transpose()?;
    let cursor = |name: &str| {
        q.get(name)
            .map(|v| {
                TranscriptId::parse(v)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be a transcript id")))
            })
            .transpose()
    };
    let (before_id, after_id) = (cursor("before_id")?, cursor("after_id")?);
    let throttled_only = q
        .get("throttled_only")
        .map(|v| parse_bool("throttled_only", v))
        .transpose()?
        .unwrap_or(false);
    let mut kept: Vec<(String, String)> = vec![("limit".into(), limit.to_string())];
    for name in ["status", "created_on", "throttled_only"] {
        if let Some(v) = q.get(name) {
            kept.push((name.into(), v.clone()));
        }
    }
    Ok(ListParams {
        query: TranscriptQuery {
            limit,
            status,
            created_between,
            before_id,
            after_id,
            throttled_only,
        },
        kept,
    })
}

/// `GET /v2/transcript`: newest first, with absolute paging links.
pub async fn list(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let ListParams { query, kept } = list_params(raw.as_deref())?;
    let (limit, before_id, after_id) = (query.limit, query.before_id, query.after_id);
    if let (Some(before), Some(after)) = (before_id, after_id) {
        let b = state.store.get_transcript(who.project_id, before).await?;
        let a = state.store.get_transcript(who.project_id, after).await?;
        if let (Some(b), Some(a)) = (b, a) {
            if (a.created_at, a.id) >= (b.created_at, b.id) {
                return Err(ApiError::bad_request(
                    "'after_id' must be a newer transcript than 'before_id'",
                ));
            }
        }
    }
    let items = state.store.list_transcripts(who.project_id, &query).await?;
    let base = format!("{}/v2/transcript", state.public_base_url);
    let link = |extra: &[(&str, String)]| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            ser.append_pair(k, v);
        }
        for (k, v) in extra {
            ser.append_pair(k, v);
        }
        format!("{base}?{}", ser.finish())
    };
    let mut current: Vec<(&str, String)> = Vec::new();
    if let Some(b) = before_id {
        current.push(("before_id", b.to_string()));
    }
    if let Some(a) = after_id {
        current.push(("after_id", a.to_string()));
    }
    let prev_url = items
        .last()
        .map(|oldest| link(&[("before_id", oldest.id.to_string())]));
    let next_url = items
        .first()
        .map(|newest| link(&[("after_id", newest.id.to_string())]));
    Ok(Json(json!({
        "page_details": {
            "limit": limit,
            "result_count": items.len(),
            "current_url": link(&current),
            "prev_url": prev_url,
            "next_url": next_url,
        },
        "transcripts": items.iter().map(|t| render::list_item(t, &state.public_base_url)).collect::<Vec<_>>(),
    })))
}

async fn completed(
    state: &AppState,
    who: &hark_store::KeyPrincipal,
    id: &str,
) -> ApiResult<(Transcript, hark_core::speech::Transcription)> {
    let t = find(state, who, id).await?;
    if t.deleted_at.is_some() {
        return Err(ApiError::bad_request("Transcript has been deleted"));
    }
    if t.status != TranscriptStatus::Completed {
        return Err(ApiError::bad_request(format!(
            "Transcript is not completed (status: {})",
            t.status.as_str()
        )));
    }
    let result = render::stored_result(&t)
        .ok_or_else(|| ApiError::internal("completed transcript without result"))?;
    Ok((t, result))
}

fn segments_json(
    t: &Transcript,
    result: &hark_core::speech::Transcription,
    key: &str,
    segments: Vec<views::Segment>,
) -> Value {
    json!({
        "id": t.id.to_string(),
        "confidence": result.confidence,
        "audio_duration": result.audio_duration_secs,
        "speech_model_used": t.speech_model_used,
        key: segments,
    })
}

/// `GET /v2/transcript/{id}/sentences`.
pub async fn sentences(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    segments(&state, &who, &id, "sentences", views::sentences).await
}

/// `GET /v2/transcript/{id}/paragraphs`.
pub async fn paragraphs(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    segments(&state, &who, &id, "paragraphs", views::paragraphs).await
}

async fn segments(
    state: &AppState,
    who: &hark_store::KeyPrincipal,
    id: &str,
    key: &str,
    split: fn(&[hark_core::speech::Word]) -> Vec<views::Segment>,
) -> ApiResult<Json<Value>> {
    let (t, r) = completed(state, who, id).await?;
    Ok(Json(segments_json(&t, &r, key, split(&r.words))))
}

/// The search terms of a word-search query string (`words=a,b c`).
pub fn search_terms(raw: Option<&str>) -> ApiResult<Vec<String>> {
    let q = parse_query(raw);
    views::parse_search_terms(q.get("words").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::BadRequest)
}

/// `chars_per_caption` of a subtitle query string, if given.
pub fn chars_per_caption(raw: Option<&str>) -> ApiResult<Option<usize>> {
    parse_query(raw)
        .get("chars_per_caption")
        .map(|v| match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "chars_per_caption must be a positive integer",
            )),
        })
        .transpose()
}

/// `GET /v2/transcript/{id}/word-search?words=a,b`.
pub async fn word_search(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let (t, r) = completed(&state, &who, &id).await?;
    let terms = search_terms(raw.as_deref())?;
    let found = views::word_search(&r.words, &terms);
    Ok(Json(
        json!({"id": t.id.to_string(), "total_count": found.total_count, "matches": found.matches}),
    ))
}

/// `GET /v2/transcript/{id}/{srt|vtt}` (the router sends other formats to 404).
pub async fn subtitles(
    State(state): State<AppState>,
    ApiPrincipal(who): ApiPrincipal,
    Path((id, format)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let chars = chars_per_caption(raw.as_deref())?;
    let render_fn: fn(&[hark_core::speech::Word], Option<usize>) -> String = match format.as_str() {
        "srt" => views::srt,
        "vtt" => views::vtt,
        _ => return Err(ApiError::NotFound),
    };
    let (_, r) = completed(&state, &who, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_fn(&r.words, chars),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV header and silence: passes the audio sniffer.
    fn wav_bytes(len: usize) -> Vec<u8> {
        let mut bytes =
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data"
                .to_vec();
        bytes.resize(len, 0);
        bytes
    }

    /// Writes every chunk to `/dev/full`, which answers each write with ENOSPC, as the
    /// local storage's file on a full disk does.
    struct FullDisk(tokio::fs::File);

    #[async_trait::async_trait]
    impl hark_store::blobs::BlobWriter for FullDisk {
        async fn write(&mut self, chunk: bytes::Bytes) -> hark_store::blobs::BlobResult<()> {
            use tokio::io::AsyncWriteExt;
            self.0.write_all(&chunk).await?;
            self.0.flush().await?;
            Ok(())
        }
        async fn finish(self: Box<Self>) -> hark_store::blobs::BlobResult<u64> {
            Ok(0)
        }
        async fn abort(self: Box<Self>) -> hark_store::blobs::BlobResult<()> {
            Ok(())
        }
    }

    /// A full disk refuses the upload as out of storage (507), not as a server fault.
    #[tokio::test]
    async fn a_full_disk_refuses_the_upload_as_out_of_storage() {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .expect("/dev/full");
        let mut writer = FullDisk(file);
        let refused = stream_body(
            &mut writer,
            Body::from(wav_bytes(256 << 10)),
            1 << 30,
            std::time::Duration::from_secs(5),
        )
        .await;
        match refused {
            Err(e @ ApiError::StorageFull) => {
                assert_eq!(e.status(), StatusCode::INSUFFICIENT_STORAGE);
                assert!(e.to_string().contains("out of storage space"), "{e}");
            }
            other => panic!("expected StorageFull, got {other:?}"),
        }
    }
}
