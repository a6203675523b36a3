//! Secrets keymint must keep (the private halves of its token-signing keys) are stored only sealed: AES-256-GCM
//! under the master key, with a random nonce per seal and the secret's ID as associated data, so that a sealed
//! value moved to another ID does not open.

use std::fmt;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use zeroize::Zeroizing;

use super::CryptoError;

/// Bytes of a master key: AES-256.
pub const MASTER_KEY_BYTES: usize = 32;

/// The key that seals stored secrets. Debug never shows it; its bytes are wiped when dropped.
pub struct MasterKey {
    key: LessSafeKey,
    bytes: Zeroizing<[u8; MASTER_KEY_BYTES]>,
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let mut bytes = Zeroizing::new([0_u8; MASTER_KEY_BYTES]);
        rand::fill(bytes.as_mut()).map_err(|_| CryptoError("the OS random number generator"))?;
        MasterKey::from_bytes(bytes)
    }

    /// Reads a master key written as base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        let text = text.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(CryptoError("the master key is not base64"))?;
        let bytes: [u8; MASTER_KEY_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError("the master key must be 32 bytes (44 characters of base64)"))?;
        MasterKey::from_bytes(Zeroizing::new(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; MASTER_KEY_BYTES]>) -> Result<MasterKey, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes.as_ref()).map_err(|_| CryptoError("AES-256 key"))?;
        Ok(MasterKey { key: LessSafeKey::new(unbound), bytes })
    }

    /// The key as base64, for the master key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// Seals `secret` for the object `id`: base64 of nonce, ciphertext and tag.
    pub fn seal(&self, id: &str, secret: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0_u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| CryptoError("the OS random number generator"))?;
        let mut sealed = Zeroizing::new(secret.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut *sealed,
            )
            .map_err(|_| CryptoError("sealing a secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what `seal` made for the same `id`; fails for another key, another ID, or altered bytes.
    pub fn open(&self, id: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError("a sealed secret is not base64"))?;
        let (nonce, ciphertext) =
            bytes.split_at_checked(NONCE_LEN).ok_or(CryptoError("a sealed secret is cut short"))?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError("a sealed secret's nonce"))?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buffer)
            .map_err(|_| CryptoError("the master key does not open a sealed secret"))?
            .len();
        buffer.truncate(opened);
        Ok(buffer)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let key = MasterKey::generate().expect("key");
        let sealed = key.seal("k1", b"private").expect("seal");
        assert!(!sealed.contains("private"));
        assert_eq!(key.open("k1", &sealed).expect("open").as_slice(), b"private");
        assert!(key.open("k2", &sealed).is_err(), "another ID");
        assert!(MasterKey::generate().expect("key").open("k1", &sealed).is_err(), "another key");
        let again = MasterKey::parse(&key.to_base64()).expect("parse");
        assert_eq!(again.open("k1", &sealed).expect("open").as_slice(), b"private");
        assert_ne!(key.seal("k1", b"private").expect("seal"), sealed, "a fresh nonce each time");
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }
}
