//! Derived transcript views computed from recognised words: sentences, paragraphs, SRT/WebVTT captions, word search and plain text. Pure functions, no I/O.

use crate::speech::Word;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// Gap (ms) that ends a sentence when the transcript has no sentence punctuation
/// (`punctuate=false` / `format_text=false`). One second of silence is well above
/// the 100–400 ms pauses between words and between clauses in fluent speech, but
/// below the pause people leave when they finish a thought, so it is the cheapest
/// reliable stand-in for a full stop.
pub const SENTENCE_PAUSE_MS: u64 = 1_000;

/// Longest unpunctuated "sentence" in words. Continuous speech may have no 1 s
/// pause for minutes; without a cap one sentence could swallow the transcript.
/// 40 words is about 15 s of speech, a long but still readable sentence.
pub const UNPUNCTUATED_SENTENCE_MAX_WORDS: usize = 40;

/// Gap (ms) between two sentences that starts a new paragraph. Twice the
/// sentence pause: a silence of two seconds or more usually marks a change of
/// topic or of speaker, which is what a paragraph break shows a reader.
pub const PARAGRAPH_PAUSE_MS: u64 = 2_000;

/// A paragraph is closed (at a sentence boundary) before it would grow past this
/// many words. About 40 s of speech, or a long printed paragraph; AssemblyAI's own
/// example paragraph is some 70 words. Beyond it text stops being skimmable.
pub const PARAGRAPH_MAX_WORDS: usize = 100;

/// Caption length used when the client gives no `chars_per_caption`. Neither the
/// OpenAPI spec nor the docs document a default. The spec's SRT example has
/// captions of 68, 69 and 42 characters where adding the next word would give 72,
/// which fits a limit of about 70 (and rules out 32), so we use 70.
pub const DEFAULT_CHARS_PER_CAPTION: usize = 70;

/// Gap (ms) inside a sentence that still starts a new caption, so a caption is
/// never left on screen across a noticeable silence. Same reasoning as
/// [`SENTENCE_PAUSE_MS`].
pub const CAPTION_PAUSE_MS: u64 = 1_000;

/// Most terms accepted by one word-search request.
pub const MAX_SEARCH_TERMS: usize = 100;

/// Most words in one word-search phrase (AssemblyAI: "phrases containing up to
/// five words or numbers").
pub const MAX_WORDS_PER_SEARCH_TERM: usize = 5;

/// A word as the API shows it inside sentences and paragraphs (`TranscriptWord`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewWord {
    pub text: String,
    pub start: u64,
    pub end: u64,
    pub confidence: f64,
    /// Always `null`: Hark does no diarization.
    pub speaker: Option<String>,
}

impl From<&Word> for ViewWord {
    fn from(w: &Word) -> Self {
        ViewWord {
            text: w.text.clone(),
            start: w.start,
            end: w.end,
            confidence: w.confidence,
            speaker: None,
        }
    }
}

/// One sentence or paragraph (`TranscriptSentence` / `TranscriptParagraph`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub text: String,
    /// Start of the first word, ms.
    pub start: u64,
    /// End of the last word, ms.
    pub end: u64,
    /// Mean of the word confidences.
    pub confidence: f64,
    pub words: Vec<ViewWord>,
    /// Always `null` (serialised, not omitted).
    pub speaker: Option<String>,
}

/// The body of `GET /v2/transcript/{id}/word-search` minus the `id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WordSearch {
    pub total_count: usize,
    pub matches: Vec<WordMatch>,
}

/// One searched term and where it occurs (`WordSearchMatch`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WordMatch {
    /// The term as searched (whitespace collapsed).
    pub text: String,
    pub count: usize,
    /// `[start, end]` in ms; a phrase spans its first word's start to its last word's end.
    pub timestamps: Vec<[u64; 2]>,
    /// Index in the transcript's `words` of each match (a phrase's first word).
    pub indexes: Vec<usize>,
}

/// The transcript text: the words' texts joined with single spaces.
pub fn plain_text(words: &[Word]) -> String {
    join_words(words)
}

/// The transcript split into sentences.
///
/// A punctuated transcript is split after words ending in `.`, `?` or `!` (also
/// behind closing quotes or brackets), except after title abbreviations ("Mr.",
/// "Dr.") and dotted initialisms followed by a lower-case word ("e.g. this").
/// A transcript without any sentence punctuation is split at pauses of
/// [`SENTENCE_PAUSE_MS`] or more instead.
pub fn sentences(words: &[Word]) -> Vec<Segment> {
    sentence_ranges(words)
        .into_iter()
        .map(|r| segment(&words[r]))
        .collect()
}

/// The transcript's sentences grouped into paragraphs, breaking at pauses of
/// [`PARAGRAPH_PAUSE_MS`] or more and before a paragraph would exceed
/// [`PARAGRAPH_MAX_WORDS`] words.
pub fn paragraphs(words: &[Word]) -> Vec<Segment> {
    paragraph_ranges(words)
        .into_iter()
        .map(|r| segment(&words[r]))
        .collect()
}

/// The transcript as SubRip captions. Empty words give an empty document.
pub fn srt(words: &[Word], chars_per_caption: Option<usize>) -> String {
    let mut out = String::new();
    for (n, r) in caption_ranges(words, chars_per_caption)
        .into_iter()
        .enumerate()
    {
        let cue = &words[r];
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            n + 1,
            timestamp(first_start(cue), ','),
            timestamp(last_end(cue), ','),
            join_words(cue)
        ));
    }
    out
}

/// The transcript as WebVTT captions. Empty words give just the header.
pub fn vtt(words: &[Word], chars_per_caption: Option<usize>) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for r in caption_ranges(words, chars_per_caption) {
        let cue = &words[r];
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(first_start(cue), '.'),
            timestamp(last_end(cue), '.'),
            join_words(cue)
        ));
    }
    out
}

/// Finds each term (a word or a phrase of up to five words) in the transcript.
///
/// Matching is case-insensitive and ignores punctuation at the edges of words
/// ("Smoke," matches "smoke"). Every term gets an entry, in the order given, with
/// `count: 0` when it does not occur. Overlapping phrase matches all count.
pub fn word_search(words: &[Word], terms: &[String]) -> WordSearch {
    let normalised: Vec<String> = words.iter().map(|w| normalise(&w.text)).collect();
    // Where each normalised word occurs, built once: a term then costs only the
    // occurrences of its first word, so the whole search stays linear in the
    // transcript's length whatever the terms are.
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, w) in normalised.iter().enumerate() {
        positions.entry(w.as_str()).or_default().push(i);
    }
    let mut matches = Vec::with_capacity(terms.len());
    let mut total_count = 0;
    for term in terms {
        let needle: Vec<String> = term
            .split_whitespace()
            .map(normalise)
            .filter(|t| !t.is_empty())
            .collect();
        let mut found = WordMatch {
            text: term.split_whitespace().collect::<Vec<_>>().join(" "),
            count: 0,
            timestamps: Vec::new(),
            indexes: Vec::new(),
        };
        let starts = needle
            .first()
            .and_then(|first| positions.get(first.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &i in starts {
            let end = i + needle.len();
            if end <= normalised.len() && normalised[i..end] == needle[..] {
                found.timestamps.push([words[i].start, words[end - 1].end]);
                found.indexes.push(i);
            }
        }
        found.count = found.indexes.len();
        total_count += found.count;
        matches.push(found);
    }
    WordSearch {
        total_count,
        matches,
    }
}

/// Parses the `words` query parameter of word search (`words=foo,bar baz`).
///
/// Terms are comma-separated and trimmed; empty entries are dropped, runs of
/// whitespace inside a phrase collapse to one space, and repeats (ignoring case)
/// are kept once. Errors, as a client-facing message, when no term remains, when
/// there are more than [`MAX_SEARCH_TERMS`] terms, or when a phrase has more than
/// [`MAX_WORDS_PER_SEARCH_TERM`] words.
pub fn parse_search_terms(raw: &str) -> Result<Vec<String>, String> {
    // Repeats are found with a set and parsing stops at the first term past the limit,
    // so the cost is one pass over the text whatever it holds (it was quadratic in the
    // number of entries, and the limit was checked only after all were parsed).
    let mut terms: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for entry in raw.split(',') {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() > MAX_WORDS_PER_SEARCH_TERM {
            return Err(format!(
                "Search term \"{}\" has {} words; phrases may have at most {} words.",
                parts.join(" "),
                parts.len(),
                MAX_WORDS_PER_SEARCH_TERM
            ));
        }
        let term = parts.join(" ");
        if seen.insert(term.to_lowercase()) {
            if terms.len() == MAX_SEARCH_TERMS {
                return Err(format!(
                    "Too many search terms; at most {MAX_SEARCH_TERMS} are allowed."
                ));
            }
            terms.push(term);
        }
    }
    if terms.is_empty() {
        return Err(
            "The words parameter must list at least one word or phrase, separated by commas."
                .to_string(),
        );
    }
    Ok(terms)
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

/// Characters that may follow the terminal punctuation of a sentence.
const CLOSERS: &[char] = &[
    '"', '\'', ')', ']', '}', '\u{201D}', '\u{2019}', '\u{00BB}', '\u{300D}', '\u{300F}',
];

/// Characters that end a sentence.
const TERMINALS: &[char] = &[
    '.', '?', '!', '\u{2026}', '\u{3002}', '\u{FF1F}', '\u{FF01}',
];

/// Lower-cased abbreviations (without their final dot) that are practically
/// never the last word of a sentence because a name or noun follows them.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "vs", "rev", "hon", "gen",
    "col", "capt", "lt", "sgt", "gov", "sen", "rep", "pres", "fig", "approx",
];

fn join_words(words: &[Word]) -> String {
    let mut out = String::new();
    for w in words {
        let t = w.text.trim();
        if t.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

fn segment(words: &[Word]) -> Segment {
    let confidence = if words.is_empty() {
        0.0
    } else {
        words.iter().map(|w| w.confidence).sum::<f64>() / words.len() as f64
    };
    Segment {
        text: join_words(words),
        start: first_start(words),
        end: last_end(words),
        confidence,
        words: words.iter().map(ViewWord::from).collect(),
        speaker: None,
    }
}

fn first_start(words: &[Word]) -> u64 {
    words.first().map_or(0, |w| w.start)
}

fn last_end(words: &[Word]) -> u64 {
    words.last().map_or(0, |w| w.end)
}

/// Silence between two consecutive words, ms (0 if they overlap).
fn gap(prev: &Word, next: &Word) -> u64 {
    next.start.saturating_sub(prev.end)
}

/// The word with trailing closing quotes/brackets removed.
fn strip_closers(text: &str) -> &str {
    text.trim().trim_end_matches(CLOSERS)
}

fn has_terminal(text: &str) -> bool {
    strip_closers(text)
        .chars()
        .last()
        .is_some_and(|c| TERMINALS.contains(&c))
}

/// Whether `word` ends a sentence, given the word after it (if any).
fn ends_sentence(word: &str, next: Option<&str>) -> bool {
    let core = strip_closers(word);
    let Some(last) = core.chars().last() else {
        return false;
    };
    if !TERMINALS.contains(&last) {
        return false;
    }
    if last != '.' {
        return true;
    }
    let next_first = next.and_then(|n| n.trim().chars().find(|c| c.is_alphanumeric()));
    let stem = core
        .trim_end_matches('.')
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if ABBREVIATIONS.contains(&stem.as_str()) {
        return false;
    }
    // Dotted initialisms ("e.g.", "i.e.", "a.m.", "U.S.") end a sentence only when
    // the next word does not carry on in lower case.
    let initialism = stem.contains('.') && stem.chars().all(|c| c.is_alphabetic() || c == '.');
    if initialism && next_first.is_some_and(|c| c.is_lowercase()) {
        return false;
    }
    // A number split at its decimal point ("3." "5").
    if stem.ends_with(|c: char| c.is_ascii_digit())
        && next_first.is_some_and(|c| c.is_ascii_digit())
    {
        return false;
    }
    true
}

fn sentence_ranges(words: &[Word]) -> Vec<Range<usize>> {
    let punctuated = words.iter().any(|w| has_terminal(&w.text));
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..words.len() {
        let next = words.get(i + 1);
        let split = match next {
            None => false,
            Some(n) if punctuated => ends_sentence(&words[i].text, Some(&n.text)),
            Some(n) => {
                gap(&words[i], n) >= SENTENCE_PAUSE_MS
                    || i + 1 - start >= UNPUNCTUATED_SENTENCE_MAX_WORDS
            }
        };
        if split {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < words.len() {
        out.push(start..words.len());
    }
    out
}

fn paragraph_ranges(words: &[Word]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for s in sentence_ranges(words) {
        current = Some(match current {
            None => s,
            Some(p) => {
                let pause = gap(&words[p.end - 1], &words[s.start]) >= PARAGRAPH_PAUSE_MS;
                let too_long = p.len() + s.len() > PARAGRAPH_MAX_WORDS;
                if pause || too_long {
                    out.push(p);
                    s
                } else {
                    p.start..s.end
                }
            }
        });
    }
    out.extend(current);
    out
}

fn caption_ranges(words: &[Word], chars_per_caption: Option<usize>) -> Vec<Range<usize>> {
    let limit = chars_per_caption.unwrap_or(DEFAULT_CHARS_PER_CAPTION);
    let mut out = Vec::new();
    for s in sentence_ranges(words) {
        let mut start = s.start;
        let mut len = 0usize;
        for i in s.clone() {
            let width = words[i].text.trim().chars().count();
            if i > start {
                let pause = gap(&words[i - 1], &words[i]) >= CAPTION_PAUSE_MS;
                let added = if len == 0 || width == 0 {
                    width
                } else {
                    width + 1
                };
                if pause || len + added > limit {
                    out.push(start..i);
                    start = i;
                    len = width;
                } else {
                    len += added;
                }
            } else {
                len = width;
            }
        }
        out.push(start..s.end);
    }
    out
}

/// `HH:MM:SS<sep>mmm`, hours not wrapped.
fn timestamp(ms: u64, sep: char) -> String {
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s = ms / 1_000 % 60;
    format!("{h:02}:{m:02}:{s:02}{sep}{:03}", ms % 1_000)
}

/// Lower-cased with punctuation trimmed from both ends.
fn normalise(text: &str) -> String {
    text.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, start: u64, end: u64) -> Word {
        Word {
            text: text.to_string(),
            start,
            end,
            confidence: 0.9,
        }
    }

    /// Words from a text, 300 ms each with 100 ms gaps, starting at `from`.
    fn words_at(text: &str, from: u64) -> Vec<Word> {
        text.split_whitespace()
            .enumerate()
            .map(|(i, t)| {
                let s = from + i as u64 * 400;
                w(t, s, s + 300)
            })
            .collect()
    }

    fn words(text: &str) -> Vec<Word> {
        words_at(text, 0)
    }

    fn texts(segs: &[Segment]) -> Vec<String> {
        segs.iter().map(|s| s.text.clone()).collect()
    }

    fn terms(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_text_joins_with_single_spaces() {
        let ws = vec![
            w(" Hello", 0, 1),
            w("world. ", 2, 3),
            w("", 4, 5),
            w("Bye", 6, 7),
        ];
        assert_eq!(plain_text(&ws), "Hello world. Bye");
        assert_eq!(plain_text(&[]), "");
    }

    #[test]
    fn sentences_split_on_terminal_punctuation() {
        let ws = words("Hello there. How are you? I am fine! Thanks");
        assert_eq!(
            texts(&sentences(&ws)),
            ["Hello there.", "How are you?", "I am fine!", "Thanks"]
        );
    }

    #[test]
    fn sentences_see_through_closing_quotes_and_brackets() {
        let ws = words("He said \"stop.\" Then he left (quietly.) The end.");
        assert_eq!(
            texts(&sentences(&ws)),
            ["He said \"stop.\"", "Then he left (quietly.)", "The end."]
        );
    }

    #[test]
    fn sentences_keep_abbreviations_together() {
        let ws = words("Mr. Smith met Dr. Jones. They like fruit, e.g. apples and pears. Done.");
        assert_eq!(
            texts(&sentences(&ws)),
            [
                "Mr. Smith met Dr. Jones.",
                "They like fruit, e.g. apples and pears.",
                "Done."
            ]
        );
    }

    #[test]
    fn sentences_end_at_initialism_before_capital() {
        let ws = words("Smoke drifted over the U.S. Skylines are gray.");
        assert_eq!(
            texts(&sentences(&ws)),
            ["Smoke drifted over the U.S.", "Skylines are gray."]
        );
    }

    #[test]
    fn sentences_do_not_split_decimals() {
        let ws = words("It rose 3.5 percent. Then it fell 2. 5 percent.");
        assert_eq!(
            texts(&sentences(&ws)),
            ["It rose 3.5 percent.", "Then it fell 2. 5 percent."]
        );
    }

    #[test]
    fn unpunctuated_sentences_split_on_long_pauses() {
        let mut ws = words("hello there how are you");
        ws.extend(words_at("i am fine", 3_000)); // 1 100 ms after "you" ends
        ws.extend(words_at("thanks", 3_000 + 800 + 300 + 999)); // 999 ms gap: no split
        assert_eq!(
            texts(&sentences(&ws)),
            ["hello there how are you", "i am fine thanks"]
        );
    }

    #[test]
    fn unpunctuated_sentences_are_capped() {
        let text = vec!["word"; UNPUNCTUATED_SENTENCE_MAX_WORDS * 2 + 5].join(" ");
        let s = sentences(&words(&text));
        let lens: Vec<usize> = s.iter().map(|s| s.words.len()).collect();
        assert_eq!(
            lens,
            [
                UNPUNCTUATED_SENTENCE_MAX_WORDS,
                UNPUNCTUATED_SENTENCE_MAX_WORDS,
                5
            ]
        );
    }

    #[test]
    fn segment_fields_and_serialisation() {
        let ws = vec![
            Word {
                text: "Hi.".into(),
                start: 10,
                end: 200,
                confidence: 0.5,
            },
            Word {
                text: "Bye".into(),
                start: 250,
                end: 600,
                confidence: 1.0,
            },
            Word {
                text: "now.".into(),
                start: 650,
                end: 900,
                confidence: 0.5,
            },
        ];
        let s = sentences(&ws);
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].start, s[1].end), (250, 900));
        assert!((s[1].confidence - 0.75).abs() < 1e-12);
        let json = serde_json::to_value(&s[0]).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "text": "Hi.", "start": 10, "end": 200, "confidence": 0.5, "speaker": null,
                "words": [{"text": "Hi.", "start": 10, "end": 200, "confidence": 0.5, "speaker": null}]
            })
        );
    }

    #[test]
    fn empty_input_gives_empty_views() {
        assert!(sentences(&[]).is_empty());
        assert!(paragraphs(&[]).is_empty());
        assert_eq!(srt(&[], None), "");
        assert_eq!(vtt(&[], Some(10)), "WEBVTT\n\n");
        let ws = word_search(&[], &terms(&["a"]));
        assert_eq!(ws.total_count, 0);
        assert_eq!(ws.matches[0].count, 0);
    }

    #[test]
    fn paragraphs_break_on_long_pause() {
        let mut ws = words("One two. Three four.");
        ws.extend(words_at("Five six. Seven.", 1_500 + 2_000)); // exactly 2 s after "four." ends
        ws.extend(words_at("Eight.", 4_600 + 1_999)); // 1 999 ms after "Seven.": same paragraph
        assert_eq!(
            texts(&paragraphs(&ws)),
            ["One two. Three four.", "Five six. Seven. Eight."]
        );
    }

    #[test]
    fn paragraphs_break_at_sentence_boundary_before_word_limit() {
        // Sentences of 30 words: three fit in 100, the fourth starts a new paragraph.
        let sentence = format!("{} end.", vec!["word"; 29].join(" "));
        let text = [sentence.as_str(); 7].join(" ");
        let p = paragraphs(&words(&text));
        let lens: Vec<usize> = p.iter().map(|p| p.words.len()).collect();
        assert_eq!(lens, [90, 90, 30]);
        assert!(p.iter().all(|p| p.text.ends_with("end.")));
        let total: usize = lens.iter().sum();
        assert_eq!(total, 210);
    }

    #[test]
    fn paragraph_longer_than_limit_is_one_sentence() {
        let text = format!("{} end.", vec!["word"; 150].join(" "));
        let p = paragraphs(&words(&text));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].words.len(), 151);
    }

    fn sample() -> Vec<Word> {
        vec![
            w("Hello", 240, 600),
            w("world.", 650, 1_000),
            w("This", 1_100, 1_300),
            w("is", 1_350, 1_500),
            w("Hark.", 1_550, 2_100),
        ]
    }

    #[test]
    fn srt_exact_output() {
        assert_eq!(
            srt(&sample(), None),
            "1\n00:00:00,240 --> 00:00:01,000\nHello world.\n\n\
             2\n00:00:01,100 --> 00:00:02,100\nThis is Hark.\n\n"
        );
    }

    #[test]
    fn vtt_exact_output() {
        assert_eq!(
            vtt(&sample(), None),
            "WEBVTT\n\n\
             00:00:00.240 --> 00:00:01.000\nHello world.\n\n\
             00:00:01.100 --> 00:00:02.100\nThis is Hark.\n\n"
        );
    }

    #[test]
    fn timestamps_carry_hours_and_minutes() {
        assert_eq!(timestamp(3_723_045, ','), "01:02:03,045");
        assert_eq!(timestamp(0, '.'), "00:00:00.000");
        assert_eq!(timestamp(100 * 3_600_000, '.'), "100:00:00.000");
    }

    #[test]
    fn captions_respect_chars_per_caption() {
        let ws = words("the quick brown fox jumps over the lazy dog again and again");
        for limit in [10usize, 15, 20, 32] {
            let out = srt(&ws, Some(limit));
            let captions: Vec<&str> = out
                .split("\n\n")
                .filter(|b| !b.is_empty())
                .filter_map(|b| b.lines().nth(2))
                .collect();
            assert!(
                captions.iter().all(|c| c.chars().count() <= limit),
                "{captions:?}"
            );
            assert_eq!(captions.join(" "), plain_text(&ws));
        }
        let out = vtt(&ws, Some(15));
        assert!(out.contains("\nthe quick brown\n"));
        assert!(out.contains("\nfox jumps over\n"));
    }

    #[test]
    fn over_long_word_is_its_own_caption() {
        let ws = words("a supercalifragilistic b c");
        let out = srt(&ws, Some(5));
        let captions: Vec<&str> = out.split("\n\n").filter_map(|b| b.lines().nth(2)).collect();
        assert_eq!(captions, ["a", "supercalifragilistic", "b c"]);
    }

    #[test]
    fn captions_break_at_sentence_ends_and_pauses() {
        let mut ws = words("Short one. Another");
        ws.extend(words_at("after pause", 800 + 300 + 1_000));
        let out = vtt(&ws, Some(100));
        assert_eq!(
            out,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:00.700\nShort one.\n\n\
             00:00:00.800 --> 00:00:01.100\nAnother\n\n\
             00:00:02.100 --> 00:00:02.800\nafter pause\n\n"
        );
    }

    #[test]
    fn default_caption_length_reproduces_spec_example() {
        let ws = words(
            "Last year I showed these two slides that demonstrate that the Arctic ice cap, \
             which for most of the last 3 million years has been the size of the lower 48 \
             states, has shrunk by 40%.",
        );
        let out = srt(&ws, None);
        let captions: Vec<&str> = out.split("\n\n").filter_map(|b| b.lines().nth(2)).collect();
        assert_eq!(
            captions,
            [
                "Last year I showed these two slides that demonstrate that the Arctic",
                "ice cap, which for most of the last 3 million years has been the size",
                "of the lower 48 states, has shrunk by 40%."
            ]
        );
    }

    #[test]
    fn word_search_single_words_ignore_case_and_punctuation() {
        let ws = words("Smoke, from smoke. SMOKE wildfires! smoked");
        let r = word_search(&ws, &terms(&["smoke", "Wildfires"]));
        assert_eq!(r.total_count, 4);
        assert_eq!(r.matches[0].text, "smoke");
        assert_eq!(r.matches[0].count, 3);
        assert_eq!(r.matches[0].indexes, [0, 2, 3]);
        assert_eq!(
            r.matches[0].timestamps,
            [[0, 300], [800, 1_100], [1_200, 1_500]]
        );
        assert_eq!(r.matches[1].text, "Wildfires");
        assert_eq!(r.matches[1].indexes, [4]);
    }

    #[test]
    fn word_search_phrases_span_first_to_last_word() {
        let ws = words("The air quality is bad. Air, quality matters; air quality!");
        let r = word_search(&ws, &terms(&["air quality", "quality is bad"]));
        assert_eq!(r.matches[0].count, 3);
        assert_eq!(r.matches[0].indexes, [1, 5, 8]);
        assert_eq!(r.matches[0].timestamps[0], [400, 1_100]);
        assert_eq!(r.matches[0].timestamps[2], [3_200, 3_900]);
        assert_eq!(r.matches[1].indexes, [2]);
        assert_eq!(r.matches[1].timestamps, [[800, 1_900]]);
        assert_eq!(r.total_count, 4);
    }

    #[test]
    fn word_search_keeps_terms_without_matches() {
        let ws = words("hello world");
        let r = word_search(&ws, &terms(&["foo", "world", "hello there", "!!"]));
        assert_eq!(r.total_count, 1);
        let counts: Vec<usize> = r.matches.iter().map(|m| m.count).collect();
        assert_eq!(counts, [0, 1, 0, 0]);
        assert!(r.matches[0].timestamps.is_empty() && r.matches[0].indexes.is_empty());
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(
            json["matches"][0],
            serde_json::json!({"text": "foo", "count": 0, "timestamps": [], "indexes": []})
        );
    }

    #[test]
    fn word_search_phrase_longer_than_transcript() {
        let r = word_search(&words("hi"), &terms(&["hi there you"]));
        assert_eq!(r.total_count, 0);
    }

    #[test]
    fn parse_search_terms_splits_trims_and_dedupes() {
        assert_eq!(
            parse_search_terms(" smoke , air   quality,,  ,Smoke,42 ").as_deref(),
            Ok(&[
                "smoke".to_string(),
                "air quality".to_string(),
                "42".to_string()
            ][..])
        );
    }

    #[test]
    fn parse_search_terms_rejects_bad_input() {
        assert!(parse_search_terms("").is_err());
        assert!(parse_search_terms(" , ,").is_err());
        assert!(parse_search_terms("one two three four five").is_ok());
        let err = parse_search_terms("ok,one two three four five six").unwrap_err();
        assert!(err.contains("at most 5 words"), "{err}");
        let many: Vec<String> = (0..=MAX_SEARCH_TERMS).map(|i| format!("w{i}")).collect();
        assert!(parse_search_terms(&many.join(",")).is_err());
        assert!(parse_search_terms(&many[..MAX_SEARCH_TERMS].join(",")).is_ok());
    }

    #[test]
    fn parse_search_terms_counts_distinct_terms_and_stops_at_the_limit() {
        // Repeats (in any case) are one term and never count toward the limit.
        let mut entries = vec!["Smoke"; 5_000];
        entries.extend(["smoke"; 5_000]);
        let distinct: Vec<String> = (1..MAX_SEARCH_TERMS).map(|i| format!("w{i}")).collect();
        entries.extend(distinct.iter().map(String::as_str));
        assert_eq!(
            parse_search_terms(&entries.join(",")).map(|t| t.len()),
            Ok(MAX_SEARCH_TERMS)
        );
        // Parsing stops at the first term past the limit: what follows is never read.
        let mut past: Vec<String> = (0..=MAX_SEARCH_TERMS).map(|i| format!("w{i}")).collect();
        past.push("one two three four five six".into());
        let err = parse_search_terms(&past.join(",")).unwrap_err();
        assert!(err.contains("Too many search terms"), "{err}");
    }

    #[test]
    fn word_search_finds_what_a_scan_of_every_position_finds() {
        // A small deterministic generator: transcripts over a 4-word vocabulary make
        // many overlapping and repeated matches.
        let vocab = ["a", "b", "C,", "a."];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as usize) % n
        };
        for _ in 0..200 {
            let len = next(40);
            let ws: Vec<Word> = (0..len)
                .map(|i| w(vocab[next(4)], i as u64 * 100, i as u64 * 100 + 90))
                .collect();
            let terms: Vec<String> = (0..1 + next(4))
                .map(|_| {
                    (0..1 + next(3))
                        .map(|_| vocab[next(4)])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let got = word_search(&ws, &terms);
            let norm: Vec<String> = ws.iter().map(|x| normalise(&x.text)).collect();
            for (term, found) in terms.iter().zip(&got.matches) {
                let needle: Vec<String> = term.split_whitespace().map(normalise).collect();
                let expected: Vec<usize> = (0..norm.len())
                    .filter(|&i| norm.get(i..i + needle.len()) == Some(&needle[..]))
                    .collect();
                assert_eq!(found.indexes, expected, "{term} in {norm:?}");
                assert_eq!(found.count, expected.len());
            }
        }
    }
}
