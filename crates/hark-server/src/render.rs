//! The AssemblyAI JSON shapes of transcripts and transcript lists.

use crate::params::StoredParams;
use hark_core::speech::Transcription;
use hark_store::{Transcript, TranscriptStatus};
use serde_json::{json, Value};
use time::macros::format_description;

pub const DELETED_URL: &str = "http://deleted_by_user";

/// AssemblyAI's timestamp form: UTC, microseconds, no timezone designator.
pub fn timestamp(ms: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    hark_core::clock::from_millis(ms)
        .format(&fmt)
        .unwrap_or_default()
}

pub fn stored_params(t: &Transcript) -> Option<StoredParams> {
    serde_json::from_str(&t.params).ok()
}

pub fn stored_result(t: &Transcript) -> Option<Transcription> {
    t.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
}

fn words_json(result: &Transcription) -> Value {
    Value::Array(
        result
            .words
            .iter()
            .map(|w| json!({"text": w.text, "start": w.start, "end": w.end, "confidence": w.confidence, "speaker": null}))
            .collect(),
    )
}

/// The full Transcript object returned by create, get and delete.
pub fn transcript(t: &Transcript) -> Value {
    let params = stored_params(t);
    let result = stored_result(t);
    let deleted = t.deleted_at.is_some();
    let p = params.as_ref();
    let webhook_url = p.and_then(|p| p.webhook_url.clone()).map(|u| {
        if deleted {
            DELETED_URL.to_string()
        } else {
            u
        }
    });
    let (text, words, confidence) = match (&result, deleted) {
        (_, true) => (json!("Deleted by user."), Value::Null, Value::Null),
        (Some(r), false) => (json!(r.text), words_json(r), json!(r.confidence)),
        (None, false) => (Value::Null, Value::Null, Value::Null),
    };
    let mut body = json!({
        "id": t.id.to_string(),
        "status": t.status.as_str(),
        "audio_url": if deleted { DELETED_URL.to_string() } else { t.audio_url.clone() },
        "text": text,
        "words": words,
        "utterances": null,
        "confidence": confidence,
        "audio_duration": t.audio_duration.map(|d| d.round() as i64),
        "speech_model": null,
        "speech_models": p.and_then(|p| p.speech_models.clone()),
        "speech_model_used": t.speech_model_used,
        "language_model": "assemblyai_default",
        "acoustic_model": "assemblyai_default",
        "language_code": result.as_ref().and_then(|r| r.language_code.clone()).or_else(|| p.and_then(|p| p.language_code.clone())),
        "language_detection": p.map(|p| p.language_detection).unwrap_or(false),
        "language_confidence_threshold": p.and_then(|p| p.language_confidence_threshold),
        "language_confidence": result.as_ref().and_then(|r| r.language_confidence),
        "punctuate": p.map(|p| p.punctuate),
        "format_text": p.map(|p| p.format_text),
        "disfluencies": false,
        "filter_profanity": false,
        "multichannel": false,
        "speaker_labels": false,
        "speakers_expected": null,
        "audio_start_from": p.and_then(|p| p.audio_start_from),
        "audio_end_at": p.and_then(|p| p.audio_end_at),
        "custom_spelling": p.and_then(|p| p.custom_spelling.clone()),
        "temperature": p.and_then(|p| p.temperature),
        "webhook_url": webhook_url,
        "webhook_status_code": t.webhook_status_code,
        "webhook_auth": p.is_some_and(|p| p.webhook_auth_header_name.is_some()),
        "webhook_auth_header_name": p.and_then(|p| p.webhook_auth_header_name.clone()),
        "auto_highlights": false,
        "auto_highlights_result": null,
        "redact_pii": false,
        "summarization": false,
        "content_safety": false,
        "iab_categories": false,
        "entity_detection": false,
        "sentiment_analysis": false,
        "auto_chapters": false,
        "throttled": t.throttled,
    });
    if t.status == TranscriptStatus::Error {
        if let Some(obj) = body.as_object_mut() {
            obj.insert("error".into(), json!(t.error));
        }
    }
    body
}

/// One entry of `GET /v2/transcript`.
pub fn list_item(t: &Transcript, base_url: &str) -> Value {
    json!({
        "id": t.id.to_string(),
        "resource_url": format!("{base_url}/v2/transcript/{}", t.id),
        "status": t.status.as_str(),
        "created": timestamp(t.created_at),
        "completed": t.completed_at.map(timestamp),
        "audio_url": if t.deleted_at.is_some() { DELETED_URL.to_string() } else { t.audio_url.clone() },
        "error": t.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_no_timezone() {
        assert_eq!(timestamp(1_710_192_599_936), "2024-03-11T21:29:59.936000");
    }
}
