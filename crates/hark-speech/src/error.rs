//! Error types of the speech crate: model loading/installation failures (and audio that
//! failed to decode while streamed), and their
//! mapping onto the client-facing `hark_core::speech::SpeechError`.

use hark_core::speech::SpeechError;

/// Why a model could not be read, installed or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file is truncated")]
    Truncated,
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("model tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("model '{0}' is not installed")]
    NotInstalled(String),
    #[error("no Whisper model (model.bin or model.safetensors with config.json) found in {0}")]
    NotAModel(String),
    #[error("model '{0}' is already installed")]
    AlreadyInstalled(String),
    #[error("invalid model name '{0}' (use letters, digits, '.', '-', '_')")]
    BadName(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wheel/zip archive: {0}")]
    Archive(String),
    /// The decode was stopped through its [`crate::decode::CancelFlag`].
    #[error("decode cancelled")]
    Cancelled,
    /// Decoding the audio failed (for streamed audio, during the transcription).
    #[error("audio: {0}")]
    Audio(#[from] hark_audio::AudioError),
}

impl ModelError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<ModelError> for SpeechError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotInstalled(name) => SpeechError::NoModel(name),
            ModelError::Audio(audio) => audio.into(),
            other => SpeechError::Engine(other.to_string()),
        }
    }
}
