//! Decoding long files in bounded memory: an hour of audio in WAV and MP3 goes through
//! the chunked decoder while its buffers stay the size of a packet and a resampler
//! chunk, and the chunks of a stream are exactly what the whole-file decoder returns.

mod common;

use common::{ffmpeg, path_str, run, sox_tone};
use hark_audio::{decode_file, open_file, DecodeLimits};
use std::path::Path;

/// Most samples the decoder may hold at once (~2 s at 16 kHz): packets are at most a
/// few thousand frames and the resampler's input chunk is 4096 frames.
const DECODER_BOUND: usize = 32_768;

/// Streams `path` to its end; returns (samples handed out, most samples held, duration).
fn stream_through(path: &Path) -> (u64, usize, f64) {
    let mut stream = open_file(path, &DecodeLimits::default()).unwrap();
    let mut total = 0u64;
    let mut most = stream.buffered_samples();
    while let Some(chunk) = stream.next_chunk().unwrap() {
        assert!(!chunk.is_empty());
        total += chunk.len() as u64;
        most = most.max(stream.buffered_samples());
    }
    let summary = stream.summary().unwrap().clone();
    assert_eq!(summary.samples, total);
    (total, most, summary.duration_secs)
}

#[test]
fn an_hour_of_wav_and_mp3_decodes_in_bounded_buffers() {
    let dir = tempfile::tempdir().unwrap();
    // WAV: stereo at 22.05 kHz (downmix and the FFT resampler), 1 h = 318 MB.
    let wav = sox_tone(
        dir.path(),
        "hour.wav",
        22_050,
        2,
        3_600.0,
        440,
        &["-b", "16"],
    );
    // MP3: 24 kHz mono made by ffmpeg from a generated tone.
    let mp3 = dir.path().join("hour.mp3");
    run(
        "ffmpeg",
        &[
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=24000:duration=3600",
            "-ac",
            "1",
            "-b:a",
            "32k",
            path_str(&mp3),
        ],
    );
    for (path, slack) in [(&wav, 0.001), (&mp3, 0.1)] {
        let (samples, most, secs) = stream_through(path);
        assert!(
            (secs - 3_600.0).abs() < slack,
            "{}: decoded {secs} s",
            path.display()
        );
        assert!(
            (samples as f64 - secs * 16_000.0).abs() <= 1.0,
            "{}: {samples} samples for {secs} s",
            path.display()
        );
        assert!(
            most <= DECODER_BOUND,
            "{}: the decoder held {most} samples at once (bound {DECODER_BOUND})",
            path.display()
        );
        eprintln!("{}: {samples} samples, at most {most} held", path.display());
    }
}

#[test]
fn chunks_are_exactly_the_whole_file_decode() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "t.wav", 44_100, 2, 7.3, 523, &["-b", "16"]);
    let files = [
        wav.clone(),
        ffmpeg(dir.path(), &wav, "t.mp3", &["-b:a", "64k"]),
        ffmpeg(
            dir.path(),
            &wav,
            "t.ogg",
            &["-c:a", "libopus", "-b:a", "32k"],
        ),
        ffmpeg(dir.path(), &wav, "t.m4a", &["-c:a", "aac", "-b:a", "64k"]),
        ffmpeg(dir.path(), &wav, "t.flac", &["-c:a", "flac"]),
    ];
    for path in &files {
        let whole = decode_file(path, &DecodeLimits::default()).unwrap();
        let mut stream = open_file(path, &DecodeLimits::default()).unwrap();
        let mut chunked = Vec::new();
        while let Some(chunk) = stream.next_chunk().unwrap() {
            chunked.extend_from_slice(chunk);
        }
        assert_eq!(chunked, whole.samples, "{}", path.display());
        let summary = stream.summary().unwrap();
        assert_eq!(summary.duration_secs, whole.duration_secs);
        assert_eq!(summary.source_sample_rate, whole.source_sample_rate);
        assert_eq!(summary.source_channels, whole.source_channels);
        // After the end the stream stays ended.
        assert!(stream.next_chunk().unwrap().is_none());
    }
}
