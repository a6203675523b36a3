//! The PostgreSQL store: for several keymint processes sharing one database. A lost race shows as a unique
//! violation on `(aggregate_type, aggregate_id, sequence)`, exactly as on SQLite.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Postgres,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use super::{
    Result,
    migrate::{Migration, migrations},
    sql::impl_event_store,
};

const MIGRATIONS: &[Migration] = migrations!("postgres", (1, "0001_events"), (2, "0002_projections"));

/// Serializes migrations of processes that start at the same time (the key is arbitrary but fixed).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7202604812)";

#[derive(Debug, Clone)]
pub struct PgStore {
    read: PgPool,
    write: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://` URL and migrates the database.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Self::run_migrations(&pool, MIGRATIONS, Some(MIGRATION_LOCK)).await?;
        // Reads and writes share one pool: PostgreSQL runs concurrent writers itself.
        Ok(PgStore { read: pool.clone(), write: pool })
    }
}

impl_event_store!(PgStore, Postgres);
