//! Read models kept in memory for the hottest read, GetAppKey. This process's own writes invalidate them at once;
//! other processes' writes arrive through the store's change feed within milliseconds of their commit.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use crate::{domain::AggregateType, store::AppKeyRow};

use super::bounded::BoundedCache;

/// Keys by ID, with the project each belongs to (the read is scoped by it), at most `capacity` of them (CLOCK
/// eviction, see `bounded.rs`).
#[derive(Debug)]
pub(super) struct KeyCache {
    keys: BoundedCache<String, Arc<(String, AppKeyRow)>>,
    /// Bumped by every invalidation: a read that started before one must not fill the cache after it. Fills and
    /// invalidations take this lock, so that none fills between an invalidation's bump and its removal.
    generation: Mutex<u64>,
    current: AtomicU64,
}

impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        KeyCache { keys: BoundedCache::new(capacity), generation: Mutex::new(0), current: AtomicU64::new(0) }
    }

    pub fn stats(&self) -> super::bounded::CacheStats {
        self.keys.stats()
    }

    pub fn generation(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    pub fn get(&self, org_id: &str, project_id: &str, app_id: &str, key_id: &str) -> Option<AppKeyRow> {
        let entry = self.keys.get(key_id)?;
        let (project, row) = &*entry;
        (project == project_id && row.app_id == app_id && row.details.org_id == org_id).then(|| row.clone())
    }

    /// Caches a row read from the store, unless something was invalidated since `generation` was taken.
    pub fn fill(&self, generation: u64, project_id: &str, row: &AppKeyRow) {
        let current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != generation {
            return;
        }
        self.keys.insert(row.id.clone(), Arc::new((project_id.to_owned(), row.clone())));
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        let mut current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *current += 1;
        self.current.store(*current, Ordering::Release);
        if aggregate_type == AggregateType::App.as_str() {
            self.keys.retain(|_, entry| entry.1.app_id != id);
        } else if aggregate_type == AggregateType::Project.as_str() {
            self.keys.retain(|_, entry| entry.0 != id);
        }
    }

    /// Forgets everything: changes may have been missed.
    pub fn clear(&self) {
        let mut current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *current += 1;
        self.current.store(*current, Ordering::Release);
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RowDetails;

    fn row(id: &str, app: &str) -> AppKeyRow {
        AppKeyRow {
            id: id.into(),
            app_id: app.into(),
            key_type: 1,
            expires_at: 0,
            public_key: String::new(),
            algorithm: 1,
            supplied: false,
            details: RowDetails { org_id: "o".into(), sequence: 2, created_at: 1, changed_at: 1 },
        }
    }

    #[test]
    fn reads_are_scoped_like_the_store_query() {
        let cache = KeyCache::new(100);
        cache.fill(cache.generation(), "p", &row("k", "a"));
        assert!(cache.get("o", "p", "a", "k").is_some());
        assert!(cache.get("other-org", "p", "a", "k").is_none());
        assert!(cache.get("o", "other-project", "a", "k").is_none());
        assert!(cache.get("o", "p", "other-app", "k").is_none());
    }

    #[test]
    fn changes_to_the_app_or_project_evict_their_keys() {
        let cache = KeyCache::new(100);
        cache.fill(cache.generation(), "p", &row("k1", "a1"));
        cache.fill(cache.generation(), "p", &row("k2", "a2"));
        cache.invalidate("app", "a1");
        assert!(cache.get("o", "p", "a1", "k1").is_none());
        assert!(cache.get("o", "p", "a2", "k2").is_some());
        cache.invalidate("project", "p");
        assert!(cache.get("o", "p", "a2", "k2").is_none());
    }

    #[test]
    fn the_capacity_holds() {
        let cache = KeyCache::new(100);
        for i in 0..1_000 {
            cache.fill(cache.generation(), "p", &row(&format!("k{i}"), "a"));
        }
        assert_eq!(cache.keys.len(), 100);
        assert!(cache.get("o", "p", "a", "k999").is_some(), "the newest is there");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_does_not_fill() {
        let cache = KeyCache::new(100);
        let before = cache.generation();
        cache.invalidate("app", "a");
        cache.fill(before, "p", &row("k", "a"));
        assert!(cache.get("o", "p", "a", "k").is_none());
    }
}
