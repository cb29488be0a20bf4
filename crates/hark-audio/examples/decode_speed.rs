//! Decoding speed: decodes each file given (streamed, as the workers do) to 16 kHz mono
//! and prints its audio length, the best wall time of `--repeats` runs and the real-time
//! factor. `bench/audio/run.sh` runs it; build settings that touch the decoders' crates
//! are checked with it.
//!
//! Usage: decode_speed [--repeats N] FILE...

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let mut repeats = 3usize;
    if args.peek().map(String::as_str) == Some("--repeats") {
        args.next();
        repeats = args.next().ok_or("--repeats needs a number")?.parse()?;
    }
    let files: Vec<String> = args.collect();
    if files.is_empty() {
        return Err("usage: decode_speed [--repeats N] FILE...".into());
    }
    let limits = hark_audio::DecodeLimits::default();
    println!("file\taudio_s\tdecode_s\tx_realtime");
    for file in &files {
        let mut best = f64::INFINITY;
        let mut samples = 0usize;
        for _ in 0..repeats.max(1) {
            let started = Instant::now();
            let mut stream = hark_audio::open_file(std::path::Path::new(file), &limits)?;
            samples = 0;
            while let Some(chunk) = stream.next_chunk()? {
                samples += chunk.len();
            }
            best = best.min(started.elapsed().as_secs_f64());
        }
        let audio_secs = samples as f64 / 16_000.0;
        println!(
            "{file}\t{audio_secs:.1}\t{best:.3}\t{:.0}",
            audio_secs / best
        );
    }
    Ok(())
}
