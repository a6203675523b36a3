//! SQLite's WAL checkpoints, run beside the writer instead of inside one of its commits.
//!
//! A checkpoint copies the log back into the database file and waits for the disk twice (the log, then the
//! file). SQLite's automatic checkpoint runs in whichever commit takes the log past 1,000 pages, so that commit,
//! and every write queued behind the one writer connection, waited for both. Token introspection writes a `jti`
//! per call: its p99 was 6.2-7.6 ms with the database on disk and 3.1-3.8 ms on tmpfs, and is 3.9-4.6 ms on disk
//! with the checkpoints moved here. The writer never checkpoints (`wal_autocheckpoint = 0`); a connection of its
//! own does, every `EVERY`, in PASSIVE mode, which waits for no reader and no writer.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::sqlite::SqlitePool;

/// How often the log is copied back: the log file holds about what half a second of writes adds, and an idle
/// tick finds nothing to copy and does no I/O.
const EVERY: Duration = Duration::from_millis(500);

/// The checkpointing connection; its task ends once the store's last handle, and so this, is dropped.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    _connection: Arc<SqlitePool>,
}

impl Checkpointer {
    /// Starts checkpointing over `pool` (one read-write connection) until the store's last handle is dropped.
    pub fn start(pool: SqlitePool) -> Checkpointer {
        let pool = Arc::new(pool);
        tokio::spawn(run(Arc::downgrade(&pool)));
        Checkpointer { _connection: pool }
    }
}

async fn run(pool: Weak<SqlitePool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&*pool).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(_) => {}
            // Said once per outage, not twice a second: the writes themselves report the store's state.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed: the log file grows until one succeeds");
            }
            Err(_) => {}
        }
    }
}
