//! The service layer's error: what a use case answers when it cannot do what was asked.

use crate::{
    crypto::CryptoError,
    domain::{DomainError, oauth::OAuthError},
    store::{StoreError, Unwritable},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule of the domain refused the command (invalid input, missing object, name taken, …).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// An OAuth endpoint's refusal (RFC 6749 §5.2), answered as its JSON error.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// No credential, or one keymint does not know.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Another writer changed the object between our read and our write; the use case may try again.
    #[error("a concurrent write changed the object")]
    Conflict,
    /// Lost the write race on every try.
    #[error("the object kept changing while this request was written; try again")]
    Aborted,
    /// The database cannot be reached now; nothing was written. The cause is for the log.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database refuses writes (read-only, disk full); nothing was written.
    #[error("{0}")]
    Unwritable(Unwritable),
    /// A fault of the store or the machine. The message is for the log, never for the caller.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => Error::Unavailable(cause),
            other => Error::from(&other),
        }
    }
}

/// The same mapping for a store error several callers share (a failed batch answers each of its requests).
impl From<&StoreError> for Error {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::Conflict,
            StoreError::Unavailable(cause) => Error::Unavailable(cause.clone()),
            StoreError::Unwritable(why) => Error::Unwritable(*why),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Error::Internal(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
