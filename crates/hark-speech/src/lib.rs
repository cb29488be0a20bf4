//! Hark's local speech engine: Whisper on CPU in pure Rust. Reads CTranslate2
//! (faster-whisper) and Hugging Face safetensors model directories, transcribes 16-kHz PCM
//! in 30-s windows with timestamp seeking and word timings, streams turns, manages the
//! installed models, and provides the `hark transcribe` / `hark models` commands.

pub mod align;
pub mod cli;
pub mod decode;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod long_audio;
pub mod mel;
pub mod model;
pub mod panels;
pub mod quant;
pub mod registry;
pub mod streaming;
pub mod tensor_file;
pub mod text;
pub mod tokenizer;

#[cfg(test)]
mod proptests;

pub use decode::{
    CancelFlag, DecodeOptions, DecodeStats, LoadedModel, RawTranscript, Segment, TimedWord,
};
pub use engine::{EngineOptions, FileTranscript, Priority, WhisperEngine};
pub use error::ModelError;
pub use model::EncoderPrecision;
pub use registry::{ModelFormat, ModelInfo, ModelRegistry};
pub use streaming::{SessionStats, StreamEvent, StreamingConfig, StreamingSession, Turn};
