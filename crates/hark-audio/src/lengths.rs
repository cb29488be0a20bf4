//! Pre-flight check of the length and count fields that symphonia 0.5 trusts to size a
//! buffer before it reads the bytes.
//!
//! symphonia allocates `vec![0; len]` or `Vec::with_capacity(count)` for such a field and
//! only then finds the data short, so a 10 KB upload could make the process ask for 4 GiB
//! (a FLAC comment length), 48 GiB (an MP4 sample-to-chunk count) or any size at all (a
//! Matroska element or laced frame, a CAF cookie); where the allocation fails the process
//! aborts, which no panic guard catches. A file whose field claims more bytes than its
//! block, packet, atom, chunk or element holds is malformed, and is refused before
//! symphonia sees it.
//!
//! The walk mirrors where symphonia would read those fields. It finds the container the
//! way symphonia's probe does (ID3v2 tags skipped), then:
//! - FLAC: the metadata blocks' Vorbis comments and pictures;
//! - Ogg: pages (CRC, resync) and packets reassembled per logical stream with symphonia's
//!   rules, so every packet symphonia would parse as a Vorbis, Opus or FLAC comment or
//!   picture is checked first;
//! - MP4: the atoms of `moov`, `moof`, `meta` and `udta`, each of which must fit in its
//!   container, and the sample tables' entry counts;
//! - Matroska/WebM: every leaf element against the file, block lacing and Vorbis track
//!   headers against their block;
//! - CAF: the magic cookie and the packet table; WAV: the `LIST`/`INFO` texts.
//!
//! Memory stays bounded: only Ogg packets that can hold such a field are buffered (each up
//! to symphonia's own 16 MiB packet cap), one Matroska block at a time, and an MP4
//! metadata atom up to 256 MiB.

use std::collections::HashMap;
use std::io::{self, Cursor, Read, Seek, SeekFrom};

use symphonia::core::checksum::Crc32;
use symphonia::core::io::{MediaSource, MediaSourceStream, Monitor, ReadBytes, SeekBuffered};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Instantiate;

/// symphonia's cap on one reassembled Ogg packet.
const MAX_OGG_PACKET: usize = 16 * 1024 * 1024;
const OGG_HEADER_LEN: usize = 27;
const FLAC_VORBIS_COMMENT: u8 = 4;
const FLAC_PICTURE: u8 = 6;

/// Whether every length and count the file declares, of those symphonia sizes a buffer
/// by, fits in the bytes that hold it. `false` means the file is malformed and must not
/// reach symphonia. `source` should be seekable where it can be (MP4 and CAF skip their
/// media data by seeking).
pub(crate) fn declared_lengths_fit(source: Box<dyn MediaSource>) -> bool {
    let mut mss = MediaSourceStream::new(source, Default::default());
    let probe = symphonia::default::get_probe();
    // As symphonia's `Probe::format`: metadata elements (ID3v2) are read and skipped
    // until a container's marker is found; the container starts there.
    loop {
        match probe.next(&mut mss) {
            Ok(Instantiate::Format(_)) => break,
            Ok(Instantiate::Metadata(reader)) => {
                if reader(&MetadataOptions::default())
                    .read_all(&mut mss)
                    .is_err()
                {
                    return true; // symphonia stops here too
                }
            }
            Err(_) => return true, // no container symphonia would open
        }
    }
    let mut marker = [0u8; 4];
    if Read::read_exact(&mut mss, &mut marker).is_err() {
        return true;
    }
    match &marker {
        b"fLaC" => flac_blocks_fit(&mut mss),
        b"OggS" => ogg_packets_fit(Cursor::new(marker).chain(mss)),
        // The marker is an atom's type; the atom starts with its 4-byte size.
        b"ftyp" => {
            mss.seek_buffered_rel(-8);
            mp4_top_level_fits(&mut mss)
        }
        b"caff" => caf_chunks_fit(&mut mss),
        b"RIFF" => wave_info_fits(&mut mss),
        [0x1a, 0x45, 0xdf, 0xa3] => {
            mss.seek_buffered_rel(-4);
            mkv_elements_fit(&mut mss)
        }
        _ => true,
    }
}

/// Native FLAC: the metadata blocks after the `fLaC` marker. symphonia reads each block
/// through a reader scoped to the block's declared length.
fn flac_blocks_fit(reader: &mut impl Read) -> bool {
    loop {
        let mut header = [0u8; 4];
        if reader.read_exact(&mut header).is_err() {
            return true;
        }
        let is_last = header[0] & 0x80 != 0;
        let block_type = header[0] & 0x7f;
        let len = u64::from(u32::from_be_bytes([0, header[1], header[2], header[3]]));
        let mut block = reader.by_ref().take(len);
        let fits = match block_type {
            FLAC_VORBIS_COMMENT | FLAC_PICTURE => {
                // At most 16 MiB (a 24-bit length), and only what the file really holds.
                let mut body = Vec::new();
                if block.read_to_end(&mut body).is_err() {
                    return true;
                }
                flac_block_fits(block_type, &body)
            }
            _ => {
                if io::copy(&mut block, &mut io::sink()).is_err() {
                    return true;
                }
                true
            }
        };
        if !fits {
            return false;
        }
        if is_last {
            return true;
        }
    }
}

/// A FLAC metadata block's body, in a native FLAC file or an Ogg FLAC packet.
fn flac_block_fits(block_type: u8, body: &[u8]) -> bool {
    match block_type {
        FLAC_VORBIS_COMMENT => vorbis_comments_fit(body),
        FLAC_PICTURE => picture_fits(body),
        _ => true,
    }
}

/// A Vorbis comment list (no framing bit): vendor string, then counted comments, each
/// with a little-endian u32 length.
fn vorbis_comments_fit(mut data: &[u8]) -> bool {
    let Some(vendor_len) = take_u32(&mut data, u32::from_le_bytes) else {
        return true;
    };
    // symphonia skips the vendor string without allocating; past the end it just fails.
    let Some(rest) = data.get(vendor_len as usize..) else {
        return true;
    };
    data = rest;
    let Some(count) = take_u32(&mut data, u32::from_le_bytes) else {
        return true;
    };
    // Each comment takes at least its 4-byte length, so this ends within data.len() / 4.
    for _ in 0..count {
        let Some(len) = take_u32(&mut data, u32::from_le_bytes) else {
            return true;
        };
        match data.get(len as usize..) {
            Some(rest) => data = rest,
            None => return false,
        }
    }
    true
}

/// A FLAC picture: type, MIME type, description, four dimensions, then the image, each
/// variable part after a big-endian u32 length.
fn picture_fits(mut data: &[u8]) -> bool {
    let sized_part_fits = |data: &mut &[u8]| -> Option<bool> {
        let len = take_u32(data, u32::from_be_bytes)?;
        match data.get(len as usize..) {
            Some(rest) => {
                *data = rest;
                Some(true)
            }
            None => Some(false),
        }
    };
    if take_u32(&mut data, u32::from_be_bytes).is_none() {
        return true;
    }
    for _ in 0..2 {
        match sized_part_fits(&mut data) {
            Some(true) => {}
            Some(false) => return false,
            None => return true,
        }
    }
    for _ in 0..4 {
        if take_u32(&mut data, u32::from_be_bytes).is_none() {
            return true;
        }
    }
    sized_part_fits(&mut data).unwrap_or(true)
}

fn take_u32(data: &mut &[u8], from_bytes: fn([u8; 4]) -> u32) -> Option<u32> {
    let (head, rest) = data.split_first_chunk::<4>()?;
    *data = rest;
    Some(from_bytes(*head))
}

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
/// A claim this small is harmless even past the end of a cut-off file, whose last
/// element always claims more than is there.
const HARMLESS_CLAIM: u64 = 16 << 20;

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
        let first = self.byte()?;
        if first == 0xFF {
            return Some((u64::MAX, 1));
        }
        let width = first.leading_zeros();
        let mut value = u64::from(first) ^ 1u64.wrapping_shl(7u32.wrapping_sub(width));
        for _ in 0..width {
            value = (value << 8) | u64::from(self.byte()?);
        }
        Some((value, width + 1))
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
fn mkv_elements_fit(reader: &mut MediaSourceStream) -> bool {
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

/// WAV: symphonia reads each text of a `LIST`/`INFO` chunk into a buffer of its declared
/// length, bounded only by the enclosing lengths, which a stream-style header sets to
/// 4 GiB; every other chunk before `data` is skipped.
fn wave_info_fits(reader: &mut MediaSourceStream) -> bool {
    let file_end = reader.byte_len();
    let mut header = [0u8; 8];
    if Read::read_exact(reader, &mut header).is_err() || &header[4..] != b"WAVE" {
        return true;
    }
    let chunk_header = |reader: &mut MediaSourceStream| -> Option<([u8; 4], u64)> {
        let mut header = [0u8; 8];
        Read::read_exact(reader, &mut header).ok()?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        Some(([header[0], header[1], header[2], header[3]], u64::from(len)))
    };
    loop {
        let Some((tag, len)) = chunk_header(reader) else {
            return true;
        };
        match &tag {
            b"data" => return true, // symphonia stops reading chunks here
            b"LIST" => {
                let mut form = [0u8; 4];
                if Read::read_exact(reader, &mut form).is_err() {
                    return true;
                }
                if &form != b"INFO" {
                    if skip(reader, (len + (len & 1)).saturating_sub(4)).is_err() {
                        return true;
                    }
                    continue;
                }
                let list_end = reader.pos().saturating_add(len.saturating_sub(4));
                while reader.pos() + 8 <= list_end {
                    let Some((_, text_len)) = chunk_header(reader) else {
                        return true;
                    };
                    if file_end.is_some_and(|end| text_len > end.saturating_sub(reader.pos())) {
                        return false;
                    }
                    if skip(reader, text_len + (text_len & 1)).is_err() {
                        return true;
                    }
                }
                if skip(reader, (len & 1) + list_end.saturating_sub(reader.pos())).is_err() {
                    return true;
                }
            }
            _ => {
                if skip(reader, len + (len & 1)).is_err() {
                    return true;
                }
            }
        }
    }
}

/// CAF: after the file header's version and flags, chunks of a type, a signed 64-bit
/// size and a body. symphonia reads a magic cookie (`kuki`) whole, sizes a packet table
/// (`pakt`) by its declared count, and reads each packet into a buffer of the size the
/// table or the audio description (`desc`) gives: up to 1,152 frames at a time for PCM.
fn caf_chunks_fit(reader: &mut MediaSourceStream) -> bool {
    let mut version_and_flags = [0u8; 4];
    if Read::read_exact(reader, &mut version_and_flags).is_err() {
        return true;
    }
    let file_len = reader.byte_len().unwrap_or(u64::MAX);
    // (bytes, frames) per packet; 0 means the packet table gives it per packet.
    let mut packets = None;
    loop {
        let mut header = [0u8; 12];
        if Read::read_exact(reader, &mut header).is_err() {
            return true;
        }
        let kind = [header[0], header[1], header[2], header[3]];
        let Ok(size) = u64::try_from(i64::from_be_bytes([
            header[4], header[5], header[6], header[7], header[8], header[9], header[10],
            header[11],
        ])) else {
            return true; // symphonia refuses a negative size, or reads data to the end
        };
        let left = file_len.saturating_sub(reader.pos());
        let fits = match &kind {
            b"kuki" => size <= left,
            b"desc" if size == 32 => {
                let mut desc = [0u8; 32];
                if Read::read_exact(reader, &mut desc).is_err() {
                    return true;
                }
                let bytes = u32::from_be_bytes([desc[16], desc[17], desc[18], desc[19]]);
                let frames = u32::from_be_bytes([desc[20], desc[21], desc[22], desc[23]]);
                packets = Some((bytes, frames));
                // A PCM read is this size whatever the data chunk declares.
                if u64::from(bytes) * 1152 > file_len.max(HARMLESS_CLAIM) {
                    return false;
                }
                continue;
            }
            b"pakt" if size >= 24 => {
                if size > left {
                    return false;
                }
                let Some(table) = read_exact_len(reader, size) else {
                    return true;
                };
                caf_packet_table_fits(&table, packets, file_len)
            }
            _ => true,
        };
        if !fits {
            return false;
        }
        if !matches!(&kind, b"pakt") && skip(reader, size).is_err() {
            return true;
        }
    }
}

/// A packet table: its count, three more header fields, then per packet the sizes
/// and frame counts the description leaves open, as variable-length integers.
fn caf_packet_table_fits(table: &[u8], packets: Option<(u32, u32)>, file_len: u64) -> bool {
    let count = u64::from_be_bytes([
        table[0], table[1], table[2], table[3], table[4], table[5], table[6], table[7],
    ]);
    // Every entry takes at least a byte after the 24-byte header.
    if count > (table.len() - 24) as u64 {
        return false;
    }
    let Some((0, frames_per_packet)) = packets else {
        return true; // sizes are all the description's, checked with it
    };
    let mut entries = &table[24..];
    for _ in 0..count {
        let Some(size) = caf_varint(&mut entries) else {
            return true; // symphonia fails on a short table without reading packets
        };
        if size > file_len {
            return false;
        }
        if frames_per_packet == 0 && caf_varint(&mut entries).is_none() {
            return true;
        }
    }
    true
}

/// symphonia's variable-length integer: up to nine 7-bit groups, high bit = more.
fn caf_varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..9 {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some(value);
        }
        value <<= 7;
    }
    None
}

/// Exactly `len` bytes (read into a buffer that grows as they arrive), or `None`.
fn read_exact_len(reader: &mut MediaSourceStream, len: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.by_ref().take(len).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 == len).then_some(bytes)
}

/// Moves `n` bytes on: a seek where the source allows, a read otherwise.
fn skip(reader: &mut MediaSourceStream, n: u64) -> io::Result<()> {
    if reader.is_seekable() {
        let offset = i64::try_from(n).map_err(|_| io::ErrorKind::InvalidInput)?;
        reader.seek(SeekFrom::Current(offset)).map(drop)
    } else {
        io::copy(&mut reader.by_ref().take(n), &mut io::sink()).map(drop)
    }
}

/// The largest MP4 metadata atom (`moov`, `moof`, a top-level `meta`) checked: some
/// hundreds of hours of AAC. A bigger one is refused rather than read into memory.
const MAX_MP4_METADATA: u64 = 256 << 20;
/// Deeper nesting than any real file has (a hostile one could nest to exhaust the stack).
const MAX_MP4_DEPTH: u32 = 32;

/// MP4: the top-level atoms, as symphonia's `IsoMp4Reader` reads them; those it parses
/// (`moov`, `moof`, `meta`, `udta`) are walked, the rest (`mdat` above all) skipped.
fn mp4_top_level_fits(reader: &mut MediaSourceStream) -> bool {
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
        match size {
            [a, b, c, d] => u64::from(u32::from_be_bytes([*a, *b, *c, *d])) <= self.file_len,
            _ => true,
        }
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
        let (size, header_len) = match u32::from_be_bytes([body[0], body[1], body[2], body[3]]) {
            0 => (body.len() as u64, 8),
            1 => match body.get(8..16) {
                Some(large) => (
                    u64::from_be_bytes([
                        large[0], large[1], large[2], large[3], large[4], large[5], large[6],
                        large[7],
                    ]),
                    16,
                ),
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
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
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
    let Some(count) = inner.get(count_at..count_at + 4) else {
        return true;
    };
    let count = u64::from(u32::from_be_bytes([count[0], count[1], count[2], count[3]]));
    count * entry_len <= (inner.len() - count_at - 4) as u64
}

/// What symphonia's Ogg mapper for a logical stream would parse as metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    Vorbis,
    /// Opus reads the first `OpusTags` packet only.
    Opus {
        awaiting_tags: bool,
    },
    Flac,
    /// No mapper: symphonia keeps the stream but reads no metadata from it.
    Other,
}

impl Mapping {
    /// As symphonia's `mappings::detect`, by signature (a stream symphonia then rejects
    /// for a bad identification header is checked anyway, which only ever checks more).
    fn detect(first_packet: &[u8]) -> Self {
        if first_packet.starts_with(b"\x7fFLAC") {
            Mapping::Flac
        } else if first_packet.starts_with(b"\x01vorbis") {
            Mapping::Vorbis
        } else if first_packet.starts_with(b"OpusHead") {
            Mapping::Opus {
                awaiting_tags: true,
            }
        } else {
            Mapping::Other
        }
    }

    /// Whether a packet that begins with `start` can hold a field this mapping parses;
    /// only those packets are buffered whole.
    fn may_parse(self, start: &[u8]) -> bool {
        let could_be = |signature: &[u8]| {
            let n = start.len().min(signature.len());
            start[..n] == signature[..n]
        };
        match self {
            Mapping::Vorbis => could_be(b"\x03vorbis"),
            Mapping::Opus { awaiting_tags } => awaiting_tags && could_be(b"OpusTags"),
            Mapping::Flac => start
                .first()
                .is_none_or(|&t| matches!(t & 0x7f, FLAC_VORBIS_COMMENT | FLAC_PICTURE)),
            Mapping::Other => false,
        }
    }

    /// Checks one whole packet the way the mapper would parse it.
    fn packet_fits(&mut self, packet: &[u8]) -> bool {
        match self {
            Mapping::Vorbis => match packet.strip_prefix(b"\x03vorbis") {
                Some(comments) => vorbis_comments_fit(comments),
                None => true,
            },
            Mapping::Opus { awaiting_tags } => {
                if !*awaiting_tags {
                    return true;
                }
                match packet.strip_prefix(b"OpusTags") {
                    Some(comments) => {
                        *awaiting_tags = false;
                        vorbis_comments_fit(comments)
                    }
                    None => true,
                }
            }
            Mapping::Flac => match packet {
                // 0xff is audio; 0x00 and 0x80 are invalid and skipped.
                [0xff | 0x00 | 0x80, ..] | [] => true,
                // A metadata block: a 4-byte header, then the body, which symphonia reads
                // up to the end of the packet (not the block's declared length).
                [block_type, _, _, _, body @ ..] => flac_block_fits(block_type & 0x7f, body),
                _ => true,
            },
            Mapping::Other => true,
        }
    }
}

/// A packet being reassembled across pages.
enum Partial {
    None,
    /// Held whole: it may be parsed as metadata.
    Buffered(Vec<u8>),
    /// Counted only: its start rules out metadata.
    Skipped(usize),
}

impl Partial {
    fn len(&self) -> usize {
        match self {
            Partial::None => 0,
            Partial::Buffered(bytes) => bytes.len(),
            Partial::Skipped(len) => *len,
        }
    }
}

/// One logical stream's state, as symphonia's `LogicalStream` keeps it.
struct LogicalStream {
    mapping: Mapping,
    last_sequence: Option<u32>,
    partial: Partial,
}

impl LogicalStream {
    /// Mirrors `LogicalStream::read_page`: discontinuities drop the partial packet, an
    /// unexpected continuation drops the page's first packet, complete packets are mapped
    /// and a trailing fragment is kept for the next page.
    fn read_page(&mut self, page: &OggPage<'_>) -> bool {
        if let Some(last) = self.last_sequence {
            if page.sequence < last || page.sequence - last > 1 {
                self.partial = Partial::None;
            }
        }
        self.last_sequence = Some(page.sequence);
        if !page.is_continuation {
            self.partial = Partial::None;
        }
        let mut packets = page.packet_lens.iter();
        let mut body = page.body;
        if page.is_continuation && self.partial.len() == 0 {
            match packets.next() {
                Some(&len) => body = &body[usize::from(len)..],
                None => return true,
            }
        }
        for &len in packets {
            let (packet, rest) = body.split_at(usize::from(len));
            body = rest;
            if !self.complete_packet(packet) {
                return false;
            }
        }
        if !body.is_empty() {
            self.keep_fragment(body);
        }
        true
    }

    fn complete_packet(&mut self, tail: &[u8]) -> bool {
        match std::mem::replace(&mut self.partial, Partial::None) {
            Partial::None if self.mapping.may_parse(tail) => self.mapping.packet_fits(tail),
            Partial::Buffered(mut packet) => {
                packet.extend_from_slice(tail);
                self.mapping.packet_fits(&packet)
            }
            // Not parsable as metadata (an Opus stream past its tags still counts on
            // `packet_fits` to know when they are read; it never buffers them).
            Partial::None | Partial::Skipped(_) => true,
        }
    }

    fn keep_fragment(&mut self, fragment: &[u8]) {
        // symphonia refuses to grow a partial packet past its cap and drops the fragment.
        if self.partial.len() + fragment.len() > MAX_OGG_PACKET {
            return;
        }
        self.partial = match std::mem::replace(&mut self.partial, Partial::None) {
            Partial::None if self.mapping.may_parse(fragment) => {
                Partial::Buffered(fragment.to_vec())
            }
            Partial::None => Partial::Skipped(fragment.len()),
            Partial::Buffered(mut packet) => {
                packet.extend_from_slice(fragment);
                Partial::Buffered(packet)
            }
            Partial::Skipped(len) => Partial::Skipped(len + fragment.len()),
        };
    }
}

/// One page whose CRC matched.
struct OggPage<'a> {
    serial: u32,
    sequence: u32,
    is_first: bool,
    is_continuation: bool,
    /// Lengths of the packets that end on this page.
    packet_lens: &'a [u16],
    body: &'a [u8],
}

/// Ogg: every page symphonia would accept, in order.
fn ogg_packets_fit(source: impl Read) -> bool {
    let mut window = Window::new(source);
    let mut streams: HashMap<u32, LogicalStream> = HashMap::new();
    loop {
        if !window.find(b"OggS") {
            return true;
        }
        let page = match window.page() {
            PageRead::Page(page) => page,
            // As symphonia: a bad header resumes the search after the header; a bad CRC
            // right after the capture pattern.
            PageRead::BadHeader => {
                window.consume(OGG_HEADER_LEN);
                continue;
            }
            PageRead::BadCrc => {
                window.consume(4);
                continue;
            }
            PageRead::End => return true,
        };
        let view = page.view(window.current());
        if view.is_first {
            // A first page identifies its stream (symphonia maps its first complete
            // packet) and is not read as data.
            match view.packet_lens.first() {
                Some(&len) => {
                    let mapping = Mapping::detect(&view.body[..usize::from(len)]);
                    streams.insert(
                        view.serial,
                        LogicalStream {
                            mapping,
                            last_sequence: None,
                            partial: Partial::None,
                        },
                    );
                }
                None => {
                    streams.remove(&view.serial);
                }
            }
        } else if let Some(stream) = streams.get_mut(&view.serial) {
            if !stream.read_page(&view) {
                return false;
            }
        }
        window.consume(page.len);
    }
}

/// A page's header fields and where its body lies, relative to the window's position.
struct PageAt {
    serial: u32,
    sequence: u32,
    flags: u8,
    packet_lens: Vec<u16>,
    body_start: usize,
    /// The whole page: header, segment table and body.
    len: usize,
}

impl PageAt {
    fn view<'a>(&'a self, page: &'a [u8]) -> OggPage<'a> {
        OggPage {
            serial: self.serial,
            sequence: self.sequence,
            is_first: self.flags & 0x02 != 0,
            is_continuation: self.flags & 0x01 != 0,
            packet_lens: &self.packet_lens,
            body: &page[self.body_start..self.len],
        }
    }
}

enum PageRead {
    Page(PageAt),
    BadHeader,
    BadCrc,
    End,
}

/// A sliding window over the source, large enough for one page (at most 65,307 bytes).
struct Window<R> {
    source: R,
    buf: Vec<u8>,
    /// Bytes before this offset are consumed.
    pos: usize,
    eof: bool,
}

impl<R: Read> Window<R> {
    fn new(source: R) -> Self {
        Window {
            source,
            buf: Vec::with_capacity(1 << 17),
            pos: 0,
            eof: false,
        }
    }

    /// The unconsumed bytes.
    fn current(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Makes the window hold at least `want` unconsumed bytes if the source has them.
    fn fill(&mut self, want: usize) -> bool {
        while self.buf.len() - self.pos < want && !self.eof {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let old_len = self.buf.len();
            self.buf.resize(old_len + (want - old_len).max(1 << 16), 0);
            match self.source.read(&mut self.buf[old_len..]) {
                Ok(0) | Err(_) => {
                    self.buf.truncate(old_len);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(old_len + n),
            }
        }
        self.buf.len() - self.pos >= want
    }

    /// Moves to the next occurrence of `pattern`, byte by byte as symphonia's sync does.
    fn find(&mut self, pattern: &[u8; 4]) -> bool {
        loop {
            if !self.fill(pattern.len()) {
                return false;
            }
            if let Some(i) = self
                .current()
                .windows(pattern.len())
                .position(|w| w == pattern)
            {
                self.pos += i;
                return true;
            }
            // Keep the last three bytes: the pattern may straddle the next read.
            self.pos = self.buf.len() - (pattern.len() - 1);
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Parses the page at the window's position, checking its header and CRC as
    /// symphonia's `PageReader::try_next_page` does.
    fn page(&mut self) -> PageRead {
        if !self.fill(OGG_HEADER_LEN) {
            return PageRead::End;
        }
        let header = &self.current()[..OGG_HEADER_LEN];
        let (version, flags) = (header[4], header[5]);
        if version != 0 || flags & 0xf8 != 0 {
            return PageRead::BadHeader;
        }
        let serial = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        let sequence = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
        let crc = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        let segments = usize::from(header[26]);
        let body_start = OGG_HEADER_LEN + segments;
        if !self.fill(body_start) {
            return PageRead::End;
        }
        let mut packet_lens = Vec::new();
        let (mut body_len, mut packet_len) = (0usize, 0u16);
        for &segment in &self.current()[OGG_HEADER_LEN..body_start] {
            body_len += usize::from(segment);
            packet_len += u16::from(segment);
            if segment < 255 {
                packet_lens.push(packet_len);
                packet_len = 0;
            }
        }
        let len = body_start + body_len;
        if !self.fill(len) {
            return PageRead::End;
        }
        let page = &self.current()[..len];
        let mut checksum = Crc32::new(0);
        checksum.process_buf_bytes(&page[..22]);
        checksum.process_buf_bytes(&[0; 4]);
        checksum.process_buf_bytes(&page[26..]);
        if checksum.crc() != crc {
            return PageRead::BadCrc;
        }
        PageRead::Page(PageAt {
            serial,
            sequence,
            flags,
            packet_lens,
            body_start,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment_list(lengths: &[(u32, usize)]) -> Vec<u8> {
        let mut list = 2u32.to_le_bytes().to_vec();
        list.extend_from_slice(b"ok");
        list.extend_from_slice(&(lengths.len() as u32).to_le_bytes());
        for &(declared, actual) in lengths {
            list.extend_from_slice(&declared.to_le_bytes());
            list.extend(std::iter::repeat_n(b'a', actual));
        }
        list
    }

    #[test]
    fn comments_fit_exactly_or_are_caught_one_byte_over() {
        assert!(vorbis_comments_fit(&comment_list(&[
            (3, 3),
            (0, 0),
            (5, 5)
        ])));
        assert!(!vorbis_comments_fit(&comment_list(&[(3, 3), (6, 5)])));
        assert!(!vorbis_comments_fit(&comment_list(&[(u32::MAX, 8)])));
        // A list cut short before a length is symphonia's read error, not an allocation.
        let mut cut = comment_list(&[(3, 3)]);
        cut.truncate(cut.len() - 5);
        assert!(vorbis_comments_fit(&cut));
        // So is a vendor string longer than the data: symphonia skips it unallocated.
        assert!(vorbis_comments_fit(&u32::MAX.to_le_bytes()));
    }

    fn picture(mime: (u32, usize), description: (u32, usize), image: (u32, usize)) -> Vec<u8> {
        let mut body = 3u32.to_be_bytes().to_vec();
        for (i, (declared, actual)) in [mime, description].into_iter().enumerate() {
            body.extend_from_slice(&declared.to_be_bytes());
            body.extend(std::iter::repeat_n(b'a' + i as u8, actual));
        }
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&image.0.to_be_bytes());
        body.extend(std::iter::repeat_n(0u8, image.1));
        body
    }

    #[test]
    fn each_picture_length_is_checked_against_the_bytes_after_it() {
        let good = picture((9, 9), (0, 0), (100, 100));
        assert!(picture_fits(&good));
        // Field offsets in `good`: MIME length at 4, description length at 17, image
        // length at 37. A claim of exactly what follows still fits; one byte more not.
        for at in [4, 17, 37] {
            let follows = (good.len() - at - 4) as u32;
            let mut exact = good.clone();
            exact[at..at + 4].copy_from_slice(&follows.to_be_bytes());
            assert!(picture_fits(&exact), "field at {at}");
            let mut over = good.clone();
            over[at..at + 4].copy_from_slice(&(follows + 1).to_be_bytes());
            assert!(!picture_fits(&over), "field at {at}");
        }
    }

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

    #[test]
    fn caf_packet_sizes_are_checked_against_the_file() {
        // Two packets: 200 bytes (varint 0x81 0x48) of 1,024 frames (0x88 0x00), and 3.
        let table = |first_size: &[u8]| {
            let mut table = 2u64.to_be_bytes().to_vec();
            table.extend_from_slice(&[0; 16]);
            table.extend_from_slice(first_size);
            table.extend_from_slice(&[0x88, 0x00, 0x03, 0x88, 0x00]);
            table
        };
        assert!(caf_packet_table_fits(
            &table(&[0x81, 0x48]),
            Some((0, 0)),
            200
        ));
        assert!(!caf_packet_table_fits(
            &table(&[0x81, 0x48]),
            Some((0, 0)),
            199
        ));
        // A size that does not end within nine bytes is symphonia's read error.
        assert!(caf_packet_table_fits(&table(&[0xff; 9]), Some((0, 0)), 200));
        assert!(!caf_packet_table_fits(
            &table(&[0xff, 0x7f]),
            Some((0, 0)),
            200
        ));
    }

    #[test]
    fn opus_reads_only_its_first_tags_packet() {
        let mut mapping = Mapping::detect(b"OpusHead\x01\x01");
        let hostile = [&b"OpusTags"[..], &comment_list(&[(9, 1)])].concat();
        let good = [&b"OpusTags"[..], &comment_list(&[(1, 1)])].concat();
        assert!(mapping.may_parse(b"Opus"));
        assert!(mapping.packet_fits(&good));
        // symphonia maps packets after the tags as audio, whatever they hold.
        assert!(!mapping.may_parse(&hostile));
        assert!(mapping.packet_fits(&hostile));
    }

    #[test]
    fn flac_packets_of_audio_and_invalid_types_are_not_metadata() {
        let mut mapping = Mapping::detect(b"\x7fFLAC\x01\x00");
        let claim = [&[4u8, 0, 0, 8][..], &comment_list(&[(9, 1)])].concat();
        assert!(!mapping.packet_fits(&claim));
        for audio_or_invalid in [0xff_u8, 0x00, 0x80] {
            let packet = [&[audio_or_invalid][..], &claim[1..]].concat();
            assert!(mapping.packet_fits(&packet));
        }
        let last_block = [&[0x84u8][..], &claim[1..]].concat();
        assert!(!mapping.packet_fits(&last_block));
    }
}
