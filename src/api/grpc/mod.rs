//! The gRPC services (keymint's three, Envoy's ext_authz, health) and what they share: reading the caller,
//! the codec, conversions between messages and the service's values, and the redacted Debug of secret-bearing messages.

pub mod admin;
pub mod api_keys;
pub(crate) mod auth;
pub mod codec;
pub(crate) mod convert;
pub mod ext_authz;
pub(crate) mod health;
pub mod management;
pub(crate) mod redact;
