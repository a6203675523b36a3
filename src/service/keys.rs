//! Where new RSA key pairs come from: the key pool, behind a trait so that use cases can be tested with any source.

use async_trait::async_trait;

use crate::{
    crypto::{
        keygen::{RsaBits, RsaKeyPair},
        pool::{KeyPool, PoolError},
    },
    domain::DomainError,
};

use super::{Error, Result};

/// Supplies key pairs for new application keys.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// A key pair of the given size, or of the server's default size when None.
    async fn next_key(&self, bits: Option<RsaBits>) -> Result<RsaKeyPair>;
}

#[async_trait]
impl KeySource for KeyPool {
    async fn next_key(&self, bits: Option<RsaBits>) -> Result<RsaKeyPair> {
        self.take(bits).await.map_err(|e| match e {
            PoolError::NotConfigured { .. } => DomainError::invalid("keySize", e.to_string()).into(),
            PoolError::Stopped(_) => Error::Internal(e.to_string()),
        })
    }
}
