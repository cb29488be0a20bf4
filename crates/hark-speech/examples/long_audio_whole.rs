//! Memory benchmark driver (`bench/memory/run.sh`): decode a file whole and compute the
//! log-mel of all of it, as Hark did for every batch file before streaming (and still
//! does for short ones). Uses only APIs that exist before and after, so the script can
//! build it on an older commit. Prints one JSON line: samples, frames, and a checksum of
//! the 30-s windows the decoder would see at consecutive seeks.
//! Usage: `long_audio_whole FILE`.

use hark_speech::mel::{mel_window, MelFrontEnd, HOP};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: long_audio_whole FILE"))?;
    let started = std::time::Instant::now();
    let audio = hark_audio::decode_file(
        std::path::Path::new(&path),
        &hark_audio::DecodeLimits::default(),
    )?;
    let frontend = MelFrontEnd::new(80);
    let (mel, frames) = frontend.log_mel(&audio.samples, 480_000);
    let content = audio.samples.len() / HOP;
    let mut checksum = 0.0f64;
    let mut seek = 0;
    while seek < content {
        let valid = 3_000.min(content - seek);
        let window = mel_window(&mel, 80, frames, seek, valid, 3_000);
        checksum += window.iter().map(|v| f64::from(*v)).sum::<f64>();
        seek += 3_000;
    }
    println!(
        "{{\"mode\":\"whole\",\"samples\":{},\"content_frames\":{content},\"checksum\":{checksum},\"secs\":{:.1}}}",
        audio.samples.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
