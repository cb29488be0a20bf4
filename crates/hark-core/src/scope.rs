//! API key scopes: least-privilege limits on what a data-plane key may do. A key
//! with no scopes may do everything its project allows.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "transcripts:read")]
    TranscriptsRead,
    #[serde(rename = "transcripts:write")]
    TranscriptsWrite,
    #[serde(rename = "streaming")]
    Streaming,
}

impl Scope {
    pub const ALL: [Scope; 3] = [
        Scope::TranscriptsRead,
        Scope::TranscriptsWrite,
        Scope::Streaming,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TranscriptsRead => "transcripts:read",
            Scope::TranscriptsWrite => "transcripts:write",
            Scope::Streaming => "streaming",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scope '{s}' (expected transcripts:read, transcripts:write or streaming)")
            })
    }
}

/// A key's scopes as stored: space-separated, empty for "all".
pub fn encode(scopes: &[Scope]) -> String {
    let mut v: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.join(" ")
}

pub fn decode(stored: &str) -> Result<Vec<Scope>, String> {
    stored.split_whitespace().map(Scope::from_str).collect()
}

/// Whether a key holding `held` (empty = unrestricted) may act under `needed`.
pub fn allows(held: &[Scope], needed: Scope) -> bool {
    held.is_empty() || held.contains(&needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let s = encode(&[Scope::Streaming, Scope::TranscriptsRead, Scope::Streaming]);
        assert_eq!(s, "streaming transcripts:read");
        assert_eq!(
            decode(&s).unwrap(),
            vec![Scope::Streaming, Scope::TranscriptsRead]
        );
        assert!(decode("admin").is_err());
        assert!(allows(&[], Scope::TranscriptsWrite));
        assert!(!allows(&[Scope::Streaming], Scope::TranscriptsRead));
    }
}
