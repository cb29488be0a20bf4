//! The speech-engine contract: audio in, timed words out. Knows nothing of HTTP or tenants.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Mono PCM at [`SAMPLE_RATE`] Hz, samples in -1.0..=1.0.
pub const SAMPLE_RATE: u32 = 16_000;

/// One recognised word with its position in the source audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub text: String,
    /// Milliseconds from the start of the original audio.
    pub start: u64,
    pub end: u64,
    pub confidence: f64,
}

/// What a caller asks of one batch transcription.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeRequest {
    /// The audio file (any container the decoder knows).
    pub path: PathBuf,
    /// Installed model name to run (already resolved from any alias).
    pub model: String,
    /// `None` lets a multilingual model detect the language.
    pub language_code: Option<String>,
    pub punctuate: bool,
    pub format_text: bool,
    /// Only transcribe from this many ms into the audio.
    pub audio_start_from: Option<u64>,
    /// Stop transcribing at this many ms into the audio.
    pub audio_end_at: Option<u64>,
}

/// The engine's answer for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    pub text: String,
    pub words: Vec<Word>,
    /// Mean word confidence, 0..1.
    pub confidence: f64,
    /// Duration of the whole decoded file in seconds.
    pub audio_duration_secs: f64,
    /// The language the model transcribed in (`en` for English-only models).
    pub language_code: Option<String>,
    pub language_confidence: Option<f64>,
    /// The installed model that produced this.
    pub model: String,
}

/// Why a transcription did not produce text. The `Display` texts of the
/// client-facing variants are AssemblyAI's own wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpeechError {
    #[error("File does not appear to contain audio. File type is {0} (unknown).")]
    NotAudio(String),
    #[error("Audio duration is too short.")]
    TooShort,
    #[error("Audio duration of {secs:.0} seconds exceeds the maximum of {max_secs} seconds.")]
    TooLong { secs: f64, max_secs: u64 },
    #[error("No speech model is installed on this server (looked for '{0}'). An operator can install one with `hark models install`.")]
    NoModel(String),
    /// An engine fault; the text is for logs, not for clients.
    #[error("speech engine failure: {0}")]
    Engine(String),
}

impl SpeechError {
    /// Whether the message may be shown to the API client verbatim.
    pub fn is_client_facing(&self) -> bool {
        !matches!(self, SpeechError::Engine(_))
    }
}

/// A batch speech engine. Implementations are blocking (CPU-bound); async
/// callers run them on a blocking thread.
pub trait SpeechEngine: Send + Sync {
    /// Names of the installed models this engine can run.
    fn models(&self) -> Vec<String>;
    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError>;
}
