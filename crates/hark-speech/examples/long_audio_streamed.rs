//! Memory benchmark driver (`bench/memory/run.sh`): the streamed counterpart of
//! `long_audio_whole`. Surveys the file (one decoding pass), then decodes it again and
//! takes the log-mel window by window ([`hark_speech::long_audio`]), as a long batch
//! file is transcribed. Prints the same JSON line (the checksum must match).
//! Usage: `long_audio_streamed FILE`.

use hark_speech::decode::MelWindows;
use hark_speech::long_audio::{survey, SampleSpan, StreamedMel};
use hark_speech::mel::MelFrontEnd;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: long_audio_streamed FILE"))?;
    let path = std::path::Path::new(&path);
    let limits = hark_audio::DecodeLimits::default();
    let started = std::time::Instant::now();
    let frontend = MelFrontEnd::new(80);
    let span = SampleSpan::default();
    let mut first = hark_audio::open_file(path, &limits)?;
    let surveyed = survey(&frontend, &mut first, span)?;
    drop(first);
    let mut second = hark_audio::open_file(path, &limits)?;
    let mut windows = StreamedMel::new(&frontend, &mut second, span, &surveyed);
    let content = windows.content_frames();
    let mut checksum = 0.0f64;
    let mut most_held = 0;
    let mut seek = 0;
    while seek < content {
        let valid = 3_000.min(content - seek);
        let window = windows.window(seek, valid, 3_000)?;
        checksum += window.iter().map(|v| f64::from(*v)).sum::<f64>();
        most_held = most_held.max(windows.buffered_values());
        seek += 3_000;
    }
    println!(
        "{{\"mode\":\"streamed\",\"samples\":{},\"content_frames\":{content},\"checksum\":{checksum},\"secs\":{:.1},\"most_values_held\":{most_held},\"energy_frames\":{}}}",
        surveyed.len,
        started.elapsed().as_secs_f64(),
        surveyed.frame_energy_db.len()
    );
    Ok(())
}
