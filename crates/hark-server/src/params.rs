//! Validation of `POST /v2/transcript` bodies into what Hark stores and runs.
//! Every documented AssemblyAI field is recognised; features this server does not
//! implement are refused when switched on, never silently ignored.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The request fields Hark acts on.
#[derive(Debug, Deserialize)]
pub struct CreateTranscript {
    pub audio_url: String,
    pub speech_models: Option<Vec<String>>,
    pub language_code: Option<String>,
    pub language_detection: Option<bool>,
    pub language_confidence_threshold: Option<f64>,
    pub punctuate: Option<bool>,
    pub format_text: Option<bool>,
    pub audio_start_from: Option<i64>,
    pub audio_end_at: Option<i64>,
    pub webhook_url: Option<String>,
    pub webhook_auth_header_name: Option<String>,
    pub webhook_auth_header_value: Option<hark_core::keys::Secret>,
    pub custom_spelling: Option<Vec<CustomSpelling>>,
    pub temperature: Option<f64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSpelling {
    pub from: Vec<String>,
    pub to: String,
}

/// Documented fields whose features Hark does not provide: accepted only when
/// absent, null, false, zero or empty.
const UNSUPPORTED: &[&str] = &[
    "language_codes",
    "language_detection_options",
    "disfluencies",
    "filter_profanity",
    "speaker_labels",
    "speakers_expected",
    "speaker_options",
    "multichannel",
    "dual_channel",
    "keyterms_prompt",
    "prompt",
    "remove_audio_tags",
    "redact_pii",
    "redact_pii_policies",
    "redact_pii_sub",
    "redact_pii_audio",
    "redact_pii_audio_quality",
    "redact_pii_audio_options",
    "content_safety",
    "content_safety_confidence",
    "iab_categories",
    "auto_highlights",
    "entity_detection",
    "sentiment_analysis",
    "speech_threshold",
    "speech_understanding",
    "auto_chapters",
    "summarization",
    "summary_model",
    "summary_type",
    "custom_topics",
    "topics",
    "word_boost",
    "boost_param",
    "speed_boost",
];

/// What is stored with the transcript and used by the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredParams {
    pub speech_models: Option<Vec<String>>,
    /// The installed model that will run.
    pub model: String,
    pub language_code: Option<String>,
    pub language_detection: bool,
    pub language_confidence_threshold: Option<f64>,
    pub punctuate: bool,
    pub format_text: bool,
    pub audio_start_from: Option<u64>,
    pub audio_end_at: Option<u64>,
    pub webhook_url: Option<String>,
    pub webhook_auth_header_name: Option<String>,
    /// Sealed under the master key with the transcript id as context; never returned.
    pub webhook_auth_header_sealed: Option<String>,
    pub custom_spelling: Option<Vec<CustomSpelling>>,
    pub temperature: Option<f64>,
}

fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

pub fn parse_body(body: &[u8]) -> Result<CreateTranscript, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Request body is empty; expected a JSON object with audio_url",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    }
    let req: CreateTranscript = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
    if let Some(v) = req.rest.get("speech_model") {
        if !v.is_null() {
            return Err(ApiError::bad_request(
                "speech_model is deprecated. Use \"speech_models\" instead. See documentation: https://www.assemblyai.com/docs/pre-recorded-audio/select-the-speech-model",
            ));
        }
    }
    for (key, value) in &req.rest {
        if key == "speech_model" {
            continue;
        }
        if !UNSUPPORTED.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unknown field '{key}' in request body"
            )));
        }
        if !is_off(value) {
            return Err(ApiError::bad_request(format!(
                "'{key}' is not supported by this server"
            )));
        }
    }
    Ok(req)
}

impl CreateTranscript {
    /// Range and consistency checks; `resolve` maps requested model names to an
    /// installed model (or says none is available).
    pub fn validate(
        &self,
        resolve: impl Fn(&[String]) -> Result<String, ApiError>,
    ) -> Result<StoredParams, ApiError> {
        if self.audio_url.trim().is_empty() {
            return Err(ApiError::bad_request("audio_url must not be empty"));
        }
        let start = non_negative("audio_start_from", self.audio_start_from)?;
        let end = non_negative("audio_end_at", self.audio_end_at)?;
        if let (Some(s), Some(e)) = (start, end) {
            if e <= s {
                return Err(ApiError::bad_request(
                    "audio_end_at must be greater than audio_start_from",
                ));
            }
        }
        if let Some(t) = self.language_confidence_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(ApiError::bad_request(
                    "language_confidence_threshold must be between 0 and 1",
                ));
            }
        }
        if let Some(t) = self.temperature {
            if !(0.0..=1.0).contains(&t) {
                return Err(ApiError::bad_request("temperature must be between 0 and 1"));
            }
            if t != 0.0 {
                return Err(ApiError::bad_request(
                    "temperature other than 0 is not supported by this server",
                ));
            }
        }
        if let Some(models) = &self.speech_models {
            if models.is_empty() {
                return Err(ApiError::bad_request(
                    "speech_models must name at least one model",
                ));
            }
        }
        if let Some(code) = &self.language_code {
            if code.is_empty()
                || code.len() > 16
                || !code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ApiError::bad_request(format!(
                    "language_code '{code}' is not a valid language code"
                )));
            }
        }
        if self.language_detection == Some(true) && self.language_code.is_some() {
            return Err(ApiError::bad_request(
                "language_code cannot be set together with language_detection",
            ));
        }
        match (
            &self.webhook_auth_header_name,
            &self.webhook_auth_header_value,
        ) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "webhook_auth_header_name and webhook_auth_header_value must be given together",
                ))
            }
            (Some(name), Some(_))
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() =>
            {
                return Err(ApiError::bad_request(
                    "webhook_auth_header_name is not a valid header name",
                ))
            }
            (Some(_), Some(v)) if axum::http::HeaderValue::from_str(v.expose()).is_err() => {
                return Err(ApiError::bad_request(
                    "webhook_auth_header_value is not a valid header value",
                ))
            }
            _ => {}
        }
        if let Some(url) = &self.webhook_url {
            let parsed = url::Url::parse(url)
                .map_err(|_| ApiError::bad_request("webhook_url is not a valid URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ApiError::bad_request(
                    "webhook_url must be an http or https URL",
                ));
            }
        }
        if let Some(spellings) = &self.custom_spelling {
            if spellings
                .iter()
                .any(|s| s.from.is_empty() || s.from.iter().any(|f| f.trim().is_empty()))
            {
                return Err(ApiError::bad_request(
                    "custom_spelling entries need non-empty 'from' words",
                ));
            }
        }
        let requested = self.speech_models.clone().unwrap_or_default();
        let model = resolve(&requested)?;
        Ok(StoredParams {
            speech_models: self.speech_models.clone(),
            model,
            language_code: self.language_code.clone(),
            language_detection: self.language_detection.unwrap_or(false),
            language_confidence_threshold: self.language_confidence_threshold,
            punctuate: self.punctuate.unwrap_or(true),
            format_text: self.format_text.unwrap_or(true),
            audio_start_from: start,
            audio_end_at: end,
            webhook_url: self.webhook_url.clone(),
            webhook_auth_header_name: self.webhook_auth_header_name.clone(),
            webhook_auth_header_sealed: None,
            custom_spelling: self.custom_spelling.clone(),
            temperature: self.temperature,
        })
    }
}

fn non_negative(name: &str, v: Option<i64>) -> Result<Option<u64>, ApiError> {
    v.map(|v| {
        u64::try_from(v).map_err(|_| ApiError::bad_request(format!("{name} must not be negative")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: &str) -> Result<StoredParams, String> {
        parse_body(body.as_bytes())
            .and_then(|r| r.validate(|_| Ok("m".to_string())))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_sdk_shaped_requests() {
        let p = validate(r#"{"audio_url":"https://x/a.wav","punctuate":true,"speaker_labels":false,"language_code":"en_us"}"#)
            .unwrap();
        assert!(p.punctuate && p.format_text);
        assert_eq!(p.language_code.as_deref(), Some("en_us"));
    }

    #[test]
    fn refuses_bad_input_clearly() {
        for (body, needle) in [
            ("", "empty"),
            ("{", "Invalid JSON"),
            ("[]", "JSON object"),
            (r#"{"punctuate":true}"#, "audio_url"),
            (r#"{"audio_url":5}"#, "invalid type"),
            (r#"{"audio_url":"u","punctuate":"yes"}"#, "invalid type"),
            (r#"{"audio_url":"u","bogus":1}"#, "Unknown field 'bogus'"),
            (
                r#"{"audio_url":"u","speaker_labels":true}"#,
                "not supported",
            ),
            (r#"{"audio_url":"u","speech_model":"best"}"#, "deprecated"),
            (r#"{"audio_url":"u","audio_start_from":-1}"#, "negative"),
            (
                r#"{"audio_url":"u","audio_start_from":5,"audio_end_at":5}"#,
                "greater",
            ),
            (
                r#"{"audio_url":"u","webhook_auth_header_name":"X"}"#,
                "together",
            ),
            (r#"{"audio_url":"u","webhook_url":"ftp://x"}"#, "http"),
            (r#"{"audio_url":"u","speech_models":[]}"#, "at least one"),
            (r#"{"audio_url":"u","temperature":3}"#, "between"),
            (
                r#"{"audio_url":"u","language_code":"e n"}"#,
                "valid language",
            ),
        ] {
            let err = validate(body).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn webhook_header_value_never_shows_in_debug() {
        let body = r#"{"audio_url":"u","webhook_auth_header_name":"X","webhook_auth_header_value":"hunter2"}"#;
        let parsed = parse_body(body.as_bytes()).unwrap();
        assert_eq!(
            parsed
                .webhook_auth_header_value
                .as_ref()
                .map(|v| v.expose()),
            Some("hunter2")
        );
        assert!(!format!("{parsed:?}").contains("hunter2"));
    }
}
