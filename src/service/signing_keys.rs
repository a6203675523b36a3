//! keymint's token-signing keys: created on the first start, rotated on demand and on a schedule, the newest one
//! signing and the ones before it published until every token they signed has expired. They are the events of
//! one aggregate (`signing_keys/instance`); only their sealed private halves reach the database, and the master
//! key that opens them comes from KEYMINT_MASTER_KEY or, on SQLite, from `<data dir>/master.key`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::{
    crypto::{
        seal::MasterKey,
        signing_keys::{ALGORITHM, SigningKey},
    },
    domain::{AggregateType, Event, Timestamp, events::SIGNING_KEYS_ID},
    store::{Append, StoreError, files},
};

use super::{Error, Result, Services};

/// How long a superseded key stays published beyond the longest token lifetime: the time another process may
/// take to learn of the rotation (the change feed, or at worst the next periodic reload) and stop signing with it.
const PUBLISH_GRACE: Duration = Duration::from_secs(5 * 60);
/// The name of the master key file generated on a first start with SQLite.
const MASTER_KEY_FILE: &str = "master.key";

/// The keys this process knows: the newest signs; each older one verifies until its window ends.
#[derive(Debug, Default)]
pub(super) struct KeyRing {
    /// Oldest first.
    keys: Vec<RingKey>,
    /// The aggregate's sequence these keys were read at: a rotation appends after it.
    sequence: u64,
}

#[derive(Debug, Clone)]
pub(super) struct RingKey {
    pub key: Arc<SigningKey>,
    pub added_at: Timestamp,
    /// When the next key took over; None for the signing key.
    pub superseded_at: Option<Timestamp>,
}

/// The signing keys and how to reload them.
#[derive(Debug, Default)]
pub(super) struct SigningKeys {
    ring: RwLock<Arc<KeyRing>>,
    master: std::sync::OnceLock<MasterKey>,
    /// Set when another process may have rotated: the next use reloads.
    stale: std::sync::atomic::AtomicBool,
    last_reload: RwLock<Option<Instant>>,
}

impl SigningKeys {
    pub(super) fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn mark_stale(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
    }

    fn take_stale(&self) -> bool {
        self.stale.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

impl KeyRing {
    /// The key that signs new tokens.
    pub(super) fn current(&self) -> Option<&RingKey> {
        self.keys.last()
    }

    pub(super) fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.key.kid() == kid)
    }

    /// The keys a verifier may meet in unexpired tokens: the signing key, and each older one until `ttl` (plus
    /// a grace) after it was superseded.
    pub(super) fn published(&self, now: Timestamp, ttl: Duration) -> impl Iterator<Item = &RingKey> {
        self.keys.iter().filter(move |k| k.superseded_at.is_none_or(|at| still_published(at, now, ttl)))
    }
}

fn still_published(superseded_at: Timestamp, now: Timestamp, ttl: Duration) -> bool {
    let window = i64::try_from((ttl + PUBLISH_GRACE).as_micros()).unwrap_or(i64::MAX);
    superseded_at.micros().saturating_add(window) > now.micros()
}

/// The master key given in the settings, if any, or why the settings lack one: with PostgreSQL it must be given.
/// Needs neither the store nor the data directory, so that a start checks it before it writes anything.
pub fn supplied_master_key(supplied: Option<&str>, shared: bool) -> Result<Option<MasterKey>> {
    if let Some(text) = supplied {
        let key =
            MasterKey::parse(text).map_err(|e| Error::Internal(format!("KEYMINT_MASTER_KEY: {}", e.0)))?;
        return Ok(Some(key));
    }
    if shared {
        return Err(Error::Internal(
            "KEYMINT_MASTER_KEY (--master-key) is required with PostgreSQL: every keymint process sharing the \
             database must seal and open the signing keys with the same key (generate one with `head -c32 \
             /dev/urandom | base64`)"
                .into(),
        ));
    }
    Ok(None)
}

/// The master key the configuration names, or (SQLite only) the one in the data directory, generated there on a
/// first start. `has_keys`: whether the store already holds sealed keys, which a new master key could not open.
fn master_key(data_dir: &Path, supplied: Option<&str>, shared: bool, has_keys: bool) -> Result<MasterKey> {
    if let Some(key) = supplied_master_key(supplied, shared)? {
        return Ok(key);
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            files::narrow_if_present(&path)?;
            MasterKey::parse(&text).map_err(|e| Error::Internal(format!("{}: {}", path.display(), e.0)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !has_keys => {
            let key = MasterKey::generate()?;
            write_master_key(data_dir, &path, &key)?;
            info!(path = %path.display(), "generated the master key that seals the token-signing keys; back it up");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Internal(format!(
            "the store holds sealed signing keys but {} is missing: restore it, or set KEYMINT_MASTER_KEY to the \
             key they were sealed under",
            path.display()
        ))),
        Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes the master key under a temporary name (mode 0600, synced) and renames it: a crash leaves no half key.
fn write_master_key(data_dir: &Path, path: &PathBuf, key: &MasterKey) -> Result<()> {
    files::private_dir(data_dir)?;
    let temporary = data_dir.join(format!("{MASTER_KEY_FILE}.{}.tmp", std::process::id()));
    super::access::write_secret_file(&temporary, &key.to_base64())?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::Internal(format!("cannot rename {} to {}: {e}", temporary.display(), path.display()))
    })
}

impl Services {
    /// Opens the signing keys with the master key (refusing to start when it cannot open them), creating the
    /// first key on a first start. `shared`: the database is PostgreSQL, shared by several processes.
    pub async fn open_signing_keys(
        &self,
        data_dir: &Path,
        supplied: Option<&str>,
        shared: bool,
    ) -> Result<()> {
        let events = self.store.load(AggregateType::SigningKeys, SIGNING_KEYS_ID).await?;
        let master = master_key(data_dir, supplied, shared, !events.is_empty())?;
        let _ = self.signing_keys.master.set(master);
        self.reload_signing_keys().await?;
        if self.signing_keys.ring().current().is_none() {
            self.rotate_signing_key().await?;
        }
        Ok(())
    }

    /// Reads the signing keys from their events and opens the ones still in use.
    pub(super) async fn reload_signing_keys(&self) -> Result<()> {
        let master = self.signing_keys.master.get().ok_or_else(|| Error::Internal("no master key".into()))?;
        let events = self.store.load(AggregateType::SigningKeys, SIGNING_KEYS_ID).await?;
        let now = self.now();
        let ttl = self.oauth_settings().access_token_ttl;
        let mut added: Vec<(String, String, Timestamp)> = Vec::new();
        for recorded in &events {
            if let Event::SigningKeyAdded { kid, algorithm, sealed_private_key } =
                recorded.event().map_err(|e| Error::Internal(e.to_string()))?
            {
                if algorithm != ALGORITHM {
                    return Err(Error::Internal(format!(
                        "signing key {kid} has unknown algorithm {algorithm}"
                    )));
                }
                added.push((kid, sealed_private_key, Timestamp::from_micros(recorded.created_at)));
            }
        }
        let mut keys = Vec::new();
        let current = self.signing_keys.ring();
        for (i, (kid, sealed, added_at)) in added.iter().enumerate() {
            let superseded_at = added.get(i + 1).map(|(_, _, at)| *at);
            if superseded_at.is_some_and(|at| !still_published(at, now, ttl)) {
                continue; // Every token it signed has expired: it is not opened again.
            }
            let key = match current.find(kid) {
                Some(known) => known.key.clone(),
                None => {
                    let pkcs8 = master.open(kid, sealed).map_err(|_| {
                        Error::Internal(format!(
                            "the master key cannot open the stored signing key {kid}: start keymint with the \
                             KEYMINT_MASTER_KEY (or the master.key file) it was sealed under"
                        ))
                    })?;
                    Arc::new(SigningKey::from_pkcs8(kid, &pkcs8)?)
                }
            };
            keys.push(RingKey { key, added_at: *added_at, superseded_at });
        }
        let sequence = events.last().map_or(0, |e| u64::try_from(e.sequence).unwrap_or_default());
        *self.signing_keys.ring.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(KeyRing { keys, sequence });
        *self.signing_keys.last_reload.write().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }

    /// The ring, reloaded first if another process may have changed it.
    pub(super) async fn key_ring(&self) -> Result<Arc<KeyRing>> {
        if self.signing_keys.take_stale()
            && let Err(e) = self.reload_signing_keys().await
        {
            self.signing_keys.mark_stale();
            // The keys held still sign and verify correctly; a newer key is only missed for now.
            warn!(error = %e, "cannot reload the signing keys; using the ones held");
        }
        Ok(self.signing_keys.ring())
    }

    /// Reloads when a token names a key this process does not know (another process rotated), at most once a
    /// second, so that made-up `kid`s cannot make every call read the store.
    pub(super) async fn reload_for_unknown_kid(&self) -> Result<Arc<KeyRing>> {
        let recent = self
            .signing_keys
            .last_reload
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if !recent {
            self.reload_signing_keys().await?;
        }
        Ok(self.signing_keys.ring())
    }

    /// Adds a new signing key, which signs from now on; the previous one stays published until the tokens it
    /// signed have expired. Returns the new key's ID. If another process rotated first, its key is kept.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let master = self.signing_keys.master.get().ok_or_else(|| Error::Internal("no master key".into()))?;
        let kid = self.new_id();
        let generated_kid = kid.clone();
        let (key, pkcs8) = tokio::task::spawn_blocking(move || SigningKey::generate(&generated_kid))
            .await
            .map_err(|e| Error::Internal(format!("signing key generation: {e}")))??;
        drop(key);
        let sealed_private_key = master.seal(&kid, &pkcs8)?;
        let expected = self.signing_keys.ring().sequence;
        let appended = self
            .store
            .append(Append {
                aggregate_type: AggregateType::SigningKeys,
                aggregate_id: SIGNING_KEYS_ID,
                resource_owner: "system",
                creator: "system",
                created_at: self.now(),
                expected_sequence: expected,
                events: vec![Event::SigningKeyAdded {
                    kid: kid.clone(),
                    algorithm: ALGORITHM.to_owned(),
                    sealed_private_key,
                }],
            })
            .await;
        match appended {
            Ok(_) => info!(%kid, "added a new token-signing key"),
            Err(StoreError::Conflict) => {
                info!("another process rotated the signing key first; using its key")
            }
            Err(e) => return Err(e.into()),
        }
        self.reload_signing_keys().await?;
        let current = self.signing_keys.ring();
        Ok(current.current().map(|k| k.key.kid().to_owned()).unwrap_or(kid))
    }

    /// Rotates when the signing key is older than `every`, reloads a ring marked stale, and forgets expired
    /// assertion IDs and revocations: what the maintenance task does each round.
    pub async fn maintain_signing_keys(&self, every: Duration) -> Result<()> {
        self.reload_signing_keys().await?;
        let ring = self.signing_keys.ring();
        let age = ring.current().map(|k| self.now().micros() - k.added_at.micros());
        if age.is_some_and(|age| age >= i64::try_from(every.as_micros()).unwrap_or(i64::MAX)) {
            self.rotate_signing_key().await?;
        }
        let pruned = self.store.prune_expired_tokens(self.now().micros().div_euclid(1_000_000)).await?;
        if pruned > 0 {
            tracing::debug!(pruned, "forgot expired assertion IDs and revocations");
        }
        Ok(())
    }

    /// Runs `maintain_signing_keys` every `interval` until `stop` fires.
    pub fn maintain_signing_keys_every(
        self: Arc<Self>,
        every: Duration,
        interval: Duration,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = ticks.tick() => {
                        if let Err(e) = self.maintain_signing_keys(every).await {
                            warn!(error = %e, "signing key maintenance failed; retrying next round");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superseded_key_is_published_for_the_token_lifetime_and_a_grace() {
        let at = Timestamp(1_000_000_000_000);
        let ttl = Duration::from_secs(3600);
        let grace = i64::try_from(PUBLISH_GRACE.as_micros()).unwrap_or_default();
        assert!(still_published(at, Timestamp(at.0 + 3_600_000_000 + grace - 1), ttl));
        assert!(!still_published(at, Timestamp(at.0 + 3_600_000_000 + grace), ttl));
    }

    #[test]
    fn a_master_key_is_generated_only_for_a_fresh_sqlite_store() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(master_key(dir.path(), None, true, false).is_err(), "PostgreSQL needs KEYMINT_MASTER_KEY");
        assert!(master_key(dir.path(), None, false, true).is_err(), "keys exist, the file does not");
        let generated = master_key(dir.path(), None, false, false).expect("generated");
        let read = master_key(dir.path(), None, false, true).expect("read back");
        assert_eq!(*generated.to_base64(), *read.to_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let supplied = MasterKey::generate().expect("key").to_base64();
        assert!(master_key(dir.path(), Some(&supplied), true, true).is_ok());
        assert!(master_key(dir.path(), Some("short"), true, true).is_err());
    }
}
