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
//!   container, the sample tables' entry counts, and every sample size against the file;
//! - Matroska/WebM: every leaf element against the file, block lacing and Vorbis track
//!   headers against their block;
//! - CAF: the magic cookie, the packet table and every packet size; WAV: the
//!   `LIST`/`INFO` texts.
//!
//! One submodule per container family; this one finds the container and holds what
//! they share.
//!
//! Memory stays bounded: only Ogg packets that can hold such a field are buffered (each up
//! to symphonia's own 16 MiB packet cap), one Matroska block at a time, and an MP4
//! metadata atom up to 256 MiB.

mod caf;
mod mkv;
mod mp4;
mod ogg;
mod wave;
mod xiph;

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use symphonia::core::io::{MediaSource, MediaSourceStream, SeekBuffered};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Instantiate;

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
        b"fLaC" => xiph::flac_blocks_fit(&mut mss),
        b"OggS" => ogg::ogg_packets_fit(Cursor::new(marker).chain(mss)),
        // The marker is an atom's type; the atom starts with its 4-byte size.
        b"ftyp" => {
            mss.seek_buffered_rel(-8);
            mp4::mp4_top_level_fits(&mut mss)
        }
        b"caff" => caf::caf_chunks_fit(&mut mss),
        b"RIFF" => wave::wave_info_fits(&mut mss),
        [0x1a, 0x45, 0xdf, 0xa3] => {
            mss.seek_buffered_rel(-4);
            mkv::mkv_elements_fit(&mut mss)
        }
        _ => true,
    }
}

/// A claim this small is harmless even past the end of a cut-off file, whose last
/// element always claims more than is there.
const HARMLESS_CLAIM: u64 = 16 << 20;

/// Moves `n` bytes on: a seek where the source allows, a read otherwise.
fn skip(reader: &mut MediaSourceStream, n: u64) -> io::Result<()> {
    if reader.is_seekable() {
        let offset = i64::try_from(n).map_err(|_| io::ErrorKind::InvalidInput)?;
        reader.seek(SeekFrom::Current(offset)).map(drop)
    } else {
        io::copy(&mut reader.by_ref().take(n), &mut io::sink()).map(drop)
    }
}

#[cfg(test)]
/// A Vorbis comment list: a two-byte vendor, then comments of (declared, actual) length.
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
