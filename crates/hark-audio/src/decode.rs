//! Batch decoding: probe the container, decode packet by packet, downmix to mono and
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

pub(crate) fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DecodedAudio, AudioError> {
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
    guarded(&head, extension.as_deref(), &open, limits)
}

pub(crate) fn decode_bytes(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
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
    guarded(head, None, &open, limits)
}

/// Runs the decoder with a panic guard: a third-party decoder that panics on a hostile
/// file must not take the worker down with it.
fn guarded(
    head: &[u8],
    extension: Option<&str>,
    open: &Opener<'_>,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    let container = audio_container(head);
    let known_extension = extension.is_some_and(|e| AUDIO_EXTENSIONS.contains(&e));
    if container.is_none() && !(known_extension && describe(head) == "unknown") {
        return Err(AudioError::NotAudio(describe(head)));
    }
    let kind = container.unwrap_or("unknown");
    match catch_unwind(AssertUnwindSafe(|| {
        decode_stream(kind, extension, open, limits)
    })) {
        Ok(result) => result,
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

fn decode_stream(
    kind: &str,
    extension: Option<&str>,
    open: &Opener<'_>,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    let not_audio = || AudioError::NotAudio(kind.to_string());
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

    let mut codec = if params.codec == CODEC_TYPE_OPUS {
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

    let mut out: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut sample_buf: Option<SampleBuffer<f32>> = None;
    let mut resampler: Option<ChunkResampler> = None;
    // Duration so far: whole finished rate segments plus frames at the current rate
    // (counted as integers, so 3 s of audio is 3.0 s, not 2.9999999).
    let mut finished_secs = 0.0f64;
    let mut segment_frames = 0u64;
    let mut source_rate = params.sample_rate.unwrap_or(0);
    let mut source_channels = params.channels.map_or(0, |c| c.count() as u16);
    let mut bad_packets = 0u32;
    let mut any_decoded = false;

    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // A damaged page or frame: the demuxer resynchronises on the next call, so
            // skip it, a bounded number of times.
            Err(SymError::DecodeError(_)) if bad_packets < MAX_BAD_PACKETS => {
                bad_packets += 1;
                continue;
            }
            // End of file, a truncated file, or a corrupt tail: keep what decoded.
            Err(_) => break,
        };
        if packet.track_id() != track.id {
            continue;
        }
        mono.clear();
        let rate = match &mut codec {
            Codec::Opus(stream) => {
                match stream.decode_mono(
                    packet.buf(),
                    packet.trim_start() as usize,
                    packet.trim_end() as usize,
                    &mut mono,
                ) {
                    Ok(_) => OPUS_RATE,
                    Err(_) => {
                        bad_packets += 1;
                        if bad_packets > MAX_BAD_PACKETS {
                            break;
                        }
                        continue;
                    }
                }
            }
            Codec::Symphonia(decoder) => match decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = *buf.spec();
                    let channels = spec.channels.count();
                    let frames = buf.frames();
                    if channels == 0 || frames == 0 {
                        continue;
                    }
                    source_channels = channels as u16;
                    let needed = buf.capacity().max(frames) * channels;
                    if sample_buf.as_ref().is_none_or(|b| b.capacity() < needed) {
                        sample_buf =
                            Some(SampleBuffer::new(buf.capacity().max(frames) as u64, spec));
                    }
                    if let Some(sb) = sample_buf.as_mut() {
                        sb.copy_interleaved_ref(buf);
                        let scale = 1.0 / channels as f32;
                        mono.extend(
                            sb.samples()
                                .chunks_exact(channels)
                                .map(|f| clean(f.iter().sum::<f32>() * scale)),
                        );
                    }
                    spec.rate
                }
                Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                    bad_packets += 1;
                    if bad_packets > MAX_BAD_PACKETS {
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            },
        };
        if trim_skip > 0 {
            let n = trim_skip.min(mono.len() as u64) as usize;
            mono.drain(..n);
            trim_skip -= n as u64;
        }
        if let Some(keep) = trim_keep.as_mut() {
            mono.truncate((*keep).min(mono.len() as u64) as usize);
            *keep -= mono.len() as u64;
        }
        if mono.is_empty() {
            continue;
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(not_audio());
        }
        if !any_decoded {
            source_rate = rate;
        }
        any_decoded = true;
        // A rate change mid-stream (chained streams) flushes into a new resampler.
        if resampler.as_ref().is_some_and(|r| r.rate_in() != rate) {
            if let Some(mut old) = resampler.take() {
                old.finish_into(&mut out)?;
                finished_secs += segment_frames as f64 / f64::from(old.rate_in());
                segment_frames = 0;
            }
        }
        let rs = match resampler.as_mut() {
            Some(rs) => rs,
            None => resampler.insert(ChunkResampler::new(rate, RESAMPLE_CHUNK)?),
        };
        rs.push_into(&mono, &mut out)?;
        segment_frames += mono.len() as u64;
        let secs = finished_secs + segment_frames as f64 / f64::from(rate);

        if secs > limits.max_duration_secs + LIMIT_SLACK_SECS {
            let rest = count_remaining(format.as_mut(), track.id, tick.unwrap_or(0.0));
            return Err(too_long(secs + rest, limits));
        }
    }
    let mut secs = finished_secs;
    if let Some(mut rs) = resampler.take() {
        rs.finish_into(&mut out)?;
        secs += segment_frames as f64 / f64::from(rs.rate_in());
    }
    if !any_decoded {
        // Nothing decodable at all: corrupt or not really audio, unless it is merely empty.
        return if bad_packets > 0 {
            Err(not_audio())
        } else {
            Err(AudioError::TooShort)
        };
    }
    if secs < MIN_DURATION_SECS {
        return Err(AudioError::TooShort);
    }
    if let Codec::Opus(_) = codec {
        source_channels = params
            .channels
            .map_or(source_channels, |c| c.count() as u16);
    }
    Ok(DecodedAudio {
        samples: out,
        duration_secs: secs,
        source_sample_rate: source_rate,
        source_channels,
    })
}
