//! Online backups of the SQLite store: `VACUUM INTO` a new private file while keymint keeps serving, then a check
//! that the copy is whole before it is called a backup.
//!
//! `VACUUM INTO` reads one snapshot inside a read transaction, so writes that land meanwhile are simply not in the
//! copy, and under WAL it blocks no writer. The copy holds only what the database holds: event payloads, public
//! keys, secret hashes and signing keys sealed under the master key, which is not in it and is backed up apart.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use sqlx::{
    Connection, Row,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};

use super::{Result, StoreError, files};

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    /// Events in the copy, and the position of the last one: a restore brings the service back to that point.
    pub events: i64,
    pub last_position: i64,
}

/// Copies the SQLite database that `database_url` (or, without one, `<data_dir>/keymint.db`) names into `to`,
/// which must not exist yet or be empty. PostgreSQL has its own tools, and the error says so.
pub async fn backup(database_url: Option<&str>, data_dir: &Path, to: &Path) -> Result<Backup> {
    let source = source_options(database_url, data_dir)?;
    if std::fs::metadata(to).is_ok_and(|m| m.len() > 0) {
        return Err(StoreError::Config(format!(
            "{} exists and is not empty: not overwriting it",
            to.display()
        )));
    }
    // Created private first: the copy holds secret hashes and sealed keys. VACUUM INTO accepts an empty file.
    files::private_file(to)?;
    let copied = copy_and_check(source, to).await;
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}

async fn copy_and_check(source: SqliteConnectOptions, to: &Path) -> Result<Backup> {
    let mut db = SqliteConnection::connect_with(&source).await?;
    let target = to.to_str().ok_or_else(|| StoreError::Config(format!("{} is not UTF-8", to.display())))?;
    sqlx::query("VACUUM INTO ?").bind(target).execute(&mut db).await?;
    db.close().await?;

    let mut copy =
        SqliteConnection::connect_with(&read_only(SqliteConnectOptions::new().filename(to))).await?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut copy).await?;
    if integrity != "ok" {
        return Err(StoreError::Config(format!("the copy failed SQLite's integrity check: {integrity}")));
    }
    let row =
        sqlx::query("SELECT COUNT(*), COALESCE(MAX(position), 0) FROM events").fetch_one(&mut copy).await?;
    let (events, last_position) = (row.try_get(0)?, row.try_get(1)?);
    copy.close().await?;
    let bytes =
        std::fs::metadata(to).map_err(|e| StoreError::Config(format!("{}: {e}", to.display())))?.len();
    Ok(Backup { path: to.to_owned(), bytes, events, last_position })
}

fn source_options(database_url: Option<&str>, data_dir: &Path) -> Result<SqliteConnectOptions> {
    let options = match database_url {
        None => SqliteConnectOptions::new().filename(data_dir.join("keymint.db")),
        Some(url) if url.starts_with("sqlite:") => SqliteConnectOptions::from_str(url)?,
        Some(_) => {
            return Err(StoreError::Config(
                "`keymint backup` copies the SQLite file; back PostgreSQL up with pg_dump (README: Operating \
                 keymint)"
                    .into(),
            ));
        }
    };
    let file = options.get_filename();
    if !file.is_file() {
        return Err(StoreError::Config(format!("no database at {}", file.display())));
    }
    Ok(read_only(options))
}

/// Never creates or changes the file it opens; waits for a writer's lock rather than failing.
fn read_only(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options.read_only(true).create_if_missing(false).busy_timeout(Duration::from_secs(5))
}
