//! Real recordings from the package fixtures (prepared by scripts/test-fixtures.sh):
//! they decode to 16 kHz mono with the length sox measures, and the raw stream
//! recording converts through `StreamResampler`.

mod common;

use std::path::PathBuf;

use common::*;
use hark_audio::{decode_file, DecodeLimits, PcmEncoding, StreamResampler};

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("HARK_TEST_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hark/fixtures")))
        .expect("HOME or HARK_TEST_FIXTURES must be set");
    assert!(
        dir.join("jfk.wav").is_file() && dir.join("librivox").is_dir(),
        "test fixtures missing in {}: run scripts/test-fixtures.sh first",
        dir.display()
    );
    dir
}

#[test]
fn package_recordings_decode_with_their_measured_length() {
    let dir = fixtures();
    let mut files = vec![dir.join("jfk.wav")];
    for sub in ["librivox", "cards"] {
        let mut wavs: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        wavs.sort();
        assert!(!wavs.is_empty(), "no WAVs in {sub}");
        files.extend(wavs);
    }
    for path in files {
        let want = soxi_duration(&path);
        let audio = decode_file(&path, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(
            (audio.duration_secs - want).abs() < 0.01,
            "{}: {} s, sox says {want} s",
            path.display(),
            audio.duration_secs
        );
        assert!((audio.samples.len() as f64 - want * 16_000.0).abs() <= 2.0);
        assert!(rms(&audio.samples) > 0.005, "{}: silent", path.display());
    }
}

#[test]
fn goforward_raw_streams_through() {
    let raw = std::fs::read(fixtures().join("goforward.raw")).unwrap();
    let mut r = StreamResampler::new(16_000, PcmEncoding::PcmS16le).unwrap();
    let mut out = Vec::new();
    for chunk in raw.chunks(3_200) {
        out.extend(r.push(chunk));
    }
    out.extend(r.flush());
    assert_eq!(out.len(), raw.len() / 2);
    assert!(rms(&out) > 0.005);
}
