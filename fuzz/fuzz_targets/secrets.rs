//! Fuzzes the secret formats (API keys, temporary tokens, sessions, CSRF, invite,
//! reset and setup tokens), typed ids, key scopes and money amounts: every text a
//! client or operator can hand the server before anything is looked up.
#![no_main]

use hark_core::ids::{AccountId, ProjectId, TranscriptId};
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::{money, scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let kind = SecretKind::of(text);
    for k in SecretKind::ALL {
        if keys::is_well_formed(k, text) {
            assert_eq!(kind, Some(k), "a well-formed secret names its own kind");
        }
        let _ = keys::is_well_formed_or_legacy(k, text);
    }
    let masked = keys::mask(text);
    assert!(masked.chars().count() <= 30, "a mask stays short: {masked}");
    let _ = SecretDigest::from_hex(text);

    if let Some(id) = TranscriptId::parse(text) {
        assert_eq!(TranscriptId::parse(&id.to_string()), Some(id));
    }
    let _ = AccountId::parse(text);
    let _ = ProjectId::parse(text);

    if let Ok(scopes) = scope::decode(text) {
        // The stored form is canonical (sorted, no repeats) and reads back to itself.
        let stored = scope::encode(&scopes);
        let back = scope::decode(&stored).expect("an encoded scope list decodes");
        assert_eq!(scope::encode(&back), stored);
        assert!(scopes.iter().all(|s| back.contains(s)));
    }

    if let Ok(micros) = money::parse_amount(text) {
        let formatted = money::format_amount(micros);
        assert_eq!(
            money::parse_amount(&formatted),
            Ok(micros),
            "{text} -> {formatted}"
        );
    }
});
