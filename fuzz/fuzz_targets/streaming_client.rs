//! Fuzzes what a streaming client sends before and during a session: the
//! `/v3/ws` query string (`SessionParams::parse`), the `GET /v3/token` query, and
//! text frames (`Terminate`, `ForceEndpoint`, `KeepAlive`, `UpdateConfiguration`).
//! The first byte picks the parser so one corpus serves all three.
#![no_main]

use hark_server::streaming::params::{
    parse_client_message, ClientMessage, SessionParams, MIN_TURN_SILENCE_MS, MIN_VAD_THRESHOLD,
};
use hark_server::streaming::{query_map, token_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 3 {
        0 => {
            if let Ok(params) = SessionParams::parse(&query_map(Some(&text))) {
                assert!((8_000..=48_000).contains(&params.sample_rate));
                let engine = &params.engine;
                assert!(engine.vad_threshold >= MIN_VAD_THRESHOLD);
                assert!(engine.min_turn_silence_ms >= MIN_TURN_SILENCE_MS);
                assert!(engine.min_turn_silence_ms <= engine.max_turn_silence_ms);
            }
        }
        1 => {
            let _ = token_params(Some(&text));
        }
        _ => {
            if let Ok(ClientMessage::UpdateConfiguration(update)) = parse_client_message(&text) {
                let update = update.0;
                assert!(update.vad_threshold.is_none_or(|v| v >= MIN_VAD_THRESHOLD));
                assert!(update
                    .min_turn_silence_ms
                    .is_none_or(|v| v >= MIN_TURN_SILENCE_MS));
                assert!(update
                    .max_turn_silence_ms
                    .is_none_or(|v| v >= MIN_TURN_SILENCE_MS));
            }
        }
    }
});
