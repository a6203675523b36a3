//! Who is calling: bearer credentials to principals, the organization a call acts in, and the first start that
//! creates the first organization with its instance-admin credential.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{PoisonError, RwLock},
    time::{Duration, Instant},
};

use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::{
    crypto::{
        api_key_secret,
        secret::{hash_secret, new_secret},
    },
    domain::{
        AggregateType, DomainError, Event,
        events::CredentialRole,
        org::Org,
        principal::{Grant, Limits, Principal},
    },
    store::{Append, Page, StoreError, files},
};

use super::{
    Caller, Error, Result, Services, Target,
    bounded::BoundedCache,
    verify::{VerifyCode, VerifyRequest},
};

/// Prefix of generated instance-admin tokens, so that secret scanners and people recognise them.
const ADMIN_TOKEN_PREFIX: &str = "km_admin_";
/// Supplied admin tokens must be at least this long (about 128 bits in base64).
const MIN_SUPPLIED_TOKEN_LEN: usize = 22;
/// The name of the organization the first start creates.
pub const FIRST_ORG_NAME: &str = "default";

/// Where the first instance-admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// Generated on this start and written to this file.
    Written(PathBuf),
    /// Supplied through KEYMINT_ADMIN_TOKEN.
    Supplied,
    /// The store was set up before; nothing was created.
    Existing,
}

/// A supplied instance-admin token is long enough to be a secret; checked before a start writes anything.
pub fn check_admin_token(supplied: Option<&str>) -> Result<()> {
    match supplied {
        Some(token) if token.len() < MIN_SUPPLIED_TOKEN_LEN => Err(Error::Internal(format!(
            "KEYMINT_ADMIN_TOKEN must be at least {MIN_SUPPLIED_TOKEN_LEN} characters"
        ))),
        _ => Ok(()),
    }
}

impl Services {
    /// Resolves a bearer secret to its principal: from memory when this process has seen it before. An API key
    /// (`km_live_…`/`km_test_…`) is checked like a verify call from `client_ip` and counts as one use of it.
    /// A secret refused as unknown (or revoked, expired, inactive) is refused again from memory for a while,
    /// without a store query; see [`UnknownCredentials`].
    pub async fn authenticate(&self, bearer: &str, client_ip: Option<IpAddr>) -> Result<Principal> {
        let hash = hash_secret(bearer);
        if let Some(principal) = self.principals.get(&hash) {
            return Ok(principal);
        }
        if let Some(message) = self.unknown_credentials.refusal(&hash) {
            return Err(Error::Unauthenticated(message));
        }
        let generation = self.unknown_credentials.generation();
        if api_key_secret::looks_like_api_key(bearer) {
            let principal = self.api_key_principal(bearer, client_ip).await;
            if let Err(Error::Unauthenticated(message)) = &principal {
                self.unknown_credentials.remember(hash, message, generation);
            }
            return principal;
        }
        let Some(credential) = self.store.credential(&hash).await? else {
            let message = "unknown or revoked credential";
            self.unknown_credentials.remember(hash, message, generation);
            return Err(Error::Unauthenticated(message));
        };
        let role = CredentialRole::parse(&credential.role)
            .ok_or_else(|| Error::Internal(format!("credential {} has unknown role", credential.id)))?;
        let principal = Principal { id: credential.id, org_id: credential.org_id, grant: Grant::from(role) };
        self.principals.insert(hash, principal.clone());
        Ok(principal)
    }

    /// A TEST key authenticates, so that staging can read and verify; its grant carries its environment, and
    /// `Principal::require` refuses it every call that changes something. The grant carries the key's limits
    /// too, which bound the keys it may issue and act on; a rolled secret in its grace period expires with it.
    async fn api_key_principal(&self, secret: &str, client_ip: Option<IpAddr>) -> Result<Principal> {
        let request =
            VerifyRequest { secret, client_ip, required_scopes: &[], accept_test_keys: true, org_id: None };
        let verdict = self.verify_api_key(request).await?;
        let refused = match (verdict.code, verdict.key) {
            (VerifyCode::Valid, Some(key)) => {
                let limits = Limits::of_key(&key.origin, &key.settings).map_err(|_| {
                    Error::Internal(format!("API key {} has an invalid network list", key.id))
                })?;
                // A rolled secret in its grace period is a credential that ends with it: it must not mint, or
                // roll its own key into, a secret that outlives it.
                let limits = limits.ending_by(key.secret_expires_at());
                return Ok(Principal {
                    id: key.id.clone(),
                    org_id: key.org_id.clone(),
                    grant: Grant::Scoped {
                        scopes: key.settings.scopes.clone(),
                        environment: key.origin.environment,
                        limits,
                    },
                });
            }
            (VerifyCode::NotFound, _) => Error::Unauthenticated("unknown API key"),
            (VerifyCode::Revoked, _) => Error::Unauthenticated("the API key was revoked or rolled"),
            (VerifyCode::Expired, _) => Error::Unauthenticated("the API key expired"),
            (VerifyCode::Disabled, _) => Error::Unauthenticated("the API key is inactive"),
            (VerifyCode::IpNotAllowed, _) => DomainError::permission_denied(
                "IP_NOT_ALLOWED",
                "this API key may not be used from this address",
            )
            .into(),
            (VerifyCode::RateLimited, _) => DomainError::ResourceExhausted {
                reason: "RATE_LIMITED",
                message: "this API key's rate limit is used up; retry in a moment".into(),
            }
            .into(),
            (VerifyCode::QuotaExceeded, _) => DomainError::ResourceExhausted {
                reason: "QUOTA_EXCEEDED",
                message: "this API key's daily quota is used up; it resets at midnight UTC".into(),
            }
            .into(),
            (code, _) => Error::Internal(format!("authentication answered {code:?}")),
        };
        Err(refused)
    }

    /// The caller of an organization-scoped call: the principal's own organization, or the one the `x-org-id`
    /// header names if the principal may act there and it exists.
    pub async fn caller(&self, principal: Principal, requested_org: Option<&str>) -> Result<Caller> {
        let org_id = principal.resource_owner(requested_org)?.to_owned();
        if requested_org.is_some() && self.store.org(&org_id).await?.is_none() {
            return Err(
                DomainError::not_found("ORG_NOT_FOUND", format!("organization {org_id} not found")).into()
            );
        }
        Ok(Caller { principal, org_id })
    }

    /// Sets up an empty store: the first organization and an instance-admin credential. The token is `supplied`
    /// when given, else generated and written to `<data_dir>/admin.token` (mode 0600). On a store set up before,
    /// a supplied token that is not yet known is added as another instance-admin credential.
    ///
    /// A first start leaves all or nothing: a generated token is on disk (under a name of its own) before the
    /// organization and the credential are written in one transaction, and takes its final name only after it.
    pub async fn bootstrap(&self, data_dir: &Path, supplied: Option<&str>) -> Result<AdminToken> {
        check_admin_token(supplied)?;
        if !self.store.is_empty().await? {
            if let Some(token) = supplied {
                self.ensure_admin_credential(token).await?;
                return Ok(AdminToken::Supplied);
            }
            if self.store.credential_count().await? == 0 {
                warn!(
                    "this store has no instance-admin credential: start keymint once with \
                     KEYMINT_ADMIN_TOKEN=<a secret of {MIN_SUPPLIED_TOKEN_LEN} or more characters> to add one"
                );
            }
            return Ok(AdminToken::Existing);
        }

        let generated = match supplied {
            Some(_) => None,
            None => Some(new_secret(ADMIN_TOKEN_PREFIX)?),
        };
        let pending = match &generated {
            Some(token) => Some(PendingTokenFile::write(data_dir, token)?),
            None => None,
        };
        let token = supplied.or(generated.as_deref().map(String::as_str)).unwrap_or_default();
        let (org_id, credential_id) = (self.new_id(), self.new_id());
        let org_events = Org::default().add(FIRST_ORG_NAME)?;
        let credential =
            Event::CredentialAdded { token_hash: hash_secret(token), role: CredentialRole::InstanceAdmin };
        let at = self.now();
        let first = |aggregate_type, aggregate_id, events| Append {
            aggregate_type,
            aggregate_id,
            resource_owner: &org_id,
            creator: "system",
            created_at: at,
            expected_sequence: 0,
            events,
        };
        let appends = vec![
            first(AggregateType::Org, &org_id, org_events),
            first(AggregateType::Credential, &credential_id, vec![credential]),
        ];
        match self.store.append_all(appends).await {
            Ok(_) => {}
            // Another process sharing the database set it up at the same moment: use theirs.
            Err(StoreError::Conflict) => {
                drop(pending);
                return Box::pin(self.bootstrap(data_dir, supplied)).await;
            }
            Err(e) => return Err(e.into()),
        }
        info!(org_id, name = FIRST_ORG_NAME, "created the first organization");
        match pending {
            None => Ok(AdminToken::Supplied),
            Some(file) => {
                let path = file.keep()?;
                info!(path = %path.display(), "wrote the instance-admin token; read it from this file");
                Ok(AdminToken::Written(path))
            }
        }
    }

    async fn ensure_admin_credential(&self, token: &str) -> Result<()> {
        if self.store.credential(&hash_secret(token)).await?.is_some() {
            return Ok(());
        }
        let first = self.store.orgs(Page { offset: 0, limit: 1, asc: true }).await?;
        let org = first.items.first().ok_or_else(|| Error::Internal("no organization exists".into()))?;
        self.add_admin_credential(&org.id, token).await?;
        warn!(org_id = org.id, "added the supplied KEYMINT_ADMIN_TOKEN as an instance-admin credential");
        Ok(())
    }

    async fn add_admin_credential(&self, org_id: &str, token: &str) -> Result<()> {
        let id = self.new_id();
        let target = Target { aggregate_type: AggregateType::Credential, id: &id, org_id, creator: "system" };
        let event =
            Event::CredentialAdded { token_hash: hash_secret(token), role: CredentialRole::InstanceAdmin };
        self.append(&target, 0, vec![event]).await?;
        Ok(())
    }
}

/// Principals of credentials this process has authenticated, by the hash of their secret. Instance-admin
/// credentials cannot be revoked, so an entry stays true for the life of the process; only known credentials are
/// kept, at most `MAX_ENTRIES` (CLOCK eviction), so guessing cannot grow it.
#[derive(Debug)]
pub(super) struct PrincipalCache(BoundedCache<String, Principal>);

impl PrincipalCache {
    const MAX_ENTRIES: usize = 10_000;

    pub fn new() -> Self {
        PrincipalCache(BoundedCache::new(Self::MAX_ENTRIES))
    }

    fn get(&self, hash: &str) -> Option<Principal> {
        self.0.get(hash)
    }

    pub fn stats(&self) -> super::bounded::CacheStats {
        self.0.stats()
    }

    fn insert(&self, hash: String, principal: Principal) {
        self.0.insert(hash, principal);
    }
}

impl Services {
    /// How many calls were refused for an unknown credential, and how many of those cost a store query.
    pub fn unknown_credentials(&self) -> UnknownCredentialCounts {
        self.unknown_credentials.counts()
    }
}

/// What [`UnknownCredentials`] counted since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCredentialCounts {
    /// Calls refused with an unknown, revoked, expired or inactive credential.
    pub refused: u64,
    /// Of those, the ones answered from memory, without a store query.
    pub refused_from_memory: u64,
}

/// Hashes of bearer secrets that were refused, so that a client repeating one (or guessing) costs no store query
/// for [`Self::TTL`]. Bounded: full, it is emptied, so guessing cannot grow memory. Emptied too whenever a
/// credential or an API key is written, here or (through the change feed) by another process sharing the
/// database, so that a credential added after its secret was refused works at once.
#[derive(Debug, Default)]
pub(super) struct UnknownCredentials(RwLock<Refused>);

#[derive(Debug, Default)]
struct Refused {
    by_hash: HashMap<String, (Instant, &'static str)>,
    /// Bumped by every clear: a refusal decided before a clear is not remembered after it.
    generation: u64,
    refused: u64,
    from_memory: u64,
    /// The refusals since the last summary line, and when that was.
    since_summary: u64,
    summary_at: Option<Instant>,
}

impl UnknownCredentials {
    const TTL: Duration = Duration::from_secs(30);
    const MAX_ENTRIES: usize = 10_000;
    /// Refusals are logged as one summary line at most this often, not one line each.
    const SUMMARY_EVERY: Duration = Duration::from_secs(60);

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Refused> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Refused> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The message to refuse `hash` with, if it was refused within the TTL. Known secrets take only a read lock.
    fn refusal(&self, hash: &str) -> Option<&'static str> {
        let now = Instant::now();
        let (at, message) = *self.read().by_hash.get(hash)?;
        if now.duration_since(at) >= Self::TTL {
            return None;
        }
        let mut refused = self.lock();
        refused.from_memory += 1;
        refused.count(now);
        Some(message)
    }

    fn generation(&self) -> u64 {
        self.read().generation
    }

    fn remember(&self, hash: String, message: &'static str, generation: u64) {
        let now = Instant::now();
        let mut refused = self.lock();
        refused.count(now);
        if refused.generation != generation {
            return;
        }
        if refused.by_hash.len() >= Self::MAX_ENTRIES {
            refused.by_hash.clear();
        }
        refused.by_hash.insert(hash, (now, message));
    }

    pub(super) fn clear(&self) {
        let mut refused = self.lock();
        refused.generation += 1;
        refused.by_hash.clear();
    }

    fn counts(&self) -> UnknownCredentialCounts {
        let refused = self.read();
        UnknownCredentialCounts { refused: refused.refused, refused_from_memory: refused.from_memory }
    }
}

impl Refused {
    fn count(&mut self, now: Instant) {
        self.refused += 1;
        self.since_summary += 1;
        let Some(at) = self.summary_at else {
            self.summary_at = Some(now);
            return;
        };
        let elapsed = now.duration_since(at);
        if elapsed >= UnknownCredentials::SUMMARY_EVERY {
            info!(
                refused = self.since_summary,
                seconds = elapsed.as_secs(),
                "refused calls with unknown or revoked credentials"
            );
            (self.since_summary, self.summary_at) = (0, Some(now));
        }
    }
}

/// A generated admin token on disk under a temporary name: renamed to `admin.token` once the store holds its
/// credential, removed if it never does.
struct PendingTokenFile {
    temporary: PathBuf,
    path: PathBuf,
    kept: bool,
}

impl PendingTokenFile {
    fn write(data_dir: &Path, token: &Zeroizing<String>) -> Result<PendingTokenFile> {
        files::private_dir(data_dir)?;
        let path = data_dir.join("admin.token");
        let temporary = data_dir.join(format!("admin.token.{}.tmp", std::process::id()));
        let file = PendingTokenFile { temporary, path, kept: false };
        write_secret_file(&file.temporary, token)?;
        Ok(file)
    }

    /// Gives the file its final name (an atomic rename within the directory).
    fn keep(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.temporary, &self.path).map_err(|e| {
            Error::Internal(format!(
                "the store is set up, but {} could not be renamed to {}: {e}; the token is in the former",
                self.temporary.display(),
                self.path.display()
            ))
        })?;
        self.kept = true;
        Ok(self.path.clone())
    }
}

impl Drop for PendingTokenFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Writes a secret to a new file that only its owner may read, and makes it durable.
pub(super) fn write_secret_file(path: &Path, secret: &Zeroizing<String>) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::Internal(format!("cannot write {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    // A file left from an earlier setup keeps its mode on open: narrow it before writing.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(fail)?;
    file.write_all(secret.as_bytes()).and_then(|()| file.write_all(b"\n")).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod unknown_credentials_tests {
    use super::*;

    #[test]
    fn a_refusal_is_remembered_counted_and_forgotten_on_clear() {
        let cache = UnknownCredentials::default();
        let generation = cache.generation();
        assert_eq!(cache.refusal("h"), None);
        cache.remember("h".into(), "unknown", generation);
        assert_eq!(cache.refusal("h"), Some("unknown"));
        assert_eq!(cache.counts(), UnknownCredentialCounts { refused: 2, refused_from_memory: 1 });
        cache.clear();
        assert_eq!(cache.refusal("h"), None);
    }

    #[test]
    fn a_refusal_decided_before_a_clear_is_not_remembered() {
        let cache = UnknownCredentials::default();
        let generation = cache.generation();
        // The credential is written while the store was being asked about it.
        cache.clear();
        cache.remember("h".into(), "unknown", generation);
        assert_eq!(cache.refusal("h"), None);
    }

    #[test]
    fn guessing_cannot_grow_it_past_its_bound() {
        let cache = UnknownCredentials::default();
        for i in 0..UnknownCredentials::MAX_ENTRIES + 10 {
            cache.remember(i.to_string(), "unknown", 0);
        }
        assert!(cache.read().by_hash.len() <= UnknownCredentials::MAX_ENTRIES);
    }
}
