//! Where a streaming final turn's latency goes, engine only (no server, no network):
//! feeds WAV files (16-kHz mono s16le, each followed by 1.5 s of silence, as
//! `bench/streaming` does) through one `StreamingSession` in 100-ms chunks as fast as the
//! engine allows, and prints per final turn: its last word's end, the audio position
//! at which the final was emitted (audio latency: silence waited for), and the engine
//! time spent in the push that emitted it (compute latency).
//!
//! `stream_latency MODEL_DIR WAV...`

use hark_speech::{EngineOptions, ModelRegistry, StreamEvent, StreamingConfig, StreamingSession};
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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: MODEL_DIR WAV..."))?;
    println!("{}", hark_speech::kernels::cpu_summary());
    let data = tempfile_dir()?;
    let registry = ModelRegistry::new(&data);
    let info = registry.install(std::path::Path::new(&model_dir), Some("m"))?;
    let engine = Arc::new(hark_speech::WhisperEngine::new(
        &data,
        EngineOptions::default(),
    )?);
    let model = engine.load(&info.name)?;
    let mut audio = Vec::new();
    for path in args {
        audio.extend(read_wav(&path)?);
        audio.extend(std::iter::repeat_n(0.0f32, 24_000));
    }
    let mut session = StreamingSession::new(engine, model, StreamingConfig::default());
    let (mut audio_lat, mut compute_lat, mut partial_secs, mut partials) =
        (Vec::new(), Vec::new(), 0.0, 0);
    for (i, chunk) in audio.chunks(1600).enumerate() {
        let at_ms = ((i + 1) * 100) as u64;
        let clock = Instant::now();
        let events = session.push_audio(chunk)?;
        let secs = clock.elapsed().as_secs_f64();
        for event in events {
            match event {
                StreamEvent::Final(turn) => {
                    let end = turn.words.last().map_or(0, |w| w.end);
                    println!(
                        "final at {at_ms:>6} ms: last word ends {end:>6} ms, waited {:>4} ms of audio, push took {:>4.0} ms, end-of-turn confidence {:.2} :: {}",
                        at_ms.saturating_sub(end),
                        secs * 1e3,
                        turn.end_of_turn_confidence,
                        turn.text
                    );
                    audio_lat.push(at_ms.saturating_sub(end) as f64);
                    compute_lat.push(secs * 1e3);
                }
                StreamEvent::Partial(_) => {
                    partials += 1;
                    partial_secs += secs;
                }
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "finals {}: mean audio wait {:.0} ms, mean compute {:.0} ms; partial pushes {partials}: mean {:.0} ms",
        audio_lat.len(),
        mean(&audio_lat),
        mean(&compute_lat),
        partial_secs * 1e3 / partials.max(1) as f64
    );
    std::fs::remove_dir_all(&data)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hark-stream-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
