//! The event store: the `events` table, the read models derived from it, and the trait both databases implement.

pub mod backup;
mod checkpoint;
mod circuit;
pub mod files;
mod migrate;
pub mod postgres;
pub mod projections;
mod sql;
pub mod sqlite;

use std::{path::Path, sync::Arc};

use async_trait::async_trait;

use crate::domain::{
    AggregateType, Event, Timestamp,
    events::DecodeError,
    lease::{BucketGrant, QuotaGrant},
    rate_limit::{DailyQuota, RateLimit},
};

pub use circuit::{Guarded, StoreState};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Failures of the store. `Conflict` is the expected outcome of a lost race; the rest are faults.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate first, or a unique read-model constraint was hit.
    #[error("another write to the same object won the race")]
    Conflict,
    /// The database cannot be reached (refused, reset, timed out, shutting down), or the circuit is open because
    /// it could not be reached a moment ago. Nothing was written.
    #[error("database unreachable: {0}")]
    Unavailable(String),
    /// The database refuses writes: its file is read-only or its disk is full. Nothing was written.
    #[error("{0}")]
    Unwritable(Unwritable),
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration {version} failed: {cause}")]
    Migration { version: i64, cause: sqlx::Error },
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    #[error("{0}")]
    Config(String),
}

/// Why a database refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    #[error("the database is read-only")]
    ReadOnly,
    #[error("the disk holding the database is full")]
    Full,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Database(db) => match classify_code(db.code().as_deref().unwrap_or_default()) {
                Some(DatabaseCode::Unreachable) => StoreError::Unavailable(db.message().to_owned()),
                Some(DatabaseCode::Unwritable(why)) => StoreError::Unwritable(why),
                None => StoreError::Database(e),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e),
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached, so that an answer from memory may stand in.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

enum DatabaseCode {
    Unreachable,
    Unwritable(Unwritable),
}

/// Sorts the error codes that mean "not reachable now" or "cannot write" from the rest. PostgreSQL's are
/// SQLSTATEs (class 08: connection exception; 57P01-57P03: shutting down or starting up); SQLite's are extended
/// result codes, whose low byte is the primary code (8: READONLY, 13: FULL).
fn classify_code(code: &str) -> Option<DatabaseCode> {
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
        return Some(DatabaseCode::Unreachable);
    }
    // SQLSTATEs are five characters; SQLite's extended codes have at most four digits.
    if code.len() >= 5 {
        return None;
    }
    match code.parse::<u32>().ok()? & 0xff {
        8 => Some(DatabaseCode::Unwritable(Unwritable::ReadOnly)),
        13 => Some(DatabaseCode::Unwritable(Unwritable::Full)),
        _ => None,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Events to append to one aggregate, all or nothing.
#[derive(Debug)]
pub struct Append<'a> {
    pub aggregate_type: AggregateType,
    pub aggregate_id: &'a str,
    pub resource_owner: &'a str,
    pub creator: &'a str,
    pub created_at: Timestamp,
    /// The aggregate's sequence the events were decided on; the first new event gets `expected_sequence + 1`.
    pub expected_sequence: u64,
    pub events: Vec<Event>,
}

/// `sqlx::FromRow` for a row type on either database, each field read from the column of its name and each
/// `flatten` field from the same row. Written out rather than derived: sqlx's derive macro builds both database
/// drivers (and SQLite's C source) a second time, for the compiler's own use, in every cold build.
macro_rules! from_row {
    ($row:ident { $($field:ident),* $(,)? } $(flatten { $($nested:ident),* })?) => {
        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $row
        where
            &'static str: sqlx::ColumnIndex<R>,
            String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok($row {
                    $($field: row.try_get(stringify!($field))?,)*
                    $($($nested: sqlx::FromRow::from_row(row)?,)*)?
                })
            }
        }
    };
}

from_row!(RecordedEvent {
    position,
    aggregate_type,
    aggregate_id,
    sequence,
    event_type,
    event_version,
    payload,
    resource_owner,
    creator,
    created_at
});
from_row!(RowDetails { org_id, sequence, created_at, changed_at });
from_row!(OrgRow { id, name } flatten { details });
from_row!(ProjectRow { id, name } flatten { details });
from_row!(AppRow { id, project_id, name, client_id, allowed_scopes } flatten { details });
from_row!(AppPublicKey { public_key, expires_at });
from_row!(AppKeyRow { id, app_id, key_type, expires_at, public_key, algorithm, supplied } flatten { details });
from_row!(CredentialRow { id, org_id, role });
from_row!(ApiKeyRow { id, app_id, environment, status, prefix, last_four, origin, settings, created_by, deleted_at } flatten { details, usage });
from_row!(UsageRow { total_requests, total_denied, last_used_at, quota_day, quota_count });
from_row!(SecretMatch { secret_expires_at } flatten { key });

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: i32,
    pub payload: String,
    pub resource_owner: String,
    pub creator: String,
    pub created_at: i64,
}

impl RecordedEvent {
    pub fn event(&self) -> Result<Event, DecodeError> {
        Event::decode(&self.event_type, self.event_version, &self.payload)
    }
}

/// Which of an aggregate's events to read.
#[derive(Debug, Clone, Copy)]
pub struct EventRange {
    /// Ascending: events after this sequence; descending: events before it (0 = from the end).
    pub from_sequence: u64,
    pub limit: u32,
    pub asc: bool,
}

/// Paging of a read-model list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: u64,
    pub limit: u32,
    pub asc: bool,
}

/// One page of a list and the number of rows across all pages.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// What every read-model row reports about its object's last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDetails {
    pub org_id: String,
    pub sequence: i64,
    pub created_at: i64,
    pub changed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub details: RowDetails,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub details: RowDetails,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub client_id: String,
    /// The scopes its tokens may carry, as a JSON array; empty: any.
    pub allowed_scopes: String,
    pub details: RowDetails,
}

impl AppRow {
    /// The allowed scopes (a row the projection wrote always holds a JSON array).
    pub fn scopes(&self) -> Vec<String> {
        serde_json::from_str(&self.allowed_scopes).unwrap_or_default()
    }
}

/// An assertion's `jti`, to be accepted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedAssertion {
    pub client_id: String,
    pub jti: String,
    /// Seconds since the epoch: the assertion's `exp`.
    pub expires_at: i64,
}

/// A live application key's public half and expiry, as assertions are checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPublicKey {
    /// SubjectPublicKeyInfo PEM.
    pub public_key: String,
    /// Microseconds since the epoch.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKeyRow {
    pub id: String,
    pub app_id: String,
    pub key_type: i32,
    pub expires_at: i64,
    /// SubjectPublicKeyInfo PEM; empty in a page listed without it.
    pub public_key: String,
    /// The API's KeyAlgorithm number.
    pub algorithm: i32,
    pub supplied: bool,
    pub details: RowDetails,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub id: String,
    pub org_id: String,
    pub role: String,
}

/// An API key as the read model holds it, with its usage. `origin` and `settings` are the JSON of
/// `domain::api_key::{Origin, Settings}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    /// Empty when the key belongs to no application.
    pub app_id: String,
    pub environment: String,
    pub status: String,
    pub prefix: String,
    pub last_four: String,
    pub origin: String,
    pub settings: String,
    pub created_by: String,
    pub deleted_at: Option<i64>,
    pub details: RowDetails,
    pub usage: UsageRow,
}

/// A key's usage as last flushed (zeros before the first flush).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub total_requests: i64,
    pub total_denied: i64,
    /// 0 = never used.
    pub last_used_at: i64,
    /// The UTC day (days since the epoch) `quota_count` counts.
    pub quota_day: i64,
    pub quota_count: i64,
}

/// The key a secret belongs to, and when that secret stops working (None: it is the key's current secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMatch {
    pub key: ApiKeyRow,
    pub secret_expires_at: Option<i64>,
}

/// Where a page of API keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyCursor {
    /// The newest keys.
    None,
    /// Keys older than this one (the next page).
    After(String),
    /// Keys newer than this one (the previous page).
    Before(String),
}

/// A page of an organization's API keys, newest first.
#[derive(Debug, Clone)]
pub struct ApiKeyQuery {
    pub limit: u32,
    pub cursor: ApiKeyCursor,
    /// One status, or None for every key that is not revoked.
    pub status: Option<&'static str>,
    pub app_id: Option<String>,
    pub environment: Option<&'static str>,
}

impl ApiKeyQuery {
    /// The equality filters as (column, value).
    fn filters(&self) -> Vec<(&'static str, &str)> {
        let mut filters = Vec::with_capacity(3);
        if let Some(status) = self.status {
            filters.push(("status", status));
        }
        if let Some(app_id) = &self.app_id {
            filters.push(("app_id", app_id.as_str()));
        }
        if let Some(environment) = self.environment {
            filters.push(("environment", environment));
        }
        filters
    }
}

/// Usage of one key since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub key_id: String,
    pub requests: u64,
    pub denied: u64,
    pub last_used_at: i64,
    pub quota_day: i64,
    pub quota_used: u64,
}

/// What a change feed reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// An aggregate got new events.
    Aggregate { aggregate_type: String, id: String },
    /// The feed lost its connection: changes committed from now on may be missed until it is `Live` again, so
    /// what caches hold can no longer be trusted on its own.
    Down,
    /// The feed listens again. Changes committed while it was down were not delivered: caches must forget
    /// everything they hold before they are trusted again.
    Live,
}

/// Notifications of committed changes, in commit order.
pub type ChangeFeed = tokio::sync::mpsc::Receiver<Changed>;

/// The store keymint runs on. Both implementations run the same SQL (see `sql.rs`) and pass the same
/// conformance tests.
/// One connection pool of a store: connections open, idle among them, and the most it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConnections {
    pub pool: &'static str,
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolConnections {
    pub fn of<DB: sqlx::Database>(pool: &'static str, of: &sqlx::Pool<DB>) -> Self {
        PoolConnections {
            pool,
            open: of.size(),
            idle: u32::try_from(of.num_idle()).unwrap_or(u32::MAX),
            max: of.options().get_max_connections(),
        }
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one aggregate and applies them to the read models, in one transaction. Fails with
    /// `Conflict` when the aggregate's sequence is no longer `expected_sequence`.
    async fn append(&self, append: Append<'_>) -> Result<Vec<RecordedEvent>>;
    /// Appends to several aggregates in one transaction: all of them or none.
    async fn append_all(&self, appends: Vec<Append<'_>>) -> Result<Vec<RecordedEvent>>;
    /// Whether the database answers, on a connection of its own (not one a busy pool may be slow to lend).
    async fn ping(&self) -> Result<()>;
    /// All events of one aggregate, oldest first.
    async fn load(&self, aggregate_type: AggregateType, id: &str) -> Result<Vec<RecordedEvent>>;
    /// A page of one aggregate's events.
    async fn events(
        &self,
        aggregate_type: AggregateType,
        id: &str,
        range: EventRange,
    ) -> Result<Vec<RecordedEvent>>;
    /// Whether any event was ever written: false on the first start.
    async fn is_empty(&self) -> Result<bool>;
    /// The global position of the last event applied to the read models.
    async fn position(&self) -> Result<u64>;

    async fn org(&self, id: &str) -> Result<Option<OrgRow>>;
    async fn org_by_name(&self, name: &str) -> Result<Option<OrgRow>>;
    async fn orgs(&self, page: Page) -> Result<Listed<OrgRow>>;
    async fn project(&self, org_id: &str, id: &str) -> Result<Option<ProjectRow>>;
    async fn project_by_name(&self, org_id: &str, name: &str) -> Result<Option<ProjectRow>>;
    async fn projects(&self, org_id: &str, page: Page) -> Result<Listed<ProjectRow>>;
    async fn app(&self, org_id: &str, project_id: &str, id: &str) -> Result<Option<AppRow>>;
    async fn app_by_name(&self, project_id: &str, name: &str) -> Result<Option<AppRow>>;
    async fn apps(&self, org_id: &str, project_id: &str, page: Page) -> Result<Listed<AppRow>>;
    async fn app_key(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
        id: &str,
    ) -> Result<Option<AppKeyRow>>;
    async fn app_keys(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
        page: Page,
        public_key: bool,
    ) -> Result<Listed<AppKeyRow>>;
    /// The SubjectPublicKeyInfo PEM of a live application key: what verifies tokens signed with it.
    async fn public_key(&self, app_id: &str, key_id: &str) -> Result<Option<String>>;
    async fn credential(&self, token_hash: &str) -> Result<Option<CredentialRow>>;
    /// How many bearer credentials exist (instance-admin tokens).
    async fn credential_count(&self) -> Result<u64>;
    /// Whether a live application with this ID belongs to the organization.
    async fn app_in_org(&self, org_id: &str, app_id: &str) -> Result<bool>;

    /// A live application by its ID alone, in any organization: the client an OAuth request names.
    async fn oauth_client(&self, app_id: &str) -> Result<Option<AppRow>>;
    /// The public key and expiry of a live application key.
    async fn app_public_key(&self, app_id: &str, key_id: &str) -> Result<Option<AppPublicKey>>;
    /// Records assertions' `jti`s, each until its assertion expires, in one transaction; for each, false if it was
    /// used before (by this process or another, or earlier in the batch): the primary key decides.
    async fn use_assertions(&self, used: &[UsedAssertion]) -> Result<Vec<bool>>;
    /// Whether each access token (by `jti`) was revoked, in order.
    async fn tokens_revoked(&self, jtis: &[String]) -> Result<Vec<bool>>;
    /// The `jti`s of an application's revoked access tokens that have not expired yet (or not been pruned).
    async fn revoked_tokens(&self, app_id: &str) -> Result<Vec<String>>;
    /// Forgets used assertions and revoked tokens that expired before `now_secs`; returns how many.
    async fn prune_expired_tokens(&self, now_secs: i64) -> Result<u64>;

    async fn api_key(&self, org_id: &str, id: &str) -> Result<Option<ApiKeyRow>>;
    /// Up to `query.limit` keys, newest first, after or before the cursor.
    async fn api_keys(&self, org_id: &str, query: &ApiKeyQuery) -> Result<Vec<ApiKeyRow>>;
    /// The key a secret's SHA-256 belongs to, current or rolled.
    async fn api_key_by_secret(&self, secret_hash: &str) -> Result<Option<SecretMatch>>;
    /// Adds a batch of usage to the keys' counters, in one transaction.
    async fn record_usage(&self, usage: &[UsageDelta]) -> Result<()>;

    /// Takes up to `want` tokens from a key's shared token bucket at `now`, in one statement (see
    /// `domain::lease`): what every process's verify calls for the key draw on.
    async fn lease_tokens(
        &self,
        key_id: &str,
        limit: RateLimit,
        now: Timestamp,
        want: u64,
    ) -> Result<BucketGrant>;
    /// Adds `owed` to a key's count of uses on `day`, then takes up to `want` of what is left of its quota.
    async fn lease_quota(
        &self,
        key_id: &str,
        quota: DailyQuota,
        day: i64,
        want: u64,
        owed: u64,
    ) -> Result<QuotaGrant>;

    /// Changes committed by other processes sharing the database, as they commit; None when no other process can
    /// write (SQLite). Read caches follow it.
    async fn changes(&self) -> Result<Option<ChangeFeed>>;

    /// The store's connection pools, for /metrics.
    fn connections(&self) -> Vec<PoolConnections> {
        Vec::new()
    }

    /// Whether the store is reachable; a store without a circuit (see `Guarded`) says always.
    fn state(&self) -> StoreState {
        StoreState::always_up()
    }

    /// Empties the read models and replays every event into them; returns the number of events replayed.
    async fn rebuild_projections(&self) -> Result<u64>;
    /// Every read-model row as text, table by table in a fixed order: for comparing two states of the models.
    async fn projection_snapshot(&self) -> Result<Vec<String>>;
}

/// Opens the store a URL names: `postgres://…` for PostgreSQL, else SQLite at `<data dir>/keymint.db` (or at the
/// `sqlite:` URL given). Runs pending migrations.
pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn EventStore>> {
    Ok(Arc::new(Guarded::new(open_unguarded(database_url, data_dir).await?)))
}

async fn open_unguarded(database_url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn EventStore>> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgStore::connect(url).await?))
        }
        Some(url) if url.starts_with("sqlite:") => Ok(Arc::new(SqliteStore::connect(url).await?)),
        Some(other) => Err(StoreError::Config(format!(
            "unsupported database URL scheme in {:?}: use postgres://… or sqlite:…",
            other.split(':').next().unwrap_or_default()
        ))),
        None => {
            files::private_dir(data_dir)?;
            let path = data_dir.join("keymint.db");
            Ok(Arc::new(SqliteStore::open_file(&path).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_sort_outages_and_refused_writes_from_faults() {
        let unreachable = |code| matches!(classify_code(code), Some(DatabaseCode::Unreachable));
        assert!(["08006", "08001", "57P01", "57P02", "57P03"].into_iter().all(unreachable));
        let unwritable = |code| match classify_code(code) {
            Some(DatabaseCode::Unwritable(why)) => Some(why),
            _ => None,
        };
        // SQLITE_READONLY and its extended codes (READONLY_DBMOVED = 1032), SQLITE_FULL.
        assert_eq!(unwritable("8"), Some(Unwritable::ReadOnly));
        assert_eq!(unwritable("1032"), Some(Unwritable::ReadOnly));
        assert_eq!(unwritable("13"), Some(Unwritable::Full));
        // Unique (2067), busy (5), syntax (42601) and the like are faults or races, not outages.
        assert!(
            ["2067", "5", "42601", "23505", "22008", ""]
                .into_iter()
                .all(|code| classify_code(code).is_none())
        );
    }
}
