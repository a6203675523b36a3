//! Bearer secrets: random, shown once, stored only as their SHA-256.

use aws_lc_rs::{digest, rand};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use super::CryptoError;

/// Random bytes in a new secret: 256 bits, well above the 128 a bearer secret needs.
const SECRET_BYTES: usize = 32;

/// A new secret: `prefix` followed by 256 random bits from the OS RNG in URL-safe base64.
pub fn new_secret(prefix: &str) -> Result<Zeroizing<String>, CryptoError> {
    let mut bytes = Zeroizing::new([0_u8; SECRET_BYTES]);
    rand::fill(bytes.as_mut()).map_err(|_| CryptoError("the OS random number generator"))?;
    let mut secret = Zeroizing::new(String::with_capacity(prefix.len() + 43));
    secret.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut secret);
    Ok(secret)
}

/// Compares two secret hashes in time that depends only on their length, so that how long a comparison takes
/// says nothing about how many leading characters matched.
pub fn hashes_equal(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    let difference = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(difference) == 0
}

/// The hex SHA-256 of a secret: what the store keeps and looks secrets up by. A fast hash is enough because the
/// secrets are high-entropy; looking the hash up reveals nothing about the secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&secret_digest(secret))
}

/// The SHA-256 of a secret as 32 bytes: what in-memory caches key by (half the size of the hex).
pub fn secret_digest(secret: &str) -> [u8; 32] {
    let mut bytes = [0_u8; 32];
    bytes.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    bytes
}

/// Lower-case hex, as the store keeps hashes.
pub fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_distinct() {
        let a = new_secret("km_admin_").expect("secret");
        let b = new_secret("km_admin_").expect("secret");
        assert!(a.starts_with("km_admin_"));
        assert_eq!(a.len(), "km_admin_".len() + 43);
        assert_ne!(*a, *b);
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&secret_digest("abc")), hash_secret("abc"));
        assert!(hashes_equal(secret_digest("abc"), secret_digest("abc")));
        assert!(!hashes_equal(secret_digest("abc"), secret_digest("abd")));
    }
}
