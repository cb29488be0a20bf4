//! TOTP second factor (RFC 6238 over HMAC-SHA1, 6 digits, 30 s steps): seed
//! generation, provisioning URIs, verification with a ±1 step window that reports the
//! matched step so callers can refuse replays, and one-time recovery codes.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const STEP_SECS: i64 = 30;
pub const DIGITS: u32 = 6;
pub const RECOVERY_CODES: usize = 10;

/// A fresh 160-bit seed, base32 (the form authenticator apps take).
pub fn generate_seed() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    BASE32_NOPAD.encode(&bytes)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn provisioning_uri(seed_b32: &str, issuer: &str, account_name: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account_name),
        seed_b32,
        enc(issuer)
    )
}

/// The code for raw key bytes at a time step (RFC 4226 dynamic truncation).
pub fn code_at_step(key: &[u8], step: i64, digits: u32) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    let modulus = 10u32.pow(digits);
    format!("{:0width$}", bin % modulus, width = digits as usize)
}

pub fn step_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(1000).div_euclid(STEP_SECS)
}

/// The current code for a base32 seed (for tests and tools).
pub fn current_code(seed_b32: &str, now_ms: i64) -> Option<String> {
    let key = BASE32_NOPAD.decode(seed_b32.as_bytes()).ok()?;
    Some(code_at_step(&key, step_of(now_ms), DIGITS))
}

/// The step (within ±1 of now) whose code `code` is, if any. The caller refuses a
/// step at or before the last one accepted, so a code works once.
pub fn verify(seed_b32: &str, code: &str, now_ms: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let key = BASE32_NOPAD.decode(seed_b32.as_bytes()).ok()?;
    let now = step_of(now_ms);
    let mut found = None;
    // Check every candidate so timing does not say which one matched.
    for step in [now - 1, now, now + 1] {
        let expected = code_at_step(&key, step, DIGITS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Ten fresh recovery codes, `xxxxx-xxxxx` lowercase base32.
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rand::thread_rng().fill_bytes(&mut bytes);
            let s = BASE32_NOPAD.encode(&bytes).to_lowercase();
            format!("{}-{}", &s[..5], &s[5..10])
        })
        .collect()
}

/// The normal form of a typed recovery code (case and separators ignored).
pub fn normalize_recovery_code(code: &str) -> String {
    let s: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if s.len() == 10 {
        format!("{}-{}", &s[..5], &s[5..])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (8 digits, seed "12345678901234567890").
    #[test]
    fn rfc6238_vectors() {
        let key = b"12345678901234567890";
        for (t, expected) in [
            (59i64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at_step(key, t / 30, 8), expected, "T={t}");
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let seed = generate_seed();
        let t = 1_800_000_000_000i64;
        let code = current_code(&seed, t).unwrap();
        assert_eq!(verify(&seed, &code, t), Some(step_of(t)));
        assert_eq!(verify(&seed, &code, t + 30_000), Some(step_of(t)));
        assert_eq!(verify(&seed, &code, t - 30_000), Some(step_of(t)));
        assert_eq!(verify(&seed, &code, t + 90_000), None);
        assert_eq!(verify(&seed, "12345", t), None);
        assert_eq!(verify(&seed, "abcdef", t), None);
    }

    #[test]
    fn uri_and_recovery_codes() {
        let uri = provisioning_uri("ABC", "Hark", "a b@example.com");
        assert!(uri.starts_with("otpauth://totp/Hark:a%20b%40example.com?secret=ABC&issuer=Hark"));
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(normalize_recovery_code(&codes[0].to_uppercase()), codes[0]);
    }
}
