//! Formats of the bearer secrets Hark issues (API keys, streaming tokens, login sessions
//! and their CSRF tokens, invites, password resets, setup links): a typed prefix per kind,
//! a high-entropy body and a checksum, so a leaked secret says what it is, scanners can
//! recognise one, and a mistyped one is refused without touching the database.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// 40 characters from a 62-letter alphabet: about 238 bits of entropy.
const BODY_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The kinds of secret, each with its own prefix. No prefix is the beginning of another,
/// so [`SecretKind::of`] names the kind of any well-formed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// A project's API key (data plane and streaming).
    ApiKey,
    /// A single-use temporary token that opens one streaming session (`GET /v3/token`).
    TempToken,
    /// A login session of the management API and dashboard.
    Session,
    /// The double-submit CSRF token that goes with a cookie session.
    Csrf,
    /// The mailed token that accepts an invitation to an account.
    Invite,
    /// The mailed token that sets a new password after "forgot password".
    PasswordReset,
    /// The one-time link that lets a user created by the operator set their first password.
    SetupLink,
}

impl SecretKind {
    pub const ALL: [SecretKind; 7] = [
        SecretKind::ApiKey,
        SecretKind::TempToken,
        SecretKind::Session,
        SecretKind::Csrf,
        SecretKind::Invite,
        SecretKind::PasswordReset,
        SecretKind::SetupLink,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "hark_key_",
            SecretKind::TempToken => "hark_tmp_",
            SecretKind::Session => "hark_ses_",
            SecretKind::Csrf => "hark_csrf_",
            SecretKind::Invite => "hark_inv_",
            SecretKind::PasswordReset => "hark_pwr_",
            SecretKind::SetupLink => "hark_setup_",
        }
    }

    /// Prefixes this kind was issued with before it had its own; such secrets stay valid
    /// until they end (invites mailed before the change last 7 days).
    pub fn legacy_prefixes(self) -> &'static [&'static str] {
        match self {
            SecretKind::Invite => &["hark_tmp_"],
            SecretKind::Csrf => &["hark_ses_"],
            _ => &[],
        }
    }

    /// The kind whose prefix `secret` carries, if any.
    pub fn of(secret: &str) -> Option<SecretKind> {
        SecretKind::ALL
            .into_iter()
            .find(|k| secret.starts_with(k.prefix()))
    }
}

/// A secret in clear text. Its `Debug` never shows the value.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The SHA-256 digest under which a secret is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl SecretDigest {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
    /// Constant-time equality, for comparing a presented digest with a stored one.
    pub fn ct_eq(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// Generates a fresh secret of the given kind.
pub fn generate(kind: SecretKind) -> Secret {
    let body = Alphanumeric.sample_string(&mut rand::thread_rng(), BODY_LEN);
    let checksum = encode_checksum(crc32fast::hash(body.as_bytes()));
    Secret(format!("{}{}{}", kind.prefix(), body, checksum))
}

/// Whether `candidate` is well-formed for `kind` (prefix, length, alphabet, checksum).
/// Cheap and allocation-free: run before any database lookup.
pub fn is_well_formed(kind: SecretKind, candidate: &str) -> bool {
    candidate
        .strip_prefix(kind.prefix())
        .is_some_and(well_formed_body)
}

/// Body and checksum after the prefix.
fn well_formed_body(rest: &str) -> bool {
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, checksum) = rest.split_at(BODY_LEN);
    encode_checksum(crc32fast::hash(body.as_bytes())).as_bytes() == checksum.as_bytes()
}

/// As [`is_well_formed`], also accepting the kind's legacy prefixes.
pub fn is_well_formed_or_legacy(kind: SecretKind, candidate: &str) -> bool {
    is_well_formed(kind, candidate)
        || kind
            .legacy_prefixes()
            .iter()
            .any(|legacy| candidate.strip_prefix(legacy).is_some_and(well_formed_body))
}

/// A display form that identifies a secret without revealing it: prefix, the first
/// four body characters, and the last four.
pub fn mask(secret: &str) -> String {
    let (prefix, body) = SecretKind::of(secret)
        .and_then(|k| secret.strip_prefix(k.prefix()).map(|b| (k.prefix(), b)))
        .unwrap_or(("", secret));
    if body.len() < 12 || !body.is_ascii() {
        return format!("{prefix}****");
    }
    format!("{prefix}{}…{}", &body[..4], &body[body.len() - 4..])
}

fn encode_checksum(mut value: u32) -> String {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = generate(SecretKind::ApiKey);
        let b = generate(SecretKind::ApiKey);
        assert_ne!(a, b);
        assert!(is_well_formed(SecretKind::ApiKey, a.expose()));
        assert!(!is_well_formed(SecretKind::TempToken, a.expose()));
        assert_eq!(a.expose().len(), "hark_key_".len() + 46);
    }

    #[test]
    fn any_single_character_change_is_detected() {
        let key = generate(SecretKind::ApiKey).into_inner();
        let prefix = SecretKind::ApiKey.prefix().len();
        for i in prefix..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                !is_well_formed(SecretKind::ApiKey, &changed),
                "position {i}"
            );
        }
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for bad in [
            "",
            "hark_key_",
            "Bearer x",
            "hark_key_ä",
            &"hark_key_".repeat(9),
        ] {
            assert!(!is_well_formed(SecretKind::ApiKey, bad));
        }
    }

    #[test]
    fn debug_and_mask_hide_the_secret() {
        let s = generate(SecretKind::ApiKey);
        assert!(!format!("{s:?}").contains(&s.expose()[10..]));
        let masked = mask(s.expose());
        assert!(masked.starts_with("hark_key_"));
        assert!(!masked.contains(&s.expose()[14..40]));
    }

    #[test]
    fn every_kind_has_its_own_prefix() {
        for a in SecretKind::ALL {
            let secret = generate(a);
            assert_eq!(SecretKind::of(secret.expose()), Some(a), "{a:?}");
            for b in SecretKind::ALL {
                assert_eq!(is_well_formed(b, secret.expose()), a == b, "{a:?} as {b:?}");
                if a != b {
                    assert!(!a.prefix().starts_with(b.prefix()), "{a:?} / {b:?}");
                }
            }
            assert!(mask(secret.expose()).starts_with(a.prefix()));
        }
    }

    #[test]
    fn legacy_prefixes_stay_valid_for_their_kind_only() {
        let old_invite = generate(SecretKind::TempToken);
        assert!(is_well_formed_or_legacy(
            SecretKind::Invite,
            old_invite.expose()
        ));
        assert!(!is_well_formed(SecretKind::Invite, old_invite.expose()));
        assert!(!is_well_formed_or_legacy(
            SecretKind::Session,
            old_invite.expose()
        ));
        let invite = generate(SecretKind::Invite);
        assert!(is_well_formed_or_legacy(
            SecretKind::Invite,
            invite.expose()
        ));
        assert!(!is_well_formed_or_legacy(
            SecretKind::Invite,
            "hark_tmp_short"
        ));
    }

    #[test]
    fn digests_compare() {
        let d = SecretDigest::of("x");
        assert!(d.ct_eq(&SecretDigest::of("x")));
        assert!(!d.ct_eq(&SecretDigest::of("y")));
        assert_eq!(SecretDigest::from_hex(&d.to_hex()), Some(d));
    }
}
