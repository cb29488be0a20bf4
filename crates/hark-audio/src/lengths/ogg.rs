//! Ogg: pages, their CRCs and per-stream packet reassembly as symphonia does them, so
//! every packet it would parse as a Vorbis, Opus or FLAC comment or picture is checked.

use std::collections::HashMap;
use std::io::Read;

use symphonia::core::checksum::Crc32;
use symphonia::core::io::Monitor;

use super::xiph::{flac_block_fits, vorbis_comments_fit, FLAC_PICTURE, FLAC_VORBIS_COMMENT};

/// symphonia's cap on one reassembled Ogg packet.
const MAX_OGG_PACKET: usize = 16 * 1024 * 1024;
const OGG_HEADER_LEN: usize = 27;

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
            // A packet whose first bytes rule out metadata: nothing to check.
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
pub(super) fn ogg_packets_fit(source: impl Read) -> bool {
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
    use crate::lengths::comment_list;

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
