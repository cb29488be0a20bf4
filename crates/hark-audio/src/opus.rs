//! Opus packets (demuxed from Ogg or Matroska by symphonia) decoded with the pure-Rust
//! `opus-rs` crate, since symphonia has no Opus codec.

use opus_rs::multistream::{ChannelMappingTable, MultistreamDecoder};

/// Opus always decodes at this rate here; the resampler takes it to 16 kHz.
pub(crate) const OPUS_RATE: u32 = 48_000;
/// Most output channels accepted (RFC 7845 mapping families allow up to 255).
const MAX_CHANNELS: usize = 8;
/// The longest Opus packet lasts 120 ms (RFC 6716 §3.2.5): frames per channel at 48 kHz.
const MAX_PACKET_FRAMES: usize = 5_760;

/// An Opus stream decoder configured from the `OpusHead` identification header.
pub(crate) struct OpusStream {
    decoder: MultistreamDecoder,
    channels: usize,
    gain: f32,
    /// One packet's interleaved output, reused from packet to packet.
    pcm: Vec<f32>,
    /// Frames of the header's pre-skip (the encoder's look-ahead, RFC 7845 §4.2) still
    /// to drop from the start of the stream.
    pre_skip_left: usize,
}

impl OpusStream {
    /// Builds the decoder from `OpusHead` (symphonia puts it in the codec's extra data).
    /// `fallback_channels` is used when there is no header (e.g. some Matroska files).
    pub(crate) fn new(head: Option<&[u8]>, fallback_channels: usize) -> Result<Self, String> {
        let (channels, gain_q8, streams, coupled, mapping, pre_skip) = match head {
            Some(h) if h.len() >= 19 && &h[..8] == b"OpusHead" => {
                let channels = usize::from(h[9]);
                let pre_skip = usize::from(u16::from_le_bytes([h[10], h[11]]));
                let gain_q8 = i16::from_le_bytes([h[16], h[17]]);
                let family = h[18];
                if channels == 0 {
                    return Err("Opus header declares zero channels".into());
                }
                if family == 0 {
                    if channels > 2 {
                        return Err("Opus mapping family 0 with more than 2 channels".into());
                    }
                    let mapping: Vec<u8> = (0..channels as u8).collect();
                    (channels, gain_q8, 1, channels - 1, mapping, pre_skip)
                } else {
                    let streams = usize::from(*h.get(19).ok_or("short Opus header")?);
                    let coupled = usize::from(*h.get(20).ok_or("short Opus header")?);
                    let mapping = h
                        .get(21..21 + channels)
                        .ok_or("short Opus header")?
                        .to_vec();
                    (channels, gain_q8, streams, coupled, mapping, pre_skip)
                }
            }
            Some(_) => return Err("malformed OpusHead".into()),
            None => {
                let channels = fallback_channels.clamp(1, 2);
                let mapping: Vec<u8> = (0..channels as u8).collect();
                (channels, 0, 1, channels - 1, mapping, 0)
            }
        };
        // Validate what the decoder would otherwise assert on.
        let decoded = streams + coupled;
        if channels > MAX_CHANNELS
            || streams == 0
            || coupled > streams
            || decoded > 255
            || mapping
                .iter()
                .any(|&m| m != 255 && usize::from(m) >= decoded)
        {
            return Err("unsupported Opus channel layout".into());
        }
        // The checks above keep every count within a byte.
        let byte = |n: usize| u8::try_from(n).map_err(|_| "unsupported Opus channel layout");
        let table = ChannelMappingTable {
            channels: byte(channels)?,
            stream_count: byte(streams)?,
            coupled_count: byte(coupled)?,
            mapping,
        };
        let decoder = MultistreamDecoder::new(OPUS_RATE as i32, table)
            .map_err(|e| format!("Opus decoder: {e}"))?;
        let gain = 10f32.powf(f32::from(gain_q8) / (20.0 * 256.0));
        Ok(Self {
            decoder,
            channels,
            gain,
            pcm: vec![0.0; MAX_PACKET_FRAMES * channels],
            pre_skip_left: pre_skip,
        })
    }

    /// Decodes one packet and appends its frames, downmixed to mono, to `mono`, after
    /// dropping `trim_start` leading and `trim_end` trailing frames (the container's
    /// gapless trimming) and what is left of the header's pre-skip (which containers do
    /// not always report as trimming; the larger of the two is dropped, never both).
    /// Returns the number of frames appended.
    pub(crate) fn decode_mono(
        &mut self,
        packet: &[u8],
        trim_start: usize,
        trim_end: usize,
        mono: &mut Vec<f32>,
    ) -> Result<usize, String> {
        let frames = self
            .decoder
            .decode(packet, MAX_PACKET_FRAMES, &mut self.pcm)
            .map_err(|e| format!("Opus packet: {e}"))?;
        let pcm = &self.pcm[..frames * self.channels];
        let pre_skip = self.pre_skip_left.min(frames);
        self.pre_skip_left -= pre_skip;
        let start = trim_start.max(pre_skip).min(frames);
        let end = frames.saturating_sub(trim_end).max(start);
        let scale = self.gain / self.channels as f32;
        for frame in pcm[start * self.channels..end * self.channels].chunks_exact(self.channels) {
            let sum: f32 = frame.iter().sum();
            mono.push(crate::resample::clean(sum * scale));
        }
        Ok(end - start)
    }
}
