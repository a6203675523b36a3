//! keymint's integration tests: the real server on a free port, called with real clients, on SQLite and on
//! PostgreSQL. The tests that need PostgreSQL or an outside tool are #[ignore]d with the reason: `source
//! .ci/tools.sh && cargo test -- --include-ignored` runs them all.

// Test bodies are async fns that `on_both_databases!` calls, and helpers are plain fns: clippy's
// allow-*-in-tests settings only cover #[test] fns, so the test crate allows failing loudly here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod access;
mod api_keys;
mod app_keys;
mod backup;
mod bounded_caches;
mod console;
mod crash;
mod envoy;
mod errors;
mod ext_authz;
mod key_types;
mod limits;
mod metrics;
mod oauth;
mod outage;
mod privileges;
mod projections;
mod rest;
mod serve;
mod shared_limits;
mod shutdown;
mod startup;
mod store;
mod tls;
mod transports;
mod verify;
