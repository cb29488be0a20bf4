//! FLAC metadata blocks and the Vorbis comment and FLAC picture layouts that FLAC, Ogg
//! and Matroska files carry.

use std::io::{self, Read};

pub(super) const FLAC_VORBIS_COMMENT: u8 = 4;
pub(super) const FLAC_PICTURE: u8 = 6;

/// Native FLAC: the metadata blocks after the `fLaC` marker. symphonia reads each block
/// through a reader scoped to the block's declared length.
pub(super) fn flac_blocks_fit(reader: &mut impl Read) -> bool {
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
pub(super) fn flac_block_fits(block_type: u8, body: &[u8]) -> bool {
    match block_type {
        FLAC_VORBIS_COMMENT => vorbis_comments_fit(body),
        FLAC_PICTURE => picture_fits(body),
        _ => true,
    }
}

/// A Vorbis comment list (no framing bit): vendor string, then counted comments, each
/// with a little-endian u32 length.
pub(super) fn vorbis_comments_fit(mut data: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lengths::comment_list;

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
}
