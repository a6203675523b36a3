//! Where new RSA key pairs come from. Generation is CPU-heavy, so it never runs on the async runtime.

use async_trait::async_trait;

use crate::crypto::keygen::{RsaBits, RsaKeyPair};

use super::{Error, Result};

/// Supplies key pairs for new application keys.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn next_key(&self) -> Result<RsaKeyPair>;
}

/// Generates each key when it is asked for, on a blocking thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct GenerateOnDemand {
    pub bits: RsaBits,
}

#[async_trait]
impl KeySource for GenerateOnDemand {
    async fn next_key(&self) -> Result<RsaKeyPair> {
        let bits = self.bits;
        tokio::task::spawn_blocking(move || RsaKeyPair::generate(bits))
            .await
            .map_err(|e| Error::Internal(format!("key generation task: {e}")))?
            .map_err(Error::from)
    }
}
