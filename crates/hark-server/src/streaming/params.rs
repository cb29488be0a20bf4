//! The `/v3/ws` query string and the `UpdateConfiguration` message: parsed and checked
//! the way AssemblyAI documents them (booleans in any case, lists as JSON strings), with
//! features this server does not implement refused rather than ignored.

use hark_core::speech::{StreamingConfig, StreamingUpdate};
use std::collections::HashMap;

/// Audio encodings a client may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    PcmS16le,
    PcmMulaw,
}

impl Encoding {
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::PcmS16le => 2,
            Encoding::PcmMulaw => 1,
        }
    }
}

/// A session's settings from its query string.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionParams {
    pub sample_rate: u32,
    pub encoding: Encoding,
    /// The AssemblyAI model name the client asked for.
    pub speech_model: String,
    pub format_turns: bool,
    pub engine: StreamingConfig,
    pub inactivity_timeout_secs: Option<u64>,
    pub webhook_url: Option<String>,
    pub webhook_auth_header_name: Option<String>,
    pub webhook_auth_header_value: Option<hark_core::keys::Secret>,
}

/// AssemblyAI's streaming model names; each runs on the default installed model unless
/// the alias table maps it elsewhere.
pub const STREAMING_MODELS: &[&str] = &[
    "universal-streaming-english",
    "universal-streaming-multilingual",
    "whisper-rt",
    "u3-rt-pro",
    "u3-rt-pro-beta-1",
    "u3-pro",
    "universal-3-5-pro",
];

/// Query parameters whose feature this server does not implement: refused when switched
/// on, so a client never gets silently different behaviour.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "speaker_labels",
    "filter_profanity",
    "redact_pii",
    "continuous_partials",
];
const UNSUPPORTED_VALUES: &[&str] = &[
    "llm_gateway",
    "domain",
    "prompt",
    "agent_context",
    "voice_focus",
    "noise_suppression_model",
    "redact_pii_policies",
    "language_codes",
];

pub fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{name} must be true or false, got '{value}'")),
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    name: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    let parsed: T = value
        .trim()
        .parse()
        .map_err(|_| format!("{name} must be a number between {min} and {max}, got '{value}'"))?;
    // Written so that NaN (which compares false to everything) is refused too.
    if !(parsed >= min && parsed <= max) {
        return Err(format!(
            "{name} must be between {min} and {max}, got {value}"
        ));
    }
    Ok(parsed)
}

/// Integers may arrive as `1000.0` from clients that keep numbers as floats.
fn parse_ms(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let v: f64 = parse_number(name, value, min as f64, max as f64)?;
    Ok(v.round() as u64)
}

/// The lowest `vad_threshold`: below it nearly any noise counts as speech, so turns
/// never end on silence.
pub const MIN_VAD_THRESHOLD: f32 = 0.05;
/// The shortest silence that may end a turn (`min_turn_silence`, `max_turn_silence`):
/// shorter pauses would split speech into a stream of tiny turns, each one decode.
pub const MIN_TURN_SILENCE_MS: u64 = 100;
/// The longest silence settings accepted.
pub const MAX_TURN_SILENCE_MS: u64 = 60_000;

impl SessionParams {
    pub fn parse(query: &HashMap<String, String>) -> Result<SessionParams, String> {
        let get = |k: &str| query.get(k).map(|v| v.as_str()).filter(|v| !v.is_empty());
        for flag in UNSUPPORTED_FLAGS {
            if let Some(v) = get(flag) {
                if parse_bool(flag, v)? {
                    return Err(format!("{flag} is not supported by this server"));
                }
            }
        }
        for name in UNSUPPORTED_VALUES {
            if let Some(v) = get(name) {
                if v != "[]" && v != "null" {
                    return Err(format!("{name} is not supported by this server"));
                }
            }
        }
        if let Some(v) = get("keyterms_prompt") {
            let terms: Vec<String> = serde_json::from_str(v)
                .map_err(|_| "keyterms_prompt must be a JSON array of strings".to_string())?;
            if !terms.is_empty() {
                return Err("keyterms_prompt is not supported by this server".into());
            }
        }
        let sample_rate = match get("sample_rate") {
            Some(v) => parse_number::<u32>("sample_rate", v, 8_000, 48_000)?,
            None => 16_000,
        };
        let encoding = match get("encoding") {
            None | Some("pcm_s16le") => Encoding::PcmS16le,
            Some("pcm_mulaw") => Encoding::PcmMulaw,
            Some(other) => {
                return Err(format!(
                    "encoding '{other}' is not supported; use pcm_s16le or pcm_mulaw"
                ))
            }
        };
        let speech_model = get("speech_model")
            .unwrap_or("universal-streaming-english")
            .to_string();
        let format_turns = match get("format_turns") {
            Some(v) => parse_bool("format_turns", v)?,
            None => false,
        };
        // u3 models default to shorter silences (reference table).
        let u3 = speech_model.starts_with("u3") || speech_model == "universal-3-5-pro";
        let mut engine = StreamingConfig {
            min_turn_silence_ms: if u3 { 100 } else { 400 },
            max_turn_silence_ms: if u3 { 1000 } else { 1280 },
            vad_threshold: if u3 { 0.3 } else { 0.4 },
            ..StreamingConfig::default()
        };
        let update = StreamingUpdateParams::from_query(query)?;
        engine.apply(&update.0);
        if engine.min_turn_silence_ms > engine.max_turn_silence_ms {
            return Err("min_turn_silence must not exceed max_turn_silence".into());
        }
        let inactivity_timeout_secs = get("inactivity_timeout")
            .map(|v| parse_number::<u64>("inactivity_timeout", v, 5, 3600))
            .transpose()?;
        let webhook_url = get("webhook_url").map(str::to_string);
        if let Some(url) = &webhook_url {
            let parsed =
                url::Url::parse(url).map_err(|_| "webhook_url is not a valid URL".to_string())?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("webhook_url must be an http or https URL".into());
            }
        }
        let webhook_auth_header_name = get("webhook_auth_header_name").map(str::to_string);
        let webhook_auth_header_value =
            get("webhook_auth_header_value").map(|v| hark_core::keys::Secret::new(v.to_string()));
        match (&webhook_auth_header_name, &webhook_auth_header_value) {
            (Some(name), Some(value)) => {
                axum::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| "webhook_auth_header_name is not a valid header name")?;
                axum::http::HeaderValue::from_str(value.expose())
                    .map_err(|_| "webhook_auth_header_value is not a valid header value")?;
            }
            (None, None) => {}
            _ => {
                return Err(
                    "webhook_auth_header_name and webhook_auth_header_value must be given together"
                        .into(),
                )
            }
        }
        if webhook_auth_header_name.is_some() && webhook_url.is_none() {
            return Err("webhook_auth_header_name needs a webhook_url".into());
        }
        Ok(SessionParams {
            sample_rate,
            encoding,
            speech_model,
            format_turns,
            engine,
            inactivity_timeout_secs,
            webhook_url,
            webhook_auth_header_name,
            webhook_auth_header_value,
        })
    }
}

/// A text frame a `/v3/ws` client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Terminate,
    ForceEndpoint,
    KeepAlive,
    UpdateConfiguration(StreamingUpdateParams),
}

/// Why a text frame is not a [`ClientMessage`]; the session closes with a reason
/// naming it.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageError {
    /// Not JSON.
    InvalidJson,
    /// JSON, but not an object with a string `type`.
    NotAMessage,
    /// A `type` this protocol does not have.
    UnknownType(String),
    /// An `UpdateConfiguration` with a setting out of range, and which.
    InvalidUpdate(String),
}

/// Parses one text frame of a `/v3/ws` client.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, MessageError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| MessageError::InvalidJson)?;
    let map = value.as_object().ok_or(MessageError::NotAMessage)?;
    let kind = map
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or(MessageError::NotAMessage)?;
    match kind {
        "Terminate" => Ok(ClientMessage::Terminate),
        "ForceEndpoint" => Ok(ClientMessage::ForceEndpoint),
        "KeepAlive" => Ok(ClientMessage::KeepAlive),
        "UpdateConfiguration" => StreamingUpdateParams::from_json(map)
            .map(ClientMessage::UpdateConfiguration)
            .map_err(MessageError::InvalidUpdate),
        other => Err(MessageError::UnknownType(other.to_string())),
    }
}

/// The turn-detection settings shared by the query string and `UpdateConfiguration`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamingUpdateParams(pub StreamingUpdate);

impl StreamingUpdateParams {
    fn from_query(query: &HashMap<String, String>) -> Result<Self, String> {
        let json: serde_json::Map<String, serde_json::Value> = query
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        Self::from_json(&json)
    }

    /// Reads the settings from JSON (numbers, or strings holding numbers); `null` and
    /// absent keys leave a setting unchanged.
    pub fn from_json(map: &serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let text = |k: &str| -> Result<Option<String>, String> {
            match map.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(format!("{k} must be a number, got {other}")),
            }
        };
        let mut update = StreamingUpdate::default();
        if let Some(v) = text("end_of_turn_confidence_threshold")? {
            update.end_of_turn_confidence_threshold = Some(parse_number(
                "end_of_turn_confidence_threshold",
                &v,
                0.0,
                1.0,
            )?);
        }
        if let Some(v) = text("vad_threshold")? {
            update.vad_threshold = Some(parse_number(
                "vad_threshold",
                &v,
                MIN_VAD_THRESHOLD,
                1.0f32,
            )?);
        }
        // The deprecated name first, so the current one wins when both are sent.
        if let Some(v) = text("min_end_of_turn_silence_when_confident")? {
            update.min_turn_silence_ms = Some(parse_ms(
                "min_end_of_turn_silence_when_confident",
                &v,
                MIN_TURN_SILENCE_MS,
                MAX_TURN_SILENCE_MS,
            )?);
        }
        if let Some(v) = text("min_turn_silence")? {
            update.min_turn_silence_ms = Some(parse_ms(
                "min_turn_silence",
                &v,
                MIN_TURN_SILENCE_MS,
                MAX_TURN_SILENCE_MS,
            )?);
        }
        if let Some(v) = text("max_turn_silence")? {
            update.max_turn_silence_ms = Some(parse_ms(
                "max_turn_silence",
                &v,
                MIN_TURN_SILENCE_MS,
                MAX_TURN_SILENCE_MS,
            )?);
        }
        Ok(Self(update))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_python_style_booleans() {
        let p = SessionParams::parse(&q(&[])).unwrap();
        assert_eq!(p.sample_rate, 16_000);
        assert_eq!(p.encoding, Encoding::PcmS16le);
        assert!(!p.format_turns);
        assert_eq!(p.engine.min_turn_silence_ms, 400);
        let p = SessionParams::parse(&q(&[
            ("format_turns", "True"),
            ("sample_rate", "8000"),
            ("encoding", "pcm_mulaw"),
            ("min_turn_silence", "160"),
            ("max_turn_silence", "2000.0"),
            ("end_of_turn_confidence_threshold", "0.7"),
            ("keyterms_prompt", "[]"),
        ]))
        .unwrap();
        assert!(p.format_turns);
        assert_eq!(p.encoding, Encoding::PcmMulaw);
        assert_eq!(p.engine.min_turn_silence_ms, 160);
        assert_eq!(p.engine.max_turn_silence_ms, 2000);
        assert!((p.engine.end_of_turn_confidence_threshold - 0.7).abs() < 1e-9);
    }

    #[test]
    fn refuses_bad_values_and_unsupported_features() {
        for (pairs, needle) in [
            (vec![("sample_rate", "abc")], "sample_rate"),
            (vec![("sample_rate", "100")], "sample_rate"),
            (vec![("encoding", "opus")], "encoding"),
            (vec![("format_turns", "yes")], "format_turns"),
            (vec![("vad_threshold", "2")], "vad_threshold"),
            (vec![("inactivity_timeout", "1")], "inactivity_timeout"),
            (vec![("speaker_labels", "true")], "speaker_labels"),
            (vec![("keyterms_prompt", "not json")], "keyterms_prompt"),
            (vec![("keyterms_prompt", r#"["Hark"]"#)], "keyterms_prompt"),
            (vec![("webhook_url", "ftp://x")], "webhook_url"),
            (
                vec![
                    ("webhook_url", "https://x"),
                    ("webhook_auth_header_name", "X"),
                ],
                "together",
            ),
            (
                vec![("min_turn_silence", "3000"), ("max_turn_silence", "1000")],
                "min_turn_silence",
            ),
        ] {
            let err = SessionParams::parse(&q(&pairs)).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
        assert!(SessionParams::parse(&q(&[("speaker_labels", "False")])).is_ok());
    }

    /// Turn-detection settings have lower bounds, and NaN or infinities are refused
    /// (NaN compares false to both bounds, so a plain range check lets it through).
    #[test]
    fn turn_settings_have_lower_bounds_and_refuse_nan() {
        for (name, value) in [
            ("vad_threshold", "NaN"),
            ("vad_threshold", "nan"),
            ("vad_threshold", "0"),
            ("vad_threshold", "0.01"),
            ("end_of_turn_confidence_threshold", "NaN"),
            ("min_turn_silence", "NaN"),
            ("min_turn_silence", "0"),
            ("min_turn_silence", "50"),
            ("max_turn_silence", "0"),
            ("max_turn_silence", "inf"),
            ("min_end_of_turn_silence_when_confident", "10"),
        ] {
            let err = SessionParams::parse(&q(&[(name, value)]))
                .expect_err(&format!("{name}={value} refused"));
            assert!(err.contains(name), "{name}={value}: {err}");
            let mut map = serde_json::Map::new();
            map.insert(name.into(), serde_json::Value::String(value.into()));
            assert!(
                StreamingUpdateParams::from_json(&map).is_err(),
                "UpdateConfiguration {name}={value}"
            );
        }
        let p = SessionParams::parse(&q(&[
            ("vad_threshold", "0.05"),
            ("min_turn_silence", "100"),
            ("max_turn_silence", "100"),
        ]))
        .unwrap();
        assert_eq!(p.engine.min_turn_silence_ms, 100);
    }
}
