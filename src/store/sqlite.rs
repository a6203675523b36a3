//! The SQLite store: one file, nothing to install. WAL journal, one writer connection so that concurrent writes
//! queue in process instead of failing, and a pool of readers beside it.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    Sqlite,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    ChangeFeed, Result,
    checkpoint::Checkpointer,
    files,
    migrate::{Migration, migrations},
    sql::impl_event_store,
};

const MIGRATIONS: &[Migration] = migrations!(
    "sqlite",
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

/// Readers run in parallel with the writer under WAL, each sqlx SQLite connection on its own worker thread. One
/// per core and a few more keep short reads from queueing behind each other, and let reads grow with the cores
/// (a fixed four made a 16-core machine slower than a 2-core one: the tasks of 16 runtime threads queued for four
/// connections).
fn readers() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cores + 2).unwrap_or(u32::MAX).clamp(4, 64)
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Leases of rate-limit tokens and quota uses go through the one writer.
    leases: SqlitePool,
    /// A file's WAL checkpoints (none for an in-memory database).
    _checkpoints: Option<Checkpointer>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open_file(path: &Path) -> Result<Self> {
        Self::open(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a `sqlite:` URL and migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(SqliteConnectOptions::from_str(url)?).await
    }

    async fn open(options: SqliteConnectOptions) -> Result<Self> {
        // Created private before SQLite opens it: its journal files take the database file's mode.
        let file = options.get_filename().to_owned();
        // In-memory databases are named `:memory:` or `file:sqlx-in-memory-…`.
        let name = file.to_string_lossy();
        let on_disk = !name.is_empty() && !name.starts_with(':') && !name.starts_with("file:");
        if on_disk {
            files::private_file(&file)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Another process holding the write lock makes writers wait, not fail.
            .busy_timeout(Duration::from_secs(5))
            // Rows cross from the connection's thread to the caller through a bounded channel (50 by default):
            // a longer page stopped the thread midway until the caller drained it, one more pair of thread
            // wake-ups per page. Room for the largest page (1,000 rows) keeps it to one.
            .row_buffer_size(1024);
        let one = || SqlitePoolOptions::new().max_connections(1);
        // The writer never stops a commit to checkpoint: the Checkpointer does it beside it.
        let write = one().connect_with(options.clone().pragma("wal_autocheckpoint", "0")).await?;
        Self::run_migrations(&write, MIGRATIONS, None).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers())
            .connect_with(options.clone().read_only(true))
            .await?;
        if on_disk {
            for suffix in ["-wal", "-shm"] {
                let mut journal = file.clone().into_os_string();
                journal.push(suffix);
                files::narrow_if_present(Path::new(&journal))?;
            }
        }
        let checkpoints =
            if on_disk { Some(Checkpointer::start(one().connect_with(options).await?)) } else { None };
        Ok(SqliteStore { read, leases: write.clone(), write, _checkpoints: checkpoints })
    }

    /// A file on this machine answers whenever the process runs; a query proves the file is still readable.
    async fn select_one(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// The readers and the one writer (which leases share).
    fn pools(&self) -> Vec<super::PoolConnections> {
        vec![super::PoolConnections::of("read", &self.read), super::PoolConnections::of("write", &self.write)]
    }

    /// One process owns a SQLite file, so there are no other writers to follow.
    async fn no_feed(&self) -> Result<Option<ChangeFeed>> {
        Ok(None)
    }
}

// SQLite's rebuild needs no lock statement: its first DELETE takes the file's write lock for the transaction.
impl_event_store!(SqliteStore, Sqlite, notify: None, rebuild_lock: None, feed: no_feed, ping: select_one);
