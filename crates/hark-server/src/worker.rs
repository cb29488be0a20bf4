//! Transcription workers: claim a queued job under a lease, fetch its audio, run the
//! speech engine, and commit the outcome with its usage event and webhook.

use crate::params::{CustomSpelling, StoredParams};
use crate::render;
use crate::AppState;
use hark_core::speech::{SpeechError, TranscribeRequest, Transcription};
use hark_store::blobs::{BlobError, LocalFile};
use hark_store::{ClaimedJob, JobOutcome, NewUsageEvent, NewWebhook};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// Polling interval when idle; new jobs also wake workers at once.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What a client sees when the engine fails for a reason that is ours, not theirs.
const INTERNAL_FAILURE: &str = "Transcription failed due to an internal server error.";

/// The error of a job whose transcription was started `attempts` times and never
/// finished (each time the process running it stopped).
fn poison_message(attempts: i64) -> String {
    format!(
        "Transcription failed: processing this file was started {attempts} times and never finished; it will not be retried."
    )
}

pub async fn run_worker(state: AppState, worker_id: String, mut shutdown: watch::Receiver<bool>) {
    tracing::debug!(worker = %worker_id, "worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let woken = state.jobs_available.notified();
        match state
            .store
            .claim_job(&worker_id, state.config.job_lease_ms)
            .await
        {
            Ok(Some(job)) => process(&state, &worker_id, job).await,
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                crate::telemetry::database_error();
                tracing::error!(error = %e, "claiming a job failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn process(state: &AppState, worker_id: &str, job: ClaimedJob) {
    let transcript_id = job.transcript.id;
    let waited = (state.clock.now_ms() - job.transcript.created_at).max(0) as u64;
    crate::telemetry::job_wait(Duration::from_millis(waited));
    tracing::info!(transcript = %transcript_id, attempt = job.attempts, "transcribing");
    let heartbeat = {
        let state = state.clone();
        let job_id = job.job_id.clone();
        let worker = worker_id.to_string();
        let every = Duration::from_millis((state.config.job_lease_ms / 3).max(50) as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match state
                    .store
                    .extend_lease(&job_id, &worker, state.config.job_lease_ms)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => tracing::warn!(error = %e, "could not extend job lease"),
                }
            }
        })
    };
    let params = render::stored_params(&job.transcript);
    let max_attempts = state.config.max_job_attempts.max(1);
    let result = if job.attempts > max_attempts {
        // Its workers died each time (a file that crashes or exhausts the process, say):
        // running it again would take the next worker down too.
        tracing::error!(
            transcript = %transcript_id,
            attempts = job.attempts - 1,
            "job started too often without finishing; giving up"
        );
        Err(poison_message(max_attempts))
    } else {
        match &params {
            Some(params) => transcribe(state, &job, params).await,
            None => Err(INTERNAL_FAILURE.to_string()),
        }
    };
    let t = &job.transcript;
    let (outcome, status) = match result {
        Ok(transcription) => {
            let model = transcription.model.clone();
            let duration = transcription.audio_duration_secs;
            match serde_json::to_string(&transcription) {
                Ok(result_json) => (
                    JobOutcome::Completed {
                        result_json,
                        speech_model_used: model.clone(),
                        audio_duration: duration,
                        usage: NewUsageEvent {
                            idempotency_key: format!("transcript:{}", t.id),
                            account_id: t.account_id,
                            project_id: t.project_id,
                            api_key_id: t.api_key_id,
                            product: hark_core::money::SPEECH_TO_TEXT.into(),
                            model,
                            audio_ms: (duration * 1000.0).round() as i64,
                            session_ms: None,
                        },
                    },
                    "completed",
                ),
                Err(e) => {
                    tracing::error!(error = %e, "could not encode result");
                    (
                        JobOutcome::Failed {
                            error: INTERNAL_FAILURE.into(),
                        },
                        "error",
                    )
                }
            }
        }
        Err(error) => (JobOutcome::Failed { error }, "error"),
    };
    let webhook = params
        .as_ref()
        .and_then(|p| p.webhook_url.clone())
        .map(|url| NewWebhook {
            url,
            auth_header_name: params
                .as_ref()
                .and_then(|p| p.webhook_auth_header_name.clone()),
            auth_header_sealed: params
                .as_ref()
                .and_then(|p| p.webhook_auth_header_sealed.clone()),
            body: json!({"transcript_id": t.id.to_string(), "status": status}).to_string(),
        });
    let finished = finish(state, &job.job_id, worker_id, outcome, webhook).await;
    heartbeat.abort();
    match finished {
        Ok(true) => {
            tracing::info!(transcript = %transcript_id, status, "job finished");
        }
        Ok(false) => tracing::warn!(transcript = %transcript_id, "lease lost; result discarded"),
        Err(e) => {
            tracing::error!(error = %e, transcript = %transcript_id, "could not record job outcome")
        }
    }
}

/// Records a job's outcome. A database error (a restart, say) is retried with backoff
/// while the lease lasts, the heartbeat still renewing it, so a finished transcription
/// is not thrown away and run again; the outcome is recorded only by the lease holder,
/// so a first attempt that did commit is not recorded (or billed) twice.
async fn finish(
    state: &AppState,
    job_id: &str,
    worker_id: &str,
    outcome: JobOutcome,
    webhook: Option<NewWebhook>,
) -> hark_store::StoreResult<bool> {
    let give_up = std::time::Instant::now()
        + Duration::from_millis(u64::try_from(state.config.job_lease_ms).unwrap_or(0));
    let mut delay = Duration::from_millis(100);
    loop {
        match state
            .store
            .finish_job(job_id, worker_id, outcome.clone(), webhook.clone())
            .await
        {
            Err(e) if std::time::Instant::now() + delay < give_up => {
                crate::telemetry::database_error();
                tracing::warn!(error = %e, "could not record a job's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            finished => return finished,
        }
    }
}

/// Runs one transcription; `Err` carries the client-facing error text.
async fn transcribe(
    state: &AppState,
    job: &ClaimedJob,
    params: &StoredParams,
) -> Result<Transcription, String> {
    let audio = fetch_audio(state, job).await?;
    let engine = state.engine.clone();
    let request = TranscribeRequest {
        path: audio.path().to_path_buf(),
        model: params.model.clone(),
        language_code: if params.language_detection {
            None
        } else {
            params.language_code.clone().or(Some("en".into()))
        },
        punctuate: params.punctuate,
        format_text: params.format_text,
        audio_start_from: params.audio_start_from,
        audio_end_at: params.audio_end_at,
    };
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || match engine {
        Some(engine) => engine.transcribe(&request),
        None => Err(SpeechError::NoModel(request.model.clone())),
    })
    .await;
    crate::telemetry::inference(started.elapsed());
    audio.release(state).await;
    let mut transcription = match outcome {
        Ok(Ok(t)) => t,
        Ok(Err(e)) if e.is_client_facing() => return Err(e.to_string()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "speech engine failed");
            return Err(INTERNAL_FAILURE.into());
        }
        Err(join) => {
            tracing::error!(error = %join, "speech engine task failed");
            return Err(INTERNAL_FAILURE.into());
        }
    };
    if let (Some(threshold), Some(confidence)) = (
        params.language_confidence_threshold,
        transcription.language_confidence,
    ) {
        if params.language_detection && confidence < threshold {
            return Err(format!(
                "detected language '{}', confidence {confidence:.4}, is below the requested confidence threshold value of '{threshold}'",
                transcription.language_code.clone().unwrap_or_default()
            ));
        }
    }
    if let Some(spellings) = &params.custom_spelling {
        apply_custom_spelling(&mut transcription, spellings);
    }
    Ok(transcription)
}

/// The audio file of a job: its upload (a scratch copy when the upload is in shared
/// storage) or its `audio_url` downloaded into the scratch directory. Either way the
/// decoder gets a file, and a scratch file goes when the returned value is dropped.
async fn fetch_audio(state: &AppState, job: &ClaimedJob) -> Result<AudioFile, String> {
    let t = &job.transcript;
    let gone = || {
        format!(
            "Download error, unable to download {}. The uploaded file no longer exists.",
            t.audio_url
        )
    };
    if let Some(upload_id) = t.upload_id {
        let upload = state.store.get_upload(upload_id).await.map_err(|e| {
            tracing::error!(error = %e, "reading upload");
            INTERNAL_FAILURE.to_string()
        })?;
        let Some(upload) = upload.filter(|u| u.project_id == t.project_id) else {
            return Err(gone());
        };
        let key = state.blobs.key_of(&upload.path);
        return match state.blobs.local_file(&key, &state.tmp_dir).await {
            Ok(file) => Ok(AudioFile::Stored(file)),
            Err(BlobError::NotFound(_)) => Err(gone()),
            Err(e) => {
                tracing::error!(error = %e, storage = %state.blobs.describe(), "reading an upload from storage");
                Err(INTERNAL_FAILURE.to_string())
            }
        };
    }
    // The download goes into the audio storage like an upload, so a retry of the job
    // (after a node died mid-job, say) reads it from there instead of fetching it again
    // (a signed `audio_url` may have expired by then); it is deleted when the job's
    // transcription is over, and one left by a crash is swept as an orphan.
    let key = download_key(t);
    let internal = |e: BlobError| {
        tracing::error!(error = %e, storage = %state.blobs.describe(), "storing a downloaded audio_url");
        INTERNAL_FAILURE.to_string()
    };
    match state.blobs.local_file(&key, &state.tmp_dir).await {
        Ok(file) => return Ok(AudioFile::Downloaded { file, key }),
        Err(BlobError::NotFound(_)) => {}
        Err(e) => return Err(internal(e)),
    }
    let mut writer = state.blobs.create(&key).await.map_err(internal)?;
    if let Err(refusal) = crate::remote::download(state, &t.audio_url, writer.as_mut()).await {
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, "could not abort a failed download");
        }
        return Err(refusal);
    }
    writer.finish().await.map_err(internal)?;
    let file = state
        .blobs
        .local_file(&key, &state.tmp_dir)
        .await
        .map_err(internal)?;
    Ok(AudioFile::Downloaded { file, key })
}

/// Where a transcript's downloaded `audio_url` is kept while its job runs: beside the
/// project's uploads, named after the transcript (no upload row names it).
fn download_key(t: &hark_store::Transcript) -> String {
    hark_store::blobs::upload_key(&t.project_id.to_string(), &format!("{}.download", t.id))
}

/// A job's audio on this node's disk.
enum AudioFile {
    Stored(LocalFile),
    /// A downloaded `audio_url`, in the audio storage under `key` until the job's
    /// transcription is over.
    Downloaded {
        file: LocalFile,
        key: String,
    },
}

impl AudioFile {
    fn path(&self) -> &std::path::Path {
        match self {
            AudioFile::Stored(file) | AudioFile::Downloaded { file, .. } => file.path(),
        }
    }

    /// Lets go of the audio: a scratch copy goes (on drop) and a download is deleted
    /// from the storage; an upload stays.
    async fn release(self, state: &AppState) {
        if let AudioFile::Downloaded { file, key } = self {
            drop(file);
            if let Err(e) = state.blobs.delete(&key).await {
                tracing::warn!(error = %e, "could not delete a downloaded audio_url; it is swept as an orphan");
            }
        }
    }
}

/// Replaces words as `custom_spelling` asks (case-insensitive on the word itself,
/// keeping surrounding punctuation), then rebuilds the text.
fn apply_custom_spelling(t: &mut Transcription, spellings: &[CustomSpelling]) {
    let mut changed = false;
    for word in &mut t.words {
        let core: &str = word
            .text
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'');
        if core.is_empty() {
            continue;
        }
        if let Some(s) = spellings
            .iter()
            .find(|s| s.from.iter().any(|f| f.eq_ignore_ascii_case(core)))
        {
            let replaced = word.text.replacen(core, &s.to, 1);
            word.text = replaced;
            changed = true;
        }
    }
    if changed {
        t.text = hark_core::views::plain_text(&t.words);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::speech::Word;

    #[test]
    fn custom_spelling_replaces_words_and_keeps_punctuation() {
        let w = |t: &str| Word {
            text: t.into(),
            start: 0,
            end: 1,
            confidence: 1.0,
        };
        let mut t = Transcription {
            text: "Hello sequel, bye.".into(),
            words: vec![w("Hello"), w("sequel,"), w("bye.")],
            confidence: 1.0,
            audio_duration_secs: 1.0,
            language_code: None,
            language_confidence: None,
            model: "m".into(),
        };
        apply_custom_spelling(
            &mut t,
            &[CustomSpelling {
                from: vec!["Sequel".into()],
                to: "SQL".into(),
            }],
        );
        assert_eq!(t.text, "Hello SQL, bye.");
    }
}
