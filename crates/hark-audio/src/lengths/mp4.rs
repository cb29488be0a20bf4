//! MP4/M4A: the atoms symphonia parses and the sample tables' counts and sizes.

use std::io::Read;

use symphonia::core::io::{MediaSource, MediaSourceStream};

use super::skip;
use crate::mp4::{be_u32, be_u64};

/// The largest MP4 metadata atom (`moov`, `moof`, a top-level `meta`) checked: some
/// hundreds of hours of AAC. A bigger one is refused rather than read into memory.
const MAX_MP4_METADATA: u64 = 256 << 20;
/// Deeper nesting than any real file has (a hostile one could nest to exhaust the stack).
const MAX_MP4_DEPTH: u32 = 32;

/// MP4: the top-level atoms, as symphonia's `IsoMp4Reader` reads them; those it parses
/// (`moov`, `moof`, `meta`, `udta`) are walked, the rest (`mdat` above all) skipped.
pub(super) fn mp4_top_level_fits(reader: &mut MediaSourceStream) -> bool {
    let walk = Mp4Walk {
        depth: 0,
        file_len: reader.byte_len().unwrap_or(u64::MAX),
    };
    loop {
        let mut header = [0u8; 8];
        if reader.read_exact(&mut header).is_err() {
            return true;
        }
        let kind = [header[4], header[5], header[6], header[7]];
        let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            0 => u64::MAX, // to the end of the file
            1 => {
                let mut large = [0u8; 8];
                if reader.read_exact(&mut large).is_err() {
                    return true;
                }
                match u64::from_be_bytes(large).checked_sub(16) {
                    Some(size) => size,
                    None => return true, // symphonia: invalid atom size
                }
            }
            n => match u64::from(n).checked_sub(8) {
                Some(size) => size,
                None => return true,
            },
        };
        if matches!(&kind, b"moov" | b"moof" | b"meta" | b"udta") {
            let mut bytes = Vec::new();
            let mut body = reader.by_ref().take(size.min(MAX_MP4_METADATA + 1));
            if body.read_to_end(&mut bytes).is_err() {
                return true;
            }
            if bytes.len() as u64 > MAX_MP4_METADATA {
                return false;
            }
            // A truncated atom is checked as far as it goes: its children must fit in
            // what is there.
            if !mp4_atom_fits(kind, &bytes, Mp4Context::Plain, walk) {
                return false;
            }
            if bytes.len() as u64 != size {
                return true; // the file ends inside it
            }
        } else if skip(reader, size).is_err() {
            return true;
        }
    }
}

/// Where the walk is: its depth, and the file's length (no sample can be longer).
#[derive(Clone, Copy)]
struct Mp4Walk {
    depth: u32,
    file_len: u64,
}

impl Mp4Walk {
    fn deeper(self) -> Self {
        Mp4Walk {
            depth: self.depth + 1,
            ..self
        }
    }

    /// symphonia reads each sample into a buffer of its declared size.
    fn sample_size_fits(self, size: &[u8]) -> bool {
        be_u32(size, 0).is_none_or(|size| u64::from(size) <= self.file_len)
    }
}

/// What the atoms of a container are.
#[derive(Clone, Copy)]
enum Mp4Context {
    Plain,
    /// Children of `ilst`: tag items, each a container of `data`, `name` and `mean`.
    TagList,
    /// Children of `stsd`: sample entries.
    SampleDescriptions,
}

/// Each child atom of `body` must fit in it, and its own contents must check out.
fn mp4_children_fit(mut body: &[u8], context: Mp4Context, walk: Mp4Walk) -> bool {
    if walk.depth > MAX_MP4_DEPTH {
        return false;
    }
    while body.len() >= 8 {
        let kind = [body[4], body[5], body[6], body[7]];
        let (size, header_len) = match be_u32(body, 0).unwrap_or_default() {
            0 => (body.len() as u64, 8),
            1 => match be_u64(body, 8) {
                Some(large) => (large, 16),
                None => return true,
            },
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return true; // symphonia stops at an invalid atom size without allocating
        }
        if size > body.len() as u64 {
            return false; // claims more than its container holds
        }
        let (atom, rest) = body.split_at(size as usize);
        if !mp4_atom_fits(kind, &atom[header_len as usize..], context, walk.deeper()) {
            return false;
        }
        body = rest;
    }
    true
}

/// One atom's contents, by its type and where it sits.
fn mp4_atom_fits(kind: [u8; 4], inner: &[u8], context: Mp4Context, walk: Mp4Walk) -> bool {
    match context {
        Mp4Context::TagList => return mp4_children_fit(inner, Mp4Context::Plain, walk),
        Mp4Context::SampleDescriptions => {
            return match audio_sample_entry_header_len(&kind, inner) {
                Some(fixed) => mp4_children_fit(&inner[fixed..], Mp4Context::Plain, walk),
                None => true, // video, subtitles, ...: symphonia skips them
            };
        }
        Mp4Context::Plain => {}
    }
    let skip = |n: usize| inner.get(n..).unwrap_or_default();
    match &kind {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"udta" | b"mvex"
        | b"moof" | b"traf" | b"wave" => mp4_children_fit(inner, Mp4Context::Plain, walk),
        // Full boxes: version and flags first.
        b"meta" => mp4_children_fit(skip(4), Mp4Context::Plain, walk),
        b"ilst" => mp4_children_fit(inner, Mp4Context::TagList, walk),
        b"stsd" => mp4_children_fit(skip(8), Mp4Context::SampleDescriptions, walk),
        // Tables: version and flags, an entry count, then fixed-size entries.
        b"stsc" => table_fits(inner, 4, 12),
        b"stco" => table_fits(inner, 4, 4),
        b"co64" | b"stts" | b"ctts" => table_fits(inner, 4, 8),
        b"elst" => table_fits(inner, 4, if inner.first() == Some(&1) { 20 } else { 12 }),
        // Sample sizes: one for all, or (when that is 0) a table.
        b"stsz" => match inner.get(4..8) {
            Some([0, 0, 0, 0]) => {
                table_fits(inner, 8, 4)
                    && skip(12)
                        .chunks_exact(4)
                        .all(|size| walk.sample_size_fits(size))
            }
            Some(size) => walk.sample_size_fits(size),
            None => true,
        },
        // Fragments: a track's default sample size, a fragment's, and each run's.
        b"trex" => walk.sample_size_fits(inner.get(16..20).unwrap_or_default()),
        b"tfhd" => {
            let flags = inner
                .get(1..4)
                .map_or(0, |f| u32::from_be_bytes([0, f[0], f[1], f[2]]));
            let at = 8 + [(0x1, 8), (0x2, 4), (0x8, 4)]
                .iter()
                .filter(|&&(bit, _)| flags & bit != 0)
                .map(|&(_, len)| len)
                .sum::<usize>();
            flags & 0x10 == 0 || walk.sample_size_fits(inner.get(at..at + 4).unwrap_or_default())
        }
        b"trun" => trun_sizes_fit(inner, walk),
        _ => true,
    }
}

/// The fixed part of an audio sample entry symphonia reads (by its version), or `None`
/// for an entry it does not read as audio.
fn audio_sample_entry_header_len(kind: &[u8; 4], inner: &[u8]) -> Option<usize> {
    let audio = matches!(
        kind,
        b"mp4a"
            | b"alac"
            | b"fLaC"
            | b"Opus"
            | b".mp3"
            | b"lpcm"
            | b"wave"
            | b"alaw"
            | b"ulaw"
            | b"raw "
            | b"sowt"
            | b"twos"
            | b"in24"
            | b"in32"
            | b"fl32"
            | b"fl64"
    );
    if !audio {
        return None;
    }
    let fixed = match inner.get(8..10)? {
        [0, 0] => 28,
        [0, 1] => 44,
        [0, 2] => 64,
        _ => return None, // symphonia refuses other versions
    };
    Some(fixed.min(inner.len()))
}

/// A track run: optional fields by its flags, then per sample the fields its flags
/// select, the size among them.
fn trun_sizes_fit(inner: &[u8], walk: Mp4Walk) -> bool {
    let (Some(flags), Some(count)) = (inner.get(1..4), inner.get(4..8)) else {
        return true;
    };
    let flags = u32::from_be_bytes([0, flags[0], flags[1], flags[2]]);
    if flags & 0x200 == 0 {
        return true;
    }
    let count = be_u32(count, 0).unwrap_or_default() as usize;
    let start = 8 + 4 * usize::from(flags & 0x1 != 0) + 4 * usize::from(flags & 0x4 != 0);
    let record = 4 * (flags & 0xf00).count_ones() as usize;
    let size_at = 4 * usize::from(flags & 0x100 != 0);
    inner
        .get(start..)
        .unwrap_or_default()
        .chunks_exact(record)
        .take(count)
        .all(|sample| walk.sample_size_fits(&sample[size_at..size_at + 4]))
}

/// A table whose u32 entry count sits at `count_at`, entries right after it.
fn table_fits(inner: &[u8], count_at: usize, entry_len: u64) -> bool {
    let Some(count) = be_u32(inner, count_at) else {
        return true;
    };
    u64::from(count) * entry_len <= (inner.len() - count_at - 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_sample_sizes_are_checked_against_the_file() {
        let walk = Mp4Walk {
            depth: 0,
            file_len: 1000,
        };
        // Flags: data offset (0x1), duration (0x100) and size (0x200) per sample.
        let run = |sizes: &[u32]| {
            let mut trun = vec![0, 0, 0x03, 0x01];
            trun.extend_from_slice(&(sizes.len() as u32).to_be_bytes());
            trun.extend_from_slice(&8u32.to_be_bytes());
            for size in sizes {
                trun.extend_from_slice(&1024u32.to_be_bytes());
                trun.extend_from_slice(&size.to_be_bytes());
            }
            trun
        };
        assert!(trun_sizes_fit(&run(&[100, 1000, 7]), walk));
        assert!(!trun_sizes_fit(&run(&[100, 1001, 7]), walk));
        // A fragment header with a base offset (0x1) and a default size (0x10).
        let mut tfhd = vec![0, 0, 0, 0x11, 0, 0, 0, 1];
        tfhd.extend_from_slice(&[0; 8]);
        tfhd.extend_from_slice(&1001u32.to_be_bytes());
        assert!(!mp4_atom_fits(*b"tfhd", &tfhd, Mp4Context::Plain, walk));
        tfhd[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert!(mp4_atom_fits(*b"tfhd", &tfhd, Mp4Context::Plain, walk));
    }
}
