//! Container sniffing from the first bytes of a file: is it audio we can decode, and if
//! not, what does it look like (for the "File type is ..." error text).

/// Whether `head` (the first ~64 bytes of a file) starts like a container this crate
/// decodes: WAV/RF64/W64, AIFF, CAF, FLAC, Ogg, MP3 (ID3 or frame sync), ADTS AAC,
/// MP4/M4A/MOV and Matroska/WebM. A quick check for upload validation; a `true` is no
/// promise that the whole file decodes.
pub fn sniff_is_audio(head: &[u8]) -> bool {
    audio_container(head).is_some()
}

/// What `head` recognisably is when it is not audio (text, JSON, HTML, an image, an
/// archive, ...): the MIME-like type, or `None` for audio and for unrecognised bytes
/// (which only a decode attempt can judge).
pub fn non_audio_kind(head: &[u8]) -> Option<String> {
    if head.is_empty() || audio_container(head).is_some() {
        return None;
    }
    let kind = describe(head);
    (kind != "unknown").then_some(kind)
}

/// The MIME-like name of the audio container `head` starts with, if any.
pub(crate) fn audio_container(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if (at(0, b"RIFF") || at(0, b"RIFX") || at(0, b"RF64") || at(0, b"BW64")) && at(8, b"WAVE") {
        return Some("audio/wav");
    }
    if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        return Some("audio/aiff");
    }
    if at(0, b"caff") {
        return Some("audio/x-caf");
    }
    if at(0, b"fLaC") {
        return Some("audio/flac");
    }
    if at(0, b"OggS") {
        return Some("audio/ogg");
    }
    if at(0, b"ID3") {
        return Some("audio/mpeg");
    }
    if at(4, b"ftyp") {
        return Some("audio/mp4");
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("audio/webm");
    }
    if let [0xFF, b1, b2, ..] = *head {
        // ADTS AAC: 12-bit sync, layer bits 00.
        if b1 & 0xF6 == 0xF0 {
            return Some("audio/aac");
        }
        // MPEG audio frame: 11-bit sync, a valid version and layer, sane bitrate and rate.
        let version = (b1 >> 3) & 0b11;
        let layer = (b1 >> 1) & 0b11;
        let bitrate = b2 >> 4;
        let rate = (b2 >> 2) & 0b11;
        if b1 & 0xE0 == 0xE0 && version != 0b01 && layer != 0 && bitrate != 0xF && rate != 0b11 {
            return Some("audio/mpeg");
        }
    }
    None
}

/// Best-effort MIME type of non-audio content, or `"unknown"`.
pub(crate) fn describe(head: &[u8]) -> String {
    if let Some(kind) = audio_container(head) {
        return kind.to_string();
    }
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let kind = if head.is_empty() {
        "application/x-empty"
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if at(0, &[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "image/gif"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        "video/x-msvideo"
    } else if at(0, b"%PDF") {
        "application/pdf"
    } else if at(0, b"PK\x03\x04") {
        "application/zip"
    } else if at(0, &[0x1F, 0x8B]) {
        "application/gzip"
    } else if at(0, b"\x7FELF") {
        "application/x-executable"
    } else if let Some(text) = as_text(head) {
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            "application/json"
        } else if trimmed
            .as_bytes()
            .get(..5)
            .is_some_and(|start| start.eq_ignore_ascii_case(b"<?xml"))
        {
            "text/xml"
        } else if trimmed.starts_with('<') {
            "text/html"
        } else {
            "text/plain"
        }
    } else {
        "unknown"
    };
    kind.to_string()
}

/// `head` as text if it is valid UTF-8 (allowing a character cut at the end) without
/// control bytes other than whitespace.
fn as_text(head: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let printable = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{c}'));
    (printable && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers() {
        assert!(sniff_is_audio(b"RIFF\x24\0\0\0WAVEfmt "));
        assert!(sniff_is_audio(b"fLaC\0\0\0\x22"));
        assert!(sniff_is_audio(b"OggS\0\x02"));
        assert!(sniff_is_audio(b"ID3\x04\0\0"));
        assert!(sniff_is_audio(&[0xFF, 0xFB, 0x90, 0x64]));
        assert!(sniff_is_audio(&[0xFF, 0xF1, 0x50, 0x80]));
        assert!(sniff_is_audio(b"\0\0\0\x20ftypM4A "));
        assert!(!sniff_is_audio(b""));
        assert!(!sniff_is_audio(b"\x89PNG\r\n\x1a\n"));
        assert!(!sniff_is_audio(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!sniff_is_audio(b"hello world"));
        assert!(!sniff_is_audio(&[0xFF, 0xFF, 0xFF, 0xFF]));
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(b""), "application/x-empty");
        assert_eq!(describe(b"\x89PNG\r\n\x1a\n\0\0"), "image/png");
        assert_eq!(describe(b"  {\"a\": 1}"), "application/json");
        assert_eq!(describe(b"<!doctype html>"), "text/html");
        assert_eq!(describe(b"just some words\n"), "text/plain");
        assert_eq!(describe(&[0u8, 1, 2, 3, 200]), "unknown");
        assert_eq!(describe("caf\u{e9}".as_bytes()), "text/plain");
        assert_eq!(describe(b"<?XML version"), "text/xml");
        // Text whose fifth byte is inside a character (the audio fuzz target's find: this
        // sliced a str mid-character and panicked).
        assert_eq!(
            describe("\u{232}\u{232}\u{232}\u{232}".as_bytes()),
            "text/plain"
        );
    }
}
