//! Generated-input tests of the server's parsers of untrusted input, through the same
//! entry points its handlers call: the `POST /v2/transcript` body, the list,
//! word-search and subtitle query strings, the `/v3/ws` and `/v3/token` query strings
//! and `/v3/ws` client messages. No input panics; what parses keeps its invariants. The
//! coverage-guided half of this lives in `fuzz/`.

use crate::data_plane::{chars_per_caption, list_params, search_terms};
use crate::params::parse_body;
use crate::streaming::params::{
    parse_client_message, ClientMessage, SessionParams, MIN_TURN_SILENCE_MS, MIN_VAD_THRESHOLD,
};
use crate::streaming::{query_map, token_params};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(-1.0)].prop_map(Value::from),
        "\\PC{0,12}|https?://[a-z.]{1,10}/[a-z]{0,5}|[-_a-zA-Z0-9]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are mostly names the parser knows.
fn json_object(names: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
    ];
    prop::collection::btree_map(name, json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// A query string whose names are mostly ones the parser knows.
fn query_string(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ];
    let value = "[-0-9.eE+]{0,8}|true|False|0|1|[a-z_]{0,10}|%[0-9A-F]{2}|\\PC{0,10}";
    prop::collection::vec((name, value), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

const TRANSCRIPT_FIELDS: &[&str] = &[
    "audio_url",
    "speech_models",
    "speech_model",
    "language_code",
    "language_detection",
    "language_confidence_threshold",
    "punctuate",
    "format_text",
    "audio_start_from",
    "audio_end_at",
    "webhook_url",
    "webhook_auth_header_name",
    "webhook_auth_header_value",
    "custom_spelling",
    "temperature",
    "speaker_labels",
    "redact_pii",
];

const LIST_AND_VIEW_PARAMS: &[&str] = &[
    "limit",
    "status",
    "created_on",
    "before_id",
    "after_id",
    "throttled_only",
    "words",
    "chars_per_caption",
];

const WS_PARAMS: &[&str] = &[
    "sample_rate",
    "encoding",
    "speech_model",
    "format_turns",
    "vad_threshold",
    "min_turn_silence",
    "max_turn_silence",
    "min_end_of_turn_silence_when_confident",
    "end_of_turn_confidence_threshold",
    "inactivity_timeout",
    "keyterms_prompt",
    "webhook_url",
    "webhook_auth_header_name",
    "webhook_auth_header_value",
    "speaker_labels",
    "prompt",
    "expires_in_seconds",
    "max_session_duration_seconds",
];

const MESSAGE_FIELDS: &[&str] = &[
    "type",
    "vad_threshold",
    "min_turn_silence",
    "max_turn_silence",
    "min_end_of_turn_silence_when_confident",
    "end_of_turn_confidence_threshold",
];

fn check_transcript_body(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(request) = parse_body(body) else {
        return Ok(());
    };
    if let Ok(params) = request.validate(|_| Ok("whisper-tiny.en".to_string())) {
        if let (Some(start), Some(end)) = (params.audio_start_from, params.audio_end_at) {
            prop_assert!(end > start);
        }
        prop_assert!(params.temperature.is_none_or(|t| t == 0.0));
    }
    Ok(())
}

proptest! {
    #[test]
    fn transcript_bodies_never_panic(object in json_object(TRANSCRIPT_FIELDS)) {
        check_transcript_body(Value::Object(object).to_string().as_bytes())?;
    }

    #[test]
    fn transcript_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
        check_transcript_body(&body)?;
    }

    #[test]
    fn data_plane_queries_never_panic(raw in query_string(LIST_AND_VIEW_PARAMS)) {
        if let Ok(params) = list_params(Some(&raw)) {
            prop_assert!((1..=200).contains(&params.query.limit));
            if let Some((start, end)) = params.query.created_between {
                prop_assert!(end > start);
            }
        }
        if let Ok(terms) = search_terms(Some(&raw)) {
            prop_assert!(!terms.is_empty());
        }
        if let Ok(Some(chars)) = chars_per_caption(Some(&raw)) {
            prop_assert!((1..=10_000).contains(&chars));
        }
    }

    #[test]
    fn streaming_queries_never_panic(raw in query_string(WS_PARAMS)) {
        if let Ok(params) = SessionParams::parse(&query_map(Some(&raw))) {
            prop_assert!((8_000..=48_000).contains(&params.sample_rate));
            prop_assert!(params.engine.vad_threshold >= MIN_VAD_THRESHOLD);
            prop_assert!(params.engine.min_turn_silence_ms >= MIN_TURN_SILENCE_MS);
            prop_assert!(params.engine.min_turn_silence_ms <= params.engine.max_turn_silence_ms);
        }
        if let Ok(token) = token_params(Some(&raw)) {
            prop_assert!(token.expires_in >= 1 && token.session_cap >= 60);
        }
    }

    #[test]
    fn client_messages_never_panic(
        mut object in json_object(MESSAGE_FIELDS),
        kind in prop::sample::select(&["UpdateConfiguration", "Terminate", "ForceEndpoint", "KeepAlive", "Other"][..]),
    ) {
        object.entry("type").or_insert_with(|| Value::from(kind));
        if let Ok(ClientMessage::UpdateConfiguration(update)) =
            parse_client_message(&Value::Object(object).to_string())
        {
            let update = update.0;
            prop_assert!(update.vad_threshold.is_none_or(|v| v >= MIN_VAD_THRESHOLD));
            prop_assert!(update.min_turn_silence_ms.is_none_or(|v| v >= MIN_TURN_SILENCE_MS));
            prop_assert!(update.max_turn_silence_ms.is_none_or(|v| v >= MIN_TURN_SILENCE_MS));
        }
    }

    #[test]
    fn client_frames_never_panic(text in "\\PC{0,40}") {
        let _ = parse_client_message(&text);
    }
}
