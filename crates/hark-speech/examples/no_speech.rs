//! Does the engine write text where there is no speech? Decodes synthetic noise and
//! silence (and any WAV files given: 16-kHz mono s16le, e.g. real speech for contrast)
//! over the full 30-s window and over a short encoder context, printing per input the
//! text, the first window's no-speech probability and mean log-probability, and the time;
//! then feeds each noise through a `StreamingSession` and counts the final turns it emits.
//!
//! `no_speech MODEL_DIR [MIN_SHORT_CONTEXT_POSITIONS] [WAV...]`

use hark_speech::{
    DecodeOptions, EngineOptions, ModelRegistry, StreamEvent, StreamingConfig, StreamingSession,
};
use std::sync::Arc;
use std::time::Instant;

fn read_wav(path: &str) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .ok_or_else(|| anyhow::anyhow!("{path}: no data chunk"))?;
    Ok(bytes[data + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
        .collect())
}

/// Deterministic noise in [-1, 1).
fn white(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn db(v: f32) -> f32 {
    10f32.powf(v / 20.0)
}

/// Noise and near-silence of a few kinds and lengths (the situations a live turn's
/// VAD can open a turn on without speech).
fn noises() -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for secs in [2usize, 5] {
        let n = secs * 16_000;
        out.push((
            format!("dither -70 dB {secs}s"),
            white(n, 1).iter().map(|v| v * db(-70.0)).collect(),
        ));
        for level in [-45.0f32, -30.0, -20.0] {
            out.push((
                format!("white {level} dB {secs}s"),
                white(n, 2).iter().map(|v| v * db(level)).collect(),
            ));
        }
        // Brown noise (integrated white), a rumble like wind or traffic.
        let mut acc = 0.0f32;
        let brown: Vec<f32> = white(n, 3)
            .iter()
            .map(|v| {
                acc = 0.995 * acc + 0.05 * v;
                acc
            })
            .collect();
        let peak = brown.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-9);
        out.push((
            format!("brown -25 dB {secs}s"),
            brown.iter().map(|v| v / peak * db(-25.0)).collect(),
        ));
        // Mains hum with harmonics plus a little hiss.
        let hiss = white(n, 4);
        out.push((
            format!("hum 50 Hz -25 dB {secs}s"),
            (0..n)
                .map(|i| {
                    let t = i as f32 / 16_000.0;
                    let w = 2.0 * std::f32::consts::PI * 50.0 * t;
                    db(-25.0) * (w.sin() + 0.5 * (2.0 * w).sin() + 0.3 * (3.0 * w).sin()) / 1.8
                        + db(-50.0) * hiss[i]
                })
                .collect(),
        ));
        // Clicks/knocks: short bursts every 300 ms (typing, applause-like impulses).
        let burst = white(n, 5);
        out.push((
            format!("clicks -20 dB {secs}s"),
            (0..n)
                .map(|i| {
                    let phase = i % 4_800;
                    let env = if phase < 400 {
                        (-(phase as f32) / 80.0).exp()
                    } else {
                        0.0
                    };
                    burst[i] * db(-20.0) * env + db(-60.0) * burst[(i * 7) % n]
                })
                .collect(),
        ));
    }
    out
}

fn main() -> anyhow::Result<()> {
    println!("{}", hark_speech::kernels::cpu_summary());
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: MODEL_DIR [MIN_CTX] [WAV...]"))?;
    let rest: Vec<String> = args.collect();
    let (min_ctx, wavs) = match rest.first().and_then(|a| a.parse::<usize>().ok()) {
        Some(v) => (v, &rest[1..]),
        None => (300, &rest[..]),
    };
    // HARK_NO_SPEECH_RECHECK=0.3: the short decode falls back to the full window above
    // that no-speech probability when the window is in doubt, as live finals do (the
    // `short` columns then show the result that stands, with the encoder and decoder
    // seconds of both passes; `*` marks a recheck).
    let recheck = std::env::var("HARK_NO_SPEECH_RECHECK")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    let data = std::env::temp_dir().join(format!("hark-no-speech-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let registry = ModelRegistry::new(&data);
    let info = registry.install(std::path::Path::new(&model_dir), Some("m"))?;
    let engine = Arc::new(hark_speech::WhisperEngine::new(
        &data,
        EngineOptions::default(),
    )?);
    let model = engine.load(&info.name)?;
    let mut inputs = noises();
    for w in wavs {
        inputs.push((w.clone(), read_wav(w)?));
    }
    println!(
        "{:28} {:>5} | {:>6} {:>6} {:>6} {:30} | {:>5} {:>6} {:>5} {:>5} {:>6} {:>6} text",
        "input", "secs", "full", "p_ns", "lp", "text", "ctx", "short", "enc", "dec", "p_ns", "lp"
    );
    for (name, pcm) in &inputs {
        let full = DecodeOptions::default();
        let short = DecodeOptions {
            short_context: true,
            min_short_context: min_ctx,
            short_context_recheck: recheck,
            ..DecodeOptions::default()
        };
        let c = Instant::now();
        let a = engine.transcribe_pcm(&model, pcm, &full)?;
        let ta = c.elapsed().as_secs_f64();
        let c = Instant::now();
        let b = engine.transcribe_pcm(&model, pcm, &short)?;
        let tb = c.elapsed().as_secs_f64();
        let clip = |s: String| s.chars().take(30).collect::<String>();
        let (text_a, text_b) = (
            format!("{:?}", clip(a.text())),
            format!("{:?}", clip(b.text())),
        );
        println!(
            "{:28} {:5.1} | {:6.3} {:6.3} {:6.2} {:30} | {:5} {:6.3} {:5.3} {:5.3} {:6.3} {:6.2} {}",
            clip(name.clone()),
            pcm.len() as f64 / 16_000.0,
            ta,
            a.stats.first_no_speech_prob,
            a.stats.first_avg_logprob,
            text_a,
            format!(
                "{}{}",
                b.stats.audio_context,
                if b.stats.rechecked { "*" } else { "" }
            ),
            tb,
            b.stats.encode_secs,
            b.stats.decode_secs,
            b.stats.first_no_speech_prob,
            b.stats.first_avg_logprob,
            text_b,
        );
    }
    // End to end: each noise (1 s of silence either side) through a streaming session.
    let mut false_finals = 0;
    let mut turns = 0;
    for (name, pcm) in noises() {
        let mut audio = vec![0.0f32; 16_000];
        audio.extend(&pcm);
        audio.extend(std::iter::repeat_n(0.0f32, 32_000));
        let mut session =
            StreamingSession::new(engine.clone(), model.clone(), StreamingConfig::default());
        let mut events = Vec::new();
        for chunk in audio.chunks(1600) {
            events.extend(session.push_audio(chunk)?);
            events.extend(session.wait_partial()?);
        }
        events.extend(session.finish()?);
        for e in events {
            if let StreamEvent::Final(turn) = e {
                turns += 1;
                if !turn.text.trim().is_empty() {
                    false_finals += 1;
                    println!("streaming false final on {name}: {:?}", turn.text);
                }
            }
        }
    }
    println!(
        "streaming: {false_finals} final turns with text on {} noise inputs ({turns} finals)",
        noises().len()
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
