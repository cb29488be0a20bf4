//! StreamResampler: chunked pushes equal a one-shot conversion, rates convert to 16 kHz
//! with the tone intact, and mu-law decodes like sox's.

mod common;

use common::*;
use hark_audio::{decode_file, DecodeLimits, PcmEncoding, StreamResampler};

fn sine_s16le(rate: u32, secs: f64, freq: f64, amplitude: f64) -> Vec<u8> {
    let n = (f64::from(rate) * secs) as usize;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / f64::from(rate);
            let v = (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin() * 32767.0) as i16;
            v.to_le_bytes()
        })
        .collect()
}

fn one_shot(rate: u32, enc: PcmEncoding, bytes: &[u8]) -> Vec<f32> {
    let mut r = StreamResampler::new(rate, enc).unwrap();
    let mut out = r.push(bytes);
    out.extend(r.flush());
    out
}

fn chunked(rate: u32, enc: PcmEncoding, bytes: &[u8], sizes: &[usize]) -> Vec<f32> {
    let mut r = StreamResampler::new(rate, enc).unwrap();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        out.extend(r.push(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    out.extend(r.flush());
    out
}

#[test]
fn chunked_pushes_equal_one_shot() {
    for rate in [8_000u32, 16_000, 22_050, 24_000, 44_100, 48_000] {
        let bytes = sine_s16le(rate, 1.5, 440.0, 0.5);
        let whole = one_shot(rate, PcmEncoding::PcmS16le, &bytes);
        // Odd sizes split samples across pushes.
        let pieces = chunked(rate, PcmEncoding::PcmS16le, &bytes, &[1, 333, 4097, 50, 2]);
        assert_eq!(whole.len(), pieces.len(), "rate {rate}");
        let max_diff = whole
            .iter()
            .zip(&pieces)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-5, "rate {rate}: max diff {max_diff}");
        assert_eq!(whole.len(), 24_000, "rate {rate}: 1.5 s at 16 kHz");
        let freq = dominant_frequency(&whole);
        assert!((freq - 440.0).abs() <= 10.0, "rate {rate}: {freq} Hz");
    }
}

#[test]
fn output_arrives_incrementally() {
    let bytes = sine_s16le(8_000, 2.0, 300.0, 0.5);
    let mut r = StreamResampler::new(8_000, PcmEncoding::PcmS16le).unwrap();
    let mut got = 0;
    for chunk in bytes.chunks(1600) {
        // 100 ms per push.
        got += r.push(chunk).len();
    }
    // All but the resampler's small delay line is out before the flush.
    assert!(got >= 32_000 - 1_600, "only {got} samples before flush");
    got += r.flush().len();
    assert_eq!(got, 32_000);
}

#[test]
fn mulaw_matches_sox() {
    let dir = tempfile::tempdir().unwrap();
    // The same tone as mu-law and as 16-bit PCM, both made by sox at 8 kHz.
    let ulaw = dir.path().join("tone.ul");
    let pcm = dir.path().join("tone.s16");
    for (path, enc) in [
        (&ulaw, &["-e", "mu-law", "-b", "8"][..]),
        (&pcm, &["-e", "signed-integer", "-b", "16"][..]),
    ] {
        let mut args = vec!["-n", "-r", "8000", "-c", "1"];
        args.extend_from_slice(enc);
        args.extend_from_slice(&[
            "-t",
            "raw",
            path_str(path),
            "synth",
            "1.0",
            "sine",
            "600",
            "gain",
            "-6",
        ]);
        run("sox", &args);
    }
    let ulaw_bytes = std::fs::read(&ulaw).unwrap();
    let pcm_bytes = std::fs::read(&pcm).unwrap();
    assert_eq!(ulaw_bytes.len() * 2, pcm_bytes.len());
    let from_ulaw = one_shot(8_000, PcmEncoding::PcmMulaw, &ulaw_bytes);
    let from_pcm = one_shot(8_000, PcmEncoding::PcmS16le, &pcm_bytes);
    assert_eq!(from_ulaw.len(), 16_000);
    assert_eq!(from_ulaw.len(), from_pcm.len());
    // mu-law quantisation error is at most ~3% of the amplitude for this level.
    let max_diff = from_ulaw
        .iter()
        .zip(&from_pcm)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 0.03, "mu-law differs from PCM by {max_diff}");
    let freq = dominant_frequency(&from_ulaw);
    assert!((freq - 600.0).abs() <= 10.0, "{freq} Hz");
    // Chunked mu-law equals one-shot.
    let pieces = chunked(8_000, PcmEncoding::PcmMulaw, &ulaw_bytes, &[1, 160, 7]);
    assert_eq!(pieces, from_ulaw);
}

#[test]
fn stream_matches_batch_decode() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "t.wav", 44_100, 1, 1.0, 1000, &["-b", "16"]);
    let batch = decode_file(&wav, &DecodeLimits::default()).unwrap();
    let bytes = std::fs::read(&wav).unwrap();
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    let stream = chunked(44_100, PcmEncoding::PcmS16le, &bytes[data..], &[882]);
    assert_eq!(stream.len(), batch.samples.len());
    let max_diff = stream
        .iter()
        .zip(&batch.samples)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 0.01, "stream vs batch differ by {max_diff}");
}

#[test]
fn bad_rates_are_refused() {
    assert!(StreamResampler::new(0, PcmEncoding::PcmS16le).is_err());
    assert!(StreamResampler::new(5_000_000, PcmEncoding::PcmMulaw).is_err());
    let mut r = StreamResampler::new(16_000, PcmEncoding::PcmS16le).unwrap();
    assert!(r.push(&[]).is_empty());
    assert!(r.flush().is_empty());
}
