//! The PostgreSQL store: for several keymint processes sharing one database. A lost race shows as a unique
//! violation on `(aggregate_type, aggregate_id, sequence)`, exactly as on SQLite.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Postgres,
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
};
use tokio::sync::mpsc;
use tracing::warn;

use super::{
    ChangeFeed, Changed, Result,
    migrate::{Migration, migrations},
    sql::impl_event_store,
};

const MIGRATIONS: &[Migration] = migrations!(
    "postgres",
    (1, "0001_events"),
    (2, "0002_projections"),
    (3, "0003_app_keys_covering_index"),
    (4, "0004_api_keys")
);

/// The channel appends notify on, with the changed aggregate (`type:id`) as payload; delivered at commit.
const CHANNEL: &str = "keymint_changes";
const NOTIFY: &str = "SELECT pg_notify('keymint_changes', $1)";

/// A rebuild replays events in position order; appends committing meanwhile could land out of that order, so
/// they wait (reads go on). SHARE ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every INSERT takes.
const REBUILD_LOCK: &str = "LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE";

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

    /// Listens for the changes other processes commit. When the listening connection drops, notifications may
    /// be lost, so the feed says `Lost` and the listener reconnects.
    async fn listen(&self) -> Result<Option<ChangeFeed>> {
        let mut listener = PgListener::connect_with(&self.read).await?;
        listener.listen(CHANNEL).await?;
        let (sender, feed) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let changed = match listener.try_recv().await {
                    Ok(Some(notification)) => match notification.payload().split_once(':') {
                        Some((aggregate_type, id)) => Changed::Aggregate {
                            aggregate_type: aggregate_type.to_owned(),
                            id: id.to_owned(),
                        },
                        None => continue,
                    },
                    Ok(None) => Changed::Lost,
                    // Nobody follows the feed any more (the server stopped): end quietly.
                    Err(_) if sender.is_closed() => return,
                    Err(e) => {
                        warn!(error = %e, "change feed lost its connection; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Changed::Lost
                    }
                };
                if sender.send(changed).await.is_err() {
                    return; // Nobody follows the feed any more.
                }
            }
        });
        Ok(Some(feed))
    }
}

impl_event_store!(PgStore, Postgres, notify: Some(NOTIFY), rebuild_lock: Some(REBUILD_LOCK), feed: listen);
