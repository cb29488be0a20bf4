//! A Vorbis comment or FLAC picture that claims more bytes than it holds is refused before
//! symphonia sizes a buffer to the claim (a fuzzing finding: a 10 KB FLAC made the decoder
//! ask for 4 GiB). This binary's allocator records the largest single request, so each
//! case shows the claim never reached the allocator; well-formed files with comments,
//! one split across Ogg pages, still decode.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use hark_audio::{decode_bytes, AudioError, DecodeLimits};
use symphonia::core::checksum::Crc32;
use symphonia::core::io::Monitor;

/// Records the largest allocation each thread asks for.
struct LargestRequest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for LargestRequest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestRequest = LargestRequest;

/// The length every hostile case claims: the fuzzer's 4,278,190,101 bytes.
const CLAIM: u32 = 0xFF00_0015;
/// Far above anything these few-KB inputs need, far below the claim.
const ALLOWED: usize = 64 << 20;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_duration_secs: 600.0,
    }
}

fn seed(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "../../fuzz/seeds/audio", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Decodes `bytes` and returns the outcome with the largest allocation it asked for.
fn decode_measured(bytes: &[u8]) -> (Result<f64, AudioError>, usize) {
    LARGEST.with(|largest| largest.set(0));
    let outcome = decode_bytes(bytes, &limits()).map(|audio| audio.duration_secs);
    (outcome, LARGEST.with(Cell::get))
}

/// What is wrong with how `bytes` was handled, if anything.
fn refusal_problem(case: &str, bytes: &[u8]) -> Option<String> {
    let (outcome, largest) = decode_measured(bytes);
    if largest >= ALLOWED {
        Some(format!(
            "{case}: the decoder asked for {largest} bytes at once"
        ))
    } else if !matches!(outcome, Err(AudioError::NotAudio(_))) {
        Some(format!("{case}: expected a refusal, got {outcome:?}"))
    } else {
        None
    }
}

/// Every case is tried, so a failure lists all that fail.
fn assert_all_refused_within_bounds(cases: &[(String, Vec<u8>)]) {
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(case, bytes)| refusal_problem(case, bytes))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Offset of each FLAC metadata block header in a native FLAC file.
fn flac_blocks(flac: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut blocks = Vec::new();
    let mut at = 4;
    loop {
        let header = flac[at];
        let len = u32::from_be_bytes([0, flac[at + 1], flac[at + 2], flac[at + 3]]) as usize;
        blocks.push((at, header & 0x7f, len));
        if header & 0x80 != 0 {
            return blocks;
        }
        at += 4 + len;
    }
}

#[test]
fn flac_comment_longer_than_its_block_is_refused() {
    let mut flac = seed("tone.flac");
    let (at, _, _) = flac_blocks(&flac)
        .into_iter()
        .find(|&(_, kind, _)| kind == 4)
        .expect("the seed has a Vorbis comment block");
    let body = at + 4;
    let vendor = u32::from_le_bytes(flac[body..body + 4].try_into().unwrap()) as usize;
    let count_at = body + 4 + vendor;
    assert!(u32::from_le_bytes(flac[count_at..count_at + 4].try_into().unwrap()) >= 1);
    flac[count_at + 4..count_at + 8].copy_from_slice(&CLAIM.to_le_bytes());
    assert_all_refused_within_bounds(&[("FLAC comment".into(), flac)]);
}

/// A FLAC picture block's body whose MIME type, description or image claims `CLAIM`.
fn picture(claim_in: usize) -> Vec<u8> {
    let mut body = 3u32.to_be_bytes().to_vec(); // front cover
    for (i, part) in [&b"image/png"[..], b"cover"].into_iter().enumerate() {
        let len = if i == claim_in {
            CLAIM
        } else {
            part.len() as u32
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(part);
    }
    for dimension in [1u32, 1, 24, 0] {
        body.extend_from_slice(&dimension.to_be_bytes());
    }
    let image = [0x89, b'P', b'N', b'G'];
    let len = if claim_in == 2 { CLAIM } else { 4 };
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&image);
    body
}

#[test]
fn flac_picture_longer_than_its_block_is_refused() {
    let seed = seed("tone.flac");
    let (first_block, _, _) = flac_blocks(&seed)[1];
    let mut cases = Vec::new();
    for claim_in in 0..3 {
        let body = picture(claim_in);
        let mut flac = seed[..first_block].to_vec();
        let len = (body.len() as u32).to_be_bytes();
        flac.extend_from_slice(&[6, len[1], len[2], len[3]]);
        flac.extend_from_slice(&body);
        flac.extend_from_slice(&seed[first_block..]);
        cases.push((format!("FLAC picture, field {claim_in}"), flac));
    }
    assert_all_refused_within_bounds(&cases);
}

/// Offset and size of every atom of an MP4 file, in the containers these tests change.
fn mp4_atoms(mp4: &[u8]) -> Vec<(usize, [u8; 4], usize)> {
    fn walk(mp4: &[u8], start: usize, end: usize, atoms: &mut Vec<(usize, [u8; 4], usize)>) {
        let mut at = start;
        while at + 8 <= end {
            let size = u32::from_be_bytes(mp4[at..at + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = mp4[at + 4..at + 8].try_into().unwrap();
            atoms.push((at, kind, size));
            let body = match &kind {
                b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"udta" | b"ilst" => 8,
                b"meta" => 12,
                b"stsd" => 16,
                b"mp4a" => 36,
                b"\xa9too" => 8,
                _ => size,
            };
            walk(mp4, at + body, at + size, atoms);
            at += size;
        }
    }
    let mut atoms = Vec::new();
    walk(mp4, 0, mp4.len(), &mut atoms);
    atoms
}

#[test]
fn mp4_tables_and_atoms_longer_than_they_hold_are_refused() {
    let seed = seed("tone.m4a");
    let atoms = mp4_atoms(&seed);
    let find = |kind: &[u8; 4]| {
        atoms
            .iter()
            .find(|(_, k, _)| k == kind)
            .map(|&(at, _, _)| at)
            .unwrap_or_else(|| panic!("the seed has {}", String::from_utf8_lossy(kind)))
    };
    // Counts whose tables would take about 4 GiB: large enough to see, small enough
    // for the allocation to succeed here without the fix (a larger one aborts).
    let mut cases = Vec::new();
    for (kind, count_at, entry) in [
        (b"stsc", 12, 12u32),
        (b"stco", 12, 4),
        (b"stts", 12, 8),
        (b"stsz", 16, 4),
    ] {
        let mut mp4 = seed.clone();
        let at = find(kind) + count_at;
        mp4[at..at + 4].copy_from_slice(&(u32::MAX / entry).to_be_bytes());
        cases.push((format!("MP4 {} count", String::from_utf8_lossy(kind)), mp4));
    }
    // A sample (its size in the sample-size table) of 4 GiB in a 3-KB file.
    let mut mp4 = seed.clone();
    let at = find(b"stsz") + 20;
    mp4[at..at + 4].copy_from_slice(&0xFFFF_FF00u32.to_be_bytes());
    cases.push(("MP4 sample size".into(), mp4));
    // A tag's data atom claiming 2 GiB inside a 37-byte item.
    let mut mp4 = seed.clone();
    let at = find(b"data");
    mp4[at..at + 4].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    cases.push(("MP4 tag data atom".into(), mp4));
    assert_all_refused_within_bounds(&cases);
}

#[test]
fn mkv_elements_and_laced_frames_longer_than_they_hold_are_refused() {
    let seed = seed("tone.mka");
    // The EBML header claiming 4 GiB, its DocType 3.75 GiB (both 8-byte sizes).
    assert_eq!(&seed[..5], b"\x1a\x45\xdf\xa3\xa3");
    let doctype = seed.windows(2).position(|w| w == b"\x42\x82").unwrap();
    let mut header_claims = b"\x1a\x45\xdf\xa3\x01\x00\x00\x01\x00\x00\x00\x00".to_vec();
    header_claims.extend_from_slice(&seed[5..doctype + 2]);
    header_claims.extend_from_slice(b"\x01\x00\x00\x00\xf0\x00\x00\x00");
    header_claims.extend_from_slice(&seed[doctype + 3..]);

    // The first SimpleBlock (ID 0xA3, one-byte size, track 1) turned into an EBML-laced
    // block whose first frame claims 3.75 GiB; its length stays the same.
    let cluster = seed
        .windows(4)
        .position(|w| w == b"\x1f\x43\xb6\x75")
        .unwrap();
    let block = cluster
        + seed[cluster..]
            .windows(3)
            .position(|w| w[0] == 0xa3 && w[1] & 0x80 != 0 && w[2] == 0x81)
            .unwrap();
    let body = block + 2;
    assert!(usize::from(seed[block + 1] & 0x7f) >= 13);
    let mut laced = seed.clone();
    laced[body + 3] |= 0b110;
    laced[body + 4] = 1;
    laced[body + 5..body + 13].copy_from_slice(b"\x01\x00\x00\x00\xf0\x00\x00\x00");

    assert_all_refused_within_bounds(&[
        ("MKV EBML header".into(), header_claims),
        ("MKV laced block".into(), laced),
    ]);
}

#[test]
fn wave_info_text_longer_than_the_file_is_refused() {
    let seed = seed("tone.wav");
    let data = seed.windows(4).position(|w| w == b"data").unwrap();
    // A stream-style header (RIFF length 2^32 - 1, as ffmpeg writes to a pipe) whose
    // LIST/INFO title claims 3.75 GiB.
    let mut wav = b"RIFF\xff\xff\xff\xffWAVE".to_vec();
    wav.extend_from_slice(&seed[12..data]);
    wav.extend_from_slice(b"LIST\x00\xff\xff\xffINFOINAM\x00\x00\x00\xf0tone");
    wav.extend_from_slice(&seed[data..]);
    assert_all_refused_within_bounds(&[("WAV INFO title".into(), wav.clone())]);

    // The same title, truthful, is read past.
    let mut wav = seed[..data].to_vec();
    wav.extend_from_slice(b"LIST\x10\x00\x00\x00INFOINAM\x04\x00\x00\x00tone");
    wav.extend_from_slice(&seed[data..]);
    let riff_len = (wav.len() - 8) as u32;
    wav[4..8].copy_from_slice(&riff_len.to_le_bytes());
    let (outcome, _) = decode_measured(&wav);
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// The seed Matroska file as a live recorder writes it: the segment and every cluster of
/// unknown size, and the cluster repeated `clusters` times.
fn live_mkv(clusters: usize) -> Vec<u8> {
    const UNKNOWN: &[u8] = b"\x01\xff\xff\xff\xff\xff\xff\xff";
    let seed = seed("tone.mka");
    let segment = seed
        .windows(4)
        .position(|w| w == b"\x18\x53\x80\x67")
        .unwrap();
    let cluster = seed
        .windows(4)
        .position(|w| w == b"\x1f\x43\xb6\x75")
        .unwrap();
    // Both sizes are 8-byte fields here; the cluster runs to the end of the file.
    assert_eq!(seed[segment + 4], 0x01);
    let size_len = 1 + seed[cluster + 4].leading_zeros() as usize;
    let body = &seed[cluster + 4 + size_len..];
    let mut mkv = seed[..segment + 4].to_vec();
    mkv.extend_from_slice(UNKNOWN);
    mkv.extend_from_slice(&seed[segment + 12..cluster]);
    for _ in 0..clusters {
        mkv.extend_from_slice(b"\x1f\x43\xb6\x75");
        mkv.extend_from_slice(UNKNOWN);
        mkv.extend_from_slice(body);
    }
    mkv
}

#[test]
fn live_matroska_with_clusters_of_unknown_size_still_decodes() {
    let (one, _) = decode_measured(&live_mkv(1));
    let one = one.expect("one live cluster decodes");
    let (many, _) = decode_measured(&live_mkv(100));
    let many = many.expect("a hundred live clusters decode");
    assert!(
        many > one * 50.0,
        "{many} s from 100 clusters, {one} s from one"
    );
}

/// The seed CAF with one more chunk before its audio data.
fn caf_with_chunk(kind: &[u8; 4], declared: i64, body: &[u8]) -> Vec<u8> {
    let seed = seed("tone.caf");
    let data = seed
        .windows(4)
        .position(|w| w == b"data")
        .expect("the seed has a data chunk");
    let mut caf = seed[..data].to_vec();
    caf.extend_from_slice(kind);
    caf.extend_from_slice(&declared.to_be_bytes());
    caf.extend_from_slice(body);
    caf.extend_from_slice(&seed[data..]);
    caf
}

#[test]
fn caf_cookie_and_packet_table_longer_than_they_hold_are_refused() {
    // A packet table of 2^27 packets (4 GiB in symphonia's table) in 40 bytes.
    let mut table = (1i64 << 27).to_be_bytes().to_vec();
    table.extend_from_slice(&[0; 16]);
    table.extend_from_slice(&[1; 16]);
    let cases = vec![
        (
            "CAF magic cookie".to_string(),
            caf_with_chunk(b"kuki", i64::from(CLAIM), b"cookie"),
        ),
        (
            "CAF packet table".to_string(),
            caf_with_chunk(b"pakt", table.len() as i64, &table),
        ),
    ];
    assert_all_refused_within_bounds(&cases);
    // The same chunks, truthful, are read past (PCM needs no packet table).
    let (outcome, _) = decode_measured(&caf_with_chunk(b"free", 6, b"cookie"));
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// Appends Ogg pages carrying `packets` for one logical stream; `split` caps the segments
/// per page, so a packet may span pages.
struct OggWriter {
    bytes: Vec<u8>,
    serial: u32,
    sequence: u32,
}

impl OggWriter {
    fn new(serial: u32) -> Self {
        OggWriter {
            bytes: Vec::new(),
            serial,
            sequence: 0,
        }
    }

    fn page(&mut self, flags: u8, granule: u64, segments: &[u8], body: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b"OggS\0");
        self.bytes.push(flags);
        self.bytes.extend_from_slice(&granule.to_le_bytes());
        self.bytes.extend_from_slice(&self.serial.to_le_bytes());
        self.bytes.extend_from_slice(&self.sequence.to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]);
        self.bytes.push(segments.len() as u8);
        self.bytes.extend_from_slice(segments);
        self.bytes.extend_from_slice(body);
        let mut crc = Crc32::new(0);
        crc.process_buf_bytes(&self.bytes[start..]);
        self.bytes[start + 22..start + 26].copy_from_slice(&crc.crc().to_le_bytes());
        self.sequence += 1;
    }

    /// One packet over as many pages as `max_segments` per page needs.
    fn packet(&mut self, packet: &[u8], first: bool, granule: u64, max_segments: usize) {
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        let mut offset = 0;
        for (i, chunk) in lacing.chunks(max_segments).enumerate() {
            let len: usize = chunk.iter().map(|&s| usize::from(s)).sum();
            let mut flags = if i > 0 { 0x01 } else { 0 };
            if first {
                flags |= 0x02;
            }
            self.page(flags, granule, chunk, &packet[offset..offset + len]);
            offset += len;
        }
    }
}

/// A Vorbis comment list with one comment, optionally claiming `CLAIM` bytes.
fn comments(hostile: bool, padding: usize) -> Vec<u8> {
    let mut list = 4u32.to_le_bytes().to_vec();
    list.extend_from_slice(b"hark");
    list.extend_from_slice(&1u32.to_le_bytes());
    let comment = format!("TITLE={}", "x".repeat(padding));
    let len = if hostile { CLAIM } else { comment.len() as u32 };
    list.extend_from_slice(&len.to_le_bytes());
    list.extend_from_slice(comment.as_bytes());
    list
}

fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 1]);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    head
}

#[test]
fn ogg_comment_packets_longer_than_they_hold_are_refused() {
    let streaminfo = seed("tone.flac")[8..42].to_vec();
    let vorbis_id = {
        let mut id = b"\x01vorbis".to_vec();
        id.extend_from_slice(&0u32.to_le_bytes());
        id.push(1);
        id.extend_from_slice(&16_000u32.to_le_bytes());
        id.extend_from_slice(&[0; 12]);
        id.extend_from_slice(&[0xb8, 1]);
        id
    };
    let flac_id = {
        let mut id = b"\x7fFLAC\x01\x00\x00\x01fLaC\x00\x00\x00\x22".to_vec();
        id.extend_from_slice(&streaminfo);
        id
    };
    let with_prefix = |prefix: &[u8], rest: Vec<u8>| [prefix, &rest].concat();
    let flac_block = |kind: u8, body: Vec<u8>| {
        let len = (body.len() as u32).to_be_bytes();
        with_prefix(&[kind, len[1], len[2], len[3]], body)
    };
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "Ogg Vorbis",
            vorbis_id,
            with_prefix(b"\x03vorbis", comments(true, 4)),
        ),
        (
            "Ogg Opus",
            opus_head(),
            with_prefix(b"OpusTags", comments(true, 4)),
        ),
        (
            "Ogg FLAC comment",
            flac_id.clone(),
            flac_block(4, comments(true, 4)),
        ),
        ("Ogg FLAC picture", flac_id, flac_block(6, picture(2))),
        (
            "Ogg Opus, tags over two pages",
            opus_head(),
            with_prefix(b"OpusTags", comments(true, 3000)),
        ),
    ];
    let files: Vec<(String, Vec<u8>)> = cases
        .into_iter()
        .map(|(case, id, header)| {
            let mut ogg = OggWriter::new(0x4841_524b);
            ogg.packet(&id, true, 0, 255);
            ogg.packet(&header, false, 0, 4);
            (case.to_string(), ogg.bytes)
        })
        .collect();
    assert_all_refused_within_bounds(&files);
}

/// The seed's pages, each as (flags, granule, segment table, body).
fn ogg_pages(bytes: &[u8]) -> Vec<(u8, u64, Vec<u8>, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert_eq!(&bytes[at..at + 4], b"OggS");
        let flags = bytes[at + 5];
        let granule = u64::from_le_bytes(bytes[at + 6..at + 14].try_into().unwrap());
        let count = usize::from(bytes[at + 26]);
        let table = bytes[at + 27..at + 27 + count].to_vec();
        let body_len: usize = table.iter().map(|&s| usize::from(s)).sum();
        let body_at = at + 27 + count;
        pages.push((
            flags,
            granule,
            table,
            bytes[body_at..body_at + body_len].to_vec(),
        ));
        at = body_at + body_len;
    }
    pages
}

#[test]
fn well_formed_comments_still_decode_also_when_split_across_pages() {
    for name in [
        "tone.flac",
        "tone-flac.oga",
        "tone.ogg",
        "tone.opus",
        "speech-silk.opus",
        "speech-hybrid.opus",
        "tone.wav",
        "tone.mp3",
        "tone.m4a",
        "tone.mka",
        "tone.caf",
        "tone.aiff",
    ] {
        let (outcome, _) = decode_measured(&seed(name));
        assert!(outcome.is_ok(), "{name}: {outcome:?}");
    }

    // tone.opus again, its OpusTags replaced by a 70 KB one that spans two pages.
    let original = seed("tone.opus");
    let (expected, _) = decode_measured(&original);
    let pages = ogg_pages(&original);
    assert!(pages[1].3.starts_with(b"OpusTags") && pages[1].2.len() < 255);
    let mut ogg = OggWriter::new(u32::from_le_bytes(original[14..18].try_into().unwrap()));
    let (flags, granule, table, body) = &pages[0];
    ogg.page(*flags, *granule, table, body);
    let tags = [&b"OpusTags"[..], &comments(false, 70_000)].concat();
    ogg.packet(&tags, false, 0, 255);
    assert!(ogg.sequence >= 3, "the tags must span pages");
    for (flags, granule, table, body) in &pages[2..] {
        ogg.page(*flags, *granule, table, body);
    }
    let (outcome, _) = decode_measured(&ogg.bytes);
    assert!(expected.is_ok(), "{expected:?}");
    assert_eq!(outcome.ok(), expected.ok());
}
