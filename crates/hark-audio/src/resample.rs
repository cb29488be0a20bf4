//! Chunked mono resampling to 16 kHz on top of rubato, with delay compensation.
//!
//! Input arrives in pieces of any size; it is buffered into the fixed chunks rubato
//! wants, so the output does not depend on how the input was split. The resampler's
//! own latency is removed at the start, and `finish` pads the tail so the output has
//! exactly `round(frames_in * 16000 / rate_in)` samples.

use rubato::{
    calculate_cutoff, FftFixedInOut, Resampler, SincFixedIn, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::AudioError;

/// The output rate of everything in this crate.
pub(crate) const TARGET_RATE: u32 = hark_core::speech::SAMPLE_RATE;

/// Largest reduced input period (`rate / gcd(rate, 16000)`) for which the FFT
/// resampler is used. Above it (odd rates such as 44 099 Hz) the FFT would be huge, so a
/// windowed-sinc interpolator takes over.
const MAX_FFT_PERIOD: usize = 4096;

enum Engine {
    /// Input already at 16 kHz.
    Passthrough,
    Fft(Box<FftFixedInOut<f32>>),
    Sinc(Box<SincFixedIn<f32>>),
}

impl Engine {
    fn input_frames_next(&self) -> usize {
        match self {
            Engine::Passthrough => 1,
            Engine::Fft(r) => r.input_frames_next(),
            Engine::Sinc(r) => r.input_frames_next(),
        }
    }

    fn output_delay(&self) -> usize {
        match self {
            Engine::Passthrough => 0,
            Engine::Fft(r) => r.output_delay(),
            Engine::Sinc(r) => r.output_delay(),
        }
    }

    /// Runs one chunk (`None` = zeros), returning the produced mono frames.
    fn process(&mut self, chunk: Option<&[f32]>) -> Result<Vec<f32>, AudioError> {
        let input: Option<[&[f32]; 1]> = chunk.map(|c| [c]);
        let result = match self {
            Engine::Passthrough => return Ok(chunk.map(<[f32]>::to_vec).unwrap_or_default()),
            Engine::Fft(r) => r.process_partial(input.as_ref().map(|i| &i[..]), None),
            Engine::Sinc(r) => r.process_partial(input.as_ref().map(|i| &i[..]), None),
        };
        let mut out = result.map_err(|e| AudioError::Io(format!("resampler: {e}")))?;
        Ok(out.pop().unwrap_or_default())
    }
}

/// Mono resampler from any supported rate to 16 kHz.
pub(crate) struct ChunkResampler {
    engine: Engine,
    rate_in: u32,
    pending: Vec<f32>,
    frames_in: u64,
    /// Output frames produced by the engine so far (including the skipped delay).
    produced: u64,
    /// Output frames handed to the caller so far.
    emitted: u64,
    delay: u64,
}

/// Lowest and highest input rates accepted anywhere in this crate.
pub(crate) const MIN_RATE: u32 = 1_000;
pub(crate) const MAX_RATE: u32 = 768_000;

impl ChunkResampler {
    /// `chunk_hint` is the desired input chunk length in frames (a latency/speed trade-off).
    pub(crate) fn new(rate_in: u32, chunk_hint: usize) -> Result<Self, AudioError> {
        if !(MIN_RATE..=MAX_RATE).contains(&rate_in) {
            return Err(AudioError::Io(format!(
                "unsupported sample rate {rate_in} Hz (supported: {MIN_RATE}..={MAX_RATE})"
            )));
        }
        let chunk = chunk_hint.max(64);
        let rin = rate_in as usize;
        let rout = TARGET_RATE as usize;
        let engine = if rate_in == TARGET_RATE {
            Engine::Passthrough
        } else if rin / gcd(rin, rout) <= MAX_FFT_PERIOD {
            let r = FftFixedInOut::<f32>::new(rin, rout, chunk, 1)
                .map_err(|e| AudioError::Io(format!("resampler: {e}")))?;
            Engine::Fft(Box::new(r))
        } else {
            let sinc_len = 128;
            let window = WindowFunction::BlackmanHarris2;
            let params = SincInterpolationParameters {
                sinc_len,
                f_cutoff: calculate_cutoff(sinc_len, window),
                interpolation: SincInterpolationType::Cubic,
                oversampling_factor: 256,
                window,
            };
            let ratio = f64::from(TARGET_RATE) / f64::from(rate_in);
            let r = SincFixedIn::<f32>::new(ratio, 1.0, params, chunk, 1)
                .map_err(|e| AudioError::Io(format!("resampler: {e}")))?;
            Engine::Sinc(Box::new(r))
        };
        let delay = engine.output_delay() as u64;
        Ok(Self {
            engine,
            rate_in,
            pending: Vec::new(),
            frames_in: 0,
            produced: 0,
            emitted: 0,
            delay,
        })
    }

    pub(crate) fn rate_in(&self) -> u32 {
        self.rate_in
    }

    /// Input samples held until they fill a chunk.
    pub(crate) fn buffered_samples(&self) -> usize {
        self.pending.capacity()
    }

    /// Output frames the input seen so far should yield in total.
    fn expected_total(&self) -> u64 {
        let num = u128::from(self.frames_in) * u128::from(TARGET_RATE);
        let den = u128::from(self.rate_in);
        ((num + den / 2) / den) as u64
    }

    /// Appends the part of `chunk_out` that lies after the delay and before `limit`.
    fn emit(&mut self, chunk_out: &[f32], limit: Option<u64>, out: &mut Vec<f32>) {
        let start_abs = self.produced;
        self.produced += chunk_out.len() as u64;
        let skip = self
            .delay
            .saturating_sub(start_abs)
            .min(chunk_out.len() as u64) as usize;
        let mut usable = &chunk_out[skip..];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(self.emitted) as usize;
            usable = &usable[..usable.len().min(room)];
        }
        self.emitted += usable.len() as u64;
        out.extend(usable.iter().copied().map(clean));
    }

    /// Feeds mono frames, appending the resampled frames that are ready to `out`.
    pub(crate) fn push_into(
        &mut self,
        input: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<(), AudioError> {
        self.frames_in += input.len() as u64;
        if let Engine::Passthrough = self.engine {
            out.extend(input.iter().copied().map(clean));
            self.emitted += input.len() as u64;
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut offset = 0;
        loop {
            let need = self.engine.input_frames_next();
            if self.pending.len() - offset < need {
                break;
            }
            let produced = self
                .engine
                .process(Some(&self.pending[offset..offset + need]))?;
            offset += need;
            self.emit(&produced, None, out);
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// Drains the remaining input and the resampler's delay line into `out`.
    pub(crate) fn finish_into(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let total = self.expected_total();
        if let Engine::Passthrough = self.engine {
            return Ok(());
        }
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let produced = self.engine.process(Some(&rest))?;
            self.emit(&produced, Some(total), out);
        }
        // Push zeros until the delay line has given up all real output; bounded.
        let mut guard = 0;
        while self.emitted < total && guard < 64 {
            let produced = self.engine.process(None)?;
            if produced.is_empty() {
                break;
            }
            self.emit(&produced, Some(total), out);
            guard += 1;
        }
        // Never leave the caller short (e.g. rounding): pad with silence.
        while self.emitted < total {
            out.push(0.0);
            self.emitted += 1;
        }
        Ok(())
    }
}

/// Keeps a sample inside -1..=1 (resampling can overshoot a full-scale input) and
/// turns NaN/inf from a damaged stream into silence.
pub(crate) fn clean(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: u32, input: &[f32], piece: usize) -> Vec<f32> {
        let mut r = ChunkResampler::new(rate, 1024).unwrap();
        let mut out = Vec::new();
        for p in input.chunks(piece.max(1)) {
            r.push_into(p, &mut out).unwrap();
        }
        r.finish_into(&mut out).unwrap();
        out
    }

    #[test]
    fn lengths_are_exact() {
        for rate in [8_000u32, 16_000, 22_050, 44_100, 48_000, 44_099, 96_000] {
            let n = rate as usize * 3 / 2 + 17;
            let input = vec![0.1f32; n];
            let out = run(rate, &input, 1000);
            let want = ((n as u64 * 16_000 + u64::from(rate) / 2) / u64::from(rate)) as usize;
            assert_eq!(out.len(), want, "rate {rate}");
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let input: Vec<f32> = (0..44_100)
            .map(|i| ((i as f32) * 0.05).sin() * 0.5)
            .collect();
        let a = run(44_100, &input, 44_100);
        let b = run(44_100, &input, 333);
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_absurd_rates() {
        assert!(ChunkResampler::new(0, 1024).is_err());
        assert!(ChunkResampler::new(10_000_000, 1024).is_err());
    }
}
