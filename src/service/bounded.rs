//! A map of bounded size for the in-memory read models: CLOCK eviction (second chance), in shards.
//!
//! Why CLOCK: a hit only sets the entry's reference bit (an atomic store, under the shard's read lock), so reads
//! never queue behind each other the way an LRU list's move-to-front would make them; a new entry starts without
//! the bit, so a scan of keys read once is evicted before the hot set, which keeps its bit by being read between
//! two passes of the hand. Shards by key hash keep writers (fills on misses) from blocking readers of other keys.
//! It is ~150 lines; the crates that do this (moka, quick_cache) bring more than these caches need.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::{
        PoisonError, RwLock, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// Shards of a cache with a large capacity. Small capacities get fewer, so that each shard holds a few entries.
const SHARDS: usize = 16;

pub(crate) struct BoundedCache<K, V> {
    shards: Box<[RwLock<Shard<K, V>>]>,
    hasher: RandomState,
    capacity: usize,
}

struct Shard<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    /// The clock's hand: the next slot to look at for a victim.
    hand: usize,
    capacity: usize,
    /// Lookups that found their entry and that did not, for /metrics. In the shard, beside the lock every
    /// lookup takes anyway, so that counting adds no cache line shared by all cores.
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Slot<K, V> {
    key: K,
    value: V,
    referenced: AtomicBool,
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    /// Moves the hand to the next entry that may go (not `except`), within `turns` steps.
    fn victim(
        &mut self,
        keep: impl Fn(&V) -> bool,
        turns: &mut usize,
        except: Option<usize>,
    ) -> Option<usize> {
        while *turns > 0 {
            *turns -= 1;
            let at = self.hand % self.slots.len();
            self.hand = at + 1;
            let candidate = &self.slots[at];
            if Some(at) == except
                || candidate.referenced.swap(false, Ordering::Relaxed)
                || keep(&candidate.value)
            {
                continue;
            }
            return Some(at);
        }
        None
    }

    /// Removes the entry at `at`; the last one takes its place.
    fn take(&mut self, at: usize) -> (K, V) {
        let removed = self.slots.swap_remove(at);
        self.index.remove(&removed.key);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.key.clone(), at);
        }
        (removed.key, removed.value)
    }
}

/// What an insert did besides inserting.
pub(crate) struct Inserted<K, V> {
    /// The entries that made room, if any had to (two when the shard was over its share).
    pub evicted: Vec<(K, V)>,
    /// No entry could be evicted (every candidate was refused): the shard holds more than its share now.
    pub over_capacity: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self::with_shards(capacity, SHARDS)
    }

    pub fn with_shards(capacity: usize, shards: usize) -> Self {
        let capacity = capacity.max(1);
        let shards = shards.clamp(1, capacity.div_ceil(8).max(1));
        // The shares add up to the capacity exactly.
        let share = |i: usize| capacity / shards + usize::from(i < capacity % shards);
        let shards = (0..shards)
            .map(|i| {
                RwLock::new(Shard {
                    index: HashMap::new(),
                    slots: Vec::new(),
                    hand: 0,
                    capacity: share(i),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                })
            })
            .collect();
        BoundedCache { shards, hasher: RandomState::new(), capacity }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<Shard<K, V>> {
        let hash = self.hasher.hash_one(key);
        // The high bits: the map inside the shard uses its own hasher, so the two do not correlate anyway.
        &self.shards[(hash >> 32) as usize % self.shards.len()]
    }

    fn write<Q: Hash + ?Sized>(&self, key: &Q) -> RwLockWriteGuard<'_, Shard<K, V>> {
        self.shard(key).write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, marking it recently used. Takes only the shard's read lock.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key).read().unwrap_or_else(PoisonError::into_inner);
        let Some(&at) = shard.index.get(key) else {
            shard.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        shard.hits.fetch_add(1, Ordering::Relaxed);
        let slot = &shard.slots[at];
        // Read before writing: a hot entry's cache line stays shared between cores.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(slot.value.clone())
    }

    /// Inserts or replaces; evicts any entry that needs room.
    pub fn insert(&self, key: K, value: V) -> Inserted<K, V> {
        self.upsert(key, value, true, |_| false).1
    }

    /// The entry for `key`, or `value` put in for it if there is none (atomically: two callers get the same
    /// value). When the shard is full, evicts as `insert` does, except entries `keep` holds on to.
    pub fn get_or_insert(&self, key: K, value: V, keep: impl Fn(&V) -> bool) -> (V, Inserted<K, V>) {
        self.upsert(key, value, false, keep)
    }

    /// When the shard is full the hand picks the first entry whose reference bit is clear (clearing the bits it
    /// passes) and that `keep` does not hold on to; after two full turns without one, the entry goes in anyway
    /// and the shard holds more than its share. A shard over its share gives back one more entry with each insert,
    /// so that it shrinks back once the entries it had to keep may go.
    fn upsert(&self, key: K, value: V, replace: bool, keep: impl Fn(&V) -> bool) -> (V, Inserted<K, V>) {
        let mut shard = self.write(&key);
        let shard = &mut *shard;
        let mut inserted = Inserted { evicted: Vec::new(), over_capacity: false };
        if let Some(&at) = shard.index.get(&key) {
            let slot = &mut shard.slots[at];
            if replace {
                slot.value = value;
            }
            return (slot.value.clone(), inserted);
        }
        let slot = Slot { key: key.clone(), value: value.clone(), referenced: AtomicBool::new(false) };
        if shard.slots.len() < shard.capacity {
            shard.index.insert(key, shard.slots.len());
            shard.slots.push(slot);
            return (value, inserted);
        }
        let mut turns = 2 * shard.slots.len();
        let Some(at) = shard.victim(&keep, &mut turns, None) else {
            shard.index.insert(key, shard.slots.len());
            shard.slots.push(slot);
            inserted.over_capacity = true;
            return (value, inserted);
        };
        // In place: the new entry is the last the hand comes back to.
        let old = std::mem::replace(&mut shard.slots[at], slot);
        shard.index.remove(&old.key);
        shard.index.insert(key, at);
        inserted.evicted.push((old.key, old.value));
        if shard.slots.len() > shard.capacity
            && let Some(extra) = shard.victim(&keep, &mut turns, Some(at))
        {
            inserted.evicted.push(shard.take(extra));
        }
        (value, inserted)
    }

    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = self.write(key);
        let at = *shard.index.get(key)?;
        Some(shard.take(at).1)
    }

    /// Keeps the entries `keep` says to, shard by shard.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let shard = &mut *shard;
            shard.slots.retain(|slot| keep(&slot.key, &slot.value));
            shard.index = shard.slots.iter().enumerate().map(|(at, slot)| (slot.key.clone(), at)).collect();
            shard.hand = 0;
        }
    }

    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).slots.len()).sum()
    }

    /// Its size and how its lookups (`get`) fared, for /metrics.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats { entries: 0, capacity: self.capacity, hits: 0, misses: 0 };
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            stats.entries += shard.slots.len();
            stats.hits += shard.hits.load(Ordering::Relaxed);
            stats.misses += shard.misses.load(Ordering::Relaxed);
        }
        stats
    }

    /// Every entry, shard by shard (a snapshot: each shard is read under its lock in turn).
    pub fn entries(&self) -> Vec<(K, V)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            all.extend(shard.slots.iter().map(|slot| (slot.key.clone(), slot.value.clone())));
        }
        all
    }
}

/// A cache's size and lookups since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<K, V> std::fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedCache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_holds_and_the_shares_add_up() {
        for (capacity, shards) in [(1, 16), (7, 16), (100, 16), (1000, 16), (100, 1)] {
            let cache = BoundedCache::with_shards(capacity, shards);
            for i in 0..capacity * 5 {
                cache.insert(i, i);
            }
            assert_eq!(cache.len(), capacity, "capacity {capacity} in {shards} shards");
        }
    }

    #[test]
    fn the_hot_set_survives_a_scan() {
        // One shard, so that the test sees exactly what the clock does.
        let cache = BoundedCache::with_shards(100, 1);
        let hot: Vec<u32> = (0..20).collect();
        for &key in &hot {
            cache.insert(key, key);
        }
        // A scan of 10,000 keys read once each, while the hot set is read now and then (every 40 new keys: less
        // often than the hand comes round).
        for (n, cold) in (1_000..11_000).enumerate() {
            cache.insert(cold, cold);
            if n % 40 == 0 {
                assert!(hot.iter().all(|key| cache.get(key).is_some()), "hot set intact after {n} cold keys");
            }
        }
        assert!(hot.iter().all(|key| cache.get(key) == Some(*key)));
        assert_eq!(cache.len(), 100);
        // Without reads, the hot set ages out like anything else.
        for cold in 20_000..20_300 {
            cache.insert(cold, cold);
        }
        assert!(hot.iter().all(|key| cache.get(key).is_none()));
    }

    #[test]
    fn entries_that_must_stay_make_the_shard_grow_rather_than_go() {
        let cache = BoundedCache::with_shards(4, 1);
        for key in 0..4 {
            cache.insert(key, true);
        }
        let (_, inserted) = cache.get_or_insert(9, false, |pinned| *pinned);
        assert!(inserted.evicted.is_empty() && inserted.over_capacity);
        assert_eq!(cache.len(), 5);
        // Once one may go, the next insert evicts it (the unpinned one, not a pinned one).
        let (_, inserted) = cache.get_or_insert(10, false, |pinned| *pinned);
        assert_eq!(inserted.evicted.iter().map(|(key, _)| *key).collect::<Vec<_>>(), [9]);
        // An entry that is there is returned as it is.
        assert!(cache.get_or_insert(0, false, |_| false).0);
    }

    #[test]
    fn a_shard_over_its_share_shrinks_back_once_entries_may_go() {
        let cache = BoundedCache::with_shards(4, 1);
        for key in 0..8 {
            cache.get_or_insert(key, (), |_| true);
        }
        assert_eq!(cache.len(), 8, "none could go");
        for key in 100..104 {
            let (_, inserted) = cache.get_or_insert(key, (), |_| false);
            assert_eq!(inserted.evicted.len(), 2, "one for the new entry, one of the excess");
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&103).is_some(), "the newest entry stays");
    }

    #[test]
    fn remove_replace_retain_and_clear() {
        let cache = BoundedCache::with_shards(10, 1);
        for key in 0..10 {
            cache.insert(key, key * 10);
        }
        cache.insert(3, 33);
        assert_eq!(cache.get(&3), Some(33));
        assert_eq!(cache.remove(&4), Some(40));
        assert_eq!(cache.remove(&4), None);
        assert!(
            (0..10).filter(|&k| k != 4).all(|k| cache.get(&k).is_some()),
            "a swap_remove keeps the index"
        );
        cache.retain(|key, _| key % 2 == 0);
        assert_eq!(cache.len(), 4);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.capacity), (4, 10));
        assert_eq!((stats.hits, stats.misses), (10, 0), "the lookups above, all found");
        assert!(cache.get(&1).is_none());
        assert_eq!(cache.stats().misses, 1);
        assert_eq!(cache.get(&2), Some(20));
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
