//! The plain-HTTP routes on the one port: the JSON/REST transcoder, the OAuth 2.0 endpoints, and the operator's
//! endpoints (metrics, liveness, readiness).

pub mod metrics;
pub mod oauth;
pub mod operations;
pub mod rest;
