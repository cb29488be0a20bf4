//! Fuzzes the `POST /v2/transcript` body: JSON parsing, the unsupported-feature rules
//! and every range and consistency check (`params::parse_body`, then `validate`), as
//! the handler runs them.
#![no_main]

use hark_server::params::parse_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_body(data) else {
        return;
    };
    let _ = format!("{request:?}");
    if let Ok(params) = request.validate(|requested| {
        Ok(requested
            .first()
            .cloned()
            .unwrap_or_else(|| "whisper-tiny.en".into()))
    }) {
        if let (Some(start), Some(end)) = (params.audio_start_from, params.audio_end_at) {
            assert!(end > start);
        }
        // What is stored must read back.
        let stored = serde_json::to_string(&params).expect("stored params serialise");
        let back: hark_server::params::StoredParams =
            serde_json::from_str(&stored).expect("stored params read back");
        assert_eq!(back.model, params.model);
    }
});
