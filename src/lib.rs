//! keymint: a key-issuing service for API applications and integrations.

pub mod domain;
pub mod store;
