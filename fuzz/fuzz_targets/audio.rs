//! Fuzzes audio in: the container sniffers, whole-file decoding (every container and
//! codec `decode_bytes` accepts) and the streaming PCM converter fed by `/v3/ws`.
//!
//! `decode_bytes` runs third-party decoders under a panic guard and refuses the file
//! when one panics: that guard is the product's behaviour, so this target lets such a
//! caught panic pass (libfuzzer-sys's hook would abort on it), while a panic that
//! escapes the guard still aborts as a crash.
#![no_main]

use hark_audio::StreamResampler;
use hark_audio::{decode_bytes, non_audio_kind, sniff_is_audio, DecodeLimits, PcmEncoding};
use libfuzzer_sys::fuzz_target;
use std::sync::Once;

static QUIET_GUARDED_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET_GUARDED_PANICS.call_once(|| {
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
    });
    let head = &data[..data.len().min(64)];
    if sniff_is_audio(head) {
        assert_eq!(non_audio_kind(head), None);
    }

    // Short limit: the fuzzer explores parsing, not minutes of resampling.
    let limits = DecodeLimits {
        max_duration_secs: 30.0,
    };
    if let Ok(audio) = decode_bytes(data, &limits) {
        assert!(audio.samples.iter().all(|s| s.is_finite()));
        assert!(audio.duration_secs <= limits.max_duration_secs + 1.0);
    }

    // Streaming: the first bytes choose rate and encoding, the rest arrive in chunks.
    if data.len() >= 4 {
        let rate = u32::from(u16::from_le_bytes([data[0], data[1]])) * 12;
        let encoding = if data[2] & 1 == 0 {
            PcmEncoding::PcmS16le
        } else {
            PcmEncoding::PcmMulaw
        };
        let chunk = usize::from(data[3]).max(1);
        if let Ok(mut stream) = StreamResampler::new(rate, encoding) {
            let mut produced = 0usize;
            for piece in data[4..].chunks(chunk) {
                produced += stream.push(piece).len();
            }
            produced += stream.flush().len();
            let bytes_per_sample = if encoding == PcmEncoding::PcmS16le {
                2
            } else {
                1
            };
            let input_samples = (data.len() - 4) / bytes_per_sample;
            // 16 kHz out of `rate` in: never more than the ratio allows (plus a window).
            let bound = (input_samples as u64 * 16_000 / u64::from(rate)) as usize + 16_000;
            assert!(
                produced <= bound,
                "{produced} samples from {input_samples} at {rate} Hz"
            );
        }
    }
});
