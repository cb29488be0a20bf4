//! Reads the edit list of an MP4/M4A sound track, which symphonia 0.5 ignores: AAC
//! encoders prepend priming samples (1024 or more) and pad the end, and the edit list
//! says which part of the decoded media is the real audio.

use std::io::{Read, Seek, SeekFrom};

/// Which decoded frames of the sound track are the presentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct EditTrim {
    /// Leading media frames to drop (in the track's media timescale).
    pub(crate) skip: u64,
    /// Media frames to keep after the skip, if the edit says.
    pub(crate) keep: Option<u64>,
    /// Media timescale (ticks per second), usually the sample rate.
    pub(crate) media_timescale: u32,
}

/// Boxes visited before giving up on a hostile file.
const MAX_BOXES: usize = 4096;

/// Visitor for one child box: `(walker, kind, body_start, body_end)`; `None` aborts.
type Visit<'v, W> = dyn FnMut(&mut W, [u8; 4], u64, u64) -> Option<()> + 'v;

struct Walker<'a, R> {
    r: &'a mut R,
    visited: usize,
}

impl<R: Read + Seek> Walker<'_, R> {
    /// Calls `f(kind, body_start, body_end)` for each child box in `start..end`.
    fn children(&mut self, start: u64, end: u64, f: &mut Visit<'_, Self>) -> Option<()> {
        let mut pos = start;
        while pos + 8 <= end {
            self.visited += 1;
            if self.visited > MAX_BOXES {
                return None;
            }
            self.r.seek(SeekFrom::Start(pos)).ok()?;
            let mut header = [0u8; 8];
            self.r.read_exact(&mut header).ok()?;
            let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let kind = [header[4], header[5], header[6], header[7]];
            let (size, header_len) = match size32 {
                0 => (end - pos, 8),
                1 => {
                    let mut large = [0u8; 8];
                    self.r.read_exact(&mut large).ok()?;
                    (u64::from_be_bytes(large), 16)
                }
                n => (u64::from(n), 8),
            };
            if size < header_len {
                return None;
            }
            let box_end = pos.checked_add(size)?.min(end);
            f(self, kind, pos + header_len, box_end)?;
            pos = pos.checked_add(size)?;
        }
        Some(())
    }

    fn read_vec(&mut self, start: u64, end: u64, max: u64) -> Option<Vec<u8>> {
        let len = end.checked_sub(start)?.min(max);
        self.r.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.r.read_exact(&mut buf).ok()?;
        Some(buf)
    }
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[derive(Default)]
struct Track {
    is_sound: bool,
    media_timescale: Option<u32>,
    /// (segment_duration in movie timescale, media_time) of each edit.
    edits: Vec<(u64, i64)>,
}

fn parse_elst(body: &[u8]) -> Option<Vec<(u64, i64)>> {
    let version = *body.first()?;
    let count = be_u32(body, 4)? as usize;
    let entry = if version == 1 { 20 } else { 12 };
    let mut edits = Vec::new();
    for i in 0..count.min(64) {
        let at = 8 + i * entry;
        let (duration, media_time) = if version == 1 {
            (be_u64(body, at)?, be_u64(body, at + 8)? as i64)
        } else {
            (
                u64::from(be_u32(body, at)?),
                i64::from(be_u32(body, at + 4)? as i32),
            )
        };
        edits.push((duration, media_time));
    }
    Some(edits)
}

fn parse_mdhd_timescale(body: &[u8]) -> Option<u32> {
    let at = if *body.first()? == 1 { 20 } else { 12 };
    be_u32(body, at).filter(|&t| t > 0)
}

/// The edit-list trim of the first sound track, if the file has one worth applying.
pub(crate) fn edit_trim<R: Read + Seek>(r: &mut R) -> Option<EditTrim> {
    let file_end = r.seek(SeekFrom::End(0)).ok()?;
    let mut w = Walker { r, visited: 0 };
    let mut movie_timescale: Option<u32> = None;
    let mut tracks: Vec<Track> = Vec::new();
    w.children(0, file_end, &mut |w, kind, start, end| {
        if &kind != b"moov" {
            return Some(());
        }
        w.children(start, end, &mut |w, kind, start, end| {
            match &kind {
                b"mvhd" => {
                    let body = w.read_vec(start, end, 32)?;
                    let at = if *body.first()? == 1 { 20 } else { 12 };
                    movie_timescale = be_u32(&body, at).filter(|&t| t > 0);
                }
                b"trak" => {
                    let mut track = Track::default();
                    w.children(start, end, &mut |w, kind, start, end| {
                        match &kind {
                            b"edts" => w.children(start, end, &mut |w, kind, start, end| {
                                if &kind == b"elst" {
                                    let body = w.read_vec(start, end, 8 + 64 * 20)?;
                                    track.edits = parse_elst(&body).unwrap_or_default();
                                }
                                Some(())
                            })?,
                            b"mdia" => w.children(start, end, &mut |w, kind, start, end| {
                                match &kind {
                                    b"mdhd" => {
                                        let body = w.read_vec(start, end, 32)?;
                                        track.media_timescale = parse_mdhd_timescale(&body);
                                    }
                                    b"hdlr" => {
                                        let body = w.read_vec(start, end, 12)?;
                                        track.is_sound = body.get(8..12) == Some(b"soun");
                                    }
                                    _ => {}
                                }
                                Some(())
                            })?,
                            _ => {}
                        }
                        Some(())
                    })?;
                    tracks.push(track);
                }
                _ => {}
            }
            Some(())
        })
    })?;
    let track = tracks.into_iter().find(|t| t.is_sound)?;
    let media_timescale = track.media_timescale?;
    // Skip leading empty edits (media_time -1); use the first real one.
    let &(duration, media_time) = track.edits.iter().find(|(_, t)| *t >= 0)?;
    let skip = u64::try_from(media_time).ok()?;
    let keep = match (duration, movie_timescale) {
        (0, _) | (_, None) => None,
        (d, Some(mts)) => {
            Some((u128::from(d) * u128::from(media_timescale) / u128::from(mts)) as u64)
        }
    };
    (skip > 0 || keep.is_some()).then_some(EditTrim {
        skip,
        keep,
        media_timescale,
    })
}
