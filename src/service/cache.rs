//! Read models kept in memory for the hottest reads, GetAppKey and ListAppKeys' pages. This process's own writes
//! invalidate them at once; other processes' writes arrive through the store's change feed within milliseconds of
//! their commit.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use crate::{
    domain::AggregateType,
    store::{AppKeyRow, Listed, Page},
};

use super::bounded::BoundedCache;

/// Keys by ID, with the project each belongs to (the read is scoped by it), at most `capacity` of them (CLOCK
/// eviction, see `bounded.rs`).
#[derive(Debug)]
pub(super) struct KeyCache {
    keys: BoundedCache<String, Arc<(String, AppKeyRow)>>,
    /// Pages of ListAppKeys, at most `PAGES` of them: a page of 100 keys is two SQL queries and 100 rows decoded
    /// from the store, and a console or a client that polls a list asks for the same first page again and again.
    pages: BoundedCache<PageKey, Arc<CachedPage>>,
    /// Bumped by every invalidation: a read that started before one must not fill the cache after it. Fills and
    /// invalidations take this lock, so that none fills between an invalidation's bump and its removal.
    generation: Mutex<u64>,
    current: AtomicU64,
}

/// Which page of which application's keys, and whether with their public keys (KEY_VIEW_FULL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    app_id: String,
    offset: u64,
    limit: u32,
    asc: bool,
    public_key: bool,
}

impl PageKey {
    fn new(app_id: &str, page: Page, public_key: bool) -> Self {
        PageKey {
            app_id: app_id.to_owned(),
            offset: page.offset,
            limit: page.limit,
            asc: page.asc,
            public_key,
        }
    }
}

/// A page as the store listed it, with the organization and project its application belonged to then: the read is
/// scoped by them, and a page of no keys names no row to check them against.
#[derive(Debug)]
struct CachedPage {
    org_id: String,
    project_id: String,
    listed: Listed<AppKeyRow>,
}

impl KeyCache {
    /// Pages kept: a page of 100 keys with their PEMs is up to about 100 KB (RSA-4096), so at most ~25 MB.
    const PAGES: usize = 256;

    pub fn new(capacity: usize) -> Self {
        KeyCache {
            keys: BoundedCache::new(capacity),
            pages: BoundedCache::new(Self::PAGES.min(capacity.max(1))),
            generation: Mutex::new(0),
            current: AtomicU64::new(0),
        }
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

    /// A page of the application's keys listed before, if the application is still the caller's.
    pub fn page(
        &self,
        org_id: &str,
        project_id: &str,
        app_id: &str,
        page: Page,
        public_key: bool,
    ) -> Option<Listed<AppKeyRow>> {
        let cached = self.pages.get(&PageKey::new(app_id, page, public_key))?;
        (cached.org_id == org_id && cached.project_id == project_id).then(|| cached.listed.clone())
    }

    /// Caches a page the store listed for an application it found in `org_id` and `project_id`, unless something
    /// was invalidated since `generation` was taken.
    pub fn fill_page(
        &self,
        generation: u64,
        (org_id, project_id, app_id): (&str, &str, &str),
        page: Page,
        public_key: bool,
        listed: &Listed<AppKeyRow>,
    ) {
        let current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != generation {
            return;
        }
        let cached = CachedPage {
            org_id: org_id.to_owned(),
            project_id: project_id.to_owned(),
            listed: listed.clone(),
        };
        self.pages.insert(PageKey::new(app_id, page, public_key), Arc::new(cached));
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        let mut current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *current += 1;
        self.current.store(*current, Ordering::Release);
        if aggregate_type == AggregateType::App.as_str() {
            self.keys.retain(|_, entry| entry.1.app_id != id);
            self.pages.retain(|key, _| key.app_id != id);
        } else if aggregate_type == AggregateType::Project.as_str() {
            self.keys.retain(|_, entry| entry.0 != id);
            self.pages.retain(|_, page| page.project_id != id);
        }
    }

    /// Forgets everything: changes may have been missed.
    pub fn clear(&self) {
        let mut current = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *current += 1;
        self.current.store(*current, Ordering::Release);
        self.keys.clear();
        self.pages.clear();
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

    fn listed(ids: &[&str]) -> Listed<AppKeyRow> {
        Listed { items: ids.iter().map(|id| row(id, "a")).collect(), total: ids.len() as u64 }
    }

    const FIRST: Page = Page { offset: 0, limit: 100, asc: false };

    #[test]
    fn pages_are_scoped_by_view_and_evicted_with_their_app_or_project() {
        let cache = KeyCache::new(100);
        cache.fill_page(cache.generation(), ("o", "p", "a"), FIRST, false, &listed(&["k1", "k2"]));
        let page = cache.page("o", "p", "a", FIRST, false).expect("cached");
        assert_eq!(page.items.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(cache.page("o", "p", "a", FIRST, true).is_none(), "another view");
        assert!(cache.page("o", "p", "a", Page { offset: 1, ..FIRST }, false).is_none(), "another page");
        assert!(cache.page("other-org", "p", "a", FIRST, false).is_none());
        assert!(cache.page("o", "other-project", "a", FIRST, false).is_none());
        cache.invalidate("app", "other-app");
        assert!(cache.page("o", "p", "a", FIRST, false).is_some());
        cache.invalidate("app", "a");
        assert!(cache.page("o", "p", "a", FIRST, false).is_none(), "a key added or removed");
        cache.fill_page(cache.generation(), ("o", "p", "a"), FIRST, false, &listed(&[]));
        assert_eq!(
            cache.page("o", "p", "a", FIRST, false).map(|page| page.total),
            Some(0),
            "an empty page too"
        );
        cache.invalidate("project", "p");
        assert!(cache.page("o", "p", "a", FIRST, false).is_none());
        // A list that raced an invalidation does not fill.
        let before = cache.generation();
        cache.invalidate("app", "a");
        cache.fill_page(before, ("o", "p", "a"), FIRST, false, &listed(&["k1"]));
        assert!(cache.page("o", "p", "a", FIRST, false).is_none());
        cache.fill_page(cache.generation(), ("o", "p", "a"), FIRST, false, &listed(&["k1"]));
        cache.clear();
        assert!(cache.page("o", "p", "a", FIRST, false).is_none());
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
