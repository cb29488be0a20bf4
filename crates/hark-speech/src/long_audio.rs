//! Long audio in bounded memory. A decoded stream is read twice: the survey learns what
//! Whisper's front end needs from the whole signal before the first window (its length,
//! the loudest log-mel value for the dynamic-range clamp, the 10-ms frame energies that
//! word timing snaps to), then [`StreamedMel`] computes the log-mel window by window
//! while the decoder runs only as far ahead as the current window needs. Both compute
//! the log-mel in the same blocks as [`MelFrontEnd::log_mel`], so the result is
//! bit-identical to transcribing the whole signal held in memory.

use crate::decode::{MelWindows, FRAME_ENERGY_SAMPLES, SAMPLES_PER_WINDOW};
use crate::error::ModelError;
use crate::mel::{
    clamp_and_scale, silent_log_power, MelFrontEnd, Signal, BLOCK_FRAMES, HOP, N_FFT,
};
use rayon::prelude::*;

/// Where decoded 16-kHz mono samples come from, chunk by chunk.
pub trait PcmSource {
    /// The next samples (never empty); `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, ModelError>;
}

impl PcmSource for hark_audio::AudioStream {
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, ModelError> {
        hark_audio::AudioStream::next_chunk(self).map_err(ModelError::Audio)
    }
}

/// The samples of a stream that are transcribed: from `start` up to `end` (exclusive),
/// both clamped to the stream's length, as a request's `audio_start_from` and
/// `audio_end_at` slice it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleSpan {
    pub start: u64,
    pub end: Option<u64>,
}

/// What the survey learnt about a span of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Survey {
    /// Samples in the whole stream.
    pub stream_samples: u64,
    /// First sample of the span, clamped to the stream.
    pub start: u64,
    /// Samples in the span.
    pub len: usize,
    /// The loudest `log10` mel power of the span followed by Whisper's 30 s of padding.
    pub max_log_power: f32,
    /// Energy of each 10-ms frame of the span, dB (see [`crate::decode`]'s word snapping).
    pub frame_energy_db: Vec<f32>,
}

/// Frames of log-mel the second pass holds at most: a window and block rounding.
pub const WINDOW_FRAMES_HELD: usize = SAMPLES_PER_WINDOW / HOP + 2 * BLOCK_FRAMES;
/// Samples the second pass holds at most: a window's, block rounding, a decoder chunk.
pub const WINDOW_SAMPLES_HELD: usize = SAMPLES_PER_WINDOW + 2 * BLOCK_FRAMES * HOP + 16_384;

/// Blocks of log-mel frames computed together in the survey (parallel work, ~20 s).
const SURVEY_BATCH_BLOCKS: usize = 8;

/// Index one past the last sample that frames `..end_frame` read (their centred windows).
fn samples_needed(end_frame: usize) -> usize {
    (end_frame * HOP + N_FFT / 2).saturating_sub(HOP)
}

/// The first sample that frames from `first_frame` on read.
fn first_sample_read(first_frame: usize) -> usize {
    (first_frame * HOP).saturating_sub(N_FFT / 2)
}

/// Blocks holding audio for a span of `len` samples: later blocks read only padding.
fn blocks_with_audio(len: usize) -> usize {
    let mut blocks = 0;
    while first_sample_read(blocks * BLOCK_FRAMES) < len {
        blocks += 1;
    }
    blocks
}

/// A stream read from the start of a span on, into a buffer that keeps only the samples
/// the log-mel blocks not yet computed will read.
struct SpanBuffer<'a> {
    source: &'a mut dyn PcmSource,
    span: SampleSpan,
    /// Stream position of the next chunk's first sample.
    position: u64,
    /// Span samples received so far.
    received: usize,
    /// Stop reading at this many span samples (known in the second pass).
    limit: Option<usize>,
    ended: bool,
    /// Span samples from `first` on.
    samples: Vec<f32>,
    first: usize,
}

impl<'a> SpanBuffer<'a> {
    fn new(source: &'a mut dyn PcmSource, span: SampleSpan, limit: Option<usize>) -> Self {
        SpanBuffer {
            source,
            span,
            position: 0,
            received: 0,
            limit,
            ended: false,
            samples: Vec::new(),
            first: 0,
        }
    }

    /// Reads one more chunk; the span part of it, if any, is appended and returned as
    /// a range of `samples`. `None` at the end of the span.
    fn read(&mut self) -> Result<Option<std::ops::Range<usize>>, ModelError> {
        if self.ended || self.limit.is_some_and(|l| self.received >= l) {
            self.ended = true;
            return Ok(None);
        }
        let Some(chunk) = self.source.next_chunk()? else {
            self.ended = true;
            return Ok(None);
        };
        let chunk_start = self.position;
        self.position += chunk.len() as u64;
        let in_chunk = |at: u64| at.saturating_sub(chunk_start).min(chunk.len() as u64) as usize;
        let lo = in_chunk(self.span.start);
        let mut hi = self.span.end.map_or(chunk.len(), in_chunk);
        if let Some(limit) = self.limit {
            hi = hi.min(lo + (limit - self.received));
        }
        let at = self.samples.len();
        if lo < hi {
            self.samples.extend_from_slice(&chunk[lo..hi]);
            self.received += hi - lo;
        }
        if self.span.end.is_some_and(|end| self.position >= end) {
            self.ended = true;
        }
        Ok(Some(at..self.samples.len()))
    }

    /// Forgets the samples before span sample `keep_from`.
    fn drop_before(&mut self, keep_from: usize) {
        let n = keep_from.saturating_sub(self.first).min(self.samples.len());
        self.samples.drain(..n);
        self.first += n;
    }

    /// The held samples as a signal of `len` audio samples plus Whisper's padding.
    fn signal(&self, len: usize) -> Signal<'_> {
        Signal {
            samples: &self.samples,
            first: self.first,
            len,
            total: len + SAMPLES_PER_WINDOW,
        }
    }
}

/// Computes log-mel blocks `from..to` in parallel: `[frames, n_mels]` rows.
fn compute_blocks(frontend: &MelFrontEnd, signal: &Signal<'_>, from: usize, to: usize) -> Vec<f32> {
    let row = BLOCK_FRAMES * frontend.n_mels;
    let mut rows = vec![0.0f32; to.saturating_sub(from) * row];
    rows.par_chunks_mut(row)
        .enumerate()
        .for_each(|(i, out)| frontend.log_power_block(signal, (from + i) * BLOCK_FRAMES, out));
    rows
}

/// 10-ms frame energies computed as samples arrive, equal to
/// [`crate::decode::frame_energy_db`] of the whole signal.
struct EnergyMeter {
    partial: Vec<f32>,
    db: Vec<f32>,
    samples: usize,
}

impl EnergyMeter {
    fn new() -> Self {
        EnergyMeter {
            partial: Vec::with_capacity(FRAME_ENERGY_SAMPLES),
            db: Vec::new(),
            samples: 0,
        }
    }

    fn push(&mut self, mut samples: &[f32]) {
        self.samples += samples.len();
        if !self.partial.is_empty() {
            let take = (FRAME_ENERGY_SAMPLES - self.partial.len()).min(samples.len());
            self.partial.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.partial.len() == FRAME_ENERGY_SAMPLES {
                self.db.push(crate::decode::frame_db(&self.partial));
                self.partial.clear();
            }
        }
        let mut frames = samples.chunks_exact(FRAME_ENERGY_SAMPLES);
        self.db.extend(frames.by_ref().map(crate::decode::frame_db));
        self.partial.extend_from_slice(frames.remainder());
    }

    fn finish(mut self) -> Vec<f32> {
        if self.samples < FRAME_ENERGY_SAMPLES {
            return Vec::new();
        }
        if !self.partial.is_empty() {
            self.db.push(crate::decode::frame_db(&self.partial));
        }
        self.db
    }
}

/// The first pass: reads `source` to its end (so decoding errors and the duration limit
/// show before any inference) and measures the span.
pub fn survey(
    frontend: &MelFrontEnd,
    source: &mut dyn PcmSource,
    span: SampleSpan,
) -> Result<Survey, ModelError> {
    let mut buffer = SpanBuffer::new(source, span, None);
    let mut energy = EnergyMeter::new();
    let mut max = f32::NEG_INFINITY;
    let mut next_block = 0usize;
    loop {
        let read = buffer.read()?;
        if let Some(range) = &read {
            energy.push(&buffer.samples[range.clone()]);
        }
        // While reading, a block is computed once every sample it reads has arrived
        // (then nothing past the end is read, whatever the final length); at the end,
        // every block that reads audio.
        let ready = match read {
            Some(_) => {
                let mut ready = next_block;
                while samples_needed((ready + 1) * BLOCK_FRAMES) <= buffer.received {
                    ready += 1;
                }
                if ready - next_block < SURVEY_BATCH_BLOCKS {
                    continue;
                }
                ready
            }
            None => blocks_with_audio(buffer.received),
        };
        let signal = buffer.signal(buffer.received);
        let rows = compute_blocks(frontend, &signal, next_block, ready);
        max = rows.iter().copied().fold(max, f32::max);
        next_block = ready.max(next_block);
        buffer.drop_before(first_sample_read(next_block * BLOCK_FRAMES));
        if read.is_none() {
            break;
        }
    }
    // Whisper's 30 s of padding always holds frames of nothing but zeros.
    max = max.max(silent_log_power());
    // The rest of the stream, after the span: its length (and any decoding error).
    let stream_samples = stream_length(&mut buffer)?;
    let start = span.start.min(stream_samples);
    Ok(Survey {
        stream_samples,
        start,
        len: buffer.received,
        max_log_power: max,
        frame_energy_db: energy.finish(),
    })
}

/// Reads what is left of the stream, returning its total length in samples.
fn stream_length(buffer: &mut SpanBuffer<'_>) -> Result<u64, ModelError> {
    while let Some(chunk) = buffer.source.next_chunk()? {
        buffer.position += chunk.len() as u64;
    }
    Ok(buffer.position)
}

/// The second pass: the log-mel of a surveyed span, computed window by window from a
/// fresh stream of the same audio. Holds the frames from the current window on and the
/// samples the next blocks read, never the whole signal.
pub struct StreamedMel<'a> {
    frontend: &'a MelFrontEnd,
    buffer: SpanBuffer<'a>,
    len: usize,
    floor: f32,
    /// `log10` mel power, `[frames, n_mels]`, of the frames from `rows_first` on.
    rows: Vec<f32>,
    rows_first: usize,
    next_block: usize,
}

impl<'a> StreamedMel<'a> {
    pub fn new(
        frontend: &'a MelFrontEnd,
        source: &'a mut dyn PcmSource,
        span: SampleSpan,
        survey: &Survey,
    ) -> Self {
        let mut buffer = SpanBuffer::new(source, span, Some(survey.len));
        // Room, reserved once, for what a window reads: its frames plus block rounding,
        // and its samples plus block rounding and a decoder chunk.
        buffer.samples.reserve_exact(WINDOW_SAMPLES_HELD);
        let rows = Vec::with_capacity(WINDOW_FRAMES_HELD * frontend.n_mels);
        StreamedMel {
            frontend,
            buffer,
            len: survey.len,
            floor: survey.max_log_power - 8.0,
            rows,
            rows_first: 0,
            next_block: 0,
        }
    }

    /// Samples and mel frames held now (for the memory bound).
    pub fn buffered_values(&self) -> usize {
        self.buffer.samples.capacity() + self.rows.capacity()
    }

    /// Forgets the frames before `frame` (`rows` always covers the frames from
    /// `rows_first` up to the first block not computed).
    fn release_before(&mut self, frame: usize) {
        let n_mels = self.frontend.n_mels.max(1);
        let release = frame
            .saturating_sub(self.rows_first)
            .min(self.rows.len() / n_mels);
        self.rows.drain(..release * n_mels);
        self.rows_first += release;
    }

    /// Computes the blocks up to (not including) `to`.
    fn compute_until(&mut self, to: usize) -> Result<(), ModelError> {
        if to <= self.next_block {
            return Ok(());
        }
        let needed = samples_needed(to * BLOCK_FRAMES).min(self.len);
        while self.buffer.received < needed {
            if self.buffer.read()?.is_none() {
                break;
            }
        }
        if self.buffer.received < needed {
            return Err(ModelError::Audio(hark_audio::AudioError::Io(
                "the audio decoded differently on the second pass".into(),
            )));
        }
        let signal = self.buffer.signal(self.len);
        let rows = compute_blocks(self.frontend, &signal, self.next_block, to);
        self.rows.extend_from_slice(&rows);
        self.next_block = to;
        self.buffer
            .drop_before(first_sample_read(self.next_block * BLOCK_FRAMES));
        Ok(())
    }
}

impl MelWindows for StreamedMel<'_> {
    fn content_frames(&self) -> usize {
        self.len / HOP
    }

    fn window(&mut self, start: usize, valid: usize, width: usize) -> Result<Vec<f32>, ModelError> {
        let n_mels = self.frontend.n_mels;
        let take = valid.min(width);
        if start < self.rows_first {
            return Err(ModelError::Invalid(format!(
                "mel window at frame {start} requested after frame {} was released",
                self.rows_first
            )));
        }
        // Windows only move forward: frames before this one are not needed again.
        self.release_before(start);
        self.compute_until((start + take).div_ceil(BLOCK_FRAMES))?;
        self.release_before(start);
        let mut out = vec![0.0f32; n_mels * width];
        for i in 0..take {
            let row = &self.rows[i * n_mels..(i + 1) * n_mels];
            for (m, v) in row.iter().enumerate() {
                out[m * width + i] = clamp_and_scale(*v, self.floor);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::frame_energy_db;
    use crate::mel::mel_window;

    /// A deterministic test signal: tones whose pitch and loudness wander, with quiet gaps.
    fn sample(i: usize) -> f32 {
        let t = i as f32 / 16_000.0;
        let loud = if (i / 37_000) % 5 == 3 { 0.001 } else { 0.4 };
        let pitch = 200.0 + 150.0 * ((i / 8_000) % 7) as f32;
        loud * (2.0 * std::f32::consts::PI * pitch * t).sin()
            + 0.05 * (((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
    }

    /// Hands out a generated signal in chunks of varying size without ever holding it.
    struct Generated {
        len: usize,
        at: usize,
        chunk: Vec<f32>,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Generated {
        fn new(len: usize, sizes: &[usize]) -> Self {
            Generated {
                len,
                at: 0,
                chunk: Vec::new(),
                sizes: sizes.to_vec(),
                turn: 0,
            }
        }
    }

    impl PcmSource for Generated {
        fn next_chunk(&mut self) -> Result<Option<&[f32]>, ModelError> {
            if self.at >= self.len {
                return Ok(None);
            }
            let n = self.sizes[self.turn % self.sizes.len()].min(self.len - self.at);
            self.turn += 1;
            self.chunk.clear();
            self.chunk.extend((self.at..self.at + n).map(sample));
            self.at += n;
            Ok(Some(&self.chunk))
        }
    }

    /// Survey + streamed windows give the very bits of the whole-signal log-mel, for
    /// every window of a seek pattern like the decoder's, and for spans of the stream.
    #[test]
    fn streamed_windows_equal_the_whole_log_mel() {
        let frontend = MelFrontEnd::new(80);
        let total = 16_000 * 95 + 123;
        let whole: Vec<f32> = (0..total).map(sample).collect();
        let spans = [
            SampleSpan::default(),
            SampleSpan {
                start: 40_001,
                end: Some(16_000 * 71 + 7),
            },
            SampleSpan {
                start: 5,
                end: Some(u64::MAX),
            },
        ];
        for span in spans {
            let start = (span.start as usize).min(total);
            let end = span
                .end
                .map_or(total, |e| (e as usize).min(total))
                .max(start);
            let part = &whole[start..end];
            let (mel, frames) = frontend.log_mel(part, SAMPLES_PER_WINDOW);
            let content = part.len() / HOP;

            let mut first = Generated::new(total, &[1152, 333, 4096, 17]);
            let surveyed = survey(&frontend, &mut first, span).unwrap();
            assert_eq!(surveyed.stream_samples, total as u64);
            assert_eq!(surveyed.start, start as u64);
            assert_eq!(surveyed.len, part.len());
            assert_eq!(surveyed.frame_energy_db, frame_energy_db(part));

            let mut second = Generated::new(total, &[999, 5000, 1]);
            let mut streamed = StreamedMel::new(&frontend, &mut second, span, &surveyed);
            assert_eq!(streamed.content_frames(), content);
            // The decoder's pattern: a language-detection look at 0, then forward seeks
            // of varying length, the last window short.
            let mut seeks = vec![0usize, 0];
            let mut seek = 0;
            for step in [2_840usize, 3_000, 1_234, 3_000, 2_999] {
                seek += step;
                if seek < content {
                    seeks.push(seek);
                }
            }
            for seek in seeks {
                let valid = 3_000.min(content - seek);
                let want = mel_window(&mel, 80, frames, seek, valid, 3_000);
                let got = streamed.window(seek, valid, 3_000).unwrap();
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "window at {seek} of span {span:?} differs"
                );
            }
        }
    }

    /// Over an hour of audio the second pass holds about one window of frames and a
    /// block of samples, however long the audio.
    #[test]
    fn streamed_mel_memory_stays_bounded() {
        let frontend = MelFrontEnd::new(80);
        let total = 16_000 * 3_600;
        let span = SampleSpan::default();
        let surveyed = Survey {
            stream_samples: total as u64,
            start: 0,
            len: total,
            max_log_power: 1.0,
            frame_energy_db: Vec::new(),
        };
        let mut source = Generated::new(total, &[1152]);
        let mut streamed = StreamedMel::new(&frontend, &mut source, span, &surveyed);
        let content = streamed.content_frames();
        // A window of frames plus block rounding, as mel values, and the samples of a
        // window plus block rounding and a decoder chunk: 3.4 MB in all, against 230 MB
        // for the hour's samples alone. Past it a buffer would have had to grow.
        let bound = WINDOW_FRAMES_HELD * 80 + WINDOW_SAMPLES_HELD;
        let mut most = 0;
        let mut seek = 0;
        while seek < content {
            let valid = 3_000.min(content - seek);
            streamed.window(seek, valid, 3_000).unwrap();
            most = most.max(streamed.buffered_values());
            seek += 2_900;
        }
        assert!(
            most <= bound,
            "held {most} values for a window (bound {bound})"
        );
        assert!(most > 3_000 * 80, "held only {most}: not a window's worth");
    }
}
