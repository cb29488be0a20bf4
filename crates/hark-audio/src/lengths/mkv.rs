//! Matroska/WebM: elements against the file, block lacing and Vorbis track headers
//! against their block.

use std::io::Read;

use symphonia::core::io::{MediaSource, MediaSourceStream, ReadBytes};

use super::{skip, HARMLESS_CLAIM};

/// Matroska/WebM master elements (symphonia's element table): their data is elements.
const MKV_MASTERS: [u32; 30] = [
    0x1A45_DFA3,
    0x1853_8067,
    0x114D_9B74,
    0x4DBB,
    0x1549_A966,
    0x1F43_B675,
    0xA0,
    0x75A1,
    0xA6,
    0x1654_AE6B,
    0xAE,
    0xE0,
    0xE1,
    0x6D80,
    0x6240,
    0x5035,
    0x47E7,
    0x55B0,
    0x55D0,
    0x1C53_BB6B,
    0xBB,
    0xB7,
    0x1043_A770,
    0x45B9,
    0xB6,
    0x80,
    0x1254_C367,
    0x7373,
    0x63C0,
    0x67C8,
];
/// The elements symphonia scans for after an invalid element ID: Cluster, Cues, Info,
/// SeekHead, Tags and Tracks.
const MKV_TOP_LEVEL: [u32; 6] = [
    0x1F43_B675,
    0x1C53_BB6B,
    0x1549_A966,
    0x114D_9B74,
    0x1254_C367,
    0x1654_AE6B,
];
const MKV_SEGMENT: u32 = 0x1853_8067;
const MKV_TRACK_ENTRY: u32 = 0xAE;
const MKV_BLOCK: u32 = 0xA1;
const MKV_SIMPLE_BLOCK: u32 = 0xA3;
const MKV_CODEC_ID: u32 = 0x86;
const MKV_CODEC_PRIVATE: u32 = 0x63A2;
/// Deeper nesting than any real file has (every master can have an unknown size).
const MAX_MKV_DEPTH: usize = 64;

/// A Matroska reader that counts its position.
struct Ebml<'a> {
    reader: &'a mut MediaSourceStream,
    pos: u64,
}

impl Ebml<'_> {
    fn byte(&mut self) -> Option<u8> {
        let mut byte = [0u8; 1];
        Read::read_exact(self.reader, &mut byte).ok()?;
        self.pos += 1;
        Some(byte[0])
    }

    /// An element ID as symphonia's `read_tag` reads it: `(id, resynchronised)`.
    fn id(&mut self) -> Option<(u32, bool)> {
        let first = self.byte()?;
        let extra = first.leading_zeros();
        if extra <= 3 {
            let mut id = u32::from(first);
            for _ in 0..extra {
                id = (id << 8) | u32::from(self.byte()?);
            }
            return Some((id, false));
        }
        // No ID starts so: symphonia scans on for a top-level element's ID.
        let mut id = 0u32;
        loop {
            if MKV_TOP_LEVEL.contains(&id) {
                return Some((id, true));
            }
            id = (id << 8) | u32::from(self.byte()?);
        }
    }

    /// A data size: `None` for "unknown" (a single 0xFF), otherwise as symphonia's
    /// `read_vint` computes it.
    fn size(&mut self) -> Option<Option<u64>> {
        let (value, _) = self.vint()?;
        Some((value != u64::MAX).then_some(value))
    }

    /// `(value, length)`, with symphonia's arithmetic (an all-zero first byte reads the
    /// next eight bytes whole).
    fn vint(&mut self) -> Option<(u64, u32)> {
        let mut bytes = [0u8; 9];
        bytes[0] = self.byte()?;
        let width = if bytes[0] == 0xFF {
            0
        } else {
            bytes[0].leading_zeros() as usize
        };
        for byte in &mut bytes[1..=width] {
            *byte = self.byte()?;
        }
        leading_vint(&mut &bytes[..=width])
    }

    fn read(&mut self, len: u64) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        self.reader
            .by_ref()
            .take(len)
            .read_to_end(&mut bytes)
            .ok()?;
        self.pos += bytes.len() as u64;
        Some(bytes)
    }

    fn skip(&mut self, len: u64) -> Option<()> {
        skip(self.reader, len).ok()?;
        self.pos = self.pos.saturating_add(len);
        Some(())
    }
}

/// Matroska/WebM: every element symphonia may read whole must fit in the file, and the
/// frame sizes in a block's lacing (and in a Vorbis track's private data) in the block.
pub(super) fn mkv_elements_fit(reader: &mut MediaSourceStream) -> bool {
    let file_end = reader
        .byte_len()
        .map(|len| len.saturating_sub(reader.pos()));
    let mut ebml = Ebml { reader, pos: 0 };
    // Open masters, (ID, end); the current track entry's codec ID and private data.
    let mut open: Vec<(u32, u64)> = Vec::new();
    let mut track: (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    loop {
        while open.last().is_some_and(|&(_, end)| ebml.pos >= end) {
            open.pop();
        }
        let Some((id, resynchronised)) = ebml.id() else {
            return true;
        };
        if resynchronised {
            // Back among the segment's children.
            let segment = open.iter().position(|&(open_id, _)| open_id == MKV_SEGMENT);
            open.truncate(segment.map_or(0, |i| i + 1));
        }
        let Some(size) = ebml.size() else {
            return true;
        };
        if MKV_MASTERS.contains(&id) {
            // An element of unknown size (a live recording's clusters) ends where a
            // sibling or an element of a level above it begins.
            let level = if MKV_TOP_LEVEL.contains(&id) {
                open.iter()
                    .position(|&(open_id, _)| open_id == MKV_SEGMENT)
                    .map(|i| i + 1)
            } else {
                open.iter().position(|&(open_id, _)| open_id == id)
            };
            if let Some(level) = level {
                open.truncate(level);
            }
            if open.len() >= MAX_MKV_DEPTH {
                return false;
            }
            let end = size.map_or(u64::MAX, |size| ebml.pos.saturating_add(size));
            if id == MKV_TRACK_ENTRY {
                track = (None, None);
            }
            open.push((id, end));
            continue;
        }
        // A leaf (symphonia reads an unknown-size leaf as empty).
        let size = size.unwrap_or(0);
        let left = file_end.map_or(u64::MAX, |end| end.saturating_sub(ebml.pos));
        if size > left && size > HARMLESS_CLAIM {
            return false;
        }
        let kept = match id {
            MKV_BLOCK | MKV_SIMPLE_BLOCK | MKV_CODEC_ID | MKV_CODEC_PRIVATE => {
                let Some(bytes) = ebml.read(size) else {
                    return true;
                };
                bytes
            }
            _ => {
                if ebml.skip(size).is_none() {
                    return true;
                }
                continue;
            }
        };
        let fits = match id {
            MKV_CODEC_ID => {
                track.0 = Some(kept);
                track_private_fits(&track)
            }
            MKV_CODEC_PRIVATE => {
                track.1 = Some(kept);
                track_private_fits(&track)
            }
            _ => block_lacing_fits(&kept),
        };
        if !fits {
            return false;
        }
    }
}

/// A Vorbis track's private data is three Xiph-laced headers; symphonia reads each
/// whole.
fn track_private_fits(track: &(Option<Vec<u8>>, Option<Vec<u8>>)) -> bool {
    match track {
        (Some(codec), Some(private)) if codec.starts_with(b"A_VORBIS") => {
            let Some((&count, mut rest)) = private.split_first() else {
                return true;
            };
            match xiph_sizes(&mut rest, usize::from(count)) {
                Some(sizes) => frames_fit(&sizes, rest.len()),
                None => true,
            }
        }
        _ => true,
    }
}

/// A block: track number, timecode, flags, then the frames, laced or not.
fn block_lacing_fits(block: &[u8]) -> bool {
    let mut rest = block;
    if leading_vint(&mut rest).is_none() || rest.len() < 3 {
        return true;
    }
    let flags = rest[2];
    rest = &rest[3..];
    let Some((&count, mut rest)) = rest.split_first() else {
        return true;
    };
    let frames = usize::from(count);
    let sizes = match (flags >> 1) & 0b11 {
        0b01 => xiph_sizes(&mut rest, frames),
        0b11 => ebml_sizes(&mut rest, frames),
        _ => return true, // one frame, or equal frames: sized by the block
    };
    match sizes {
        Some(sizes) => frames_fit(&sizes, rest.len()),
        None => true,
    }
}

/// symphonia reads each laced frame with a buffer of its declared size.
fn frames_fit(sizes: &[u64], mut left: usize) -> bool {
    for &size in sizes {
        match usize::try_from(size)
            .ok()
            .and_then(|size| left.checked_sub(size))
        {
            Some(rest) => left = rest,
            None => return false,
        }
    }
    true
}

fn xiph_sizes(data: &mut &[u8], frames: usize) -> Option<Vec<u64>> {
    let mut sizes = Vec::new();
    let mut prefix = 0u64;
    while sizes.len() < frames {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        if byte == 255 {
            prefix += 255;
        } else {
            sizes.push(prefix + u64::from(byte));
            prefix = 0;
        }
    }
    Some(sizes)
}

/// EBML lacing: the first size, then signed differences (symphonia's wrapping sums).
fn ebml_sizes(data: &mut &[u8], frames: usize) -> Option<Vec<u64>> {
    let mut sizes: Vec<u64> = Vec::new();
    for _ in 0..frames {
        let (value, len) = leading_vint(data)?;
        let size = match sizes.last() {
            None => value,
            Some(&last) => {
                let half_range = 2i64.pow(len * 7 - 1) - 1;
                (last as i64).wrapping_add((value as i64).wrapping_sub(half_range)) as u64
            }
        };
        sizes.push(size);
    }
    Some(sizes)
}

/// A variable-length integer at the start of `data`, as symphonia's `read_vint`.
fn leading_vint(data: &mut &[u8]) -> Option<(u64, u32)> {
    let (&first, rest) = data.split_first()?;
    if first == 0xFF {
        *data = rest;
        return Some((u64::MAX, 1));
    }
    let width = first.leading_zeros();
    let tail = rest.get(..width as usize)?;
    let mut value = u64::from(first) ^ 1u64.wrapping_shl(7u32.wrapping_sub(width));
    for &byte in tail {
        value = (value << 8) | u64::from(byte);
    }
    *data = &rest[width as usize..];
    Some((value, width + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vorbis_track_headers_and_laced_frames_must_fit() {
        let private = |sizes: &[u8], data: usize| {
            let mut bytes = vec![sizes.len() as u8];
            bytes.extend_from_slice(sizes);
            bytes.extend(std::iter::repeat_n(0u8, data));
            bytes
        };
        let vorbis = Some(b"A_VORBIS".to_vec());
        assert!(track_private_fits(&(
            vorbis.clone(),
            Some(private(&[30, 93], 200))
        )));
        assert!(!track_private_fits(&(
            vorbis.clone(),
            Some(private(&[30, 255, 93], 200))
        )));
        // Other codecs' private data is not laced.
        let opus = Some(b"A_OPUS".to_vec());
        assert!(track_private_fits(&(
            opus,
            Some(private(&[30, 255, 93], 200))
        )));

        // Track 1, timecode 0, Xiph lacing, two sizes given for three frames.
        let block = |sizes: &[u8], data: usize| {
            let mut bytes = vec![0x81, 0, 0, 0b010, sizes.len() as u8];
            bytes.extend_from_slice(sizes);
            bytes.extend(std::iter::repeat_n(0u8, data));
            bytes
        };
        assert!(block_lacing_fits(&block(&[10, 20], 40)));
        assert!(block_lacing_fits(&block(&[10, 20], 30)));
        assert!(!block_lacing_fits(&block(&[10, 21], 30)));
        // EBML lacing: 20 (0x94), then 20 + (103 - 63) (0xe7): 80 in all.
        let ebml = |data: usize| {
            let mut bytes = vec![0x81, 0, 0, 0b110, 2, 0x94, 0xe7];
            bytes.extend(std::iter::repeat_n(0u8, data));
            bytes
        };
        assert!(block_lacing_fits(&ebml(80)));
        assert!(!block_lacing_fits(&ebml(79)));
    }
}
