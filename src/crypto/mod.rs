//! Key material: RSA key generation and PEM encoding, public keys that verify JWS signatures, the application
//! key file, and bearer secrets with their hashes. CPU-heavy work here is synchronous; callers run it on
//! blocking threads.

pub mod api_key_secret;
pub mod key_file;
pub mod keygen;
pub mod pool;
pub mod public_key;
pub mod secret;

/// A failure of the cryptographic library. It never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("cryptography failed: {0}")]
pub struct CryptoError(pub &'static str);
