//! Fixture helpers: build audio files at test time with sox, ffmpeg and espeak-ng.
//! A missing tool fails the test with an install hint; it never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `program args...`, failing the test with a clear message if the tool is missing
/// or exits non-zero.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`{program}` is required by the hark-audio tests but could not be run ({e}). \
             Install it with scripts/install-test-deps.sh \
             (apt-get install -y sox libsox-fmt-all ffmpeg espeak-ng)."
            )
        });
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a tool and returns its stdout.
pub fn capture(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("`{program}` is required by the hark-audio tests but could not be run ({e}); run scripts/install-test-deps.sh")
    });
    assert!(output.status.success(), "`{program}` failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A sine tone WAV made by sox. `encoding` args such as `["-b", "16"]` or
/// `["-e", "floating-point", "-b", "32"]`.
pub fn sox_tone(
    dir: &Path,
    name: &str,
    rate: u32,
    channels: u32,
    secs: f64,
    freq: u32,
    encoding: &[&str],
) -> PathBuf {
    let out = dir.join(name);
    let rate_s = rate.to_string();
    let ch_s = channels.to_string();
    let secs_s = format!("{secs}");
    let freq_s = freq.to_string();
    let mut args: Vec<&str> = vec!["-n", "-r", &rate_s, "-c", &ch_s];
    args.extend_from_slice(encoding);
    args.extend_from_slice(&[
        path_str(&out),
        "synth",
        &secs_s,
        "sine",
        &freq_s,
        "gain",
        "-3",
    ]);
    run("sox", &args);
    out
}

/// Re-encodes `input` with ffmpeg into `name` using `codec_args` (e.g. `["-c:a", "aac"]`).
pub fn ffmpeg(dir: &Path, input: &Path, name: &str, codec_args: &[&str]) -> PathBuf {
    ffmpeg_from(dir, &[], path_str(input), name, codec_args)
}

/// As [`ffmpeg`], with options that apply to the input (`["-c:a", "libopus"]` picks the
/// decoder, `["-f", "lavfi"]` makes `input` a generator).
pub fn ffmpeg_from(
    dir: &Path,
    input_args: &[&str],
    input: &str,
    name: &str,
    codec_args: &[&str],
) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<&str> = vec!["-nostdin", "-hide_banner", "-loglevel", "error", "-y"];
    args.extend_from_slice(input_args);
    args.push("-i");
    args.push(input);
    args.extend_from_slice(codec_args);
    args.push(path_str(&out));
    run("ffmpeg", &args);
    out
}

/// English speech synthesised by espeak-ng (22 050 Hz mono WAV).
pub fn espeak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let out = dir.join(name);
    run(
        "espeak-ng",
        &["-v", "en-us", "-s", "160", "-w", path_str(&out), text],
    );
    out
}

/// Duration in seconds as sox reports it.
pub fn soxi_duration(path: &Path) -> f64 {
    capture("soxi", &["-D", path_str(path)])
        .trim()
        .parse()
        .expect("soxi prints a number")
}

/// The frequency (Hz, 5 Hz resolution) with the most energy in `samples` at 16 kHz,
/// by a direct DFT over a 0.5 s window from the middle of the signal.
pub fn dominant_frequency(samples: &[f32]) -> f64 {
    let n = 8000.min(samples.len());
    let start = (samples.len() - n) / 2;
    let window = &samples[start..start + n];
    let mut best = (0.0, 0.0);
    let mut freq = 50.0;
    while freq < 7950.0 {
        let w = 2.0 * std::f64::consts::PI * freq / 16_000.0;
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (i, &s) in window.iter().enumerate() {
            let phase = w * i as f64;
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        let power = re * re + im * im;
        if power > best.1 {
            best = (freq, power);
        }
        freq += 5.0;
    }
    best.0
}

pub fn rms(samples: &[f32]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// A small deterministic xorshift generator (no extra test dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
