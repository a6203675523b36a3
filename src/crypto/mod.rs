//! Key material: RSA key generation and PEM encoding, public keys that verify JWS signatures, the application
//! key file, bearer secrets with their hashes, JWS, keymint's token-signing keys and the sealing of stored
//! secrets. CPU-heavy work here is synchronous; callers run it on blocking threads.

pub mod api_key_secret;
pub mod jws;
pub mod key_file;
pub mod keygen;
pub mod pool;
pub mod public_key;
pub mod seal;
pub mod secret;
pub mod signing_keys;

/// A failure of the cryptographic library. It never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("cryptography failed: {0}")]
pub struct CryptoError(pub &'static str);
