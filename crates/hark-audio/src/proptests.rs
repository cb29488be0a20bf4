//! Generated-input tests of audio in: the sniffers and `decode_bytes` on arbitrary
//! bytes and on WAV files with arbitrary header fields and cuts, and the streaming PCM
//! converter at any accepted rate and chunking. No input panics or yields non-finite
//! samples. The coverage-guided half of this lives in `fuzz/`.

use crate::{decode_bytes, non_audio_kind, sniff_is_audio, DecodeLimits};
use crate::{PcmEncoding, StreamResampler};
use proptest::prelude::*;

/// A RIFF/WAVE file whose `fmt ` fields and data length are whatever the test says.
fn wav(format: u16, channels: u16, rate: u32, bits: u16, data_len: u32, body: &[u8]) -> Vec<u8> {
    let block_align = channels.wrapping_mul(bits / 8);
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + body.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_duration_secs: 20.0,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let head = &bytes[..bytes.len().min(64)];
        if sniff_is_audio(head) {
            prop_assert_eq!(non_audio_kind(head), None);
        }
        if let Ok(audio) = decode_bytes(&bytes, &limits()) {
            prop_assert!(audio.samples.iter().all(|s| s.is_finite()));
        }
    }

    #[test]
    fn any_text_is_described_without_panicking(text in "\\PC{0,40}") {
        // Text is never "unknown": it is named (or, by its first bytes, is a container).
        let kind = non_audio_kind(text.as_bytes());
        prop_assert!(kind.is_some() || text.is_empty() || sniff_is_audio(text.as_bytes()));
    }

    #[test]
    fn hostile_wav_headers_never_panic(
        format in prop_oneof![Just(1u16), Just(3), Just(6), Just(7), Just(0xFFFE), any::<u16>()],
        channels in prop_oneof![0u16..=3, any::<u16>()],
        rate in prop_oneof![Just(0u32), 1u32..200_000, any::<u32>()],
        bits in prop_oneof![Just(8u16), Just(16), Just(24), Just(32), Just(64), any::<u16>()],
        data_len in prop_oneof![0u32..8192, any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..8192),
        cut in any::<prop::sample::Index>(),
    ) {
        let file = wav(format, channels, rate, bits, data_len, &body);
        let file = &file[..cut.index(file.len() + 1).max(12).min(file.len())];
        if let Ok(audio) = decode_bytes(file, &limits()) {
            prop_assert!(audio.samples.iter().all(|s| s.is_finite()));
            prop_assert!(audio.duration_secs <= limits().max_duration_secs + 1.0);
        }
    }

    #[test]
    fn streaming_pcm_at_any_rate(
        rate in 1_000u32..=768_000,
        mulaw in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..6000),
        chunk in 1usize..700,
    ) {
        let encoding = if mulaw { PcmEncoding::PcmMulaw } else { PcmEncoding::PcmS16le };
        let mut stream = StreamResampler::new(rate, encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            out.extend(stream.push(piece));
        }
        out.extend(stream.flush());
        prop_assert!(out.iter().all(|s| s.is_finite()));
    }
}
