//! Shared helpers for the speech tests: locating the model and fixtures from the
//! environment (failing loudly when unset), an installed engine, WER scoring with a small
//! Whisper-like English normaliser, and espeak-ng synthesis.
#![allow(dead_code)]

use hark_speech::{EngineOptions, WhisperEngine};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

pub const MODEL_NAME: &str = "whisper-tiny.en";

pub fn env_dir(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            assert!(p.exists(), "{var}={} does not exist", p.display());
            p
        }
        _ => panic!(
            "{var} is not set. The speech tests need the Whisper tiny.en model directory \
             (HARK_TEST_MODEL_DIR) and the fixture directory (HARK_TEST_FIXTURES); see \
             crates/hark-speech/tests/README.md"
        ),
    }
}

pub fn fixtures() -> PathBuf {
    env_dir("HARK_TEST_FIXTURES")
}

pub fn model_dir() -> PathBuf {
    env_dir("HARK_TEST_MODEL_DIR")
}

struct Shared {
    engine: Arc<WhisperEngine>,
    _data: tempfile::TempDir,
}

/// An engine of its own with `max_concurrent` inference slots (for tests that keep it
/// busy), over a temporary data dir that lives as long as the returned guard.
pub fn engine_with_slots(max_concurrent: usize) -> (tempfile::TempDir, Arc<WhisperEngine>) {
    let data = tempfile::tempdir().unwrap();
    let registry = hark_speech::ModelRegistry::new(data.path());
    registry.install(&model_dir(), Some(MODEL_NAME)).unwrap();
    let options = EngineOptions {
        max_concurrent,
        ..EngineOptions::default()
    };
    let engine = Arc::new(WhisperEngine::new(data.path(), options).unwrap());
    (data, engine)
}

/// One engine per test binary with the model installed into a temporary data dir.
pub fn engine() -> Arc<WhisperEngine> {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let data = tempfile::tempdir().unwrap();
            let registry = hark_speech::ModelRegistry::new(data.path());
            let info = registry.install(&model_dir(), Some(MODEL_NAME)).unwrap();
            assert_eq!(info.name, MODEL_NAME);
            let engine = WhisperEngine::new(data.path(), EngineOptions::default()).unwrap();
            engine.load(MODEL_NAME).unwrap();
            Shared {
                engine: Arc::new(engine),
                _data: data,
            }
        })
        .engine
        .clone()
}

fn small_number(n: u64) -> Option<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    match n {
        0..=19 => Some(ONES[n as usize].to_string()),
        20..=99 => Some(if n.is_multiple_of(10) {
            TENS[(n / 10) as usize].to_string()
        } else {
            format!("{} {}", TENS[(n / 10) as usize], ONES[(n % 10) as usize])
        }),
        _ => None,
    }
}

/// Lowercase, drop punctuation, spell out small numbers and common abbreviations, split.
pub fn normalise(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase().replace(['-', '—'], " ");
    let mut out = Vec::new();
    for raw in lowered.split_whitespace() {
        let word: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .collect();
        let word = word.trim_matches('\'').to_string();
        if word.is_empty() {
            continue;
        }
        let spelled = match word.as_str() {
            "mr" => "mister".to_string(),
            "mrs" => "missus".to_string(),
            "dr" => "doctor".to_string(),
            w => match w.parse::<u64>().ok().and_then(small_number) {
                Some(s) => s,
                None => w.to_string(),
            },
        };
        out.extend(spelled.split_whitespace().map(str::to_string));
    }
    out
}

/// Word edit distance (substitutions + deletions + insertions) and reference length.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (e, n) = word_errors(reference, hypothesis);
    e as f64 / n.max(1) as f64
}

pub fn read_wav_16k(path: &Path) -> Vec<f32> {
    hark_audio::decode_file(path, &hark_audio::DecodeLimits::default())
        .unwrap()
        .samples
}

pub fn write_wav_16k(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// Speak `text` with espeak-ng into a 16-kHz mono WAV (resampled by hark-audio).
pub fn espeak(dir: &Path, name: &str, text: &str) -> Vec<f32> {
    let raw = dir.join(format!("{name}.espeak.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed (apt-get install espeak-ng)");
    assert!(status.success(), "espeak-ng failed");
    read_wav_16k(&raw)
}

/// Words of a transcription are ordered, non-overlapping and inside [lo, hi] ms.
pub fn assert_word_times(words: &[hark_core::speech::Word], lo: u64, hi: u64) {
    let mut last_end = lo;
    for w in words {
        assert!(w.start <= w.end, "word {w:?} ends before it starts");
        assert!(
            w.start >= last_end,
            "word {w:?} starts before the previous word ended ({last_end})"
        );
        assert!(w.end <= hi, "word {w:?} ends after the audio ({hi} ms)");
        assert!((0.0..=1.0).contains(&w.confidence));
        last_end = w.end;
    }
}

pub fn librivox() -> Vec<(PathBuf, String)> {
    let dir = fixtures().join("librivox");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .map(|p| {
            let text = std::fs::read_to_string(p.with_extension("txt")).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no librivox/*.wav in HARK_TEST_FIXTURES");
    out
}

pub const JFK_TEXT: &str =
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
