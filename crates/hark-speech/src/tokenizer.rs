//! Whisper token ids → text: a minimal byte-level BPE *decoder* (no encoder is needed to
//! transcribe) built from CTranslate2's `vocabulary.txt` or a Hugging Face `tokenizer.json`,
//! plus the ids of Whisper's special tokens.

use crate::error::ModelError;
use std::collections::HashMap;
use std::path::Path;

/// Ids of the control tokens the decoder needs.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: Option<u32>,
    pub transcribe: Option<u32>,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    /// First timestamp token `<|0.00|>`; every id at or above it is a timestamp.
    pub timestamp_begin: u32,
    /// Language tokens (id, code) such as (50259, "en"); empty for English-only models.
    pub languages: Vec<(u32, String)>,
}

/// Decodes token ids into UTF-8 text.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Raw bytes of each token (special tokens hold their literal text).
    token_bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    pub specials: SpecialTokens,
}

/// GPT-2's reversible byte ↔ printable-character map, inverted: char → byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let ch = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(c) = char::from_u32(ch) {
            map.insert(c, b as u8);
        }
    }
    map
}

fn is_special_text(s: &str) -> bool {
    s.len() >= 4 && s.starts_with("<|") && s.ends_with("|>")
}

impl Tokenizer {
    /// Load from a model directory: `vocabulary.txt` (CTranslate2) if present, else `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let vocab_txt = dir.join("vocabulary.txt");
        let tokenizer_json = dir.join("tokenizer.json");
        let strings = if vocab_txt.is_file() {
            let text =
                std::fs::read_to_string(&vocab_txt).map_err(|e| ModelError::io(&vocab_txt, e))?;
            text.lines()
                .map(|l| Some(l.to_string()))
                .collect::<Vec<_>>()
        } else if tokenizer_json.is_file() {
            let text =
                std::fs::read(&tokenizer_json).map_err(|e| ModelError::io(&tokenizer_json, e))?;
            strings_from_tokenizer_json(&text)?
        } else {
            return Err(ModelError::Invalid(format!(
                "{} has neither vocabulary.txt nor tokenizer.json",
                dir.display()
            )));
        };
        Self::from_strings(strings)
    }

    /// Build from the token strings indexed by id (`None` for unused ids).
    pub fn from_strings(strings: Vec<Option<String>>) -> Result<Self, ModelError> {
        let table = unicode_to_byte();
        let mut token_bytes = Vec::with_capacity(strings.len());
        let mut special = Vec::with_capacity(strings.len());
        let mut by_text: HashMap<String, u32> = HashMap::new();
        for (id, s) in strings.iter().enumerate() {
            match s {
                Some(s) if is_special_text(s) => {
                    token_bytes.push(s.as_bytes().to_vec());
                    special.push(true);
                    by_text.insert(s.clone(), id as u32);
                }
                Some(s) => {
                    token_bytes.push(s.chars().filter_map(|c| table.get(&c).copied()).collect());
                    special.push(false);
                }
                None => {
                    token_bytes.push(Vec::new());
                    special.push(true);
                }
            }
        }
        let find = |t: &str| by_text.get(t).copied();
        let eot = find("<|endoftext|>")
            .ok_or_else(|| ModelError::Invalid("vocabulary lacks <|endoftext|>".into()))?;
        let sot = find("<|startoftranscript|>")
            .ok_or_else(|| ModelError::Invalid("vocabulary lacks <|startoftranscript|>".into()))?;
        let no_timestamps = find("<|notimestamps|>")
            .ok_or_else(|| ModelError::Invalid("vocabulary lacks <|notimestamps|>".into()))?;
        let mut languages: Vec<(u32, String)> = by_text
            .iter()
            .filter_map(|(text, id)| {
                let inner = &text[2..text.len() - 2];
                let is_lang = *id > sot
                    && *id < no_timestamps
                    && (2..=3).contains(&inner.len())
                    && inner.chars().all(|c| c.is_ascii_lowercase());
                // "haw" and "yue" are 3 letters; "en", "de" … 2.
                is_lang.then(|| (*id, inner.to_string()))
            })
            .collect();
        languages.sort();
        let specials = SpecialTokens {
            eot,
            sot,
            sot_prev: find("<|startofprev|>"),
            transcribe: find("<|transcribe|>"),
            no_speech: find("<|nospeech|>").or_else(|| find("<|nocaptions|>")),
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            languages,
        };
        Ok(Tokenizer {
            token_bytes,
            special,
            specials,
        })
    }

    /// Whether the model is multilingual. English-only vocabularies (51864 ids) still list
    /// the language tokens, so the size is what tells them apart, as in Whisper.
    pub fn is_multilingual(&self) -> bool {
        self.token_bytes.len() >= 51865 && self.specials.languages.len() > 1
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.specials.timestamp_begin
    }

    /// Whether `id` is an ordinary text token (not special, not a timestamp).
    pub fn is_text(&self, id: u32) -> bool {
        id < self.specials.eot && !self.special.get(id as usize).copied().unwrap_or(true)
    }

    /// Raw bytes of a text token (empty for special/unknown ids).
    pub fn bytes(&self, id: u32) -> &[u8] {
        if self.is_text(id) {
            self.token_bytes
                .get(id as usize)
                .map(|v| v.as_slice())
                .unwrap_or(&[])
        } else {
            &[]
        }
    }

    /// The text tokens that end a sentence on their own (`.`, `?`, `!`).
    pub fn sentence_end_tokens(&self) -> Vec<u32> {
        (0..self.token_bytes.len() as u32)
            .filter(|id| matches!(self.bytes(*id), b"." | b"?" | b"!"))
            .collect()
    }

    /// Text of a run of tokens, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|id| self.bytes(*id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.specials
            .languages
            .iter()
            .find(|(_, c)| c == code)
            .map(|(id, _)| *id)
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }
}

fn strings_from_tokenizer_json(data: &[u8]) -> Result<Vec<Option<String>>, ModelError> {
    let json: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| ModelError::Invalid(format!("tokenizer.json: {e}")))?;
    let mut pairs: Vec<(usize, String)> = Vec::new();
    if let Some(vocab) = json.pointer("/model/vocab").and_then(|v| v.as_object()) {
        for (text, id) in vocab {
            if let Some(id) = id.as_u64() {
                pairs.push((id as usize, text.clone()));
            }
        }
    }
    if let Some(added) = json.get("added_tokens").and_then(|v| v.as_array()) {
        for token in added {
            if let (Some(id), Some(text)) = (
                token.get("id").and_then(|v| v.as_u64()),
                token.get("content").and_then(|v| v.as_str()),
            ) {
                pairs.push((id as usize, text.to_string()));
            }
        }
    }
    let max = pairs
        .iter()
        .map(|(id, _)| *id)
        .max()
        .ok_or_else(|| ModelError::Invalid("tokenizer.json has no vocabulary".into()))?;
    if max > 1_000_000 {
        return Err(ModelError::Invalid(
            "tokenizer.json token id out of range".into(),
        ));
    }
    let mut strings = vec![None; max + 1];
    for (id, text) in pairs {
        strings[id] = Some(text);
    }
    Ok(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_byte_level_tokens() {
        let mut strings: Vec<Option<String>> = vec![
            Some("Hello".into()),
            Some("Ġworld".into()),
            Some("Ċ".into()),
        ];
        strings.push(Some("<|endoftext|>".into()));
        strings.push(Some("<|startoftranscript|>".into()));
        strings.push(Some("<|en|>".into()));
        strings.push(Some("<|notimestamps|>".into()));
        let tok = Tokenizer::from_strings(strings).unwrap();
        assert_eq!(tok.decode(&[0, 1, 2, 3]), "Hello world\n");
        assert_eq!(tok.specials.timestamp_begin, 7);
        assert_eq!(tok.specials.languages, vec![(5, "en".to_string())]);
        assert!(!tok.is_multilingual());
    }
}
