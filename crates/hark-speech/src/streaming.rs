//! Live transcription in turns: feed 16-kHz mono PCM chunks, get partial and final turns
//! with word timings. An energy VAD with an adaptive noise floor finds speech; a turn ends
//! after `min_turn_silence_ms` of silence when the text so far ends a sentence, or after
//! `max_turn_silence_ms` regardless, or when forced. Only the current turn's audio (at most
//! `max_turn_secs`) is ever decoded, so cost does not grow with the session.

use crate::decode::{CancelFlag, DecodeOptions, DecodeStats, LoadedModel, RawTranscript};
use crate::engine::{Priority, WhisperEngine};
use crate::error::ModelError;
use hark_core::speech::{SpeechError, SpeechStream, StreamingUpdate};
pub use hark_core::speech::{StreamEvent, StreamingConfig, Turn};
use std::sync::Arc;
use std::thread::JoinHandle;

const RATE: usize = 16_000;
/// VAD frame: 20 ms.
const FRAME: usize = 320;
/// Partial turns are decoded over a short encoder context of at least this many
/// positions (50 per second).
const SHORT_CONTEXT_MIN: usize = 300;
/// Final turns (and the decodes that become them) too, over at least this many
/// positions: a turn of a few seconds costs a fraction of the 30-s window (the window
/// was ~75 % of a final's time on AVX2).
const FINAL_CONTEXT_MIN: usize = 300;
/// A final whose short-context no-speech probability exceeds this, and whose window is
/// in doubt by Whisper's own measures as well (`decode::needs_full_window`), is decoded
/// again over the full window, whose no-speech rule then decides: on a truncated window
/// the model can write words into noise (it "heard" "Thank you." in applause; noise
/// scores 0.83–0.97), and on a second of speech it can loop ("s s s s …").
const FINAL_NO_SPEECH_RECHECK: f64 = 0.3;
/// Silence after which the turn is decoded for its final (when `min_turn_silence_ms` is
/// longer): the decode then overlaps the rest of the wait instead of following it.
const SETTLE_SILENCE_MS: u64 = 200;
/// Decodes keep at most this much trailing silence. If the decode at the settle point
/// did not end a sentence, the turn is decoded again here: with less trailing silence
/// Whisper sometimes leaves the final full stop off, and the end-of-turn decision
/// depends on it.
const TRAILING_SILENCE_KEEP_MS: u64 = 300;
/// Frames this many dB below the recent speech level are not speech.
const SPEECH_TAIL_DB: f32 = 15.0;
/// A partial waits for an idle engine, but no longer than this many partial intervals.
const PARTIAL_MAX_DEFER: usize = 3;

/// Decodes a session may make per second of audio, on average ...
const DECODES_PER_AUDIO_SEC: usize = 4;
/// ... and at most this many in a row: whatever the settings and client messages
/// (`ForceEndpoint`, tiny silences), one session cannot keep a core busy (audio
/// itself arrives no faster than real time).
const DECODE_BURST: usize = 6;

/// A token bucket of decodes that fills with audio: every decode but the end of the
/// stream's costs one token; partials and early decodes are skipped without one, and a
/// turn's end (or a forced one) waits for the next token.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    /// Credit in samples: one decode costs `RATE / DECODES_PER_AUDIO_SEC`.
    credit: usize,
}

impl DecodeBudget {
    const COST: usize = RATE / DECODES_PER_AUDIO_SEC;
    const CAP: usize = Self::COST * DECODE_BURST;

    pub fn new() -> Self {
        Self { credit: Self::CAP }
    }

    /// `samples` more audio arrived.
    pub fn refill(&mut self, samples: usize) {
        self.credit = (self.credit + samples).min(Self::CAP);
    }

    /// Whether a decode may run now.
    pub fn available(&self) -> bool {
        self.credit >= Self::COST
    }

    /// Takes one decode if available.
    pub fn take(&mut self) -> bool {
        if self.available() {
            self.credit -= Self::COST;
            true
        } else {
            false
        }
    }

    /// Spends one decode that must run anyway (the end of the stream).
    pub fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(Self::COST);
    }
}

impl Default for DecodeBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the current turn is being decoded for its (likely) final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SettleDecode {
    /// The pause reached the settle point.
    Settle,
    /// The settled text did not end a sentence: decoded again with more trailing
    /// silence (best effort); or the full window is owed and the engine is idle.
    Recheck,
    /// The full window is owed and the pause reached `min_turn_silence_ms`: its text
    /// decides whether the turn ends.
    Owed,
}

/// What a session's decodes cost, so far (`StreamingSession::stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Decodes whose result the session used (partials, settle decodes, finals);
    /// cancelled and stale partials are not counted.
    pub decodes: u64,
    /// Of those, the ones that ended on the full 30-s window (a short context in doubt,
    /// rechecked at once or owed and decoded later, whose recheck went that far).
    pub full_window_decodes: u64,
    /// Rechecks owed by a pause's settle decode and never made, because the speaker
    /// resumed first.
    pub rechecks_skipped: u64,
}

/// What the decode at the start of the current pause left.
#[derive(Debug, Clone)]
enum Settled {
    /// No decode for the final since the last speech.
    Nothing,
    /// The turn's final, unless speech resumes.
    Final(Turn),
    /// The short context was in doubt (`decode::needs_full_window`; these are its
    /// figures) and the engine was busy, so its recheck (`decode::recheck_options`) was
    /// not decoded yet: it is decoded at the recheck point if the engine is idle by
    /// then, else when the pause reaches `min_turn_silence_ms`, and never if speech
    /// resumes first. Until then nothing is shown: the short context's text is the
    /// doubtful one ("S NOT…" for "Ask not!").
    RecheckOwed(DecodeStats),
}

/// What a partial's thread returns: `None` when the engine was busy and it did not run.
type PartialOutcome = Option<Result<RawTranscript, ModelError>>;

/// An interval partial decoding on its own thread, over a copy of the turn's audio. The
/// pushes that follow keep feeding the VAD meanwhile, so the turn's pause is seen, and
/// its final decoded, while the partial still runs (decoded inside the push, a partial
/// held up the pause detection for its whole decode: the one-stream latency tail).
struct PartialInFlight {
    handle: JoinHandle<PartialOutcome>,
    cancel: CancelFlag,
    /// `turn_audio.len()` when it started.
    samples: usize,
    /// `decode_epoch` when it started: the result is shown only if no decode for the
    /// final (nor the turn's end) came since.
    epoch: u64,
}

/// One live session. Not shared between threads; the model and engine are.
pub struct StreamingSession {
    engine: Arc<WhisperEngine>,
    model: Arc<LoadedModel>,
    config: StreamingConfig,
    /// Audio of the current turn (including pre-roll), or recent silence when idle.
    turn_audio: Vec<f32>,
    /// Session sample index of `turn_audio[0]`.
    turn_start_sample: u64,
    in_turn: bool,
    turn_order: u32,
    samples_seen: u64,
    /// Trailing silence of the current turn, in samples.
    silence_run: usize,
    pending_frame: Vec<f32>,
    noise_db: f32,
    /// Typical level of recent speech frames (an asymmetric moving average).
    speech_db: f32,
    samples_at_last_partial: usize,
    /// A partial is owed at the end of the current push.
    partial_due: bool,
    /// What the decode made when the current pause began left: the turn's final if no
    /// speech follows, or the recheck owed for it.
    settled: Settled,
    /// Whether the turn's latest decode ends a sentence (judged on the model's own
    /// punctuation, whatever the output settings).
    ends_sentence: bool,
    /// The model's probability that the sentence ends after the latest decode's text
    /// (`RawTranscript::sentence_end_probability`).
    sentence_end_probability: f64,
    /// Tokens of the current turn's latest decode: the draft for its next decode.
    draft: Vec<u32>,
    /// The interval partial decoding on its own thread, if any (at most one).
    partial: Option<PartialInFlight>,
    /// Moves on at every decode for a final and at the end of every turn: a partial
    /// started before then is stale.
    decode_epoch: u64,
    budget: DecodeBudget,
    /// A `ForceEndpoint` waits for the decode budget.
    force_pending: bool,
    stats: SessionStats,
}

impl StreamingSession {
    pub fn new(
        engine: Arc<WhisperEngine>,
        model: Arc<LoadedModel>,
        config: StreamingConfig,
    ) -> Self {
        StreamingSession {
            engine,
            model,
            config,
            turn_audio: Vec::new(),
            turn_start_sample: 0,
            in_turn: false,
            turn_order: 0,
            samples_seen: 0,
            silence_run: 0,
            pending_frame: Vec::with_capacity(FRAME),
            noise_db: -60.0,
            speech_db: -90.0,
            samples_at_last_partial: 0,
            partial_due: false,
            settled: Settled::Nothing,
            ends_sentence: false,
            sentence_end_probability: 0.0,
            draft: Vec::new(),
            partial: None,
            decode_epoch: 0,
            budget: DecodeBudget::new(),
            force_pending: false,
            stats: SessionStats::default(),
        }
    }

    /// Total audio received, ms.
    pub fn audio_ms(&self) -> u64 {
        self.samples_seen * 1000 / RATE as u64
    }

    /// Speech probability of one 20-ms frame from its level above the noise floor.
    fn speech_probability(&mut self, frame: &[f32]) -> f32 {
        let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
        let db = 10.0 * (energy + 1e-10).log10();
        // The floor follows quiet frames quickly and loud ones slowly.
        let rate = if db < self.noise_db { 0.2 } else { 0.005 };
        self.noise_db = (self.noise_db + rate * (db - self.noise_db)).clamp(-90.0, -20.0);
        let above = db - self.noise_db;
        // 0.5 at 9 dB above the floor, saturating around ±6 dB from there; very quiet
        // audio (below -55 dBFS) is never speech.
        if db < -55.0 {
            return 0.0;
        }
        let p = 1.0 / (1.0 + (-(above - 9.0) / 2.0).exp());
        // Far below the level of the speech just heard is a tail (reverb, breath, room
        // tone), not speech: without this, a speaker's decaying tail delays the turn's end.
        if db < self.speech_db - SPEECH_TAIL_DB {
            return p.min(0.1);
        }
        if p >= 0.5 {
            let rate = if db > self.speech_db { 0.3 } else { 0.05 };
            self.speech_db += rate * (db - self.speech_db);
        }
        p
    }

    /// Feed PCM (16 kHz mono, -1..1). Returns any partial/final turns it produced.
    /// Interval partials decode on their own thread: one that finishes is returned by the
    /// next push (or by [`Self::wait_partial`]).
    pub fn push_audio(&mut self, pcm: &[f32]) -> Result<Vec<StreamEvent>, ModelError> {
        let mut events = Vec::new();
        // A partial that finished since the last push comes before this push's events.
        self.collect_partial(&mut events, false)?;
        let mut rest = pcm;
        while !rest.is_empty() {
            let need = FRAME - self.pending_frame.len();
            let take = need.min(rest.len());
            self.pending_frame.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending_frame.len() == FRAME {
                let frame = std::mem::take(&mut self.pending_frame);
                self.process_frame(&frame, &mut events)?;
                self.pending_frame = frame;
                self.pending_frame.clear();
            }
        }
        if self.force_pending && self.can_finish_turn() {
            events.extend(self.finish_turn()?);
        }
        if self.in_turn {
            self.collect_partial(&mut events, false)?;
            if self.partial_due {
                self.start_partial();
            }
        }
        Ok(events)
    }

    /// What the session's decodes have cost so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Waits for the partial in flight, if any, and returns its turn (when it ran and
    /// is still current). For callers that want each push's partial before the next
    /// push, as when feeding recorded audio faster than real time.
    pub fn wait_partial(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        let mut events = Vec::new();
        self.collect_partial(&mut events, true)?;
        Ok(events)
    }

    /// Starts the owed interval partial on its own thread over a copy of the turn's
    /// audio, unless one is running (it stays owed) or the engine is busy: partials yield
    /// to work someone waits for, unless long overdue.
    fn start_partial(&mut self) {
        if self.partial.is_some() || !self.budget.available() {
            return;
        }
        let interval = self.config.partial_interval_ms as usize * RATE / 1000;
        if !matches!(self.settled, Settled::Nothing)
            || self.turn_audio.len() < self.samples_at_last_partial + interval
        {
            // A partial finished meanwhile, or only silence followed the settle decode.
            self.partial_due = false;
            return;
        }
        let overdue =
            self.turn_audio.len() >= self.samples_at_last_partial + PARTIAL_MAX_DEFER * interval;
        if !overdue && !self.engine.is_idle() {
            return;
        }
        let cancel = CancelFlag::new();
        let options = DecodeOptions {
            cancel: Some(cancel.clone()),
            ..self.decode_options(true)
        };
        let audio = self.decode_audio().to_vec();
        let (engine, model) = (self.engine.clone(), self.model.clone());
        let spawned = std::thread::Builder::new()
            .name("hark-partial".into())
            .spawn(move || {
                if overdue {
                    Some(engine.transcribe_pcm_at(Priority::Normal, &model, &audio, &options))
                } else {
                    engine.transcribe_pcm_if_idle(&model, &audio, &options)
                }
            });
        // Without a thread (the process is out of them) the partial stays owed: partials
        // are best effort, and finals decode on the caller's thread.
        if let Ok(handle) = spawned {
            self.partial_due = false;
            self.partial = Some(PartialInFlight {
                handle,
                cancel,
                samples: self.turn_audio.len(),
                epoch: self.decode_epoch,
            });
        }
    }

    /// Takes the in-flight partial's result once it has finished (with `wait`, waits for
    /// it) and, if nothing newer decoded the turn meanwhile, adds its turn to `events`.
    fn collect_partial(
        &mut self,
        events: &mut Vec<StreamEvent>,
        wait: bool,
    ) -> Result<(), ModelError> {
        let Some(job) = self.partial.take_if(|job| wait || job.handle.is_finished()) else {
            return Ok(());
        };
        let outcome = job
            .handle
            .join()
            .map_err(|_| ModelError::Invalid("a partial decode panicked".into()))?;
        let Some(result) = outcome else {
            // The engine was busy: the partial is still owed.
            self.partial_due = job.epoch == self.decode_epoch;
            return Ok(());
        };
        self.budget.spend();
        if job.epoch != self.decode_epoch {
            return Ok(());
        }
        let raw = result?;
        self.samples_at_last_partial = job.samples;
        self.note_decode(&raw);
        let mut turn = self.to_turn(&raw);
        turn.end_of_turn_confidence = self.end_of_turn_confidence();
        if !turn.words.is_empty() {
            events.push(StreamEvent::Partial(turn));
        }
        Ok(())
    }

    /// The turn is about to be decoded for its final, or has ended: the partial in
    /// flight is stale. It stops at its next step, freeing its inference slot for the
    /// final; its thread is not waited for.
    fn supersede_partial(&mut self) {
        if let Some(job) = self.partial.take() {
            job.cancel.cancel();
        }
        self.decode_epoch += 1;
    }

    fn process_frame(
        &mut self,
        frame: &[f32],
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ModelError> {
        let p = self.speech_probability(frame);
        let is_speech = p >= self.config.vad_threshold;
        self.samples_seen += frame.len() as u64;
        self.budget.refill(frame.len());
        if !self.in_turn {
            self.turn_audio.extend_from_slice(frame);
            let keep = (self.config.pre_roll_ms as usize * RATE / 1000).max(FRAME);
            if self.turn_audio.len() > keep {
                let drop = self.turn_audio.len() - keep;
                self.turn_audio.drain(..drop);
            }
            self.turn_start_sample = self.samples_seen - self.turn_audio.len() as u64;
            if is_speech {
                self.in_turn = true;
                self.settled = Settled::Nothing;
                self.silence_run = 0;
                self.samples_at_last_partial = 0;
                self.ends_sentence = false;
                self.draft.clear();
            }
            return Ok(());
        }
        self.turn_audio.extend_from_slice(frame);
        if is_speech {
            self.silence_run = 0;
            // Speech resumed: the pause's decode no longer covers the turn (and a full
            // window it owed is not worth decoding).
            if matches!(self.settled, Settled::RecheckOwed(_)) {
                self.stats.rechecks_skipped += 1;
            }
            self.settled = Settled::Nothing;
        } else {
            self.silence_run += frame.len();
        }
        let silence_ms = (self.silence_run * 1000 / RATE) as u64;
        let turn_secs = self.turn_audio.len() as f64 / RATE as f64;
        if matches!(self.settled, Settled::RecheckOwed(_))
            && silence_ms >= self.config.min_turn_silence_ms
            && self.budget.available()
        {
            self.settle(events, SettleDecode::Owed)?;
        }
        if (silence_ms >= self.config.max_turn_silence_ms
            || (silence_ms >= self.config.min_turn_silence_ms
                && self.end_of_turn_confidence() >= self.config.end_of_turn_confidence_threshold)
            || turn_secs >= self.config.max_turn_secs)
            && self.can_finish_turn()
        {
            events.extend(self.finish_turn()?);
            return Ok(());
        }
        let interval = self.config.partial_interval_ms as usize * RATE / 1000;
        let settle_ms = self.config.min_turn_silence_ms.min(SETTLE_SILENCE_MS);
        let recheck_ms = self
            .config
            .min_turn_silence_ms
            .min(TRAILING_SILENCE_KEEP_MS);
        let reached = |ms: u64| {
            silence_ms >= ms
                && self.silence_run == (ms as usize * RATE / 1000).div_ceil(FRAME) * FRAME
        };
        let at_settle_point = matches!(self.settled, Settled::Nothing) && reached(settle_ms);
        let at_recheck_point = recheck_ms > settle_ms
            && reached(recheck_ms)
            && match self.settled {
                Settled::Nothing => false,
                Settled::Final(_) => !self.ends_sentence,
                Settled::RecheckOwed(_) => true,
            };
        if at_settle_point || at_recheck_point {
            let kind = if at_settle_point {
                SettleDecode::Settle
            } else {
                SettleDecode::Recheck
            };
            // The end-of-turn decision needs the text, and the final is likely near:
            // decode it as a final now. Unless speech resumes, this is the turn's
            // final (no decode between the end of the wait and the final turn).
            self.settle(events, kind)?;
        } else if matches!(self.settled, Settled::Nothing)
            && self.turn_audio.len() >= self.samples_at_last_partial + interval
        {
            // (While settled, only silence was added: a partial would repeat the text.)
            // Started once at the end of this push: a client catching up after a stall
            // gets one fresh partial instead of a series of stale ones.
            self.partial_due = true;
        }
        Ok(())
    }

    /// Decodes the paused turn for its likely final and shows it as a partial.
    fn settle(
        &mut self,
        events: &mut Vec<StreamEvent>,
        kind: SettleDecode,
    ) -> Result<(), ModelError> {
        self.partial_due = false;
        let decoded = match kind {
            SettleDecode::Settle => self.decode_settle()?,
            // Only worth it when the engine has nothing else to do; otherwise the
            // settled text stands and the end-of-turn rule decides with it (or the
            // recheck owed waits for `min_turn_silence_ms`).
            SettleDecode::Recheck => self.decode_final_if(true)?,
            SettleDecode::Owed => Some(self.decode_final()?),
        };
        let Some(mut turn) = decoded else {
            return Ok(());
        };
        self.settled = Settled::Final(turn.clone());
        self.samples_at_last_partial = self.turn_audio.len();
        turn.end_of_turn_confidence = self.end_of_turn_confidence();
        if !turn.words.is_empty() {
            events.push(StreamEvent::Partial(turn));
        }
        Ok(())
    }

    /// How likely the speaker is done: high when the text so far ends a sentence, rising
    /// with the silence since the last speech towards `max_turn_silence_ms`.
    fn end_of_turn_confidence(&self) -> f64 {
        // Without a written full stop, the model's own belief that the sentence could
        // end here (Whisper often drops the last full stop of a short stretch of audio).
        let base = if self.ends_sentence {
            0.8
        } else {
            0.3 + 0.5 * self.sentence_end_probability.clamp(0.0, 1.0)
        };
        let silence_ms = (self.silence_run * 1000 / RATE) as f64;
        let towards_max = (silence_ms / self.config.max_turn_silence_ms.max(1) as f64).min(1.0);
        (base + 0.2 * towards_max).min(1.0)
    }

    /// The decode at the settle point, when the budget allows: the short context, and
    /// its recheck at once only if it is in doubt *and* the engine is idle. On a busy
    /// engine the recheck is owed instead (`Settled::RecheckOwed`, `None` here): pauses
    /// of 200–400 ms inside a turn are common ("Ask … not"), and a full-window decode
    /// for each fragment, in every stream, was what queued the finals of streams
    /// pausing together.
    fn decode_settle(&mut self) -> Result<Option<Turn>, ModelError> {
        if !self.budget.available() {
            return Ok(None);
        }
        let raw = self.decode_urgent(&DecodeOptions {
            defer_recheck: true,
            ..self.decode_options(false)
        })?;
        if !raw.stats.recheck_owed {
            return Ok(Some(self.to_turn(&raw)));
        }
        self.settled = Settled::RecheckOwed(raw.stats);
        // The recheck's draft is its own (the short context's tokens are the doubtful
        // ones).
        self.draft.clear();
        self.decode_final_if(true)
    }

    /// The current turn decoded for its (likely) final; waits for an inference slot
    /// ahead of work nobody is waiting on.
    fn decode_final(&mut self) -> Result<Turn, ModelError> {
        // Callers check the budget first (or must decode, at the end of the stream).
        let raw = self.decode_urgent(&self.final_decode_options())?;
        Ok(self.to_turn(&raw))
    }

    /// Decodes the current turn ahead of work nobody waits on, spending a budget token
    /// and superseding the partial in flight; the result is noted for the next decode.
    fn decode_urgent(&mut self, options: &DecodeOptions) -> Result<RawTranscript, ModelError> {
        self.budget.spend();
        self.supersede_partial();
        let raw = self.engine.transcribe_pcm_at(
            Priority::Urgent,
            &self.model,
            self.decode_audio(),
            options,
        )?;
        self.note_decode(&raw);
        Ok(raw)
    }

    /// As [`Self::decode_final`]; with `if_idle`, only if the engine is idle (`None` when
    /// it is busy). Either way only within the decode budget (`None` when it is spent).
    fn decode_final_if(&mut self, if_idle: bool) -> Result<Option<Turn>, ModelError> {
        if !self.budget.available() {
            return Ok(None);
        }
        if !if_idle {
            return self.decode_final().map(Some);
        }
        // Our own partial would make the engine look busy; a recheck supersedes it.
        self.supersede_partial();
        let options = self.final_decode_options();
        match self
            .engine
            .transcribe_pcm_if_idle(&self.model, self.decode_audio(), &options)
        {
            Some(raw) => {
                self.budget.spend();
                let raw = raw?;
                self.note_decode(&raw);
                Ok(Some(self.to_turn(&raw)))
            }
            None => Ok(None),
        }
    }

    /// What the next decode of the turn and the end-of-turn decision take from this one.
    fn note_decode(&mut self, raw: &crate::decode::RawTranscript) {
        self.stats.decodes += 1;
        if raw.stats.audio_context >= self.model.whisper.dims.n_audio_ctx {
            self.stats.full_window_decodes += 1;
        }
        self.draft = raw.first_window_tokens.clone();
        self.ends_sentence = raw.text().trim_end().ends_with(['.', '?', '!']);
        self.sentence_end_probability = raw.sentence_end_probability.unwrap_or(0.0);
    }

    /// Options for decoding the current turn for its final: straight to the recheck
    /// when the settle decode found the short context in doubt (for the same speech:
    /// only silence followed), else the short context with its recheck.
    fn final_decode_options(&self) -> DecodeOptions {
        let options = self.decode_options(false);
        match &self.settled {
            Settled::RecheckOwed(short) => crate::decode::recheck_options(short, &options),
            _ => options,
        }
    }

    /// Options for decoding the current turn; the previous decode of the turn is the
    /// draft (most of its tokens come out again), which makes repeated decodes cheap.
    fn decode_options(&self, partial: bool) -> DecodeOptions {
        DecodeOptions {
            language: self.config.language.clone(),
            short_context: true,
            min_short_context: if partial {
                SHORT_CONTEXT_MIN
            } else {
                FINAL_CONTEXT_MIN
            },
            // Partials are superseded within a second; a final stands.
            short_context_recheck: (!partial).then_some(FINAL_NO_SPEECH_RECHECK),
            draft: self.draft.clone(),
            // A live turn is at most `max_turn_secs`; speech carries well under 10
            // tokens a second, so more is a hallucination loop, not worth decoding.
            sample_len: DecodeOptions::default()
                .sample_len
                .min(16 + self.turn_audio.len() * 10 / RATE),
            ..DecodeOptions::default()
        }
    }

    /// The current turn's audio without trailing silence beyond what decoding needs.
    fn decode_audio(&self) -> &[f32] {
        let cut = self
            .silence_run
            .saturating_sub(TRAILING_SILENCE_KEEP_MS as usize * RATE / 1000);
        &self.turn_audio[..self.turn_audio.len() - cut.min(self.turn_audio.len())]
    }

    fn to_turn(&self, raw: &crate::decode::RawTranscript) -> Turn {
        let offset_ms = self.turn_start_sample as f64 * 1000.0 / RATE as f64;
        let t = crate::engine::shape_transcription(
            raw,
            offset_ms,
            self.config.punctuate,
            self.config.format_text,
            0.0,
            &self.model.name,
        );
        let start_ms = t.words.first().map_or(offset_ms as u64, |w| w.start);
        let end_ms = t.words.last().map_or(start_ms, |w| w.end);
        Turn {
            turn_order: self.turn_order,
            text: t.text,
            words: t.words,
            start_ms,
            end_ms,
            confidence: t.confidence,
            end_of_turn_confidence: 0.0,
        }
    }

    /// Whether the turn can end now: its final is decoded already, or the decode
    /// budget allows decoding it.
    fn can_finish_turn(&self) -> bool {
        self.in_turn && (matches!(self.settled, Settled::Final(_)) || self.budget.available())
    }

    fn finish_turn(&mut self) -> Result<Option<StreamEvent>, ModelError> {
        self.force_pending = false;
        if !self.in_turn {
            return Ok(None);
        }
        // Only silence since the decode at the start of the pause: the same audio.
        let mut turn = match std::mem::replace(&mut self.settled, Settled::Nothing) {
            Settled::Final(turn) => turn,
            unsettled => {
                // Put back what picks the decode's context (a recheck owed).
                self.settled = unsettled;
                self.decode_final()?
            }
        };
        self.settled = Settled::Nothing;
        self.supersede_partial();
        turn.end_of_turn_confidence = self.end_of_turn_confidence();
        self.in_turn = false;
        self.partial_due = false;
        self.turn_audio.clear();
        self.silence_run = 0;
        self.ends_sentence = false;
        self.draft.clear();
        self.turn_start_sample = self.samples_seen;
        if turn.words.is_empty() {
            // Noise the VAD took for speech: no turn, and the order is not used up.
            return Ok(None);
        }
        self.turn_order += 1;
        Ok(Some(StreamEvent::Final(turn)))
    }

    /// End the current turn now (the client's ForceEndpoint). Returns its final, if any.
    /// Over the decode budget the turn ends as soon as the budget allows (with the
    /// audio received by then).
    pub fn force_endpoint(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        if !self.in_turn {
            return Ok(Vec::new());
        }
        if !self.can_finish_turn() {
            self.force_pending = true;
            return Ok(Vec::new());
        }
        Ok(self.finish_turn()?.into_iter().collect())
    }

    /// End of stream: flush buffered audio and finalise the open turn.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        let mut events = Vec::new();
        if !self.pending_frame.is_empty() && self.in_turn {
            let rest = std::mem::take(&mut self.pending_frame);
            self.turn_audio.extend_from_slice(&rest);
            self.samples_seen += rest.len() as u64;
        }
        events.extend(self.finish_turn()?);
        Ok(events)
    }
}

impl Drop for StreamingSession {
    /// A partial still decoding stops at its next step instead of running on for a
    /// session that is gone.
    fn drop(&mut self) {
        if let Some(job) = self.partial.take() {
            job.cancel.cancel();
        }
    }
}

impl SpeechStream for StreamingSession {
    fn push_audio(&mut self, pcm: &[f32]) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(StreamingSession::push_audio(self, pcm)?)
    }

    fn force_endpoint(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(StreamingSession::force_endpoint(self)?)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, SpeechError> {
        Ok(StreamingSession::finish(self)?)
    }

    fn update(&mut self, update: &StreamingUpdate) {
        self.config.apply(update);
    }

    fn audio_ms(&self) -> u64 {
        StreamingSession::audio_ms(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However decodes are asked for, a session gets `DECODE_BURST` at once and then
    /// `DECODES_PER_AUDIO_SEC` per second of audio.
    #[test]
    fn decode_budget_bounds_decodes_per_second_of_audio() {
        let mut budget = DecodeBudget::new();
        let mut granted = 0;
        // Ten seconds of audio in 20 ms frames, a decode wanted after every frame.
        for _ in 0..500 {
            budget.refill(FRAME);
            if budget.take() {
                granted += 1;
            }
        }
        assert_eq!(granted, DECODE_BURST + 10 * DECODES_PER_AUDIO_SEC - 1);
        assert!(!budget.take());
        budget.spend();
        assert!(!budget.available());
    }
}
