//! Decodes the same audio with the output projection screened in int8 (the default) and
//! computed wholly in f16, interleaved, and prints per file the fastest decode time of
//! each, the rows recomputed per token, and whether the two transcripts are identical
//! (tokens, words, times) and how far their word probabilities lie apart.
//!
//! `logits_screen MODEL_DIR REPEATS WAV...` (WAV: 16-kHz mono s16le)

use hark_speech::decode::transcribe_samples;
use hark_speech::{DecodeOptions, LoadedModel, RawTranscript};

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, repeats, files @ ..] = args.as_slice() else {
        anyhow::bail!("usage: logits_screen MODEL_DIR REPEATS WAV...");
    };
    let repeats: usize = repeats.parse()?;
    println!("{}", hark_speech::kernels::cpu_summary());
    let dir = std::path::Path::new(dir);
    let screened = LoadedModel::load("screened", dir)?;
    let f16 = LoadedModel::load("f16", dir)?.with_f16_logits();
    let options = DecodeOptions::default();
    let (mut total_screened, mut total_f16) = (0.0f64, 0.0f64);
    for file in files {
        let samples = read_wav(file)?;
        let (mut best_s, mut best_f) = (f64::INFINITY, f64::INFINITY);
        let mut last: Option<(RawTranscript, RawTranscript)> = None;
        for _ in 0..repeats.max(1) {
            let a = transcribe_samples(&screened, &samples, &options)?;
            let b = transcribe_samples(&f16, &samples, &options)?;
            best_s = best_s.min(a.stats.decode_secs);
            best_f = best_f.min(b.stats.decode_secs);
            last = Some((a, b));
        }
        let Some((a, b)) = last else { continue };
        let same_text = a.first_window_tokens == b.first_window_tokens
            && a.words.len() == b.words.len()
            && a.words
                .iter()
                .zip(&b.words)
                .all(|(x, y)| x.text == y.text && x.start == y.start && x.end == y.end)
            && a.segments == b.segments;
        let prob_gap = a
            .words
            .iter()
            .zip(&b.words)
            .map(|(x, y)| (x.probability - y.probability).abs())
            .fold(0.0f64, f64::max);
        let tokens = a.stats.tokens.max(1);
        println!(
            "{file}: tokens {} | decode screened {:.0} ms, f16 {:.0} ms ({:.2}x) | rescored rows/token {:.1} | identical {} | max word-probability gap {:.2e} | avg logprob {:.6} vs {:.6}",
            a.stats.tokens,
            best_s * 1e3,
            best_f * 1e3,
            best_f / best_s,
            a.stats.logits_rows_rescored as f64 / tokens as f64,
            same_text,
            prob_gap,
            a.stats.first_avg_logprob,
            b.stats.first_avg_logprob,
        );
        total_screened += best_s;
        total_f16 += best_f;
    }
    println!(
        "total decode: screened {:.0} ms, f16 {:.0} ms ({:.2}x)",
        total_screened * 1e3,
        total_f16 * 1e3,
        total_f16 / total_screened.max(1e-9)
    );
    Ok(())
}
