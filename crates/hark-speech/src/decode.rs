//! Turning audio into timed words with a loaded model: 30-s windows with timestamp-driven
//! seeking, greedy decoding under Whisper's suppression and timestamp rules, no-speech
//! skipping, language detection, and word timings from cross-attention alignment heads + DTW.

use crate::align::{dtw_path, median_filter_rows};
use crate::error::ModelError;
use crate::mel::{mel_window, MelFrontEnd, HOP};
use crate::model::{CrossKv, EncoderPrecision, Whisper};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Seconds per timestamp token and per encoder position.
const TIME_PRECISION: f64 = 0.02;
/// Whisper pads the audio with one window (30 s) of zeros before the log-mel.
pub(crate) const SAMPLES_PER_WINDOW: usize = 480_000;
/// Samples per frame of the energy that word boundaries snap to (10 ms).
pub(crate) const FRAME_ENERGY_SAMPLES: usize = 160;

/// A model with everything needed to decode: weights, tokenizer, front end and the
/// generation settings from the model directory.
pub struct LoadedModel {
    pub name: String,
    pub whisper: Whisper,
    pub tokenizer: Tokenizer,
    pub frontend: MelFrontEnd,
    pub suppress: Vec<u32>,
    pub suppress_begin: Vec<u32>,
    pub alignment_heads: Vec<(usize, usize)>,
    /// `.`, `?` and `!`: how likely the model thinks a sentence ends (for live turns).
    pub sentence_end_tokens: Vec<u32>,
}

impl LoadedModel {
    /// Loads the model in `dir` with the encoder precision `HARK_ENCODER_PRECISION` sets,
    /// else the kernel path's default ([`EncoderPrecision::configured`]).
    pub fn load(name: &str, dir: &Path) -> Result<Self, ModelError> {
        Self::load_with_precision(name, dir, EncoderPrecision::configured())
    }

    /// [`Self::load`] with the encoder's weight products in `precision`.
    pub fn load_with_precision(
        name: &str,
        dir: &Path,
        precision: EncoderPrecision,
    ) -> Result<Self, ModelError> {
        let whisper = Whisper::load_dir(dir)?.with_encoder_precision(precision);
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > whisper.dims.n_vocab + 2000 {
            return Err(ModelError::Invalid(
                "tokenizer is larger than the model vocabulary".into(),
            ));
        }
        let sp = &tokenizer.specials;
        if [sp.eot, sp.sot, sp.no_timestamps]
            .iter()
            .any(|id| *id as usize >= whisper.dims.n_vocab)
        {
            return Err(ModelError::Invalid(
                "tokenizer control tokens lie outside the model vocabulary".into(),
            ));
        }
        let frontend = MelFrontEnd::new(whisper.dims.n_mels);
        let mut settings = serde_json::Map::new();
        for file in ["generation_config.json", "config.json"] {
            if let Ok(bytes) = std::fs::read(dir.join(file)) {
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                {
                    for (k, v) in map {
                        settings.entry(k).or_insert(v);
                    }
                }
            }
        }
        let ids = |keys: &[&str]| -> Option<Vec<u32>> {
            keys.iter()
                .find_map(|k| settings.get(*k))
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_i64())
                        .filter(|x| *x >= 0)
                        .map(|x| x as u32)
                        .collect()
                })
        };
        let suppress = ids(&["suppress_ids", "suppress_tokens"]).unwrap_or_default();
        let suppress_begin = ids(&["suppress_ids_begin", "begin_suppress_tokens"])
            .unwrap_or_else(|| vec![220, tokenizer.specials.eot]);
        let dims = &whisper.dims;
        let mut alignment_heads: Vec<(usize, usize)> = settings
            .get("alignment_heads")
            .and_then(|v| v.as_array())
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|p| {
                        let p = p.as_array()?;
                        Some((p.first()?.as_u64()? as usize, p.get(1)?.as_u64()? as usize))
                    })
                    .filter(|(l, h)| *l < dims.n_decoder_layers && *h < dims.n_heads)
                    .collect()
            })
            .unwrap_or_default();
        if alignment_heads.is_empty() {
            // Whisper's default: every head of the upper half of the decoder.
            for l in dims.n_decoder_layers / 2..dims.n_decoder_layers {
                for h in 0..dims.n_heads {
                    alignment_heads.push((l, h));
                }
            }
        }
        let sentence_end_tokens = tokenizer
            .sentence_end_tokens()
            .into_iter()
            .filter(|id| (*id as usize) < dims.n_vocab)
            .collect();
        Ok(LoadedModel {
            sentence_end_tokens,
            name: name.to_string(),
            whisper,
            tokenizer,
            frontend,
            suppress,
            suppress_begin,
            alignment_heads,
        })
    }
}

/// Stops a decode in flight. Set from any thread; the decode looks at it between its
/// steps (after the log-mel, between encoder layers, before each decoder step) and then
/// returns [`ModelError::Cancelled`], releasing its inference slot. A live session
/// cancels its own partial this way once the turn's final is wanted: the partial's text
/// would be superseded anyway, and its compute is what the final needs.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `Err(Cancelled)` once `cancel` (if any) is set.
pub(crate) fn check_cancel(cancel: Option<&CancelFlag>) -> Result<(), ModelError> {
    match cancel {
        Some(flag) if flag.is_cancelled() => Err(ModelError::Cancelled),
        _ => Ok(()),
    }
}

/// Knobs of one transcription.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language code for multilingual models; `None` detects it. Ignored by `.en` models.
    pub language: Option<String>,
    /// Longest allowed first timestamp of a window, seconds.
    pub max_initial_timestamp: f64,
    pub no_speech_threshold: f64,
    pub logprob_threshold: f64,
    /// Most tokens sampled per window.
    pub sample_len: usize,
    /// Encode audio shorter than a window over a shorter context (live turns), not
    /// padded to 30 s: several times faster, at some risk to accuracy on long turns.
    pub short_context: bool,
    /// The shortest context `short_context` uses, in encoder positions (50 per second).
    pub min_short_context: usize,
    /// With `short_context`: when the first window's no-speech probability over the
    /// short context exceeds this and the window is in doubt by Whisper's own measures
    /// ([`needs_full_window`]), the audio is decoded again ([`recheck_options`]: over a
    /// 15-s context first when only the text is in doubt, over the full window when the
    /// no-speech probability is high or the 15-s context is in doubt too) and that
    /// result stands. Whisper's no-speech rule was trained on full windows: on a short one
    /// it can write words into noise (`examples/no_speech.rs`), while on speech the
    /// probability stays lower, so only doubtful audio pays for the full window. `None`:
    /// the short context's result always stands.
    pub short_context_recheck: Option<f64>,
    /// With `short_context_recheck`: a window in doubt is not decoded again here; the
    /// result says so ([`DecodeStats::recheck_owed`]) and the caller decides when
    /// (and whether) to pay for the recheck ([`recheck_options`]). A live session defers it while the
    /// engine is busy, because the speaker often resumes and the decode is then wasted.
    pub defer_recheck: bool,
    /// Tokens the first window is expected to start with (e.g. the previous decode of
    /// the same live turn, from [`RawTranscript::first_window_tokens`]). They are fed to
    /// the decoder in one batch and kept while greedy decoding would have chosen them
    /// anyway, so the result is the same as without a draft, only cheaper.
    pub draft: Vec<u32>,
    /// Stops the decode early with [`ModelError::Cancelled`] once set.
    pub cancel: Option<CancelFlag>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: None,
            max_initial_timestamp: 1.0,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            sample_len: 224,
            short_context: false,
            min_short_context: 500,
            short_context_recheck: None,
            defer_recheck: false,
            draft: Vec::new(),
            cancel: None,
        }
    }
}

/// A recognised word; times in seconds from the start of the decoded samples.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// A timestamped stretch of text as the model segmented it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawTranscript {
    pub words: Vec<TimedWord>,
    pub segments: Vec<Segment>,
    pub language: String,
    pub language_probability: Option<f64>,
    /// The tokens sampled in the first window (without the prompt and end-of-text): a
    /// draft for decoding the same audio again, extended.
    pub first_window_tokens: Vec<u32>,
    /// The model's probability, right after the transcript's last text token, that the
    /// next token is `.`, `?` or `!` (before the timestamp rules): whether it thinks the
    /// sentence is complete even when it did not write the full stop. `None` without text.
    pub sentence_end_probability: Option<f64>,
    pub stats: DecodeStats,
}

/// Where the time of one transcription went (for profiling and the benchmark).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DecodeStats {
    pub windows: usize,
    pub tokens: usize,
    pub mel_secs: f64,
    pub encode_secs: f64,
    pub decode_secs: f64,
    pub align_secs: f64,
    /// Draft tokens kept (decoded in one batch instead of one step each).
    pub draft_tokens_accepted: usize,
    /// Encoder positions per window (50 per second; the model's full window unless
    /// `short_context` shortened it).
    pub audio_context: usize,
    /// The first window's probability of `<|nocaptions|>` and mean log-probability of
    /// its sampled tokens: what the no-speech rule judged it by (0 without windows).
    pub first_no_speech_prob: f64,
    pub first_avg_logprob: f64,
    /// The short context's result was doubtful and the audio was decoded again
    /// (`DecodeOptions::short_context_recheck`, [`recheck_options`]); the other figures
    /// are the last decode's (`audio_context` says which), the times are all decodes'.
    pub rechecked: bool,
    /// The short context's result was in doubt as for `rechecked`, but the recheck was
    /// left to the caller (`DecodeOptions::defer_recheck`): this result is the short
    /// context's, and the recheck's may differ.
    pub recheck_owed: bool,
}

impl RawTranscript {
    pub fn text(&self) -> String {
        self.words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One sampled token with the decoder step whose output chose it.
struct Sampled {
    token: u32,
    prob: f32,
    /// Probability of a sentence-ending token at this step, before the timestamp rules.
    sentence_end: f32,
    /// Index of the producing step in the window's alignment-row buffer.
    step: usize,
}

struct WindowResult {
    sampled: Vec<Sampled>,
    /// The producing step of the token that ended the text (eot or a cut), for the DTW end row.
    no_speech_prob: f64,
    avg_logprob: f64,
    align_rows: Vec<f32>,
    align_frames: usize,
    /// How many draft tokens greedy decoding confirmed.
    draft_accepted: usize,
}

impl WindowResult {
    /// The sentence-end probability at the step after the window's last text token.
    fn sentence_end_after_text(&self, model: &LoadedModel) -> Option<f64> {
        let last_text = self
            .sampled
            .iter()
            .rposition(|s| model.tokenizer.is_text(s.token))?;
        self.sampled
            .get(last_text + 1)
            .map(|s| s.sentence_end as f64)
    }
}

/// The encoder positions for audio of `content_frames` mel frames: the model's full
/// window, or with `short_context` a shorter one for short audio (the speech plus a
/// margin, rounded up, never below `min_short_context`).
fn audio_context(n_audio_ctx: usize, content_frames: usize, opts: &DecodeOptions) -> usize {
    if !opts.short_context || content_frames >= 2 * n_audio_ctx {
        return n_audio_ctx;
    }
    const STEP: usize = 50; // one second of encoder positions
    let needed = (content_frames / 2 + STEP).div_ceil(STEP) * STEP;
    needed.clamp(opts.min_short_context.min(n_audio_ctx), n_audio_ctx)
}

/// The log-mel of the audio being transcribed, handed out one window at a time.
pub trait MelWindows {
    /// Mel frames of audio (samples / [`HOP`]), padding not counted.
    fn content_frames(&self) -> usize;
    /// `[n_mels, width]` channel-major: `valid` frames from frame `start`, then zeros
    /// (in log-mel space, as Whisper's `pad_or_trim`). Successive calls never go back
    /// to an earlier `start`.
    fn window(&mut self, start: usize, valid: usize, width: usize) -> Result<Vec<f32>, ModelError>;
}

/// The log-mel of a whole signal held in memory.
struct WholeMel {
    mel: Vec<f32>,
    n_mels: usize,
    frames: usize,
    content_frames: usize,
}

impl MelWindows for WholeMel {
    fn content_frames(&self) -> usize {
        self.content_frames
    }

    fn window(&mut self, start: usize, valid: usize, width: usize) -> Result<Vec<f32>, ModelError> {
        Ok(mel_window(
            &self.mel,
            self.n_mels,
            self.frames,
            start,
            valid,
            width,
        ))
    }
}

/// Transcribe 16-kHz mono samples. Runs on the current rayon pool.
pub fn transcribe_samples(
    model: &LoadedModel,
    samples: &[f32],
    opts: &DecodeOptions,
) -> Result<RawTranscript, ModelError> {
    let clock = std::time::Instant::now();
    check_cancel(opts.cancel.as_ref())?;
    let (mel, frames) = model.frontend.log_mel(samples, SAMPLES_PER_WINDOW);
    let mel_secs = clock.elapsed().as_secs_f64();
    let mut windows = WholeMel {
        mel,
        n_mels: model.whisper.dims.n_mels,
        frames,
        content_frames: samples.len() / HOP,
    };
    let mut out = transcribe_windows(model, &mut windows, opts)?;
    out.stats.mel_secs += mel_secs;
    drop(windows);
    snap_words_to_energy(&mut out.words, &frame_energy_db(samples));
    let dims = &model.whisper.dims;
    let shortened = out.stats.audio_context < dims.n_audio_ctx;
    if shortened
        && out.stats.windows > 0
        && opts
            .short_context_recheck
            .is_some_and(|limit| needs_full_window(&out, limit, opts))
    {
        if opts.defer_recheck {
            out.stats.recheck_owed = true;
            return Ok(out);
        }
        let mut again = transcribe_samples(model, samples, &recheck_options(&out.stats, opts))?;
        let s = &mut again.stats;
        s.rechecked = true;
        s.mel_secs += out.stats.mel_secs;
        s.encode_secs += out.stats.encode_secs;
        s.decode_secs += out.stats.decode_secs;
        s.align_secs += out.stats.align_secs;
        return Ok(again);
    }
    Ok(out)
}

/// Encoder positions (15 s) of the first recheck of a short context that is in doubt by
/// its text alone (log-probability or repetition), not by its no-speech probability.
pub const RECHECK_CONTEXT: usize = 750;

/// How to redo a short-context decode in doubt (its first window's figures are `short`):
/// a window the model itself takes for no speech (probability above
/// `no_speech_threshold`: noise scores 0.83–0.97) goes straight to the full 30-s window,
/// where Whisper's no-speech rule was trained; one in doubt only by its text (a second
/// of speech, "S NOT…" at −1.24 for "Ask not!") is redone over a 15-s context first,
/// half the full window's encoder positions, with the same recheck, so the full window
/// follows only if that is in doubt too. JFK's "Ask not!": 6 s (300 positions) gave
/// "S NOT…" (no-speech 0.54, −1.24), 15 s "Ask not!" (0.38, −0.96), the full window
/// "Ask not!" (0.27, −0.87).
pub fn recheck_options(short: &DecodeStats, opts: &DecodeOptions) -> DecodeOptions {
    if short.first_no_speech_prob <= opts.no_speech_threshold
        && short.audio_context < RECHECK_CONTEXT
    {
        DecodeOptions {
            short_context: true,
            min_short_context: RECHECK_CONTEXT,
            defer_recheck: false,
            ..opts.clone()
        }
    } else {
        DecodeOptions {
            short_context: false,
            defer_recheck: false,
            ..opts.clone()
        }
    }
}

/// Whisper's temperature fallback redoes a window whose text compresses better than this
/// (zlib): a repetition loop ("s s s s …", "and so, and so, …").
const COMPRESSION_RATIO_LIMIT: f64 = 2.4;

/// Whether a short-context decode (one window) must be redone over the full window: its
/// no-speech probability exceeds `recheck_above`, and it is in doubt by Whisper's own
/// measures: the probability also exceeds `no_speech_threshold` (noise measured 0.83–0.97
/// over short contexts), or the text's mean log-probability is below
/// `logprob_threshold`, or the text is a repetition loop. Speech fragments of a second
/// or two score 0.3–0.6 over a short context while their text is sound (JFK's "what your
/// country can do for you": 0.37), and over the full window Whisper's no-speech rule
/// (probability above 0.6 *and* log-probability below −1) would keep such text anyway.
pub fn needs_full_window(out: &RawTranscript, recheck_above: f64, opts: &DecodeOptions) -> bool {
    let stats = &out.stats;
    stats.first_no_speech_prob > recheck_above
        && (stats.first_no_speech_prob > opts.no_speech_threshold
            || stats.first_avg_logprob < opts.logprob_threshold
            || compression_ratio(&out.text()) > COMPRESSION_RATIO_LIMIT)
}

/// Bytes of `text` per byte of its zlib compression, as Whisper measures it.
pub fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a `Vec` cannot fail.
    let compressed = encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_or(bytes.len(), |v| v.len());
    bytes.len() as f64 / compressed.max(1) as f64
}

/// Transcribe audio of which only the current window's log-mel is held
/// ([`crate::long_audio::StreamedMel`]); `frame_energy_db` is the audio's
/// [`frame_energy_db`], measured beforehand. The same result as [`transcribe_samples`]
/// on the whole signal, for audio longer than a window (shorter audio may be decoded
/// over a shorter context there, and rechecked).
pub fn transcribe_streamed(
    model: &LoadedModel,
    windows: &mut dyn MelWindows,
    frame_energy_db: &[f32],
    opts: &DecodeOptions,
) -> Result<RawTranscript, ModelError> {
    let mut out = transcribe_windows(model, windows, opts)?;
    snap_words_to_energy(&mut out.words, frame_energy_db);
    Ok(out)
}

/// Whisper's long-form loop over the windows of `windows` (no energy snapping).
fn transcribe_windows(
    model: &LoadedModel,
    windows: &mut dyn MelWindows,
    opts: &DecodeOptions,
) -> Result<RawTranscript, ModelError> {
    let dims = &model.whisper.dims;
    let mut stats = DecodeStats::default();
    let content_frames = windows.content_frames();
    let window_frames = 2 * audio_context(dims.n_audio_ctx, content_frames, opts);
    stats.audio_context = window_frames / 2;
    let tok = &model.tokenizer;
    let (language, language_probability) = if tok.is_multilingual() {
        match opts
            .language
            .as_deref()
            .and_then(|code| tok.language_token(code).map(|_| code.to_string()))
        {
            Some(code) => (code, None),
            None => {
                let clock = std::time::Instant::now();
                let window = windows.window(0, content_frames.min(window_frames), window_frames)?;
                stats.mel_secs += clock.elapsed().as_secs_f64();
                let (code, p) = detect_language(model, &window)?;
                (code, Some(p))
            }
        }
    } else {
        ("en".to_string(), None)
    };
    let mut prompt = vec![tok.specials.sot];
    if tok.is_multilingual() {
        if let Some(id) = tok.language_token(&language) {
            prompt.push(id);
        }
        if let Some(id) = tok.specials.transcribe {
            prompt.push(id);
        }
    }

    let mut out = RawTranscript {
        words: Vec::new(),
        segments: Vec::new(),
        language,
        language_probability,
        first_window_tokens: Vec::new(),
        sentence_end_probability: None,
        stats,
    };
    let mut seek = 0usize;
    while seek < content_frames {
        let segment_size = window_frames.min(content_frames - seek);
        // Less than 50 ms of audio cannot hold a word; it is only padding.
        if segment_size < 5 {
            break;
        }
        let time_offset = seek as f64 * HOP as f64 / 16_000.0;
        let clock = std::time::Instant::now();
        let window = windows.window(seek, segment_size, window_frames)?;
        out.stats.mel_secs += clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        check_cancel(opts.cancel.as_ref())?;
        let encoded = model
            .whisper
            .encode_ctx_checked(&window, window_frames / 2, &|| {
                check_cancel(opts.cancel.as_ref())
            })?;
        let cross = model.whisper.cross_kv(&encoded);
        drop(encoded);
        out.stats.encode_secs += clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        let draft: &[u32] = if seek == 0 { &opts.draft } else { &[] };
        let result = decode_window(model, &cross, &prompt, segment_size, draft, opts)?;
        out.stats.decode_secs += clock.elapsed().as_secs_f64();
        out.stats.draft_tokens_accepted += result.draft_accepted;
        if seek == 0 {
            out.stats.first_no_speech_prob = result.no_speech_prob;
            out.stats.first_avg_logprob = result.avg_logprob;
            out.first_window_tokens = result
                .sampled
                .iter()
                .map(|s| s.token)
                .filter(|t| *t != model.tokenizer.specials.eot)
                .collect();
        }
        out.stats.windows += 1;
        out.stats.tokens += result.sampled.len();
        if result.no_speech_prob > opts.no_speech_threshold
            && result.avg_logprob < opts.logprob_threshold
        {
            seek += segment_size;
            continue;
        }
        if let Some(p) = result.sentence_end_after_text(model) {
            out.sentence_end_probability = Some(p);
        }
        let clock = std::time::Instant::now();
        let advance = collect_window(model, &result, time_offset, segment_size, &mut out);
        out.stats.align_secs += clock.elapsed().as_secs_f64();
        seek += if advance == 0 {
            segment_size
        } else {
            advance.min(segment_size)
        };
    }
    Ok(out)
}

/// Energy of each 10-ms frame of `samples` (the last one possibly shorter), in dB;
/// empty for audio shorter than one frame.
pub(crate) fn frame_energy_db(samples: &[f32]) -> Vec<f32> {
    if samples.len() < FRAME_ENERGY_SAMPLES {
        return Vec::new();
    }
    samples.chunks(FRAME_ENERGY_SAMPLES).map(frame_db).collect()
}

/// Energy of one frame in dB.
pub(crate) fn frame_db(frame: &[f32]) -> f32 {
    10.0 * (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32 + 1e-10).log10()
}

/// Cross-attention DTW places a word's start at the end of the silence before it (and
/// sometimes its end inside the silence after it). Move each boundary that lies in silence
/// to the nearest voiced 10-ms frame inside the word; words over continuous speech keep
/// their DTW times.
fn snap_words_to_energy(words: &mut [TimedWord], db: &[f32]) {
    if db.is_empty() || words.is_empty() {
        return;
    }
    let mut sorted = db.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let loud = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
    let threshold = (loud - 35.0).max(-60.0);
    let voiced = |f: usize| db.get(f).is_some_and(|v| *v >= threshold);
    let margin = 0.02;
    for w in words.iter_mut() {
        let first = (w.start * 100.0).floor() as usize;
        let last = ((w.end * 100.0).ceil() as usize).min(db.len());
        if first >= last {
            continue;
        }
        if let Some(f) = (first..last).find(|f| voiced(*f)) {
            if f > first {
                w.start = (f as f64 / 100.0 - margin).max(w.start);
            }
        }
        if let Some(f) = (first..last).rev().find(|f| voiced(*f)) {
            if f + 1 < last {
                w.end = ((f + 1) as f64 / 100.0 + margin).min(w.end).max(w.start);
            }
        }
    }
}

fn detect_language(model: &LoadedModel, window: &[f32]) -> Result<(String, f64), ModelError> {
    let encoded = model
        .whisper
        .encode_ctx(window, window.len() / (2 * model.whisper.dims.n_mels))?;
    let cross = model.whisper.cross_kv(&encoded);
    let mut state = model.whisper.new_decoder_state(&cross);
    let mut sink = Vec::new();
    state.step(model.tokenizer.specials.sot, true, &[], 0, &mut sink)?;
    let langs = &model.tokenizer.specials.languages;
    let mut scores: Vec<f32> = langs
        .iter()
        .map(|(id, _)| {
            state
                .logits
                .get(*id as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY)
        })
        .collect();
    crate::kernels::softmax(&mut scores);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, p)| (langs[i].1.clone(), *p as f64))
        .unwrap_or_else(|| ("en".to_string(), 0.0));
    Ok(best)
}

/// Draft tokens verified per batch.
const DRAFT_CHUNK: usize = 16;

fn decode_window(
    model: &LoadedModel,
    cross: &CrossKv,
    prompt: &[u32],
    segment_size: usize,
    draft: &[u32],
    opts: &DecodeOptions,
) -> Result<WindowResult, ModelError> {
    let tok = &model.tokenizer;
    let sp = &tok.specials;
    let n_vocab = model.whisper.dims.n_vocab;
    let ts_begin = sp.timestamp_begin as usize;
    let eot = sp.eot as usize;
    let t_audio = cross.positions();
    let align_frames = (segment_size / 2).clamp(1, t_audio);
    let heads = &model.alignment_heads;
    let mut align_rows = Vec::with_capacity(heads.len() * align_frames * 64);
    let mut state = model.whisper.new_decoder_state(cross);
    let mut sink = Vec::new();
    for (i, t) in prompt.iter().enumerate() {
        let last = i + 1 == prompt.len();
        if last {
            state.step(*t, true, heads, align_frames, &mut align_rows)?;
        } else {
            state.step(*t, false, &[], 0, &mut sink)?;
        }
    }
    let mut step_index = 0usize;

    // Tokens that are never sampled: the configured ones plus every control token
    // except end-of-text (timestamps are handled by the rules below).
    let mut always_suppressed = vec![false; n_vocab];
    for id in &model.suppress {
        if let Some(s) = always_suppressed.get_mut(*id as usize) {
            *s = true;
        }
    }
    for s in always_suppressed
        .iter_mut()
        .take(ts_begin.min(n_vocab))
        .skip(eot + 1)
    {
        *s = true;
    }

    let no_speech_prob = match sp.no_speech {
        Some(id) if (id as usize) < n_vocab => {
            let mut probs = state.logits.clone();
            crate::kernels::softmax(&mut probs);
            probs[id as usize] as f64
        }
        _ => 0.0,
    };

    // The draft, fed in one batch: row i of `draft_logits` is what `state.logits` would
    // hold after stepping draft[..=i]. A draft token is kept while greedy sampling picks
    // it; at the first difference the state is cut back and decoding goes on step by step.
    let prompt_len = state.len();
    let draft_len = draft
        .len()
        .min(opts.sample_len.saturating_sub(1))
        .min(model.whisper.dims.n_text_ctx.saturating_sub(prompt_len + 1));
    let draft = if draft[..draft_len].iter().all(|t| (*t as usize) < n_vocab) {
        &draft[..draft_len]
    } else {
        &[]
    };
    let align_base = align_rows.len();
    // Verified a chunk at a time, so a draft that goes wrong early costs little.
    let mut chunk_end = draft.len().min(DRAFT_CHUNK);
    let mut chunk_logits =
        state.step_batch(&draft[..chunk_end], heads, align_frames, &mut align_rows)?;
    let align_per_step = (align_rows.len() - align_base)
        .checked_div(chunk_end)
        .unwrap_or(0);
    let mut chunk_start = 0usize;
    let mut in_draft = !draft.is_empty();
    let mut accepted = 0usize;
    // The logits for the next choice while inside the draft.
    let mut draft_next = state.logits[..n_vocab].to_vec();

    let max_initial = ts_begin + (opts.max_initial_timestamp / TIME_PRECISION).round() as usize;
    let mut sampled: Vec<Sampled> = Vec::new();
    let mut sum_logprob = 0.0f64;
    let mut logits = vec![0.0f32; n_vocab];
    for _ in 0..opts.sample_len {
        check_cancel(opts.cancel.as_ref())?;
        if in_draft {
            logits.copy_from_slice(&draft_next);
        } else {
            logits.copy_from_slice(&state.logits[..n_vocab]);
        }
        for (l, s) in logits.iter_mut().zip(&always_suppressed) {
            if *s {
                *l = f32::NEG_INFINITY;
            }
        }
        if sampled.is_empty() {
            for id in &model.suppress_begin {
                if let Some(l) = logits.get_mut(*id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        // Only read after a text token (the step that may end the transcript).
        let sentence_end = if sampled.last().is_some_and(|s| tok.is_text(s.token)) {
            sentence_end_probability(&logits, &model.sentence_end_tokens)
        } else {
            0.0
        };
        apply_timestamp_rules(&mut logits, &sampled, ts_begin, eot, max_initial);
        // Log-softmax keeps the order: the best token is the best logit, and its
        // log-probability is that logit less the log-sum-exp, for which the best logit,
        // being the largest, is the shift. No vector of log-probabilities is made.
        let (best, best_logit) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, v)| (i, *v))
            .unwrap_or((eot, 0.0));
        let lse = if best_logit.is_finite() {
            best_logit + crate::kernels::exp_sum(&logits, best_logit).ln()
        } else {
            log_sum_exp(&logits)
        };
        let best_lp = best_logit - lse;
        sum_logprob += best_lp as f64;
        sampled.push(Sampled {
            token: best as u32,
            prob: best_lp.exp(),
            sentence_end,
            step: step_index,
        });
        if in_draft {
            if accepted < draft.len() && best == draft[accepted] as usize {
                // Already fed in the batch, with its alignment rows in place.
                let row = accepted - chunk_start;
                draft_next.copy_from_slice(&chunk_logits[row * n_vocab..(row + 1) * n_vocab]);
                accepted += 1;
                step_index += 1;
                if accepted == chunk_end && chunk_end < draft.len() {
                    chunk_start = chunk_end;
                    chunk_end = draft.len().min(chunk_end + DRAFT_CHUNK);
                    chunk_logits = state.step_batch(
                        &draft[chunk_start..chunk_end],
                        heads,
                        align_frames,
                        &mut align_rows,
                    )?;
                }
                continue;
            }
            // Greedy leaves the draft here: forget the batch beyond the kept prefix.
            state.truncate(prompt_len + accepted);
            align_rows.truncate(align_base + accepted * align_per_step);
            in_draft = false;
        }
        if best == eot || state.is_full() {
            break;
        }
        state.step(best as u32, true, heads, align_frames, &mut align_rows)?;
        step_index += 1;
    }
    if in_draft {
        // The sample limit ended decoding inside the draft: drop the alignment rows of
        // batched tokens that were never kept (the decoder state is not used again).
        align_rows.truncate(align_base + accepted * align_per_step);
    }
    let n = sampled.len().max(1);
    Ok(WindowResult {
        sampled,
        no_speech_prob,
        avg_logprob: sum_logprob / n as f64,
        align_rows,
        align_frames,
        draft_accepted: accepted,
    })
}

fn apply_timestamp_rules(
    logits: &mut [f32],
    sampled: &[Sampled],
    ts_begin: usize,
    eot: usize,
    max_initial: usize,
) {
    let n_vocab = logits.len();
    let is_ts = |t: u32| t as usize >= ts_begin;
    let ts_begin = ts_begin.min(n_vocab);
    let last_was_ts = sampled.last().is_some_and(|s| is_ts(s.token));
    let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2].token);
    if last_was_ts {
        if penultimate_was_ts {
            logits[ts_begin..]
                .iter_mut()
                .for_each(|v| *v = f32::NEG_INFINITY);
        } else {
            logits[..eot.min(n_vocab)]
                .iter_mut()
                .for_each(|v| *v = f32::NEG_INFINITY);
        }
    }
    if let Some(last_ts) = sampled
        .iter()
        .rev()
        .find(|s| is_ts(s.token))
        .map(|s| s.token as usize)
    {
        let floor = if last_was_ts && !penultimate_was_ts {
            last_ts
        } else {
            last_ts + 1
        };
        logits[ts_begin..floor.min(n_vocab)]
            .iter_mut()
            .for_each(|v| *v = f32::NEG_INFINITY);
    }
    if sampled.is_empty() {
        logits[..ts_begin]
            .iter_mut()
            .for_each(|v| *v = f32::NEG_INFINITY);
        if max_initial + 1 < n_vocab {
            logits[max_initial + 1..]
                .iter_mut()
                .for_each(|v| *v = f32::NEG_INFINITY);
        }
    }
    // If all timestamps together are likelier than any single text token, take a
    // timestamp. Compared in logits: both sides' log-probabilities carry the same
    // normaliser, so it need not be computed.
    let ts_mass = log_sum_exp(&logits[ts_begin..]);
    let max_text = crate::kernels::max_value(&logits[..ts_begin]);
    if ts_mass > max_text {
        logits[..ts_begin]
            .iter_mut()
            .for_each(|v| *v = f32::NEG_INFINITY);
    }
}

/// Total probability of `ids` under the softmax of `logits`.
fn sentence_end_probability(logits: &[f32], ids: &[u32]) -> f32 {
    if ids.is_empty() {
        return 0.0;
    }
    let lse = log_sum_exp(logits);
    if !lse.is_finite() {
        return 0.0;
    }
    ids.iter()
        .filter_map(|id| logits.get(*id as usize))
        .map(|l| crate::kernels::fast_exp(l - lse))
        .sum()
}

fn log_sum_exp(v: &[f32]) -> f32 {
    let max = crate::kernels::max_value(v);
    if !max.is_finite() {
        return f32::NEG_INFINITY;
    }
    max + crate::kernels::exp_sum(v, max).ln()
}

/// A kept segment of the window: indices into `sampled` of its text tokens, and its times.
struct KeptSegment {
    start: f64,
    end: f64,
    text_tokens: Vec<usize>,
}

/// Split the window's tokens into segments, align their words, append them to `out`, and
/// return how many mel frames the window consumed (Whisper's seek rule).
fn collect_window(
    model: &LoadedModel,
    result: &WindowResult,
    time_offset: f64,
    segment_size: usize,
    out: &mut RawTranscript,
) -> usize {
    let tok = &model.tokenizer;
    let eot = tok.specials.eot;
    let ts_begin = tok.specials.timestamp_begin;
    let body: Vec<usize> = (0..result.sampled.len())
        .take_while(|i| result.sampled[*i].token != eot)
        .collect();
    let tokens: Vec<u32> = body.iter().map(|i| result.sampled[*i].token).collect();
    let is_ts = |t: u32| t >= ts_begin;
    let ts_time = |t: u32| (t - ts_begin) as f64 * TIME_PRECISION;
    let window_secs = segment_size as f64 * HOP as f64 / 16_000.0;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();

    let mut segments = Vec::new();
    let advance;
    if !consecutive.is_empty() {
        let mut slices = consecutive.clone();
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &cur in &slices {
            let part = &body[last..cur];
            if let (Some(first), Some(lastt)) = (part.first(), part.last()) {
                let (a, b) = (result.sampled[*first].token, result.sampled[*lastt].token);
                segments.push(KeptSegment {
                    start: if is_ts(a) { ts_time(a) } else { 0.0 },
                    end: if is_ts(b) { ts_time(b) } else { window_secs },
                    text_tokens: part
                        .iter()
                        .copied()
                        .filter(|i| tok.is_text(result.sampled[*i].token))
                        .collect(),
                });
            }
            last = cur;
        }
        advance = if single_timestamp_ending {
            segment_size
        } else {
            let last_pos = tokens
                .get(last.saturating_sub(1))
                .map(|t| t.saturating_sub(ts_begin) as usize)
                .unwrap_or(0);
            last_pos * 2
        };
    } else {
        let mut end = window_secs;
        if let Some(t) = tokens.iter().rev().find(|t| is_ts(**t)) {
            if *t != ts_begin {
                end = ts_time(*t);
            }
        }
        let start = tokens
            .first()
            .filter(|t| is_ts(**t))
            .map(|t| ts_time(*t))
            .unwrap_or(0.0);
        segments.push(KeptSegment {
            start,
            end: end.max(start),
            text_tokens: body
                .iter()
                .copied()
                .filter(|i| tok.is_text(result.sampled[*i].token))
                .collect(),
        });
        advance = segment_size;
    }
    segments.retain(|s| !s.text_tokens.is_empty());
    if segments.is_empty() {
        return advance;
    }

    // The DTW end row: the step that produced the token following the last text token.
    let all_text: Vec<usize> = segments
        .iter()
        .flat_map(|s| s.text_tokens.iter().copied())
        .collect();
    let end_row_step = all_text
        .last()
        .and_then(|i| result.sampled.get(i + 1))
        .map(|s| s.step)
        .unwrap_or_else(|| all_text.last().map_or(0, |i| result.sampled[*i].step));
    let mut row_steps: Vec<usize> = all_text.iter().map(|i| result.sampled[*i].step).collect();
    row_steps.push(end_row_step);
    let jump_times = align_rows(model, result, &row_steps);

    let mut flat_index = 0usize;
    for seg in &segments {
        let seg_start = time_offset + seg.start;
        let seg_end = time_offset + seg.end.max(seg.start);
        let seg_first_word = out.words.len();
        // Group tokens into words: a token that begins with a space starts a new word.
        let mut groups: Vec<(Vec<u32>, Vec<f32>, usize)> = Vec::new();
        for &i in &seg.text_tokens {
            let s = &result.sampled[i];
            let bytes = tok.bytes(s.token);
            let starts_word = bytes.first() == Some(&b' ') || groups.is_empty();
            if starts_word {
                groups.push((vec![s.token], vec![s.prob], flat_index));
            } else if let Some(g) = groups.last_mut() {
                g.0.push(s.token);
                g.1.push(s.prob);
            }
            flat_index += 1;
        }
        let boundary_after = flat_index;
        for (gi, (ids, probs, first_row)) in groups.iter().enumerate() {
            let text = tok.decode(ids).trim().to_string();
            if text.is_empty() {
                continue;
            }
            let next_row = groups.get(gi + 1).map(|g| g.2).unwrap_or(boundary_after);
            let start = time_offset + jump_times.get(*first_row).copied().unwrap_or(seg.start);
            let end = time_offset + jump_times.get(next_row).copied().unwrap_or(seg.end);
            let probability =
                probs.iter().map(|p| *p as f64).sum::<f64>() / probs.len().max(1) as f64;
            out.words.push(TimedWord {
                text,
                start,
                end,
                probability,
            });
        }
        clamp_segment_words(&mut out.words[seg_first_word..], seg_start, seg_end);
        let seg_text = tok.decode(
            &seg.text_tokens
                .iter()
                .map(|i| result.sampled[*i].token)
                .collect::<Vec<_>>(),
        );
        out.segments.push(Segment {
            start: seg_start,
            end: seg_end,
            text: seg_text.trim().to_string(),
        });
    }
    // Keep times monotonic across segments and windows.
    let mut floor = 0.0f64;
    for w in out.words.iter_mut() {
        if w.start < floor {
            w.start = floor;
        }
        if w.end < w.start {
            w.end = w.start;
        }
        floor = w.end;
    }
    advance
}

/// Keep a segment's words inside its timestamps and cap implausibly long first/last words
/// (DTW tends to stretch them over leading/trailing silence).
fn clamp_segment_words(words: &mut [TimedWord], seg_start: f64, seg_end: f64) {
    for w in words.iter_mut() {
        w.start = w.start.clamp(seg_start, seg_end);
        w.end = w.end.clamp(w.start, seg_end.max(w.start));
    }
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d > 0.0)
        .collect();
    durations.sort_by(|a, b| a.total_cmp(b));
    let median = durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or(0.0)
        .min(0.7);
    let max_dur = (median * 2.0).max(0.2);
    if let Some(first) = words.first_mut() {
        if first.end - first.start > max_dur {
            first.start = (first.end - max_dur).max(seg_start);
        }
    }
    if let Some(last) = words.last_mut() {
        if last.end - last.start > max_dur {
            last.end = last.start + max_dur;
        }
    }
}

/// Cross-attention alignment: for the given producing steps (one per text token, plus an
/// end row), return the time (seconds, window-relative) where each row starts on the DTW path.
fn align_rows(model: &LoadedModel, result: &WindowResult, row_steps: &[usize]) -> Vec<f64> {
    let heads = model.alignment_heads.len();
    let frames = result.align_frames;
    let per_step = heads * frames;
    let n = row_steps.len();
    if heads == 0 || frames == 0 || n == 0 {
        return Vec::new();
    }
    // weights[h][r][f]
    let mut weights = vec![0.0f32; heads * n * frames];
    for (r, &step) in row_steps.iter().enumerate() {
        for h in 0..heads {
            let src = step * per_step + h * frames;
            let dst = (h * n + r) * frames;
            match result.align_rows.get(src..src + frames) {
                Some(row) => weights[dst..dst + frames].copy_from_slice(row),
                None => weights[dst..dst + frames].iter_mut().for_each(|v| *v = 0.0),
            }
            crate::kernels::softmax(&mut weights[dst..dst + frames]);
        }
    }
    // Standardise each head over the token axis, per frame.
    for h in 0..heads {
        for f in 0..frames {
            let mut mean = 0.0f32;
            for r in 0..n {
                mean += weights[(h * n + r) * frames + f];
            }
            mean /= n as f32;
            let mut var = 0.0f32;
            for r in 0..n {
                let d = weights[(h * n + r) * frames + f] - mean;
                var += d * d;
            }
            let std = (var / n as f32).sqrt().max(1e-8);
            for r in 0..n {
                let v = &mut weights[(h * n + r) * frames + f];
                *v = (*v - mean) / std;
            }
        }
        median_filter_rows(
            &mut weights[h * n * frames..(h + 1) * n * frames],
            frames,
            7,
        );
    }
    let mut matrix = vec![0.0f32; n * frames];
    for h in 0..heads {
        for (m, w) in matrix
            .iter_mut()
            .zip(&weights[h * n * frames..(h + 1) * n * frames])
        {
            *m += w / heads as f32;
        }
    }
    let cost: Vec<f32> = matrix.iter().map(|v| -v).collect();
    let path = dtw_path(&cost, n, frames);
    let mut jump = vec![f64::NAN; n];
    for (ti, fi) in path {
        if ti < n && jump[ti].is_nan() {
            jump[ti] = fi as f64 * TIME_PRECISION;
        }
    }
    let mut last = 0.0;
    for j in jump.iter_mut() {
        if j.is_nan() {
            *j = last;
        }
        last = *j;
    }
    jump
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the short context gave on JFK fragments (`examples/no_speech.rs`): the
    /// loops are caught by their compression ratio, the sound texts are not.
    #[test]
    fn compression_ratio_flags_repetition_loops() {
        let loop_ = "s s s s s s s s s s s s s s s s s s s s s s s s s s s s s s";
        let echo = "And so, and so, and so, and so, and so, and so, and so, and so, and";
        assert!(compression_ratio(loop_) > COMPRESSION_RATIO_LIMIT);
        assert!(compression_ratio(echo) > COMPRESSION_RATIO_LIMIT);
        for sound in [
            "What your country can do for you.",
            "ask what you can do for your country.",
            "Had he married a more amiable woman he might have been made still more respectable than he was.",
        ] {
            assert!(compression_ratio(sound) < 1.5, "{sound}");
        }
        assert_eq!(compression_ratio(""), 0.0);
    }

    fn one_window(no_speech: f64, avg_logprob: f64, text: &str) -> RawTranscript {
        RawTranscript {
            words: vec![TimedWord {
                text: text.to_string(),
                start: 0.0,
                end: 1.0,
                probability: 0.9,
            }],
            segments: Vec::new(),
            language: "en".into(),
            language_probability: None,
            first_window_tokens: Vec::new(),
            sentence_end_probability: None,
            stats: DecodeStats {
                windows: 1,
                first_no_speech_prob: no_speech,
                first_avg_logprob: avg_logprob,
                ..DecodeStats::default()
            },
        }
    }

    #[test]
    fn a_recheck_tries_fifteen_seconds_first_only_when_the_text_is_in_doubt() {
        let opts = DecodeOptions {
            short_context: true,
            min_short_context: 300,
            short_context_recheck: Some(0.3),
            defer_recheck: true,
            ..DecodeOptions::default()
        };
        let short = |no_speech, context| DecodeStats {
            windows: 1,
            first_no_speech_prob: no_speech,
            audio_context: context,
            ..DecodeStats::default()
        };
        // "S NOT…" for "Ask not!": the text is in doubt, the model hears speech.
        let medium = recheck_options(&short(0.54, 300), &opts);
        assert!(medium.short_context && !medium.defer_recheck);
        assert_eq!(medium.min_short_context, RECHECK_CONTEXT);
        assert_eq!(medium.short_context_recheck, Some(0.3));
        // Noise-like: the full window's no-speech rule decides.
        let full = recheck_options(&short(0.9, 300), &opts);
        assert!(!full.short_context && !full.defer_recheck);
        // A context already that long (or the 15-s one in doubt too): the full window.
        assert!(!recheck_options(&short(0.54, RECHECK_CONTEXT), &opts).short_context);
    }

    #[test]
    fn full_window_recheck_only_for_doubtful_windows() {
        let opts = DecodeOptions::default();
        let in_doubt = |no_speech, avg_logprob, text| {
            needs_full_window(&one_window(no_speech, avg_logprob, text), 0.3, &opts)
        };
        let sound = "What your country can do for you.";
        // Below the recheck level: stands, whatever else.
        assert!(!in_doubt(0.2, -1.5, sound));
        // A doubtful probability with sound text: stands.
        assert!(!in_doubt(0.37, -0.56, sound));
        // Noise-like probability, a low log-probability, or a loop: redone.
        assert!(in_doubt(0.83, -0.3, sound));
        assert!(in_doubt(0.55, -1.25, "S NOT..."));
        let loop_ = "s s s s s s s s s s s s s s s s s s s s s s s s s s s s s s";
        assert!(in_doubt(0.5, -0.1, loop_));
    }

    #[test]
    fn timestamp_rules_force_pairs() {
        let ts_begin = 10;
        let eot = 5;
        let mut logits = vec![0.0f32; 20];
        // After <|t|> text <|t2|>: next must be a timestamp >= t2 or eot... text forbidden.
        let sampled = vec![
            Sampled {
                token: 10,
                prob: 1.0,
                sentence_end: 0.0,
                step: 0,
            },
            Sampled {
                token: 2,
                prob: 1.0,
                sentence_end: 0.0,
                step: 1,
            },
            Sampled {
                token: 12,
                prob: 1.0,
                sentence_end: 0.0,
                step: 2,
            },
        ];
        apply_timestamp_rules(&mut logits, &sampled, ts_begin, eot, 15);
        assert!(logits[..eot].iter().all(|v| v.is_infinite()));
        assert!(logits[10..12].iter().all(|v| v.is_infinite()));
        assert!(logits[12].is_finite());
        // At the beginning only timestamps up to the initial maximum are allowed.
        let mut logits = vec![0.0f32; 20];
        apply_timestamp_rules(&mut logits, &[], ts_begin, eot, 12);
        assert!(logits[..10].iter().all(|v| v.is_infinite()));
        assert!(logits[10..=12].iter().all(|v| v.is_finite()));
        assert!(logits[13..].iter().all(|v| v.is_infinite()));
    }
}
