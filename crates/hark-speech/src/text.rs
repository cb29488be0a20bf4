//! Output text shaping for AssemblyAI's `punctuate` and `format_text` switches.

/// Remove punctuation from a word, keeping letters, digits and the apostrophes and
/// hyphens *inside* a word ("don't", "twenty-one"), since those are spelling, not punctuation.
pub fn strip_punctuation(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len());
    for (i, c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            out.push(*c);
        } else if matches!(c, '\'' | '’' | '-') {
            let before = i > 0 && chars[i - 1].is_alphanumeric();
            let after = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
            if before && after {
                out.push(*c);
            }
        }
    }
    out
}

/// Shape one word as the request asks; `None` when nothing is left (a lone dash, say).
pub fn shape_word(word: &str, punctuate: bool, format_text: bool) -> Option<String> {
    let mut text = word.trim().to_string();
    if !punctuate || !format_text {
        text = strip_punctuation(&text);
    }
    if !format_text {
        text = text.to_lowercase();
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_words() {
        assert_eq!(shape_word("Hello,", true, true).as_deref(), Some("Hello,"));
        assert_eq!(shape_word("Hello,", false, true).as_deref(), Some("Hello"));
        assert_eq!(shape_word("Don't!", true, false).as_deref(), Some("don't"));
        assert_eq!(
            shape_word("twenty-one.", false, true).as_deref(),
            Some("twenty-one")
        );
        assert_eq!(shape_word(" - ", false, true), None);
        assert_eq!(shape_word("\"Yes?\"", true, false).as_deref(), Some("yes"));
    }
}
