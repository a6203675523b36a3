//! keymint's integration tests: the real server on a free port, called with real clients, on SQLite and (when
//! KEYMINT_TEST_POSTGRES_URL is set) on PostgreSQL.

mod helpers;

mod access;
mod app_keys;
mod errors;
mod projections;
mod store;
mod transports;
