//! Every supported container, built with sox/ffmpeg/espeak-ng: duration, 16 kHz mono
//! output, and a sine tone's frequency surviving decode and resampling.

mod common;

use std::path::Path;

use common::*;
use hark_audio::{decode_bytes, decode_file, sniff_is_audio, DecodeLimits, DecodedAudio};

const TONE_SECS: f64 = 2.0;
const TONE_HZ: u32 = 1000;

fn decode_ok(path: &Path) -> DecodedAudio {
    decode_file(path, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("decoding {} failed: {e:?}", path.display()))
}

/// The checks every tone fixture must pass.
fn check_tone(path: &Path, rate: u32, channels: u16) -> DecodedAudio {
    let head = std::fs::read(path).expect("fixture exists");
    assert!(
        sniff_is_audio(&head[..64.min(head.len())]),
        "{} not sniffed as audio",
        path.display()
    );
    let audio = decode_ok(path);
    assert!(
        (audio.duration_secs - TONE_SECS).abs() <= 0.05,
        "{}: duration {} s, want {TONE_SECS} s ±50 ms",
        path.display(),
        audio.duration_secs
    );
    let expected_len = audio.duration_secs * 16_000.0;
    assert!(
        (audio.samples.len() as f64 - expected_len).abs() <= 2.0,
        "{}: {} samples for {} s at 16 kHz",
        path.display(),
        audio.samples.len(),
        audio.duration_secs
    );
    assert_eq!(
        audio.source_sample_rate,
        rate,
        "{}: source rate",
        path.display()
    );
    assert_eq!(
        audio.source_channels,
        channels,
        "{}: source channels",
        path.display()
    );
    assert!(audio
        .samples
        .iter()
        .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
    let freq = dominant_frequency(&audio.samples);
    assert!(
        (freq - f64::from(TONE_HZ)).abs() <= 10.0,
        "{}: dominant frequency {freq} Hz, want {TONE_HZ} Hz",
        path.display()
    );
    // -3 dB sine: RMS 0.5 (lossy codecs and resampling keep it close).
    let level = rms(&audio.samples[4000..audio.samples.len() - 4000]);
    assert!(
        (0.4..0.6).contains(&level),
        "{}: RMS {level}",
        path.display()
    );
    audio
}

#[test]
fn wav_pcm16_44k1_stereo() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        44_100,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    check_tone(&wav, 44_100, 2);
}

#[test]
fn wav_pcm24_48k() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        48_000,
        1,
        TONE_SECS,
        TONE_HZ,
        &["-b", "24"],
    );
    check_tone(&wav, 48_000, 1);
}

#[test]
fn wav_float32() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        22_050,
        1,
        TONE_SECS,
        TONE_HZ,
        &["-e", "floating-point", "-b", "32"],
    );
    check_tone(&wav, 22_050, 1);
}

#[test]
fn wav_8k_and_16k_passthrough() {
    let dir = tempfile::tempdir().unwrap();
    let wav8 = sox_tone(
        dir.path(),
        "a8.wav",
        8_000,
        1,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    check_tone(&wav8, 8_000, 1);
    let wav16 = sox_tone(
        dir.path(),
        "a16.wav",
        16_000,
        1,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let audio = check_tone(&wav16, 16_000, 1);
    assert_eq!(audio.samples.len(), 32_000);
}

#[test]
fn mp3() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        44_100,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let mp3 = ffmpeg(
        dir.path(),
        &wav,
        "a.mp3",
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    check_tone(&mp3, 44_100, 2);
}

#[test]
fn flac() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        48_000,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "24"],
    );
    let flac = ffmpeg(dir.path(), &wav, "a.flac", &["-c:a", "flac"]);
    check_tone(&flac, 48_000, 2);
}

#[test]
fn ogg_vorbis() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        44_100,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let ogg = ffmpeg(
        dir.path(),
        &wav,
        "a.ogg",
        &["-c:a", "libvorbis", "-q:a", "4"],
    );
    check_tone(&ogg, 44_100, 2);
}

#[test]
fn ogg_opus() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        48_000,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let opus = ffmpeg(
        dir.path(),
        &wav,
        "a.opus",
        &["-c:a", "libopus", "-b:a", "64k"],
    );
    check_tone(&opus, 48_000, 2);
    // Mono Opus from a 16 kHz source (what voice apps send).
    let wav16 = sox_tone(
        dir.path(),
        "m.wav",
        16_000,
        1,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let opus16 = ffmpeg(
        dir.path(),
        &wav16,
        "m.ogg",
        &["-c:a", "libopus", "-b:a", "24k"],
    );
    check_tone(&opus16, 48_000, 1);
}

#[test]
fn m4a_aac() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        44_100,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let m4a = ffmpeg(dir.path(), &wav, "a.m4a", &["-c:a", "aac", "-b:a", "128k"]);
    check_tone(&m4a, 44_100, 2);
    // Same with the index at the front, as streaming-friendly encoders write it.
    let fast = ffmpeg(
        dir.path(),
        &wav,
        "fast.m4a",
        &["-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart"],
    );
    check_tone(&fast, 44_100, 2);
}

#[test]
fn bytes_and_file_agree() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(
        dir.path(),
        "a.wav",
        44_100,
        2,
        TONE_SECS,
        TONE_HZ,
        &["-b", "16"],
    );
    let mp3 = ffmpeg(
        dir.path(),
        &wav,
        "a.mp3",
        &["-c:a", "libmp3lame", "-b:a", "96k"],
    );
    for path in [&wav, &mp3] {
        let from_file = decode_ok(path);
        let from_bytes =
            decode_bytes(&std::fs::read(path).unwrap(), &DecodeLimits::default()).unwrap();
        assert_eq!(from_file, from_bytes, "{}", path.display());
    }
}

/// espeak-ng speech in every container: the decoded length matches what sox measures
/// on the source WAV, within 50 ms.
#[test]
fn espeak_speech_in_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let wav = espeak(
        dir.path(),
        "speech.wav",
        "The quick brown fox jumps over the lazy dog. Hark can decode this sentence.",
    );
    let want = soxi_duration(&wav);
    assert!(want > 2.0, "espeak produced {want} s");
    let encodings: [(&str, &[&str]); 6] = [
        ("speech.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"]),
        ("speech.flac", &["-c:a", "flac"]),
        ("speech.ogg", &["-c:a", "libvorbis"]),
        ("speech.opus", &["-c:a", "libopus", "-b:a", "32k"]),
        ("speech.m4a", &["-c:a", "aac", "-b:a", "64k"]),
        ("speech44.wav", &["-ar", "44100", "-ac", "2"]),
    ];
    let reference = decode_ok(&wav);
    assert!((reference.duration_secs - want).abs() <= 0.05);
    for (name, args) in encodings {
        let path = ffmpeg(dir.path(), &wav, name, args);
        let audio = decode_ok(&path);
        assert!(
            (audio.duration_secs - want).abs() <= 0.05,
            "{name}: {} s, sox says {want} s",
            audio.duration_secs
        );
        assert!(rms(&audio.samples) > 0.01, "{name}: silent output");
    }
}

/// Encoder priming and pre-skip are removed: a tone that starts after 0.5 s of silence
/// still starts at 0.5 s (word timings depend on it).
#[test]
fn onset_is_not_shifted_by_codec_delay() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("gap.wav");
    run(
        "sox",
        &[
            "-n",
            "-r",
            "44100",
            "-c",
            "1",
            "-b",
            "16",
            path_str(&wav),
            "synth",
            "1.5",
            "sine",
            "500",
            "gain",
            "-3",
            "pad",
            "0.5",
            "0",
        ],
    );
    let encodings: [(&str, &[&str]); 5] = [
        ("gap.mp3", &["-c:a", "libmp3lame"]),
        ("gap.flac", &["-c:a", "flac"]),
        ("gap.ogg", &["-c:a", "libvorbis"]),
        ("gap.opus", &["-c:a", "libopus"]),
        ("gap.m4a", &["-c:a", "aac"]),
    ];
    let mut files = vec![wav.clone()];
    for (name, args) in encodings {
        files.push(ffmpeg(dir.path(), &wav, name, args));
    }
    for path in files {
        let audio = decode_ok(&path);
        let onset = audio
            .samples
            .iter()
            .position(|s| s.abs() > 0.2)
            .expect("tone present") as f64
            / 16_000.0;
        assert!(
            (onset - 0.5).abs() <= 0.02,
            "{}: tone starts at {onset} s, want 0.5 s",
            path.display()
        );
        assert!(
            (audio.duration_secs - 2.0).abs() <= 0.05,
            "{}",
            path.display()
        );
    }
}

/// Opus is decoded by a pure-Rust decoder; its output must be libopus's. ffmpeg with
/// libopus decodes the same file to a 48 kHz float WAV, which goes through the same
/// downmix and resampler, so the two signals differ only by the Opus decoders: speech at
/// 24 kb/s (SILK) and tones at 48–96 kb/s (CELT), mono and stereo.
#[test]
fn opus_decodes_as_libopus_does() {
    let dir = tempfile::tempdir().unwrap();
    let speech = espeak(
        dir.path(),
        "speech.wav",
        "Opus decoding must match the reference decoder sample for sample, near enough.",
    );
    let tone = sox_tone(dir.path(), "tone.wav", 48_000, 2, 2.0, 440, &["-b", "16"]);
    let cases: [(&Path, &str, &[&str]); 3] = [
        (
            speech.as_path(),
            "speech.opus",
            &["-c:a", "libopus", "-b:a", "24k"],
        ),
        (
            tone.as_path(),
            "tone.opus",
            &["-c:a", "libopus", "-b:a", "96k"],
        ),
        (
            tone.as_path(),
            "tone-mono.opus",
            &["-c:a", "libopus", "-b:a", "48k", "-ac", "1"],
        ),
    ];
    for (source, name, args) in cases {
        let opus = ffmpeg(dir.path(), source, name, args);
        // libopus itself as the decoder (ffmpeg's native one resamples SILK differently),
        // every channel kept (the downmix is Hark's in both).
        let reference_wav = ffmpeg_from(
            dir.path(),
            &["-c:a", "libopus"],
            path_str(&opus),
            &format!("{name}.ref.wav"),
            &["-ar", "48000", "-c:a", "pcm_f32le"],
        );
        let ours = decode_ok(&opus).samples;
        let reference = decode_ok(&reference_wav).samples;
        // Same length and no shift: the pre-skip is dropped exactly once.
        assert!(
            ours.len().abs_diff(reference.len()) <= 2,
            "{name}: {} samples, libopus gives {}",
            ours.len(),
            reference.len()
        );
        let n = ours.len().min(reference.len());
        let signal: f64 = reference[..n].iter().map(|&x| f64::from(x).powi(2)).sum();
        let noise: f64 = ours[..n]
            .iter()
            .zip(&reference[..n])
            .map(|(&a, &b)| f64::from(a - b).powi(2))
            .sum();
        let snr_db = 10.0 * (signal / noise.max(1e-20)).log10();
        // 16-bit rounding inside the decoders leaves ~95 dB; a wrong frame, a shift or
        // a bad downmix leaves far less.
        assert!(
            snr_db >= 60.0,
            "{name}: {snr_db:.1} dB from libopus's output, want at least 60 dB"
        );
    }
}
