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

/// A speech engine: batch files and live streams. Implementations are blocking
/// (CPU-bound); async callers run them on a blocking thread.
pub trait SpeechEngine: Send + Sync {
    /// Names of the installed models this engine can run, from memory (cheap: called
    /// per request).
    fn models(&self) -> Vec<String>;
    /// Looks at what is installed again (a directory scan: called in the background,
    /// never per request). Engines whose models cannot change do nothing.
    fn refresh_models(&self) {}
    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError>;
    /// Starts a live session on an installed model.
    fn open_stream(
        self: std::sync::Arc<Self>,
        model: &str,
        config: StreamingConfig,
    ) -> Result<Box<dyn SpeechStream>, SpeechError>;
}

/// Turn-detection and decoding settings of one live session.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingConfig {
    /// Speech probability (0..1) above which a frame counts as speech.
    pub vad_threshold: f32,
    /// Silence after which a turn ends if its end-of-turn confidence is high enough.
    pub min_turn_silence_ms: u64,
    /// Silence that ends a turn in any case.
    pub max_turn_silence_ms: u64,
    /// End-of-turn confidence (0..1) needed to end a turn after `min_turn_silence_ms`.
    pub end_of_turn_confidence_threshold: f64,
    /// A turn this long is finalised even without silence (Whisper's window is 30 s).
    pub max_turn_secs: f64,
    /// Minimum new audio between two partial transcripts.
    pub partial_interval_ms: u64,
    /// Audio kept before the first speech frame of a turn.
    pub pre_roll_ms: u64,
    pub language: Option<String>,
    pub punctuate: bool,
    pub format_text: bool,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            vad_threshold: 0.5,
            min_turn_silence_ms: 400,
            max_turn_silence_ms: 1280,
            end_of_turn_confidence_threshold: 0.4,
            max_turn_secs: 28.0,
            partial_interval_ms: 1000,
            pre_roll_ms: 200,
            language: None,
            punctuate: true,
            format_text: true,
        }
    }
}

/// Settings a client may change in the middle of a session; `None` keeps the current one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamingUpdate {
    pub vad_threshold: Option<f32>,
    pub min_turn_silence_ms: Option<u64>,
    pub max_turn_silence_ms: Option<u64>,
    pub end_of_turn_confidence_threshold: Option<f64>,
}

impl StreamingConfig {
    pub fn apply(&mut self, update: &StreamingUpdate) {
        if let Some(v) = update.vad_threshold {
            self.vad_threshold = v;
        }
        if let Some(v) = update.min_turn_silence_ms {
            self.min_turn_silence_ms = v;
        }
        if let Some(v) = update.max_turn_silence_ms {
            self.max_turn_silence_ms = v;
        }
        if let Some(v) = update.end_of_turn_confidence_threshold {
            self.end_of_turn_confidence_threshold = v;
        }
    }
}

/// A turn's transcript; times in ms from the start of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// 0, 1, 2 … in session order; partials of a turn share its order.
    pub turn_order: u32,
    pub text: String,
    pub words: Vec<Word>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Mean word confidence.
    pub confidence: f64,
    /// How likely it is (0..1) that the speaker has finished the turn.
    pub end_of_turn_confidence: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The current turn so far; later events supersede it.
    Partial(Turn),
    /// The turn is over; its text will not change.
    Final(Turn),
}

/// One live session: 16-kHz mono PCM in, turns out. Owned by one task at a time.
pub trait SpeechStream: Send {
    /// Feeds audio (-1..1). Returns any partial/final turns it produced.
    fn push_audio(&mut self, pcm: &[f32]) -> Result<Vec<StreamEvent>, SpeechError>;
    /// Ends the current turn now. Returns its final, if any.
    fn force_endpoint(&mut self) -> Result<Vec<StreamEvent>, SpeechError>;
    /// End of stream: finalises the open turn.
    fn finish(&mut self) -> Result<Vec<StreamEvent>, SpeechError>;
    fn update(&mut self, update: &StreamingUpdate);
    /// Audio received so far, ms.
    fn audio_ms(&self) -> u64;
}
