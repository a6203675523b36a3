//! Schema migrations: numbered SQL files, the same numbers and names for both databases, applied in order once.

/// One migration file, compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Lists a dialect's migration files: `migrations!("sqlite", (1, "0001_events"), …)`.
macro_rules! migrations {
    ($dialect:literal, $(($version:literal, $name:literal)),+ $(,)?) => {
        &[$($crate::store::migrate::Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/migrations/", $dialect, "/", $name, ".sql"
            )),
        }),+]
    };
}

pub(crate) use migrations;
