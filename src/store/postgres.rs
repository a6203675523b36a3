//! The PostgreSQL store: for several keymint processes sharing one database. A lost race shows as a unique
//! violation on `(aggregate_type, aggregate_id, sequence)`, exactly as on SQLite.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Connection, Postgres,
    postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions},
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    ChangeFeed, Changed, Result, StoreError,
    migrate::{Migration, migrations},
    sql::impl_event_store,
};

const MIGRATIONS: &[Migration] = migrations!(
    "postgres",
    (1, "0001_events"),
    (2, "0002_projections"),
    (3, "0003_app_keys_covering_index"),
    (4, "0004_api_keys"),
    (5, "0005_oauth"),
    (8, "0008_app_key_algorithms"),
    (9, "0009_rate_buckets"),
    (10, "0010_quota_counters"),
    (11, "0011_list_counts")
);

/// The channel appends notify on, with the changed aggregate (`type:id`) as payload; delivered at commit.
const CHANNEL: &str = "keymint_changes";
const NOTIFY: &str = "SELECT pg_notify('keymint_changes', $1)";

/// A rebuild replays events in position order; appends committing meanwhile could land out of that order, so
/// they wait (reads go on). SHARE ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every INSERT takes.
const REBUILD_LOCK: &str = "LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE";

/// Serializes migrations of processes that start at the same time (the key is arbitrary but fixed).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7202604812)";

/// How long a call waits for a pooled connection. Short, so that an outage shows in about a second instead of
/// every call hanging; the circuit (see `circuit.rs`) then answers at once until the database is back.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections for leases: a lease is one short statement, and at most one per key is in flight per process.
const LEASE_CONNECTIONS: u32 = 4;
/// How long the change feed waits before listening again after its connection failed.
const RELISTEN_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct PgStore {
    read: PgPool,
    write: PgPool,
    /// Leases of rate-limit tokens and quota uses: commits that do not wait for the WAL to reach the disk. A
    /// lease lost in a database crash gives back at most one batch per key and process, and keeps a verify that
    /// leases from waiting for a disk flush (≈ 2.7 ms here) instead of a round trip.
    leases: PgPool,
    options: PgConnectOptions,
}

/// The errors a first start meets most, said plainly: PostgreSQL's own text names the server's C source line.
fn explain_connect_error(error: sqlx::Error, options: &PgConnectOptions) -> StoreError {
    let code = match &error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    // 3D000 invalid_catalog_name: the database of the URL does not exist.
    if code.as_deref() == Some("3D000") {
        let (host, port) = (options.get_host(), options.get_port());
        let user = options.get_username();
        let name = options.get_database().unwrap_or(user);
        return StoreError::Config(format!(
            "the PostgreSQL server at {host}:{port} has no database named {name:?}: create it (`createdb -h {host} \
             -p {port} -U {user} {name}`, or `CREATE DATABASE {name};` in psql), or point --database-url \
             (KEYMINT_DATABASE_URL) at an existing one"
        ));
    }
    error.into()
}

impl PgStore {
    /// Connects to a `postgres://` URL and migrates the database.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| explain_connect_error(e, &options))?;
        Self::run_migrations(&pool, MIGRATIONS, Some(MIGRATION_LOCK)).await?;
        let leases = PgPoolOptions::new()
            .max_connections(LEASE_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        // Reads and writes share one pool: PostgreSQL runs concurrent writers itself.
        Ok(PgStore { read: pool.clone(), write: pool, leases, options })
    }

    /// Reads and writes share one pool; leases have their own.
    fn pools(&self) -> Vec<super::PoolConnections> {
        vec![
            super::PoolConnections::of("main", &self.read),
            super::PoolConnections::of("leases", &self.leases),
        ]
    }

    /// A fresh connection and a round trip: a pool that is merely busy says nothing about the database.
    async fn connect_and_select(&self) -> Result<()> {
        let mut connection = PgConnection::connect_with(&self.options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        let _ = connection.close().await;
        Ok(())
    }

    /// Listens for the changes other processes commit. When the listening connection fails, notifications of
    /// that time are lost for good: the feed says `Down` at once, listens again on a new connection (retrying
    /// until the database answers), and only then says `Live`, so that caches forget what they hold after the
    /// last change they could have missed.
    async fn listen(&self) -> Result<Option<ChangeFeed>> {
        let mut listener = Self::listener(&self.read).await?;
        let (sender, feed) = mpsc::channel(1024);
        let pool = self.read.clone();
        tokio::spawn(async move {
            loop {
                if !follow(&mut listener, &sender).await {
                    return; // Nobody follows the feed any more (the server stopped).
                }
                if sender.send(Changed::Down).await.is_err() {
                    return;
                }
                listener = loop {
                    tokio::time::sleep(RELISTEN_DELAY).await;
                    if sender.is_closed() {
                        return;
                    }
                    match Self::listener(&pool).await {
                        Ok(listener) => break listener,
                        Err(e) => debug!(error = %e, "change feed: cannot listen yet; retrying"),
                    }
                };
                info!("change feed listens again; caches start over");
                if sender.send(Changed::Live).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(feed))
    }

    async fn listener(pool: &PgPool) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }
}

/// Passes notifications on until the listening connection fails (false: nobody follows the feed any more).
async fn follow(listener: &mut PgListener, sender: &mpsc::Sender<Changed>) -> bool {
    loop {
        let notification = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            // Ok(None): the connection was lost (and may have been replaced: we start over on our own anyway).
            Ok(None) => {
                warn!("change feed lost its connection");
                return !sender.is_closed();
            }
            Err(e) => {
                warn!(error = %e, "change feed failed");
                return !sender.is_closed();
            }
        };
        let Some((aggregate_type, id)) = notification.payload().split_once(':') else { continue };
        let changed = Changed::Aggregate { aggregate_type: aggregate_type.to_owned(), id: id.to_owned() };
        if sender.send(changed).await.is_err() {
            return false;
        }
    }
}

impl_event_store!(PgStore, Postgres, notify: Some(NOTIFY), rebuild_lock: Some(REBUILD_LOCK), feed: listen, ping: connect_and_select);
