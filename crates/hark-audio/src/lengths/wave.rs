//! WAV: the texts of a `LIST`/`INFO` chunk.

use std::io::Read;

use symphonia::core::io::{MediaSource, MediaSourceStream, ReadBytes};

use super::skip;

/// WAV: symphonia reads each text of a `LIST`/`INFO` chunk into a buffer of its declared
/// length, bounded only by the enclosing lengths, which a stream-style header sets to
/// 4 GiB; every other chunk before `data` is skipped.
pub(super) fn wave_info_fits(reader: &mut MediaSourceStream) -> bool {
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
