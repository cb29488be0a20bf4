//! Audio in for Hark: decode uploads (WAV, MP3, FLAC, Ogg Vorbis/Opus, M4A/AAC, ...) to
//! 16 kHz mono `f32`, and convert raw streaming PCM incrementally.
//!
//! Containers and codecs come from symphonia (pure Rust); Opus packets are decoded by
//! the pure-Rust `opus-rs` crate; resampling is rubato (FFT resampler, or windowed
//! sinc for rates whose ratio to 16 kHz is awkward). Decoding streams packet by packet
//! ([`AudioStream`], so a long file can be consumed in bounded memory), stops as soon as
//! the duration limit is passed, and is guarded against decoder panics.

mod decode;
mod lengths;
mod mp4;
mod opus;
mod resample;
mod sniff;
mod stream;

#[cfg(test)]
mod proptests;

use std::path::Path;

use hark_core::speech::SpeechError;

pub use decode::{AudioStream, AudioSummary};
pub use sniff::{non_audio_kind, sniff_is_audio};
pub use stream::{PcmEncoding, StreamResampler};

/// Decoded audio: 16 kHz mono samples in -1..=1.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    /// Length of the decoded source audio in seconds.
    pub duration_secs: f64,
    /// Sample rate of the source stream (Opus streams decode at 48 000).
    pub source_sample_rate: u32,
    pub source_channels: u16,
}

/// Limits applied while decoding.
#[derive(Clone, Debug)]
pub struct DecodeLimits {
    /// Longer audio is refused with [`AudioError::TooLong`].
    pub max_duration_secs: f64,
}

impl Default for DecodeLimits {
    /// Ten hours, AssemblyAI's limit.
    fn default() -> Self {
        Self {
            max_duration_secs: 36_000.0,
        }
    }
}

/// Why audio could not be decoded.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum AudioError {
    /// Not audio, or no decodable audio in it; holds the detected MIME type or "unknown".
    #[error("not audio (detected type: {0})")]
    NotAudio(String),
    /// Shorter than 160 ms.
    #[error("audio is shorter than 160 ms")]
    TooShort,
    #[error("audio of {secs:.1} s exceeds the limit of {max_secs} s")]
    TooLong { secs: f64, max_secs: u64 },
    /// Reading the input failed, or an internal fault; not the client's doing.
    #[error("audio I/O error: {0}")]
    Io(String),
}

impl From<AudioError> for SpeechError {
    fn from(e: AudioError) -> Self {
        match e {
            AudioError::NotAudio(kind) => SpeechError::NotAudio(kind),
            AudioError::TooShort => SpeechError::TooShort,
            AudioError::TooLong { secs, max_secs } => SpeechError::TooLong { secs, max_secs },
            AudioError::Io(msg) => SpeechError::Engine(msg),
        }
    }
}

/// Decodes a whole audio file from disk into one buffer.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DecodedAudio, AudioError> {
    decode::collect(decode::open_file(path, limits)?)
}

/// Decodes a whole audio file held in memory (copied once into a shared buffer).
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedAudio, AudioError> {
    decode::collect(decode::open_bytes(bytes, limits)?)
}

/// Opens an audio file from disk to be decoded chunk by chunk
/// ([`AudioStream::next_chunk`]); the same samples, limits and errors as
/// [`decode_file`], in bounded memory. Reopening the file gives the same samples again.
pub fn open_file(path: &Path, limits: &DecodeLimits) -> Result<AudioStream, AudioError> {
    decode::open_file(path, limits)
}

/// As [`open_file`], for audio held in memory.
pub fn open_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<AudioStream, AudioError> {
    decode::open_bytes(bytes, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_assemblyai_texts() {
        let e: SpeechError = AudioError::TooShort.into();
        assert_eq!(e.to_string(), "Audio duration is too short.");
        let e: SpeechError = AudioError::NotAudio("text/plain".into()).into();
        assert_eq!(
            e.to_string(),
            "File does not appear to contain audio. File type is text/plain (unknown)."
        );
        let e: SpeechError = AudioError::TooLong {
            secs: 7.4,
            max_secs: 5,
        }
        .into();
        assert_eq!(
            e.to_string(),
            "Audio duration of 7 seconds exceeds the maximum of 5 seconds."
        );
        let e: SpeechError = AudioError::Io("disk".into()).into();
        assert!(!e.is_client_facing());
    }

    #[test]
    fn default_limit_is_ten_hours() {
        assert_eq!(DecodeLimits::default().max_duration_secs, 36_000.0);
    }
}
