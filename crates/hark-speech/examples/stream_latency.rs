//! Where a streaming final turn's latency goes, engine only (no server, no network):
//! feeds WAV files (16-kHz mono s16le, each followed by 1.5 s of silence, as
//! `bench/streaming` does) through one `StreamingSession` in 100-ms chunks as fast as the
//! engine allows, and prints per final turn: its last word's end, the audio position
//! at which the final was emitted (audio latency: silence waited for), and the engine
//! time spent in the push that emitted it (compute latency).
//!
//! With `--realtime` the chunks are pushed at real-time pace instead (chunks that fell
//! due while a push was running go in one push, as the server merges queued audio), and
//! each final's latency is wall-clock time from the moment the chunk holding its last
//! word was due to the moment the push returned it: what `bench/streaming` measures,
//! without the network and the client.
//!
//! With `--streams N` (real-time pace only) N sessions on one engine play the programme
//! at once, stream i starting 0.7 s after stream i−1, so that all pause at nearly the same
//! moment (`bench/streaming`'s "in step" case, without the server, network and client);
//! the figures are over every stream's finals. `HARK_LOG=hark_speech=debug` prints one
//! line per inference on stderr (its wait for a slot, context, recheck, encoder and
//! decoder seconds).
//!
//! `stream_latency [--realtime [--streams N]] MODEL_DIR WAV...`

use hark_speech::{EngineOptions, ModelRegistry, StreamEvent, StreamingConfig, StreamingSession};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let realtime = args.first().is_some_and(|a| a == "--realtime");
    if realtime {
        args.remove(0);
    }
    let mut streams = 1usize;
    if realtime && args.first().is_some_and(|a| a == "--streams") {
        args.remove(0);
        if args.is_empty() {
            anyhow::bail!("--streams needs a count");
        }
        streams = args.remove(0).parse()?;
        anyhow::ensure!(streams >= 1, "--streams needs a count of at least 1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HARK_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut args = args.into_iter();
    let model_dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: [--realtime] MODEL_DIR WAV..."))?;
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
    if realtime {
        let start = Instant::now();
        let latencies = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..streams)
                .map(|i| {
                    let session = StreamingSession::new(
                        engine.clone(),
                        model.clone(),
                        StreamingConfig::default(),
                    );
                    let audio = &audio;
                    // In step: stream i starts 0.7 s after stream i-1.
                    let offset = start + Duration::from_millis(700 * i as u64);
                    scope.spawn(move || run_realtime(session, audio, offset, i))
                })
                .collect();
            let mut all = Vec::new();
            for run in runs {
                let latencies = run
                    .join()
                    .map_err(|_| anyhow::anyhow!("a stream's thread panicked"))??;
                all.extend(latencies);
            }
            anyhow::Ok(all)
        })?;
        if streams > 1 {
            print_latencies(&format!("all {streams} streams"), latencies);
        }
    } else {
        run_fast(
            StreamingSession::new(engine, model, StreamingConfig::default()),
            &audio,
        )?;
    }
    std::fs::remove_dir_all(&data)?;
    Ok(())
}

const CHUNK: usize = 1_600;

fn run_fast(mut session: StreamingSession, audio: &[f32]) -> anyhow::Result<()> {
    let (mut audio_lat, mut compute_lat, mut partial_secs, mut partials) =
        (Vec::new(), Vec::new(), 0.0, 0);
    for (i, chunk) in audio.chunks(CHUNK).enumerate() {
        let at_ms = ((i + 1) * 100) as u64;
        let clock = Instant::now();
        let mut events = session.push_audio(chunk)?;
        // As fast as the engine allows: each partial is waited for before the next push.
        events.extend(session.wait_partial()?);
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
    Ok(())
}

/// Plays `audio` into `session` at real-time pace from `start`; returns each final's
/// latency, seconds.
fn run_realtime(
    mut session: StreamingSession,
    audio: &[f32],
    start: Instant,
    stream: usize,
) -> anyhow::Result<Vec<f64>> {
    let chunks: Vec<&[f32]> = audio.chunks(CHUNK).collect();
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let due = |i: usize| Duration::from_millis(((i + 1) * 100) as u64);
    let (mut latencies, mut partials, mut longest_push) = (Vec::new(), 0usize, 0.0f64);
    let mut next = 0;
    while next < chunks.len() {
        let now = start.elapsed();
        if now < due(next) {
            std::thread::sleep(due(next) - now);
        }
        let now = start.elapsed();
        let mut pcm = Vec::new();
        while next < chunks.len() && due(next) <= now {
            pcm.extend_from_slice(chunks[next]);
            next += 1;
        }
        let clock = Instant::now();
        let events = session.push_audio(&pcm)?;
        let took = clock.elapsed().as_secs_f64();
        longest_push = longest_push.max(took);
        let at = start.elapsed();
        if took >= 0.1 {
            println!(
                "  [{stream}] push of {:>4} ms ending at {:>6} ms of audio took {:>4.0} ms",
                pcm.len() / 16,
                next * 100,
                took * 1e3
            );
        }
        for event in events {
            match event {
                StreamEvent::Final(turn) => {
                    let end = turn.words.last().map_or(0, |w| w.end);
                    // The chunk holding the last word's end was sent when it was due.
                    let sent = Duration::from_millis(end.div_ceil(100) * 100);
                    let latency = at.saturating_sub(sent).as_secs_f64();
                    println!(
                        "[{stream}] final at {:>6.0} ms: last word ends {end:>6} ms, latency {:>4.0} ms :: {}",
                        at.as_secs_f64() * 1e3,
                        latency * 1e3,
                        turn.text
                    );
                    latencies.push(latency);
                }
                StreamEvent::Partial(_) => partials += 1,
            }
        }
    }
    let stats = session.stats();
    println!(
        "[{stream}] partials {partials}; longest push {:.0} ms; decodes {}, full-window {}, rechecks skipped {}",
        longest_push * 1e3,
        stats.decodes,
        stats.full_window_decodes,
        stats.rechecks_skipped
    );
    print_latencies(&format!("[{stream}]"), latencies.clone());
    Ok(latencies)
}

fn print_latencies(label: &str, mut latencies: Vec<f64>) {
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{label} finals {}: latency p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        latencies.len(),
        pick(0.5),
        pick(0.95),
        latencies.last().copied().unwrap_or(0.0),
    );
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hark-stream-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
