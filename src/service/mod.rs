//! Use cases: commands load an aggregate, let the domain decide, and append the events; queries read the read
//! models. One file per area; this one holds what they share.

pub mod access;
pub mod api_keys;
pub mod app_keys;
pub mod apps;
mod batch;
pub(crate) mod bounded;
mod cache;
pub mod edge;
mod error;
pub mod keys;
pub mod oauth;
mod oauth_clients;
pub mod orgs;
pub mod projects;
pub mod signing_keys;
pub mod stats;
pub mod verify;

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Mutex, MutexGuard};

use crate::{
    domain::{
        AggregateType, DomainError, Event, Timestamp,
        aggregate::{Aggregate, Loaded},
        ids::IdGenerator,
        principal::Principal,
        time::Clock,
    },
    store::{Append, Changed, EventStore, Page, RecordedEvent, UsedAssertion},
};

pub use error::{Error, Result};
pub use keys::KeySource;

/// How often a command is decided again after losing a write race to another process.
const MAX_ATTEMPTS: u32 = 5;
/// Default and largest page of a list.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Entries each in-memory read model holds unless configured otherwise (`--cache-capacity`).
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Everything the use cases need, shared by all requests.
pub struct Services {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    ids: IdGenerator,
    keys: Arc<dyn KeySource>,
    locks: AggregateLocks,
    principals: access::PrincipalCache,
    unknown_credentials: access::UnknownCredentials,
    keys_read: cache::KeyCache,
    api_keys_read: verify::ApiKeyCache,
    meters: verify::Meters,
    oauth: oauth::OAuthConfig,
    oauth_clients: oauth_clients::OAuthClients,
    verified_tokens: oauth::VerifiedTokens,
    /// The assertions' `jti`s, recorded in batches: false when one was used before.
    used_assertions: batch::Batched<UsedAssertion, bool>,
    /// Whether access tokens were revoked, read in batches (when memory cannot answer: a shared database).
    revocations: batch::Batched<String, bool>,
    signing_keys: signing_keys::SigningKeys,
    counts: stats::UseCaseCounts,
    /// Whether the change feed delivers every change other processes commit (always, without other processes).
    feed_live: AtomicBool,
    /// Whether no other process writes to the store (SQLite): then this process's memory holds every change the
    /// moment it is committed, and even reads that must see other processes' writes at once may use it.
    sole_writer: AtomicBool,
}

/// The caller of a use case: who they are and which organization they act in.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub org_id: String,
}

/// What a write reports: the aggregate's sequence after it and the time of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub sequence: u64,
    pub at: Timestamp,
}

/// What a list reports besides its page.
#[derive(Debug, Clone)]
pub struct ListView<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub processed_position: u64,
    pub viewed_at: Timestamp,
}

/// The aggregate a command writes to, and on whose behalf.
struct Target<'a> {
    aggregate_type: AggregateType,
    id: &'a str,
    org_id: &'a str,
    creator: &'a str,
}

impl Services {
    pub fn new(
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        ids: IdGenerator,
        keys: Arc<dyn KeySource>,
    ) -> Self {
        Services {
            store,
            clock,
            ids,
            keys,
            locks: AggregateLocks::new(),
            principals: access::PrincipalCache::new(),
            unknown_credentials: Default::default(),
            keys_read: cache::KeyCache::new(DEFAULT_CACHE_CAPACITY),
            api_keys_read: verify::ApiKeyCache::new(DEFAULT_CACHE_CAPACITY),
            meters: verify::Meters::new(DEFAULT_CACHE_CAPACITY),
            oauth: Default::default(),
            oauth_clients: Default::default(),
            verified_tokens: Default::default(),
            used_assertions: batch::Batched::new(|store, used| {
                Box::pin(async move { store.use_assertions(&used).await })
            }),
            revocations: batch::Batched::new(|store, jtis| {
                Box::pin(async move { store.tokens_revoked(&jtis).await })
            }),
            signing_keys: Default::default(),
            counts: Default::default(),
            feed_live: AtomicBool::new(true),
            sole_writer: AtomicBool::new(false),
        }
    }

    /// Bounds the in-memory read models to `capacity` entries each: cached API keys (by secret), the meters of
    /// recently verified keys, cached application keys. Call before serving.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.keys_read = cache::KeyCache::new(capacity);
        self.api_keys_read = verify::ApiKeyCache::new(capacity);
        self.meters = verify::Meters::new(capacity);
        self
    }

    /// Starts following the changes other processes commit, keeping in-memory read models fresh; None when the
    /// store says no other process can write (SQLite). Aborting the task ends the store's listener too.
    pub async fn follow_changes(self: Arc<Self>) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(mut feed) = self.store.changes().await? else {
            self.sole_writer.store(true, Ordering::Release);
            return Ok(None);
        };
        Ok(Some(tokio::spawn(async move {
            while let Some(changed) = feed.recv().await {
                match changed {
                    Changed::Aggregate { aggregate_type, id } => self.invalidate(&aggregate_type, &id),
                    Changed::Down => self.feed_live.store(false, Ordering::Release),
                    Changed::Live => {
                        // Forget first, then trust: a read that fills the cache from here on started after
                        // the feed listened again, so a change it misses will still be delivered.
                        self.unknown_credentials.clear();
                        self.keys_read.clear();
                        self.api_keys_read.clear();
                        self.oauth_clients.clear();
                        self.signing_keys.mark_stale();
                        self.feed_live.store(true, Ordering::Release);
                    }
                }
            }
        })))
    }

    /// Whether what the in-memory read models hold may be served as it is. While the change feed is down, another
    /// process's change (a revocation) could be missing from memory: reads then ask the store, and what memory
    /// holds stands in only while the store cannot be reached (see `remembered`).
    fn memory_is_current(&self) -> bool {
        self.feed_live.load(Ordering::Acquire)
    }

    /// Whether memory holds every committed change at once (see `sole_writer`), not only within the feed's delay.
    fn memory_is_whole(&self) -> bool {
        self.sole_writer.load(Ordering::Acquire)
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn new_id(&self) -> String {
        self.ids.next_id(self.clock.now())
    }

    /// Loads an aggregate owned by `org_id` from its events. One owned by another organization loads as absent,
    /// so that every rule answers NOT_FOUND for it.
    async fn load<S: Aggregate>(
        &self,
        aggregate_type: AggregateType,
        id: &str,
        org_id: &str,
    ) -> Result<Loaded<S>> {
        let recorded = self.store.load(aggregate_type, id).await?;
        if recorded.first().is_some_and(|first| first.resource_owner != org_id) {
            return Ok(Loaded::default());
        }
        let events = recorded
            .iter()
            .map(RecordedEvent::event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Loaded::replay(&events))
    }

    /// Runs `decide` on the aggregate's current state, replayed from its events, and appends what it returns.
    /// `decide` may read the read models too (e.g. whether a name is taken): a unique index on them makes a
    /// concurrent duplicate lose the race, and the retry then sees the name taken.
    async fn command<S, F, Fut>(&self, target: Target<'_>, decide: F) -> Result<Written>
    where
        S: Aggregate,
        F: FnMut(Loaded<S>) -> Fut,
        Fut: Future<Output = Result<Vec<Event>>>,
    {
        let (aggregate_type, id, org_id) = (target.aggregate_type, target.id, target.org_id);
        self.command_from(target, || self.load::<S>(aggregate_type, id, org_id), decide).await
    }

    /// Runs `decide` on the state `load` returns and appends what it returns at that state's sequence. `load`
    /// may read a read model that records the aggregate's sequence (see `apps::app_state`): the append then
    /// fails exactly as it would on replayed state if another write came between. A lost race is decided again
    /// on fresh state, up to MAX_ATTEMPTS times; writers in this process queue on a lock per aggregate first,
    /// so only other processes can make us lose.
    async fn command_from<S, L, LoadFut, F, Fut>(
        &self,
        target: Target<'_>,
        mut load: L,
        mut decide: F,
    ) -> Result<Written>
    where
        L: FnMut() -> LoadFut,
        LoadFut: Future<Output = Result<Loaded<S>>>,
        F: FnMut(Loaded<S>) -> Fut,
        Fut: Future<Output = Result<Vec<Event>>>,
    {
        let _queued = self.locks.lock(target.aggregate_type, target.id).await;
        for attempt in 0..MAX_ATTEMPTS {
            let loaded = load().await?;
            let expected = loaded.sequence;
            let events = decide(loaded).await?;
            match self.append(&target, expected, events).await {
                Err(Error::Conflict) => backoff(attempt).await,
                done => return done,
            }
        }
        Err(Error::Aborted)
    }

    async fn append(&self, target: &Target<'_>, expected: u64, events: Vec<Event>) -> Result<Written> {
        let at = self.clock.now();
        let recorded = self
            .store
            .append(Append {
                aggregate_type: target.aggregate_type,
                aggregate_id: target.id,
                resource_owner: target.org_id,
                creator: target.creator,
                created_at: at,
                expected_sequence: expected,
                events,
            })
            .await?;
        self.invalidate(target.aggregate_type.as_str(), target.id);
        let sequence = recorded.last().map_or(expected, |e| u64::try_from(e.sequence).unwrap_or_default());
        Ok(Written { sequence, at })
    }

    /// Forgets what the in-memory read models hold of a changed aggregate.
    fn invalidate(&self, aggregate_type: &str, id: &str) {
        self.keys_read.invalidate(aggregate_type, id);
        self.api_keys_read.invalidate(aggregate_type, id);
        self.oauth_clients.invalidate(aggregate_type, id);
        // A refused secret may belong to the credential or API key just written.
        if [AggregateType::Credential, AggregateType::ApiKey].iter().any(|t| t.as_str() == aggregate_type) {
            self.unknown_credentials.clear();
        }
        if aggregate_type == AggregateType::SigningKeys.as_str() {
            self.signing_keys.mark_stale();
        }
    }

    /// Wraps a page of rows with the list's details.
    async fn list_view<T>(&self, listed: crate::store::Listed<T>) -> Result<ListView<T>> {
        Ok(ListView {
            items: listed.items,
            total: listed.total,
            processed_position: self.store.position().await?,
            viewed_at: self.clock.now(),
        })
    }
}

/// A store read, or, when the store cannot be reached, what memory held: the best answer there is until it
/// is back. Nothing can be revoked meanwhile, since every write needs the store too.
fn remembered<T>(read: crate::store::Result<T>, memory: Option<T>) -> Result<T> {
    match (read, memory) {
        (Err(e), Some(value)) if e.is_unavailable() => Ok(value),
        (read, _) => Ok(read?),
    }
}

/// Checks a list request's paging: limit 0 means the default; more than MAX_LIMIT is refused.
pub fn page(offset: u64, limit: u32, asc: bool) -> Result<Page, DomainError> {
    match limit {
        0 => Ok(Page { offset, limit: DEFAULT_LIMIT, asc }),
        1..=MAX_LIMIT => Ok(Page { offset, limit, asc }),
        _ => Err(DomainError::invalid("query.limit", format!("must be at most {MAX_LIMIT}"))),
    }
}

async fn backoff(attempt: u32) {
    // Short and growing: the other writer's transaction is usually done within a millisecond or two.
    tokio::time::sleep(Duration::from_millis(2_u64 << attempt)).await;
}

/// A fixed set of mutexes that writers of one aggregate queue on, chosen by the aggregate's hash: bounded memory,
/// and two aggregates rarely share one.
struct AggregateLocks(Vec<Mutex<()>>);

impl AggregateLocks {
    const STRIPES: usize = 256;

    fn new() -> Self {
        AggregateLocks((0..Self::STRIPES).map(|_| Mutex::new(())).collect())
    }

    async fn lock(&self, aggregate_type: AggregateType, id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        (aggregate_type.as_str(), id).hash(&mut hasher);
        let stripe = (hasher.finish() % Self::STRIPES as u64) as usize;
        self.0[stripe].lock().await
    }
}
