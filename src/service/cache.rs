//! Read models kept in memory for the hottest read, GetAppKey. This process's own writes invalidate them at once;
//! other processes' writes arrive through the store's change feed within milliseconds of their commit.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use crate::{domain::AggregateType, store::AppKeyRow};

/// Keys by ID, with the project each belongs to (the read is scoped by it).
#[derive(Debug, Default)]
pub(super) struct KeyCache(RwLock<Entries>);

#[derive(Debug, Default)]
struct Entries {
    keys: HashMap<String, (String, AppKeyRow)>,
    /// Bumped by every invalidation: a read that started before one must not fill the cache after it.
    generation: u64,
}

impl KeyCache {
    /// Bounds memory: past this many keys the cache starts over.
    const MAX_ENTRIES: usize = 100_000;

    pub fn generation(&self) -> u64 {
        self.0.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    pub fn get(&self, org_id: &str, project_id: &str, app_id: &str, key_id: &str) -> Option<AppKeyRow> {
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let (project, row) = entries.keys.get(key_id)?;
        (project == project_id && row.app_id == app_id && row.details.org_id == org_id).then(|| row.clone())
    }

    /// Caches a row read from the store, unless something was invalidated since `generation` was taken.
    pub fn fill(&self, generation: u64, project_id: &str, row: &AppKeyRow) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        if entries.keys.len() >= Self::MAX_ENTRIES {
            entries.keys.clear();
        }
        entries.keys.insert(row.id.clone(), (project_id.to_owned(), row.clone()));
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        if aggregate_type == AggregateType::App.as_str() {
            entries.keys.retain(|_, (_, row)| row.app_id != id);
        } else if aggregate_type == AggregateType::Project.as_str() {
            entries.keys.retain(|_, (project, _)| project != id);
        }
    }

    /// Forgets everything: changes may have been missed.
    pub fn clear(&self) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        entries.keys.clear();
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
        let cache = KeyCache::default();
        cache.fill(cache.generation(), "p", &row("k", "a"));
        assert!(cache.get("o", "p", "a", "k").is_some());
        assert!(cache.get("other-org", "p", "a", "k").is_none());
        assert!(cache.get("o", "other-project", "a", "k").is_none());
        assert!(cache.get("o", "p", "other-app", "k").is_none());
    }

    #[test]
    fn changes_to_the_app_or_project_evict_their_keys() {
        let cache = KeyCache::default();
        cache.fill(cache.generation(), "p", &row("k1", "a1"));
        cache.fill(cache.generation(), "p", &row("k2", "a2"));
        cache.invalidate("app", "a1");
        assert!(cache.get("o", "p", "a1", "k1").is_none());
        assert!(cache.get("o", "p", "a2", "k2").is_some());
        cache.invalidate("project", "p");
        assert!(cache.get("o", "p", "a2", "k2").is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_does_not_fill() {
        let cache = KeyCache::default();
        let before = cache.generation();
        cache.invalidate("app", "a");
        cache.fill(before, "p", &row("k", "a"));
        assert!(cache.get("o", "p", "a", "k").is_none());
    }
}
