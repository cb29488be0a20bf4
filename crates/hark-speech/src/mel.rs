//! Whisper's log-mel front end: 25-ms Hann frames every 10 ms (n_fft 400, hop 160,
//! centred with reflect padding), power spectrum, Slaney mel filterbank, log10 with an
//! 8-decade dynamic-range clamp, scaled as `(x + 4) / 4`.
//! The DFT is done as one matrix product against a cos/sin basis, which reuses the GEMM
//! kernel instead of pulling in an FFT crate (n_fft = 400 is not a power of two).

use crate::kernels;
use rayon::prelude::*;

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const SAMPLE_RATE: usize = 16_000;
const N_BINS: usize = N_FFT / 2 + 1;

/// Precomputed window, DFT basis and filterbank for one mel count.
pub struct MelFrontEnd {
    pub n_mels: usize,
    /// `[2·N_BINS, N_FFT]`: rows 0..N_BINS are windowed cosines, the rest windowed sines.
    basis: Vec<f32>,
    /// `[n_mels, N_BINS]`.
    filters: Vec<f32>,
}

fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        m * f_sp
    }
}

/// librosa's `filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let fft_freqs: Vec<f64> = (0..N_BINS)
        .map(|i| i as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    let max_mel = hz_to_mel(SAMPLE_RATE as f64 / 2.0);
    let mel_points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0.0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let (lo, mid, hi) = (mel_points[m], mel_points[m + 1], mel_points[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (b, f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            out[m * N_BINS + b] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

impl MelFrontEnd {
    pub fn new(n_mels: usize) -> Self {
        // Periodic Hann window, as torch.hann_window(400).
        let window: Vec<f64> = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
            .collect();
        let mut basis = vec![0.0f32; 2 * N_BINS * N_FFT];
        for k in 0..N_BINS {
            for n in 0..N_FFT {
                let angle = 2.0 * std::f64::consts::PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
                basis[k * N_FFT + n] = (window[n] * angle.cos()) as f32;
                basis[(N_BINS + k) * N_FFT + n] = (window[n] * angle.sin()) as f32;
            }
        }
        MelFrontEnd {
            n_mels,
            basis,
            filters: mel_filters(n_mels),
        }
    }

    /// Log-mel of `samples` followed by `pad_samples` zeros; returns `[n_mels, frames]`
    /// channel-major with `frames = (len + pad) / HOP` (Whisper drops the last STFT frame).
    pub fn log_mel(&self, samples: &[f32], pad_samples: usize) -> (Vec<f32>, usize) {
        let total = samples.len() + pad_samples;
        let frames = total / HOP;
        if frames == 0 {
            return (Vec::new(), 0);
        }
        let signal = Signal {
            samples,
            first: 0,
            len: samples.len(),
            total,
        };
        let mut power = vec![0.0f32; frames * self.n_mels];
        power
            .par_chunks_mut(BLOCK_FRAMES * self.n_mels)
            .enumerate()
            .for_each(|(ci, out)| self.log_power_block(&signal, ci * BLOCK_FRAMES, out));
        let max = power.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        // Transpose to channel-major while clamping and scaling.
        let mut mel = vec![0.0f32; self.n_mels * frames];
        for f in 0..frames {
            for m in 0..self.n_mels {
                mel[m * frames + f] = clamp_and_scale(power[f * self.n_mels + m], floor);
            }
        }
        (mel, frames)
    }

    /// `log10` of the mel power of the frames from `first_frame` on, one row of `n_mels`
    /// per frame (`out.len() / n_mels` frames), before Whisper's dynamic-range clamp.
    /// Frames are always computed in the same blocks of [`BLOCK_FRAMES`] from frame 0
    /// (the GEMMs' rounding depends on their shape), so a whole signal and a streamed
    /// one give bit-identical values.
    pub(crate) fn log_power_block(&self, signal: &Signal<'_>, first_frame: usize, out: &mut [f32]) {
        let count = out.len() / self.n_mels;
        let half = N_FFT / 2;
        let mut framebuf = vec![0.0f32; count * N_FFT];
        for f in 0..count {
            let start = ((first_frame + f) * HOP) as isize - half as isize;
            let row = &mut framebuf[f * N_FFT..(f + 1) * N_FFT];
            match signal.contiguous(start, N_FFT) {
                Some(src) => row.copy_from_slice(src),
                None => {
                    for (n, v) in row.iter_mut().enumerate() {
                        *v = signal.at(start + n as isize);
                    }
                }
            }
        }
        let mut spec = vec![0.0f32; count * 2 * N_BINS];
        kernels::gemm_strided(
            count,
            N_FFT,
            2 * N_BINS,
            1.0,
            &framebuf,
            N_FFT,
            1,
            &self.basis,
            1,
            N_FFT,
            &mut spec,
            2 * N_BINS,
        );
        let mut mag = vec![0.0f32; count * N_BINS];
        for f in 0..count {
            for k in 0..N_BINS {
                let re = spec[f * 2 * N_BINS + k];
                let im = spec[f * 2 * N_BINS + N_BINS + k];
                mag[f * N_BINS + k] = re * re + im * im;
            }
        }
        // out[f, m] = mag[f, :] · filters[m, :]
        kernels::gemm_strided(
            count,
            N_BINS,
            self.n_mels,
            1.0,
            &mag,
            N_BINS,
            1,
            &self.filters,
            1,
            N_BINS,
            out,
            self.n_mels,
        );
        for v in out.iter_mut() {
            *v = log_power(*v);
        }
    }
}

/// Frames per block of the log-mel computation (the unit of parallel work, and of the
/// GEMMs whose shape fixes the rounding).
pub(crate) const BLOCK_FRAMES: usize = 256;

/// The clamped `log10` of one mel power value.
fn log_power(power: f32) -> f32 {
    power.max(1e-10).log10()
}

/// `log10` power of a frame of nothing but zeros (the padding after the audio).
pub(crate) fn silent_log_power() -> f32 {
    log_power(0.0)
}

/// Whisper's dynamic-range clamp (8 decades below the loudest value) and scaling.
pub(crate) fn clamp_and_scale(log_power: f32, floor: f32) -> f32 {
    (log_power.max(floor) + 4.0) / 4.0
}

/// The part of a signal a block of frames reads: `samples` are the signal from index
/// `first` on; the signal has `len` samples of audio, then zeros up to `total`, and is
/// reflected at both ends (as Whisper's centred STFT pads it).
pub(crate) struct Signal<'a> {
    pub samples: &'a [f32],
    pub first: usize,
    pub len: usize,
    pub total: usize,
}

impl Signal<'_> {
    /// `n` samples of audio from `start`, when they are all held in `samples`.
    fn contiguous(&self, start: isize, n: usize) -> Option<&[f32]> {
        let start = usize::try_from(start).ok()?;
        if start + n > self.len {
            return None;
        }
        self.samples
            .get(start.checked_sub(self.first)?..)
            .and_then(|s| s.get(..n))
    }

    /// Sample `i` of the zero-extended signal, reflected at both ends.
    fn at(&self, i: isize) -> f32 {
        let n = self.total as isize;
        let mut j = i;
        if j < 0 {
            j = -j;
        }
        if j >= n {
            j = 2 * (n - 1) - j;
        }
        let j = j.clamp(0, (n - 1).max(0)) as usize;
        if j >= self.len {
            return 0.0;
        }
        j.checked_sub(self.first)
            .and_then(|k| self.samples.get(k))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Copy `[n_mels, width]` starting at frame `start` out of a `[n_mels, frames]` mel,
/// zero-padding in log-mel space past `valid` frames (as `pad_or_trim` does in Whisper).
pub fn mel_window(
    mel: &[f32],
    n_mels: usize,
    frames: usize,
    start: usize,
    valid: usize,
    width: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; n_mels * width];
    let take = valid.min(width).min(frames.saturating_sub(start));
    for m in 0..n_mels {
        let src = &mel[m * frames + start..m * frames + start + take];
        out[m * width..m * width + take].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterbank_rows_are_normalised_triangles() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * N_BINS);
        // Slaney normalisation: area of each triangle ≈ 1 / bin spacing scale; all non-negative.
        assert!(f.iter().all(|v| *v >= 0.0));
        for m in 0..80 {
            assert!(
                f[m * N_BINS..(m + 1) * N_BINS].iter().any(|v| *v > 0.0),
                "empty filter {m}"
            );
        }
    }

    #[test]
    fn sine_peaks_in_the_right_band() {
        let fe = MelFrontEnd::new(80);
        let samples: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let (mel, frames) = fe.log_mel(&samples, 0);
        assert_eq!(frames, 100);
        let frame = 50;
        let best = (0..80)
            .max_by(|a, b| mel[a * frames + frame].total_cmp(&mel[b * frames + frame]))
            .unwrap();
        let centre = mel_to_hz(hz_to_mel(8000.0) * (best + 1) as f64 / 81.0);
        assert!((centre - 1000.0).abs() < 120.0, "peak at {centre} Hz");
    }
}
