//! Decoding: probe the container, decode packet by packet, downmix to mono and
//! resample to 16 kHz in chunks, enforcing the duration limits as it goes.

use std::fs::File;
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{
    MediaSource, MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource,
};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::lengths::declared_lengths_fit;
use crate::mp4::edit_trim;
use crate::opus::{OpusStream, OPUS_RATE};
use crate::resample::{clean, ChunkResampler, MAX_RATE, MIN_RATE};
use crate::sniff::{audio_container, describe};
use crate::{AudioError, DecodeLimits, DecodedAudio};

/// Shortest audio accepted, in seconds (AssemblyAI's 160 ms).
const MIN_DURATION_SECS: f64 = 0.160;
/// Undecodable packets skipped before the rest of the stream is given up on.
const MAX_BAD_PACKETS: u32 = 200;
/// Audio this much over the limit still passes (codec padding, rounding).
const LIMIT_SLACK_SECS: f64 = 0.001;
/// Input chunk for the batch resampler, in source frames.
const RESAMPLE_CHUNK: usize = 4096;
/// File extensions that make a file worth probing even when its first bytes are unknown.
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "m4b", "mov", "aif",
    "aiff", "caf", "mka", "mkv", "webm",
];

/// Opens a fresh source; `false` asks for one that hides its seekability (see `probe`).
type Opener<'a> = dyn Fn(bool) -> Result<Box<dyn MediaSource>, AudioError> + 'a;

/// Opens an audio file from disk for decoding packet by packet.
pub(crate) fn open_file(path: &Path, limits: &DecodeLimits) -> Result<AudioStream, AudioError> {
    let mut head = Vec::with_capacity(64);
    File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .map_err(|e| AudioError::Io(format!("{}: {e}", path.display())))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let open = |seekable: bool| -> Result<Box<dyn MediaSource>, AudioError> {
        let file =
            File::open(path).map_err(|e| AudioError::Io(format!("{}: {e}", path.display())))?;
        Ok(if seekable {
            Box::new(file)
        } else {
            Box::new(ReadOnlySource::new(file))
        })
    };
    guarded_open(&head, extension.as_deref(), &open, limits)
}

/// Opens audio held in memory (copied once into a shared buffer) for decoding.
pub(crate) fn open_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<AudioStream, AudioError> {
    let head = &bytes[..bytes.len().min(64)];
    // symphonia needs an owned ('static) source; one shared copy serves every pass.
    let shared: Arc<[u8]> = Arc::from(bytes);
    let open = |seekable: bool| -> Result<Box<dyn MediaSource>, AudioError> {
        let cursor = Cursor::new(Arc::clone(&shared));
        Ok(if seekable {
            Box::new(cursor)
        } else {
            Box::new(ReadOnlySource::new(cursor))
        })
    };
    guarded_open(head, None, &open, limits)
}

/// Decodes a whole stream into one buffer.
pub(crate) fn collect(mut stream: AudioStream) -> Result<DecodedAudio, AudioError> {
    let mut samples = Vec::new();
    while let Some(chunk) = stream.next_chunk()? {
        samples.extend_from_slice(chunk);
    }
    let summary = stream
        .summary()
        .cloned()
        .ok_or_else(|| AudioError::Io("decoder ended without a summary".into()))?;
    Ok(DecodedAudio {
        samples,
        duration_secs: summary.duration_secs,
        source_sample_rate: summary.source_sample_rate,
        source_channels: summary.source_channels,
    })
}

/// Probes and sets up the decoder with a panic guard: a third-party decoder that panics
/// on a hostile file must not take the worker down with it (each later
/// [`AudioStream::next_chunk`] is guarded the same way).
fn guarded_open(
    head: &[u8],
    extension: Option<&str>,
    open: &Opener<'_>,
    limits: &DecodeLimits,
) -> Result<AudioStream, AudioError> {
    let container = audio_container(head);
    let known_extension = extension.is_some_and(|e| AUDIO_EXTENSIONS.contains(&e));
    if container.is_none() && !(known_extension && describe(head) == "unknown") {
        return Err(AudioError::NotAudio(describe(head)));
    }
    let kind = container.unwrap_or("unknown");
    match catch_unwind(AssertUnwindSafe(|| {
        open_stream(kind, extension, open, limits)
    })) {
        Ok(Ok(state)) => Ok(AudioStream {
            kind: kind.to_string(),
            state: Some(Box::new(state)),
            chunk: Vec::new(),
            summary: None,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AudioError::NotAudio(kind.to_string())),
    }
}

/// Opens and probes the container. Some readers (Ogg) scan to the end of a seekable
/// source first and fail on a truncated file; a second try without seeking still
/// decodes what is there.
fn probe(
    open: &Opener<'_>,
    extension: Option<&str>,
    kind: &str,
) -> Result<Box<dyn FormatReader>, AudioError> {
    probe_with(open, extension, kind, true).or_else(|e| match e {
        AudioError::NotAudio(_) => probe_with(open, extension, kind, false),
        other => Err(other),
    })
}

fn probe_with(
    open: &Opener<'_>,
    extension: Option<&str>,
    kind: &str,
    seekable: bool,
) -> Result<Box<dyn FormatReader>, AudioError> {
    let mss = MediaSourceStream::new(open(seekable)?, MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let format_options = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    symphonia::default::get_probe()
        .format(&hint, mss, &format_options, &MetadataOptions::default())
        .map(|probed| probed.format)
        .map_err(|_| AudioError::NotAudio(kind.to_string()))
}

/// Seconds per time-base tick of a track (`1 / sample_rate` when there is no time base).
fn tick_secs(params: &CodecParameters) -> Option<f64> {
    match (params.time_base, params.sample_rate) {
        (Some(tb), _) if tb.numer > 0 && tb.denom > 0 => {
            Some(f64::from(tb.numer) / f64::from(tb.denom))
        }
        (_, Some(rate)) if rate > 0 => Some(1.0 / f64::from(rate)),
        _ => None,
    }
}

/// Adds up the durations of the remaining packets of `track_id` without decoding them.
fn count_remaining(format: &mut dyn FormatReader, track_id: u32, tick: f64) -> f64 {
    let mut secs = 0.0;
    while let Ok(packet) = format.next_packet() {
        if packet.track_id() == track_id {
            secs += packet.dur() as f64 * tick;
        }
    }
    secs
}

/// Converts media-timescale ticks to frames at `rate`.
fn ticks_to_frames(ticks: u64, rate: u32, timescale: u32) -> u64 {
    (u128::from(ticks) * u128::from(rate) / u128::from(timescale.max(1))) as u64
}

fn too_long(secs: f64, limits: &DecodeLimits) -> AudioError {
    AudioError::TooLong {
        secs,
        max_secs: limits.max_duration_secs.max(0.0).floor() as u64,
    }
}

enum Codec {
    Symphonia(Box<dyn Decoder>),
    Opus(OpusStream),
}

/// 16 kHz mono audio decoded a packet at a time: only the current packet, the
/// resampler's input chunk and the samples handed out last are held, however long the
/// file. Opened by [`crate::open_file`] / [`crate::open_bytes`].
pub struct AudioStream {
    kind: String,
    /// `None` once the stream has ended or failed.
    state: Option<Box<StreamState>>,
    /// The samples returned by the last [`AudioStream::next_chunk`].
    chunk: Vec<f32>,
    summary: Option<AudioSummary>,
}

/// What the whole stream turned out to be, known once it has ended.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioSummary {
    /// Length of the decoded source audio in seconds.
    pub duration_secs: f64,
    /// Sample rate of the source stream (Opus streams decode at 48 000).
    pub source_sample_rate: u32,
    pub source_channels: u16,
    /// 16 kHz samples handed out in total.
    pub samples: u64,
}

impl AudioStream {
    /// The next 16 kHz mono samples (never empty); `Ok(None)` once the stream has ended,
    /// and from then on [`Self::summary`] describes it. An error ends the stream.
    pub fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError> {
        let Some(state) = self.state.as_mut() else {
            return Ok(None);
        };
        self.chunk.clear();
        let chunk = &mut self.chunk;
        let step = catch_unwind(AssertUnwindSafe(|| state.advance(chunk)));
        match step {
            Ok(Ok(Step::Samples)) => Ok(Some(&self.chunk)),
            Ok(Ok(Step::End(summary))) => {
                self.state = None;
                self.summary = Some(summary);
                // The tail the resampler still held, if any, comes out before the end.
                if self.chunk.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(&self.chunk))
                }
            }
            Ok(Err(e)) => {
                self.state = None;
                Err(e)
            }
            Err(_) => {
                self.state = None;
                Err(AudioError::NotAudio(self.kind.clone()))
            }
        }
    }

    /// The stream's length and source format, once [`Self::next_chunk`] has returned
    /// `Ok(None)`.
    pub fn summary(&self) -> Option<&AudioSummary> {
        if self.state.is_none() {
            self.summary.as_ref()
        } else {
            None
        }
    }

    /// Samples held in the decoder's buffers right now (decoded packet, resampler input,
    /// interleaved copy, last chunk): what bounds its memory whatever the file's length.
    pub fn buffered_samples(&self) -> usize {
        self.chunk.capacity() + self.state.as_ref().map_or(0, |s| s.buffered_samples())
    }
}

enum Step {
    /// Samples were appended.
    Samples,
    /// The stream ended (the resampler's tail, if any, was appended).
    End(AudioSummary),
}

/// The decoder between packets.
struct StreamState {
    kind: String,
    format: Box<dyn FormatReader>,
    track_id: u32,
    tick: Option<f64>,
    max_secs: f64,
    limits: DecodeLimits,
    codec: Codec,
    trim_skip: u64,
    trim_keep: Option<u64>,
    mono: Vec<f32>,
    sample_buf: Option<SampleBuffer<f32>>,
    resampler: Option<ChunkResampler>,
    /// Duration so far: whole finished rate segments plus frames at the current rate
    /// (counted as integers, so 3 s of audio is 3.0 s, not 2.9999999).
    finished_secs: f64,
    segment_frames: u64,
    source_rate: u32,
    source_channels: u16,
    declared_channels: Option<u16>,
    bad_packets: u32,
    any_decoded: bool,
    samples_out: u64,
}

fn open_stream(
    kind: &str,
    extension: Option<&str>,
    open: &Opener<'_>,
    limits: &DecodeLimits,
) -> Result<StreamState, AudioError> {
    let not_audio = || AudioError::NotAudio(kind.to_string());
    if !declared_lengths_fit(open(true)?) {
        return Err(not_audio());
    }
    let mut format = probe(open, extension, kind)?;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .cloned()
        .ok_or_else(not_audio)?;
    let params = &track.codec_params;
    let tick = tick_secs(params);

    // A declared length over the limit is checked by demuxing only (cheap), so a long
    // file is refused without decoding it; a header that lies costs a second open.
    if let (Some(frames), Some(rate)) = (params.n_frames, params.sample_rate) {
        let declared = frames as f64 / f64::from(rate.max(1));
        if declared > limits.max_duration_secs + LIMIT_SLACK_SECS {
            let counted = count_remaining(format.as_mut(), track.id, tick.unwrap_or(0.0));
            if counted > limits.max_duration_secs + LIMIT_SLACK_SECS {
                return Err(too_long(counted, limits));
            }
            format = probe(open, extension, kind)?;
        }
    }

    // MP4 edit list: drop encoder priming and end padding (symphonia 0.5 ignores it).
    let (mut trim_skip, mut trim_keep) = (0u64, None::<u64>);
    if kind == "audio/mp4" && params.codec != CODEC_TYPE_OPUS {
        if let (Some(edit), Some(rate)) = (
            open(true).ok().and_then(|mut src| edit_trim(&mut src)),
            params.sample_rate,
        ) {
            let ts = edit.media_timescale;
            trim_skip = ticks_to_frames(edit.skip, rate, ts);
            trim_keep = edit.keep.map(|k| ticks_to_frames(k, rate, ts));
        }
    }

    let codec = if params.codec == CODEC_TYPE_OPUS {
        let channels = params.channels.map_or(1, |c| c.count());
        Codec::Opus(
            OpusStream::new(params.extra_data.as_deref(), channels).map_err(|_| not_audio())?,
        )
    } else {
        let decoder = symphonia::default::get_codecs()
            .make(params, &DecoderOptions::default())
            .map_err(|_| not_audio())?;
        Codec::Symphonia(decoder)
    };
    Ok(StreamState {
        kind: kind.to_string(),
        format,
        track_id: track.id,
        tick,
        max_secs: limits.max_duration_secs + LIMIT_SLACK_SECS,
        limits: limits.clone(),
        codec,
        trim_skip,
        trim_keep,
        mono: Vec::new(),
        sample_buf: None,
        resampler: None,
        finished_secs: 0.0,
        segment_frames: 0,
        source_rate: params.sample_rate.unwrap_or(0),
        source_channels: params.channels.map_or(0, |c| c.count() as u16),
        declared_channels: params.channels.map(|c| c.count() as u16),
        bad_packets: 0,
        any_decoded: false,
        samples_out: 0,
    })
}

impl StreamState {
    fn not_audio(&self) -> AudioError {
        AudioError::NotAudio(self.kind.clone())
    }

    fn buffered_samples(&self) -> usize {
        self.mono.capacity()
            + self.sample_buf.as_ref().map_or(0, |b| b.capacity())
            + self.resampler.as_ref().map_or(0, |r| r.buffered_samples())
    }

    /// Decodes packets until some 16 kHz samples are appended to `out` or the stream ends.
    fn advance(&mut self, out: &mut Vec<f32>) -> Result<Step, AudioError> {
        let before = out.len();
        while out.len() == before {
            if !self.decode_packet(out)? {
                return self.end(out);
            }
        }
        self.samples_out += (out.len() - before) as u64;
        Ok(Step::Samples)
    }

    /// Decodes the next packet of the track into `out` (which may stay empty while the
    /// resampler fills its chunk); `false` at the end of the stream.
    fn decode_packet(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        let packet = match self.format.next_packet() {
            Ok(packet) => packet,
            // A damaged page or frame: the demuxer resynchronises on the next call, so
            // skip it, a bounded number of times.
            Err(SymError::DecodeError(_)) if self.bad_packets < MAX_BAD_PACKETS => {
                self.bad_packets += 1;
                return Ok(true);
            }
            // End of file, a truncated file, or a corrupt tail: keep what decoded.
            Err(_) => return Ok(false),
        };
        if packet.track_id() != self.track_id {
            return Ok(true);
        }
        self.mono.clear();
        let rate = match &mut self.codec {
            Codec::Opus(stream) => {
                match stream.decode_mono(
                    packet.buf(),
                    packet.trim_start() as usize,
                    packet.trim_end() as usize,
                    &mut self.mono,
                ) {
                    Ok(_) => OPUS_RATE,
                    Err(_) => {
                        self.bad_packets += 1;
                        return Ok(self.bad_packets <= MAX_BAD_PACKETS);
                    }
                }
            }
            Codec::Symphonia(decoder) => match decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = *buf.spec();
                    let channels = spec.channels.count();
                    let frames = buf.frames();
                    if channels == 0 || frames == 0 {
                        return Ok(true);
                    }
                    self.source_channels = channels as u16;
                    let needed = buf.capacity().max(frames) * channels;
                    if self
                        .sample_buf
                        .as_ref()
                        .is_none_or(|b| b.capacity() < needed)
                    {
                        self.sample_buf =
                            Some(SampleBuffer::new(buf.capacity().max(frames) as u64, spec));
                    }
                    if let Some(sb) = self.sample_buf.as_mut() {
                        sb.copy_interleaved_ref(buf);
                        let scale = 1.0 / channels as f32;
                        self.mono.extend(
                            sb.samples()
                                .chunks_exact(channels)
                                .map(|f| clean(f.iter().sum::<f32>() * scale)),
                        );
                    }
                    spec.rate
                }
                Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                    self.bad_packets += 1;
                    return Ok(self.bad_packets <= MAX_BAD_PACKETS);
                }
                Err(_) => return Ok(false),
            },
        };
        if self.trim_skip > 0 {
            let n = self.trim_skip.min(self.mono.len() as u64) as usize;
            self.mono.drain(..n);
            self.trim_skip -= n as u64;
        }
        if let Some(keep) = self.trim_keep.as_mut() {
            self.mono
                .truncate((*keep).min(self.mono.len() as u64) as usize);
            *keep -= self.mono.len() as u64;
        }
        if self.mono.is_empty() {
            return Ok(true);
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(self.not_audio());
        }
        if !self.any_decoded {
            self.source_rate = rate;
        }
        self.any_decoded = true;
        // A rate change mid-stream (chained streams) flushes into a new resampler.
        if self.resampler.as_ref().is_some_and(|r| r.rate_in() != rate) {
            if let Some(mut old) = self.resampler.take() {
                old.finish_into(out)?;
                self.finished_secs += self.segment_frames as f64 / f64::from(old.rate_in());
                self.segment_frames = 0;
            }
        }
        let rs = match self.resampler.as_mut() {
            Some(rs) => rs,
            None => self
                .resampler
                .insert(ChunkResampler::new(rate, RESAMPLE_CHUNK)?),
        };
        rs.push_into(&self.mono, out)?;
        self.segment_frames += self.mono.len() as u64;
        let secs = self.finished_secs + self.segment_frames as f64 / f64::from(rate);

        if secs > self.max_secs {
            let rest = count_remaining(
                self.format.as_mut(),
                self.track_id,
                self.tick.unwrap_or(0.0),
            );
            return Err(too_long(secs + rest, &self.limits));
        }
        Ok(true)
    }

    /// Flushes the resampler into `out` and checks what the whole stream amounted to.
    fn end(&mut self, out: &mut Vec<f32>) -> Result<Step, AudioError> {
        let before = out.len();
        let mut secs = self.finished_secs;
        if let Some(mut rs) = self.resampler.take() {
            rs.finish_into(out)?;
            secs += self.segment_frames as f64 / f64::from(rs.rate_in());
        }
        self.samples_out += (out.len() - before) as u64;
        if !self.any_decoded {
            // Nothing decodable at all: corrupt or not really audio, unless it is merely empty.
            return if self.bad_packets > 0 {
                Err(self.not_audio())
            } else {
                Err(AudioError::TooShort)
            };
        }
        if secs < MIN_DURATION_SECS {
            return Err(AudioError::TooShort);
        }
        let source_channels = match (&self.codec, self.declared_channels) {
            (Codec::Opus(_), Some(declared)) => declared,
            _ => self.source_channels,
        };
        Ok(Step::End(AudioSummary {
            duration_secs: secs,
            source_sample_rate: self.source_rate,
            source_channels,
            samples: self.samples_out,
        }))
    }
}
