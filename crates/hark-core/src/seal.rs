//! Sealing of secrets that must stay revealable (API keys): AES-256-GCM under the
//! installation's master key, bound to the record they belong to.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use std::fmt;

pub struct MasterKey {
    aead: Aes256Gcm,
    /// HMAC key for [`MasterKey::keyed_digest`], derived from the master key (32 bytes,
    /// zero-padded to SHA-256's block as HMAC pads it anyway).
    digest_key: [u8; 64],
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes (64 hex characters)")]
    BadMasterKey,
    #[error("the sealed value is damaged or was sealed under another master key")]
    Open,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        use hmac::{Hmac, Mac};
        let aead = Aes256Gcm::new_from_slice(bytes).map_err(|_| SealError::BadMasterKey)?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(bytes)
            .map_err(|_| SealError::BadMasterKey)?;
        mac.update(b"hark keyed digest v1");
        let mut digest_key = [0u8; 64];
        digest_key[..32].copy_from_slice(&mac.finalize().into_bytes());
        Ok(Self { aead, digest_key })
    }

    /// A digest of `value` keyed under the master key (HMAC-SHA256, hex), bound to
    /// `context`: for short secrets a plain hash would not protect (recovery codes), since
    /// without the master key a stolen database cannot be searched for them.
    pub fn keyed_digest(&self, context: &str, value: &str) -> String {
        use hmac::digest::KeyInit;
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new(&self.digest_key.into());
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SealError::BadMasterKey)?;
        Self::from_bytes(&bytes)
    }

    /// A new random key, hex-encoded (for writing to the master-key file).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Encrypts `plaintext`; `context` (e.g. the key id) must be given again to open it.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ciphertext = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let bytes = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if bytes.len() < 12 + 16 {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map_err(|_| SealError::Open)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digests_depend_on_the_key_and_the_context() {
        let key = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let d = key.keyed_digest("recovery:u1", "abcd-efgh");
        assert_eq!(d.len(), 64);
        assert_eq!(d, key.keyed_digest("recovery:u1", "abcd-efgh"));
        assert_ne!(d, other.keyed_digest("recovery:u1", "abcd-efgh"));
        assert_ne!(d, key.keyed_digest("recovery:u2", "abcd-efgh"));
        assert_ne!(d, key.keyed_digest("recovery:u1a", "bcd-efgh"));
        assert_ne!(d, crate::keys::SecretDigest::of("abcd-efgh").to_hex());
    }

    #[test]
    fn round_trip_and_context_binding() {
        let key = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let sealed = key.seal("hark_key_secret", "key-1");
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open(&sealed, "key-1").unwrap(), "hark_key_secret");
        assert!(key.open(&sealed, "key-2").is_err());
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert!(other.open(&sealed, "key-1").is_err());
        assert!(key.open("not base64!", "key-1").is_err());
        assert!(MasterKey::from_hex("abcd").is_err());
    }
}
