//! Generated-input tests of the parsers in this crate that read untrusted text (secret
//! formats, ids, scopes, money amounts, word-search terms): no input panics, and what
//! parses keeps its invariants. The coverage-guided half of this lives in `fuzz/`.

use crate::ids::TranscriptId;
use crate::keys::{self, SecretDigest, SecretKind};
use crate::speech::Word;
use crate::{money, scope, views};
use proptest::prelude::*;

/// Text built mostly from the pieces these parsers look for, so generated inputs get
/// past the first check as often as they fail it.
fn secretish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("hark_".to_string()),
        Just("key_".to_string()),
        Just("tmp_".to_string()),
        Just("setup_".to_string()),
        Just("csrf_".to_string()),
        "[0-9A-Za-z]{1,46}",
        "[-_ .+0-9a-f]{1,8}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn secret_formats_never_panic(text in secretish()) {
        let kind = SecretKind::of(&text);
        for k in SecretKind::ALL {
            if keys::is_well_formed(k, &text) {
                prop_assert_eq!(kind, Some(k));
            }
            let _ = keys::is_well_formed_or_legacy(k, &text);
        }
        prop_assert!(keys::mask(&text).chars().count() <= 30);
        let _ = SecretDigest::from_hex(&text);
    }

    #[test]
    fn a_changed_character_unmakes_a_key(pos in 0usize..55, replacement in "[0-9A-Za-z_]") {
        let key = keys::generate(SecretKind::ApiKey).into_inner();
        let mut changed: Vec<char> = key.chars().collect();
        let at = pos % changed.len();
        let new = replacement.chars().next().unwrap_or('x');
        prop_assume!(changed[at] != new);
        changed[at] = new;
        let changed: String = changed.into_iter().collect();
        prop_assert!(!keys::is_well_formed(SecretKind::ApiKey, &changed));
    }

    #[test]
    fn ids_parse_or_refuse(text in "[-0-9a-fA-F{}urn:uid]{0,45}|\\PC{0,40}") {
        if let Some(id) = TranscriptId::parse(&text) {
            prop_assert_eq!(TranscriptId::parse(&id.to_string()), Some(id));
        }
    }

    #[test]
    fn scopes_round_trip(text in "((transcripts:(read|write)|streaming|[a-z:]{1,12})[ \t]{1,2}){0,4}|\\PC{0,20}") {
        if let Ok(scopes) = scope::decode(&text) {
            // The stored form is canonical (sorted, no repeats) and reads back to itself.
            let stored = scope::encode(&scopes);
            let back = scope::decode(&stored).map_err(TestCaseError::fail)?;
            prop_assert_eq!(scope::encode(&back), stored);
            prop_assert!(scopes.iter().all(|s| back.contains(s)));
        }
    }

    #[test]
    fn amounts_round_trip(text in "[ +-]{0,2}[0-9]{0,22}(\\.[0-9]{0,8})?[ ]?|\\PC{0,12}") {
        if let Ok(micros) = money::parse_amount(&text) {
            let formatted = money::format_amount(micros);
            prop_assert_eq!(money::parse_amount(&formatted), Ok(micros));
        }
    }

    #[test]
    fn search_terms_are_bounded_and_searchable(
        raw in prop::collection::vec("[a-c ]{0,8}|\\PC{0,6}", 0..130).prop_map(|v| v.join(",")),
        words in prop::collection::vec(("[a-cA-C.,!?]{0,4}", 0u64..10_000, 0u64..500), 0..60),
    ) {
        let Ok(terms) = views::parse_search_terms(&raw) else {
            return Ok(());
        };
        prop_assert!(!terms.is_empty() && terms.len() <= views::MAX_SEARCH_TERMS);
        for term in &terms {
            prop_assert!(term.split(' ').count() <= views::MAX_WORDS_PER_SEARCH_TERM);
        }
        let words: Vec<Word> = words
            .into_iter()
            .map(|(text, start, len)| Word { text, start, end: start + len, confidence: 0.5 })
            .collect();
        let found = views::word_search(&words, &terms);
        prop_assert_eq!(found.matches.len(), terms.len());
        prop_assert_eq!(found.total_count, found.matches.iter().map(|m| m.count).sum::<usize>());
    }
}
