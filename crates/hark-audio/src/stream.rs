//! Incremental conversion of raw streaming audio (PCM s16le or G.711 mu-law, any rate)
//! to 16 kHz mono f32, for the live-transcription WebSocket.

use crate::resample::ChunkResampler;
use crate::AudioError;

/// Encoding of the raw bytes a streaming client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmEncoding {
    /// Signed 16-bit little-endian samples, mono.
    PcmS16le,
    /// ITU-T G.711 mu-law, 8 bits per sample, mono.
    PcmMulaw,
}

/// Converts pushed byte chunks of any size to 16 kHz mono samples. The output of many
/// small pushes equals that of one big push (the input is re-chunked internally).
pub struct StreamResampler {
    encoding: PcmEncoding,
    resampler: ChunkResampler,
    /// A trailing odd byte of s16le input waiting for its partner.
    carry: Option<u8>,
    scratch: Vec<f32>,
}

impl StreamResampler {
    /// Fails with [`AudioError::Io`] for a sample rate outside 1 kHz..=768 kHz; callers
    /// should validate the client's `sample_rate` before this.
    pub fn new(input_rate: u32, encoding: PcmEncoding) -> Result<Self, AudioError> {
        // 20 ms chunks keep the added latency small.
        let chunk = (input_rate / 50) as usize;
        Ok(Self {
            encoding,
            resampler: ChunkResampler::new(input_rate, chunk)?,
            carry: None,
            scratch: Vec::new(),
        })
    }

    /// Converts `bytes` and returns the 16 kHz samples that are ready.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<f32> {
        self.scratch.clear();
        match self.encoding {
            PcmEncoding::PcmMulaw => self
                .scratch
                .extend(bytes.iter().map(|&b| f32::from(mulaw_to_i16(b)) / 32768.0)),
            PcmEncoding::PcmS16le => {
                let mut rest = bytes;
                if let Some(lo) = self.carry.take() {
                    if let Some((&hi, tail)) = rest.split_first() {
                        self.scratch
                            .push(f32::from(i16::from_le_bytes([lo, hi])) / 32768.0);
                        rest = tail;
                    } else {
                        self.carry = Some(lo);
                    }
                }
                let mut pairs = rest.chunks_exact(2);
                self.scratch.extend(
                    pairs
                        .by_ref()
                        .map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32768.0),
                );
                if let [odd] = pairs.remainder() {
                    self.carry = Some(*odd);
                }
            }
        }
        let mut out = Vec::new();
        // Only fails on an internal rubato length mismatch, which the re-chunking rules out;
        // a failure yields no samples rather than a panic.
        let _ = self.resampler.push_into(&self.scratch, &mut out);
        out
    }

    /// Ends the stream: returns the samples still held in the resampler (a dangling odd
    /// byte is dropped). Call once; later pushes start from an empty delay line state.
    pub fn flush(&mut self) -> Vec<f32> {
        self.carry = None;
        let mut out = Vec::new();
        let _ = self.resampler.finish_into(&mut out);
        out
    }
}

/// ITU-T G.711 mu-law byte to a linear 16-bit sample (range ±32124).
pub(crate) fn mulaw_to_i16(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let value = if u & 0x80 != 0 { -magnitude } else { magnitude };
    value as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_reference_points() {
        assert_eq!(mulaw_to_i16(0xFF), 0);
        assert_eq!(mulaw_to_i16(0x7F), 0);
        assert_eq!(mulaw_to_i16(0x80), 32124);
        assert_eq!(mulaw_to_i16(0x00), -32124);
        assert_eq!(mulaw_to_i16(0xFE), 8);
        assert_eq!(mulaw_to_i16(0x7E), -8);
    }

    #[test]
    fn odd_byte_boundaries() {
        let samples: Vec<i16> = (0..3200).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut a = StreamResampler::new(16_000, PcmEncoding::PcmS16le).unwrap();
        let mut whole = a.push(&bytes);
        whole.extend(a.flush());
        let mut b = StreamResampler::new(16_000, PcmEncoding::PcmS16le).unwrap();
        let mut pieces = Vec::new();
        for c in bytes.chunks(7) {
            pieces.extend(b.push(c));
        }
        pieces.extend(b.flush());
        assert_eq!(whole, pieces);
        assert_eq!(whole.len(), samples.len());
    }
}
