//! CAF: the magic cookie, the packet table and the audio description's packet size.

use std::io::Read;

use symphonia::core::io::{MediaSource, MediaSourceStream, ReadBytes};

use super::{skip, HARMLESS_CLAIM};

/// CAF: after the file header's version and flags, chunks of a type, a signed 64-bit
/// size and a body. symphonia reads a magic cookie (`kuki`) whole, sizes a packet table
/// (`pakt`) by its declared count, and reads each packet into a buffer of the size the
/// table or the audio description (`desc`) gives: up to 1,152 frames at a time for PCM.
pub(super) fn caf_chunks_fit(reader: &mut MediaSourceStream) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
