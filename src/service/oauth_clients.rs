//! The OAuth clients (applications) and their public keys, kept in memory: every assertion names both, so without
//! this each token, introspection and revocation would read the store twice and parse a PEM. Invalidated like the
//! other read caches: at once by this process's writes, through the change feed for other processes' writes, and
//! emptied when the feed was down. An application's removal, its keys' removal, and its project's removal each
//! evict it. The application's revoked access tokens are kept with it: a revocation is an event of the application,
//! so whatever evicts the application evicts them too, and introspection needs no store read.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
};

use crate::{
    crypto::public_key::PublicKey,
    domain::{AggregateType, Timestamp},
    store::AppRow,
};

/// A live key of a client, parsed.
#[derive(Debug)]
pub(super) struct ClientKey {
    pub key: PublicKey,
    pub expires_at: Timestamp,
}

#[derive(Debug, Default)]
pub(super) struct OAuthClients(RwLock<Entries>);

#[derive(Debug, Default)]
struct Entries {
    /// By application ID: the application (None: no live application has this ID) and the keys looked up so far
    /// (None: no live key has this ID).
    clients: HashMap<String, Client>,
    /// Bumped by every invalidation: a read that started before one must not fill the cache after it.
    generation: u64,
}

#[derive(Debug, Clone, Default)]
struct Client {
    app: Option<Arc<AppRow>>,
    keys: HashMap<String, Option<Arc<ClientKey>>>,
    /// The `jti`s of its revoked tokens, once read.
    revoked: Option<Arc<HashSet<String>>>,
}

impl OAuthClients {
    /// Bounds memory: past this many applications, or keys of one, the cache starts over.
    const MAX_CLIENTS: usize = 10_000;
    const MAX_KEYS: usize = 1_000;

    pub fn generation(&self) -> u64 {
        self.0.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// The application, if known: Some(None) when the store said there is none.
    pub fn app(&self, app_id: &str) -> Option<Option<Arc<AppRow>>> {
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        entries.clients.get(app_id).map(|client| client.app.clone())
    }

    pub fn key(&self, app_id: &str, kid: &str) -> Option<Option<Arc<ClientKey>>> {
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        entries.clients.get(app_id)?.keys.get(kid).cloned()
    }

    pub fn fill_app(&self, generation: u64, app_id: &str, app: Option<Arc<AppRow>>) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        if entries.clients.len() >= Self::MAX_CLIENTS {
            entries.clients.clear();
        }
        entries.clients.entry(app_id.to_owned()).or_default().app = app;
    }

    /// Caches a key of an application already cached.
    pub fn fill_key(&self, generation: u64, app_id: &str, kid: &str, key: Option<Arc<ClientKey>>) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        let Some(client) = entries.clients.get_mut(app_id) else { return };
        if client.keys.len() >= Self::MAX_KEYS {
            client.keys.clear();
        }
        client.keys.insert(kid.to_owned(), key);
    }

    pub fn revoked(&self, app_id: &str) -> Option<Arc<HashSet<String>>> {
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        entries.clients.get(app_id)?.revoked.clone()
    }

    /// Caches the revoked tokens of an application already cached.
    pub fn fill_revoked(&self, generation: u64, app_id: &str, revoked: Arc<HashSet<String>>) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        if let Some(client) = entries.clients.get_mut(app_id) {
            client.revoked = Some(revoked);
        }
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        if aggregate_type == AggregateType::App.as_str() {
            entries.clients.remove(id);
        } else if aggregate_type == AggregateType::Project.as_str() {
            // Removing a project removes its applications without an event of theirs; an absent app has no
            // project to match, and an app added later is an event of the app.
            entries.clients.retain(|_, client| client.app.as_ref().is_some_and(|app| app.project_id != id));
        }
    }

    pub fn clear(&self) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        entries.clients.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RowDetails;

    fn app(id: &str, project: &str) -> Option<Arc<AppRow>> {
        Some(Arc::new(AppRow {
            id: id.into(),
            project_id: project.into(),
            name: "a".into(),
            client_id: format!("{id}@p"),
            allowed_scopes: "[]".into(),
            details: RowDetails { org_id: "o".into(), sequence: 1, created_at: 1, changed_at: 1 },
        }))
    }

    #[test]
    fn changes_to_the_app_or_its_project_evict_it() {
        let cache = OAuthClients::default();
        cache.fill_app(cache.generation(), "a1", app("a1", "p1"));
        cache.fill_app(cache.generation(), "a2", app("a2", "p2"));
        cache.fill_key(cache.generation(), "a1", "k", None);
        cache.fill_revoked(cache.generation(), "a1", Arc::new(HashSet::from(["jti".to_owned()])));
        assert!(matches!(cache.key("a1", "k"), Some(None)));
        assert!(cache.revoked("a1").is_some_and(|revoked| revoked.contains("jti")));
        cache.invalidate("app", "a1");
        assert!(cache.app("a1").is_none());
        assert!(cache.key("a1", "k").is_none());
        assert!(cache.revoked("a1").is_none(), "a revocation is an event of the app: its set is read again");
        cache.invalidate("project", "p2");
        assert!(cache.app("a2").is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_does_not_fill() {
        let cache = OAuthClients::default();
        let before = cache.generation();
        cache.invalidate("app", "a");
        cache.fill_app(before, "a", app("a", "p"));
        assert!(cache.app("a").is_none());
    }
}
