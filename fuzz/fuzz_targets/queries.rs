//! Fuzzes the data plane's query strings: the transcript list (`GET /v2/transcript`),
//! word search (`words=`) over a transcript, and subtitles' `chars_per_caption`, as the
//! handlers parse them, plus the views they then compute.
#![no_main]

use hark_core::speech::Word;
use hark_core::views;
use hark_server::data_plane::{chars_per_caption, list_params, search_terms};
use libfuzzer_sys::fuzz_target;

fn transcript() -> Vec<Word> {
    let text = "The quick brown fox. It jumps over the lazy dog! Does it? Yes, it does; \
                the fox jumps again, and again, over the dog.";
    text.split_whitespace()
        .enumerate()
        .map(|(i, w)| Word {
            text: w.to_string(),
            start: i as u64 * 300,
            end: i as u64 * 300 + 250,
            confidence: 0.9,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = Some(raw.as_ref());

    if let Ok(params) = list_params(raw) {
        assert!((1..=200).contains(&params.query.limit));
        if let Some((start, end)) = params.query.created_between {
            assert!(end > start);
        }
    }

    if let Ok(terms) = search_terms(raw) {
        assert!(!terms.is_empty() && terms.len() <= views::MAX_SEARCH_TERMS);
        let words = transcript();
        let found = views::word_search(&words, &terms);
        assert_eq!(found.matches.len(), terms.len());
    }

    if let Ok(chars) = chars_per_caption(raw) {
        let words = transcript();
        let _ = views::srt(&words, chars);
        let _ = views::vtt(&words, chars);
    }
});
