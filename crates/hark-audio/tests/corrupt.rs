//! Hostile and out-of-range input: truncated, garbage, empty, non-audio, too short and
//! too long files each give the right error, and nothing panics.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hark_audio::{decode_bytes, decode_file, AudioError, DecodeLimits};
use hark_core::speech::SpeechError;

/// One 6-second tone in every container, built in `dir`.
fn all_formats(dir: &Path) -> Vec<PathBuf> {
    let wav = sox_tone(dir, "t.wav", 44_100, 2, 6.0, 440, &["-b", "16"]);
    let mut files = vec![wav.clone()];
    let encodings: [(&str, &[&str]); 5] = [
        ("t.mp3", &["-c:a", "libmp3lame"]),
        ("t.flac", &["-c:a", "flac"]),
        ("t.ogg", &["-c:a", "libvorbis"]),
        ("t.opus", &["-c:a", "libopus"]),
        ("t.m4a", &["-c:a", "aac"]),
    ];
    for (name, args) in encodings {
        files.push(ffmpeg(dir, &wav, name, args));
    }
    files
}

/// Acceptable outcomes for damaged audio: some shorter audio, or a client error.
fn assert_graceful(
    label: &str,
    result: Result<hark_audio::DecodedAudio, AudioError>,
    max_secs: f64,
) {
    match result {
        Ok(audio) => {
            assert!(
                audio.duration_secs <= max_secs + 0.1,
                "{label}: {} s",
                audio.duration_secs
            );
            assert!(audio
                .samples
                .iter()
                .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
        }
        Err(AudioError::NotAudio(_)) | Err(AudioError::TooShort) => {}
        Err(other) => panic!("{label}: unexpected {other:?}"),
    }
}

#[test]
fn truncated_halfway_decodes_the_first_half_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    for path in all_formats(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        let half = &bytes[..bytes.len() / 2];
        let label = format!("{} truncated", path.display());
        let result = decode_bytes(half, &DecodeLimits::default());
        // Formats with the index up front must give the first half back.
        let ext = path.extension().unwrap().to_str().unwrap();
        if ext != "m4a" {
            let audio = result.clone().unwrap_or_else(|e| panic!("{label}: {e:?}"));
            assert!(
                audio.duration_secs > 2.0 && audio.duration_secs < 4.0,
                "{label}: {} s",
                audio.duration_secs
            );
        }
        assert_graceful(&label, result, 6.0);
        // The same through a file on disk.
        let cut = dir.path().join(format!("cut.{ext}"));
        std::fs::write(&cut, half).unwrap();
        assert_graceful(&label, decode_file(&cut, &DecodeLimits::default()), 6.0);
    }
}

#[test]
fn valid_header_then_random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for path in all_formats(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        for keep in [64usize, 512, 4096] {
            let mut hostile = bytes[..keep.min(bytes.len())].to_vec();
            hostile.extend(rng.bytes(64 * 1024));
            let label = format!("{} header {keep} + noise", path.display());
            assert_graceful(
                &label,
                decode_bytes(&hostile, &DecodeLimits::default()),
                6.0,
            );
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for path in all_formats(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        for round in 0..12 {
            let mut damaged = bytes.clone();
            for _ in 0..(1 + round * 4) {
                let i = (rng.next_u64() as usize) % damaged.len();
                damaged[i] = rng.next_u64() as u8;
            }
            let label = format!("{} damage round {round}", path.display());
            assert_graceful(
                &label,
                decode_bytes(&damaged, &DecodeLimits::default()),
                6.5,
            );
        }
    }
}

#[test]
fn zero_length_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let want = AudioError::NotAudio("application/x-empty".into());
    assert_eq!(
        decode_file(&empty, &DecodeLimits::default()).unwrap_err(),
        want
    );
    assert_eq!(
        decode_bytes(b"", &DecodeLimits::default()).unwrap_err(),
        want
    );
}

#[test]
fn header_only_wav_is_too_short() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "t.wav", 16_000, 1, 1.0, 440, &["-b", "16"]);
    let bytes = std::fs::read(&wav).unwrap();
    let result = decode_bytes(&bytes[..44], &DecodeLimits::default());
    assert!(
        matches!(
            result,
            Err(AudioError::TooShort) | Err(AudioError::NotAudio(_))
        ),
        "{result:?}"
    );
}

#[test]
fn missing_file_is_io() {
    let result = decode_file(
        Path::new("/nonexistent/hark/audio.wav"),
        &DecodeLimits::default(),
    );
    assert!(matches!(result, Err(AudioError::Io(_))), "{result:?}");
}

#[test]
fn non_audio_files_are_refused_with_their_type() {
    let dir = tempfile::tempdir().unwrap();
    let png = ffmpeg_from(
        dir.path(),
        &["-f", "lavfi"],
        "color=c=red:s=32x32",
        "image.png",
        &["-frames:v", "1"],
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "Meeting notes: nothing to hear here.\n").unwrap();
    let json = dir.path().join("data.json");
    std::fs::write(&json, r#"{"audio_url": "https://example.invalid/a.mp3"}"#).unwrap();
    // A text file named like audio is still text.
    let fake_mp3 = dir.path().join("song.mp3");
    std::fs::write(&fake_mp3, "this is not an mp3 at all").unwrap();
    let cases = [
        (&png, "image/png"),
        (&text, "text/plain"),
        (&json, "application/json"),
        (&fake_mp3, "text/plain"),
    ];
    for (path, kind) in cases {
        let err = decode_file(path, &DecodeLimits::default()).unwrap_err();
        assert_eq!(err, AudioError::NotAudio(kind.into()), "{}", path.display());
        let speech: SpeechError = err.into();
        assert_eq!(
            speech.to_string(),
            format!("File does not appear to contain audio. File type is {kind} (unknown).")
        );
    }
    // Pure noise with no recognisable header.
    let noise = Rng(42).bytes(100_000);
    assert!(matches!(
        decode_bytes(&noise, &DecodeLimits::default()),
        Err(AudioError::NotAudio(_))
    ));
}

#[test]
fn too_short_below_160_ms() {
    let dir = tempfile::tempdir().unwrap();
    let short = sox_tone(dir.path(), "short.wav", 16_000, 1, 0.1, 440, &["-b", "16"]);
    assert_eq!(
        decode_file(&short, &DecodeLimits::default()).unwrap_err(),
        AudioError::TooShort
    );
    let short_mp3 = ffmpeg(dir.path(), &short, "short.mp3", &["-c:a", "libmp3lame"]);
    assert_eq!(
        decode_file(&short_mp3, &DecodeLimits::default()).unwrap_err(),
        AudioError::TooShort
    );
    let speech: SpeechError = AudioError::TooShort.into();
    assert_eq!(speech.to_string(), "Audio duration is too short.");
    let ok = sox_tone(dir.path(), "ok.wav", 16_000, 1, 0.2, 440, &["-b", "16"]);
    let audio = decode_file(&ok, &DecodeLimits::default()).unwrap();
    assert_eq!(audio.samples.len(), 3200);
}

#[test]
fn too_long_is_refused_with_the_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "long.wav", 16_000, 1, 6.0, 440, &["-b", "16"]);
    let limits = DecodeLimits {
        max_duration_secs: 2.0,
    };
    let mut files = vec![wav.clone()];
    files.push(ffmpeg(
        dir.path(),
        &wav,
        "long.mp3",
        &["-c:a", "libmp3lame"],
    ));
    files.push(ffmpeg(dir.path(), &wav, "long.opus", &["-c:a", "libopus"]));
    files.push(ffmpeg(dir.path(), &wav, "long.m4a", &["-c:a", "aac"]));
    // Raw ADTS has no declared length, so the limit trips while decoding.
    files.push(ffmpeg(
        dir.path(),
        &wav,
        "long.aac",
        &["-c:a", "aac", "-f", "adts"],
    ));
    for path in &files {
        match decode_file(path, &limits) {
            Err(AudioError::TooLong { secs, max_secs }) => {
                assert_eq!(max_secs, 2, "{}", path.display());
                assert!(
                    (secs - 6.0).abs() < 0.1,
                    "{}: reported {secs} s",
                    path.display()
                );
                let speech: SpeechError = AudioError::TooLong { secs, max_secs }.into();
                assert_eq!(
                    speech.to_string(),
                    "Audio duration of 6 seconds exceeds the maximum of 2 seconds."
                );
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    // Exactly at the limit is fine.
    let limits = DecodeLimits {
        max_duration_secs: 6.0,
    };
    assert!(decode_file(&wav, &limits).is_ok());
}

/// A WAV header claiming far more data than the file holds (as a streamed or cut-off
/// WAV has) must not be refused as too long: the lie is caught by counting, and the
/// real (short) audio decodes.
#[test]
fn lying_length_header_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "t.wav", 16_000, 1, 1.0, 440, &["-b", "16"]);
    let original = std::fs::read(&wav).unwrap();
    let data = original.windows(4).position(|w| w == b"data").unwrap();
    for claimed in [0x7FFF_0000u32, u32::MAX] {
        let mut bytes = original.clone();
        bytes[data + 4..data + 8].copy_from_slice(&claimed.to_le_bytes());
        let riff = claimed.saturating_add(data as u32 + 4);
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        let limits = DecodeLimits {
            max_duration_secs: 10.0,
        };
        let audio = decode_bytes(&bytes, &limits).unwrap_or_else(|e| panic!("{claimed:#x}: {e:?}"));
        assert!(
            (audio.duration_secs - 1.0).abs() < 0.05,
            "{}",
            audio.duration_secs
        );
        assert_eq!(audio.samples.len(), 16_000);
    }
}
