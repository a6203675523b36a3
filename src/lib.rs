//! keymint: a key-issuing service for API applications and integrations.

pub mod api;
pub mod app;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod service;
pub mod store;
