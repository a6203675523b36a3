//! VerifyApiKey, answered from memory: keys by the hash of their secret (filled from the store on a miss,
//! dropped when their aggregate changes), and per-key meters (shares of the key's rate limit and daily quota
//! leased from the store in batches, usage not yet flushed). A verify waits for the store only when its key's
//! batch ran out: usage goes to the store in batches too.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    crypto::{
        api_key_secret,
        secret::{hashes_equal, hex, secret_digest},
    },
    domain::{
        AggregateType, Timestamp,
        api_key::{Environment, KeyStatus, Origin, Settings},
        cidr::AllowList,
        lease::{BucketGrant, BucketShare, QuotaGrant, QuotaShare, Take, Use},
        rate_limit::{DailyQuota, Decision, RateLimit, TokenBucket, utc_day},
    },
    store::{ApiKeyRow, UsageDelta, UsageRow},
};

use super::{Error, Result, Services, bounded::BoundedCache};

/// What a verify call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyCode {
    Valid,
    NotFound,
    Expired,
    Disabled,
    Revoked,
    IpNotAllowed,
    InsufficientScopes,
    RateLimited,
    QuotaExceeded,
    TestKeyNotAllowed,
}

/// A presented secret and what the verifier requires of it.
#[derive(Clone, Copy)]
pub struct VerifyRequest<'a> {
    pub secret: &'a str,
    /// None fails the network check of a key limited to networks.
    pub client_ip: Option<IpAddr>,
    pub required_scopes: &'a [String],
    pub accept_test_keys: bool,
    /// Only keys of this organization are found; None finds any (authentication of keymint's own callers).
    pub org_id: Option<&'a str>,
}

impl std::fmt::Debug for VerifyRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("secret", &"[redacted]")
            .field("client_ip", &self.client_ip)
            .field("required_scopes", &self.required_scopes)
            .field("accept_test_keys", &self.accept_test_keys)
            .field("org_id", &self.org_id)
            .finish()
    }
}

/// The answer: the code, and for a known key what it is and its rate limit's state after this call.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub code: VerifyCode,
    pub key: Option<Arc<KeyView>>,
    pub rate: Option<Decision>,
}

/// What verify needs of a key, decoded once when it is cached.
#[derive(Debug)]
pub struct KeyView {
    pub id: String,
    pub org_id: String,
    pub origin: Origin,
    pub settings: Settings,
    allowed: AllowList,
    daily_quota: Option<DailyQuota>,
    /// The SHA-256 this entry was found by, and when that secret stops working (None: the current secret).
    secret_hash: [u8; 32],
    secret_expires_at: Option<i64>,
}

impl KeyView {
    fn from_row(row: ApiKeyRow, secret_hash: [u8; 32], secret_expires_at: Option<i64>) -> Result<KeyView> {
        let (origin, settings) = super::api_keys::decode(&row)?;
        let allowed = AllowList::parse(&settings.allowed_cidrs)
            .map_err(|_| Error::Internal(format!("API key {} has an invalid network list", row.id)))?;
        let daily_quota = settings.daily_quota.and_then(|quota| DailyQuota::new(quota).ok());
        Ok(KeyView {
            id: row.id,
            org_id: row.details.org_id,
            origin,
            settings,
            allowed,
            daily_quota,
            secret_hash,
            secret_expires_at,
        })
    }

    /// When the secret this entry was found by stops working: the end of a rolled secret's grace period; None
    /// for the key's current secret.
    pub fn secret_expires_at(&self) -> Option<i64> {
        self.secret_expires_at
    }

    /// Every check that needs no meter, in the order the codes are reported.
    fn check(&self, request: &VerifyRequest<'_>, now: Timestamp) -> VerifyCode {
        let status = self.settings.status;
        if status == KeyStatus::Revoked || self.secret_expires_at.is_some_and(|end| now.micros() >= end) {
            VerifyCode::Revoked
        } else if self.origin.expires_at.is_some_and(|end| now.micros() >= end) {
            VerifyCode::Expired
        } else if status == KeyStatus::Inactive {
            VerifyCode::Disabled
        } else if self.origin.environment == Environment::Test && !request.accept_test_keys {
            VerifyCode::TestKeyNotAllowed
        } else if !self.settings.allowed_cidrs.is_empty()
            && request.client_ip.is_none_or(|ip| !self.allowed.allows(ip))
        {
            // A key limited to networks is refused when the verifier cannot say where the call came from.
            VerifyCode::IpNotAllowed
        } else if !request.required_scopes.iter().all(|needed| self.settings.scopes.contains(needed)) {
            VerifyCode::InsufficientScopes
        } else {
            VerifyCode::Valid
        }
    }
}

/// Keys by the SHA-256 of their secret, at most `capacity` of them (CLOCK eviction, see `bounded.rs`). This
/// process's writes drop a key's entries before the write returns; other processes' writes arrive through the
/// store's change feed.
#[derive(Debug)]
pub(super) struct ApiKeyCache {
    by_hash: BoundedCache<[u8; 32], Arc<KeyView>>,
    /// Which cached secrets belong to which key (its current one, and rolled ones in their grace period), by a
    /// hash of the key's ID: a change to a key drops its entries without a scan of the cache. Changed only under
    /// this lock, which fills and invalidations take, so it always names every cached entry.
    by_key: Mutex<HashMap<u64, Vec<[u8; 32]>>>,
    ids: RandomState,
    /// Well-formed secrets the store does not know, and when it said so. A secret is 256 random bits: one that was
    /// never issued will not be issued later, so remembering its absence is safe, and it spares the store a query
    /// per guess (the checksum is public, so anyone can make well-formed secrets).
    absent: BoundedCache<[u8; 32], Instant>,
    /// Bumped by every invalidation: a store read that started before one must not fill the cache after it.
    generation: AtomicU64,
}

impl ApiKeyCache {
    /// Absent secrets are remembered this long, and at most this many.
    const ABSENT_FOR: Duration = Duration::from_secs(30);
    const MAX_ABSENT: usize = 10_000;

    pub fn new(capacity: usize) -> Self {
        ApiKeyCache {
            by_hash: BoundedCache::new(capacity),
            by_key: Mutex::default(),
            ids: RandomState::new(),
            absent: BoundedCache::new(Self::MAX_ABSENT),
            generation: AtomicU64::new(0),
        }
    }

    fn is_absent(&self, hash: &[u8; 32]) -> bool {
        self.absent.get(hash).is_some_and(|since| since.elapsed() < Self::ABSENT_FOR)
    }

    fn remember_absent(&self, hash: [u8; 32]) {
        self.absent.insert(hash, Instant::now());
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Arc<KeyView>> {
        self.by_hash.get(hash)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> super::bounded::CacheStats {
        self.by_hash.stats()
    }

    pub fn absent_stats(&self) -> super::bounded::CacheStats {
        self.absent.stats()
    }

    fn key(&self, id: &str) -> u64 {
        self.ids.hash_one(id)
    }

    fn fill(&self, generation: u64, view: Arc<KeyView>) {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let (hash, key) = (view.secret_hash, self.key(&view.id));
        for (evicted, old) in self.by_hash.insert(hash, view).evicted {
            let old_key = self.key(&old.id);
            if let Some(hashes) = by_key.get_mut(&old_key) {
                hashes.retain(|h| *h != evicted);
                if hashes.is_empty() {
                    by_key.remove(&old_key);
                }
            }
        }
        let hashes = by_key.entry(key).or_default();
        if !hashes.contains(&hash) {
            hashes.push(hash);
        }
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        if aggregate_type != AggregateType::ApiKey.as_str() {
            return;
        }
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let key = self.key(id);
        let Some(hashes) = by_key.remove(&key) else { return };
        // Another key whose ID hashes alike keeps its entries.
        let others: Vec<[u8; 32]> = hashes
            .into_iter()
            .filter(|hash| match self.by_hash.get(hash) {
                Some(view) if view.id != id => true,
                _ => {
                    self.by_hash.remove(hash);
                    false
                }
            })
            .collect();
        if !others.is_empty() {
            by_key.insert(key, others);
        }
    }

    pub fn clear(&self) {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_hash.clear();
        by_key.clear();
    }
}

/// One key's limits and the usage not yet written to the store. Survives cache invalidation: changing a key
/// must not refill its bucket or forget its usage.
#[derive(Debug, Default)]
struct Meter {
    /// This process's share of the key's bucket and quota, leased from the store (see `domain::lease`).
    rate: Option<BucketShare>,
    quota: Option<QuotaShare>,
    /// The bucket that applies the limit while the store cannot be reached: each process on its own then.
    fallback: Option<TokenBucket>,
    /// Until then the store is taken to be unreachable: limits are applied here without asking it.
    offline_until: Option<Timestamp>,
    pending: Pending,
    /// Usage a flush took and the store has not confirmed yet: still reported, so that reads during a flush
    /// neither miss it nor (but for the instant between commit and confirmation) count it twice.
    flushing: Pending,
}

/// A meter and the lock its leases queue on, so that many calls of one key that find its batch used up wait
/// for one lease instead of each asking the store.
#[derive(Debug, Default)]
pub(super) struct MeterCell {
    meter: Mutex<Meter>,
    leasing: tokio::sync::Mutex<()>,
}

impl MeterCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Usage since the last flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub requests: u64,
    pub denied: u64,
    pub last_used_at: i64,
    pub quota_day: i64,
    pub quota_used: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.requests == 0 && self.denied == 0
    }

    /// Puts back a batch the store refused, under what was counted since.
    fn merge(&mut self, earlier: &Pending) {
        self.requests += earlier.requests;
        self.denied += earlier.denied;
        self.last_used_at = self.last_used_at.max(earlier.last_used_at);
        if earlier.quota_day == self.quota_day || self.quota_used == 0 {
            self.quota_used += earlier.quota_used;
            self.quota_day = self.quota_day.max(earlier.quota_day);
        }
    }
}

/// The meters of the keys this process verified lately, at most `capacity` of them unless more hold usage not
/// yet flushed: a meter is evicted only when it holds nothing the store lacks, and when none can be, the flusher
/// is asked to flush now.
#[derive(Debug)]
pub(super) struct Meters {
    meters: BoundedCache<Arc<str>, Arc<MeterCell>>,
    flush_now: tokio::sync::Notify,
}

impl Meters {
    pub fn new(capacity: usize) -> Self {
        Meters { meters: BoundedCache::new(capacity), flush_now: tokio::sync::Notify::new() }
    }

    fn meter(&self, key_id: &str) -> Arc<MeterCell> {
        if let Some(meter) = self.meters.get(key_id) {
            return meter;
        }
        let (meter, inserted) =
            self.meters.get_or_insert(Arc::from(key_id), Arc::default(), |meter| !Self::may_go(meter));
        if inserted.over_capacity {
            self.flush_now.notify_one();
        }
        meter
    }

    /// Whether a meter may be forgotten: no verify holds it (under the shard's write lock, where this is asked,
    /// no one can take a new hold), and it has nothing the store lacks. Leased tokens it holds are given up.
    fn may_go(meter: &Arc<MeterCell>) -> bool {
        Arc::strong_count(meter) <= 1 && meter.lock().is_idle()
    }

    pub fn stats(&self) -> super::bounded::CacheStats {
        self.meters.stats()
    }

    /// The usage of a key counted here and not yet written: (counted since the last flush, being flushed).
    pub fn pending(&self, key_id: &str) -> (Pending, Pending) {
        self.meters
            .get(key_id)
            .map(|m| {
                let meter = m.lock();
                (meter.pending, meter.flushing)
            })
            .unwrap_or_default()
    }

    /// Takes every key's pending usage for a flush, leaving zeros; the meters report it until `flushed`.
    fn drain(&self) -> Vec<(String, Pending)> {
        self.meters
            .entries()
            .into_iter()
            .filter_map(|(id, meter)| {
                let mut meter = meter.lock();
                (!meter.pending.is_empty() && meter.flushing.is_empty()).then(|| {
                    let taken = meter.pending;
                    meter.pending = Pending { quota_day: taken.quota_day, ..Pending::default() };
                    meter.flushing = taken;
                    (id.to_string(), taken)
                })
            })
            .collect()
    }

    /// Ends a flush: written, the usage it took is forgotten here; refused, it goes back under what was counted
    /// since. The meters are there still: a meter with usage being flushed is not evicted.
    fn flushed(&self, batch: &[(String, Pending)], written: bool) {
        for (id, _) in batch {
            let meter = self.meter(id);
            let mut meter = meter.lock();
            let taken = std::mem::take(&mut meter.flushing);
            if !written {
                meter.pending.merge(&taken);
            }
        }
    }
}

/// A lease a call waits for before it can be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Tokens { limit: RateLimit, want: u64 },
    Uses { quota: DailyQuota, day: i64, want: u64, owed: u64 },
}

/// What the store answered a lease.
enum Leased {
    Tokens(BucketGrant),
    Uses(QuotaGrant),
}

impl Meter {
    /// While the store is unreachable, limits are applied here alone; it is asked again after this long.
    const OFFLINE_MICROS: i64 = 250_000;

    fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.flushing.is_empty()
            && self.quota.as_ref().is_none_or(|quota| quota.owed() == 0)
    }

    fn offline(&self, now: Timestamp) -> bool {
        self.offline_until.is_some_and(|until| now < until)
    }

    /// Applies the key's rate limit, then its quota (a throttled call uses no quota), and counts the call; or
    /// says which lease the call needs first. Nothing is taken or counted when a lease is needed.
    fn admit(
        &mut self,
        view: &KeyView,
        code: VerifyCode,
        now: Timestamp,
    ) -> Result<(VerifyCode, Option<Decision>), Need> {
        let offline = self.offline(now);
        if !offline {
            self.offline_until = None;
            self.fallback = None;
        }
        self.sync_limits(view, now);
        if code == VerifyCode::Valid && !offline {
            let rate_allows = match &self.rate {
                Some(share) => match share.lease_needed(now) {
                    Some(want) => return Err(Need::Tokens { limit: share.limit(), want }),
                    None => share.held() > 0,
                },
                None => true,
            };
            if rate_allows
                && let Some(share) = &mut self.quota
                && let Some((day, want, owed)) = share.lease_needed(now)
            {
                return Err(Need::Uses { quota: share.quota(), day, want, owed });
            }
        }
        let mut rate = None;
        let mut code = code;
        if code == VerifyCode::Valid
            && let Some(limit) = view.settings.rate_limit
        {
            let decision = if offline {
                self.fallback_bucket(limit, now).map(|bucket| bucket.try_take(now))
            } else {
                match self.rate.as_mut().map(|share| share.try_take(now)) {
                    Some(Take::Allowed(decision) | Take::Refused(decision)) => Some(decision),
                    Some(Take::Lease(want)) => return Err(Need::Tokens { limit, want }),
                    None => None,
                }
            };
            if let Some(decision) = decision {
                if !decision.allowed {
                    code = VerifyCode::RateLimited;
                }
                rate = Some(decision);
            }
        }
        if code == VerifyCode::Valid
            && let Some(share) = &mut self.quota
        {
            let decision = if offline {
                share.use_offline(now)
            } else {
                match share.try_use(now) {
                    Use::Allowed(decision) | Use::Refused(decision) => decision,
                    Use::Lease { day, want, owed } => {
                        return Err(Need::Uses { quota: share.quota(), day, want, owed });
                    }
                }
            };
            if decision.allowed {
                let day = utc_day(now);
                if self.pending.quota_day != day {
                    self.pending.quota_day = day;
                    self.pending.quota_used = 0;
                }
                self.pending.quota_used += 1;
            } else {
                code = VerifyCode::QuotaExceeded;
            }
        }
        self.count(code, now);
        Ok((code, rate))
    }

    fn count(&mut self, code: VerifyCode, now: Timestamp) {
        if code == VerifyCode::Valid {
            self.pending.requests += 1;
        } else {
            self.pending.denied += 1;
        }
        self.pending.last_used_at = self.pending.last_used_at.max(now.micros());
    }

    /// Shares for the key's current limits: a changed limit or quota starts a new share (what the old one held is
    /// given up; the shared state in the store carries on).
    fn sync_limits(&mut self, view: &KeyView, now: Timestamp) {
        match view.settings.rate_limit {
            Some(limit) if limit.validate().is_ok() => {
                if self.rate.as_ref().is_none_or(|share| share.limit() != limit) {
                    self.rate = Some(BucketShare::new(limit));
                }
            }
            _ => self.rate = None,
        }
        match view.daily_quota {
            Some(quota) => {
                if self.quota.as_ref().is_none_or(|share| share.quota() != quota) {
                    self.quota = Some(QuotaShare::new(quota, now));
                }
            }
            None => self.quota = None,
        }
    }

    fn fallback_bucket(&mut self, limit: RateLimit, now: Timestamp) -> Option<&mut TokenBucket> {
        if self.fallback.as_ref().is_none_or(|bucket| bucket.limit() != limit) {
            self.fallback = TokenBucket::new(limit, now).ok();
        }
        self.fallback.as_mut()
    }

    /// Takes what the store answered a lease. An unreachable store makes this meter apply the limits on its own
    /// for a moment (fail open: verify keeps answering from memory, as it does for everything else then).
    fn leased(&mut self, need: Need, leased: crate::store::Result<Leased>, now: Timestamp) -> Result<()> {
        match (need, leased) {
            (Need::Tokens { limit, want }, Ok(Leased::Tokens(grant))) => {
                if let Some(share) = self.rate.as_mut().filter(|share| share.limit() == limit) {
                    share.leased(grant, want, now);
                }
            }
            (Need::Uses { quota, owed, .. }, Ok(Leased::Uses(grant))) => {
                if let Some(share) = self.quota.as_mut().filter(|share| share.quota() == quota) {
                    share.leased(grant, owed);
                }
            }
            (_, Err(e)) if e.is_unavailable() => {
                self.offline_until = Some(Timestamp(now.0.saturating_add(Self::OFFLINE_MICROS)));
            }
            (_, Err(e)) => return Err(e.into()),
            (_, Ok(_)) => return Err(Error::Internal("a lease answered for another limit".into())),
        }
        Ok(())
    }
}

impl Services {
    /// Decides the meters' part of a verify, leasing from the store's shared counters when this process's batch
    /// ran out. One lease per key at a time: calls that find the batch used up meanwhile wait for it.
    async fn admit(
        &self,
        cell: &MeterCell,
        view: &KeyView,
        code: VerifyCode,
    ) -> Result<(VerifyCode, Option<Decision>)> {
        /// A call whose leases keep being used up by other calls before it gets one is refused after this many.
        const MAX_LEASES: usize = 4;
        for _ in 0..MAX_LEASES {
            if let Ok(decided) = cell.lock().admit(view, code, self.now()) {
                return Ok(decided);
            }
            let _leasing = cell.leasing.lock().await;
            let now = self.now();
            let need = match cell.lock().admit(view, code, now) {
                Ok(decided) => return Ok(decided),
                Err(need) => need,
            };
            let leased = match need {
                Need::Tokens { limit, want } => {
                    self.store.lease_tokens(&view.id, limit, now, want).await.map(Leased::Tokens)
                }
                Need::Uses { quota, day, want, owed } => {
                    self.store.lease_quota(&view.id, quota, day, want, owed).await.map(Leased::Uses)
                }
            };
            cell.lock().leased(need, leased, now)?;
        }
        let mut meter = cell.lock();
        let code = if view.settings.rate_limit.is_some() {
            VerifyCode::RateLimited
        } else {
            VerifyCode::QuotaExceeded
        };
        meter.count(code, self.now());
        Ok((code, None))
    }
}

impl Services {
    /// Checks a presented secret. Malformed secrets are NOT_FOUND without a store lookup; known keys are
    /// answered from memory after the first lookup. Every answer is counted by its code (see stats.rs).
    pub async fn verify_api_key(&self, request: VerifyRequest<'_>) -> Result<Verdict> {
        let verdict = self.verdict_of(request).await;
        self.counts.verified(verdict.as_ref().ok().map(|v| v.code));
        verdict
    }

    async fn verdict_of(&self, request: VerifyRequest<'_>) -> Result<Verdict> {
        let not_found = Verdict { code: VerifyCode::NotFound, key: None, rate: None };
        if api_key_secret::parse(request.secret).is_err() {
            return Ok(not_found);
        }
        let hash = secret_digest(request.secret);
        let cached = self.api_keys_read.get(&hash);
        let view = match cached {
            Some(view) if self.memory_is_current() => view,
            None if self.api_keys_read.is_absent(&hash) => return Ok(not_found),
            cached => {
                let generation = self.api_keys_read.generation();
                match self.store.api_key_by_secret(&hex(&hash)).await {
                    Ok(Some(found)) => {
                        let view = Arc::new(KeyView::from_row(found.key, hash, found.secret_expires_at)?);
                        self.api_keys_read.fill(generation, view.clone());
                        view
                    }
                    Ok(None) => {
                        self.api_keys_read.remember_absent(hash);
                        return Ok(not_found);
                    }
                    // The store is unreachable, so nothing can have been revoked since: memory answers.
                    Err(e) => match cached {
                        Some(view) if e.is_unavailable() => view,
                        _ => return Err(e.into()),
                    },
                }
            }
        };
        if !hashes_equal(view.secret_hash, hash) || request.org_id.is_some_and(|org| org != view.org_id) {
            return Ok(not_found);
        }
        let code = view.check(&request, self.now());
        let meter = self.meters.meter(&view.id);
        let (code, rate) = self.admit(&meter, &view, code).await?;
        Ok(Verdict { code, key: Some(view), rate })
    }

    /// Writes the usage counted since the last flush. A batch the store refuses is kept for the next try.
    pub async fn flush_usage(&self) -> Result<usize> {
        let flushed = self.write_usage().await;
        self.counts.flushed(&flushed);
        flushed
    }

    async fn write_usage(&self) -> Result<usize> {
        let batch = self.meters.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        let deltas: Vec<UsageDelta> = batch
            .iter()
            .map(|(id, p)| UsageDelta {
                key_id: id.clone(),
                requests: p.requests,
                denied: p.denied,
                last_used_at: p.last_used_at,
                quota_day: p.quota_day,
                quota_used: p.quota_used,
            })
            .collect();
        let written = self.store.record_usage(&deltas).await;
        self.meters.flushed(&batch, written.is_ok());
        written?;
        Ok(batch.len())
    }

    /// Flushes usage every `interval` until `stop` fires (or its sender drops). A flush in progress finishes
    /// first: aborting one would lose the batch it took. The caller flushes once more after this ends.
    pub fn flush_usage_every(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    // More meters hold unflushed usage than the capacity: flushing lets them go.
                    () = self.meters.flush_now.notified() => {}
                    _ = &mut stop => return,
                }
                match self.flush_usage().await {
                    Ok(_) => {}
                    // The circuit logged the outage once; usage waits in memory until the store is back.
                    Err(Error::Unavailable(_)) => {
                        tracing::debug!("the store is unreachable; keeping API key usage for the next flush")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write API key usage; keeping it for the next try")
                    }
                }
            }
        })
    }

    /// The usage of a key: what the store holds plus what this process counted since its last flush.
    pub(super) fn usage_with_pending(&self, key_id: &str, flushed: &UsageRow) -> Usage {
        let (pending, flushing) = self.meters.pending(key_id);
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let last = flushed.last_used_at.max(pending.last_used_at).max(flushing.last_used_at);
        Usage {
            total_requests: count(flushed.total_requests) + pending.requests + flushing.requests,
            total_denied: count(flushed.total_denied) + pending.denied + flushing.denied,
            last_used_at: (last > 0).then_some(Timestamp(last)),
        }
    }
}

/// A key's usage as reads report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub total_requests: u64,
    pub total_denied: u64,
    pub last_used_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RowDetails;

    const NOW: Timestamp = Timestamp(1_764_000_000_000_000);

    fn view(settings: Settings, origin: Origin, secret_expires_at: Option<i64>) -> KeyView {
        let row = ApiKeyRow {
            id: "k".into(),
            app_id: String::new(),
            environment: "live".into(),
            status: "active".into(),
            prefix: "km_live_abcd".into(),
            last_four: "wxyz".into(),
            origin: serde_json::to_string(&origin).unwrap_or_default(),
            settings: serde_json::to_string(&settings).unwrap_or_default(),
            created_by: "c".into(),
            deleted_at: None,
            details: RowDetails { org_id: "o".into(), sequence: 1, created_at: 1, changed_at: 1 },
            usage: UsageRow::default(),
        };
        KeyView::from_row(row, [7; 32], secret_expires_at).expect("valid row")
    }

    fn key(id: &str, hash: u8) -> Arc<KeyView> {
        let mut view = view(settings(), Origin::default(), None);
        (view.id, view.secret_hash) = (id.into(), [hash; 32]);
        Arc::new(view)
    }

    /// The store's shared counters, as the domain computes them.
    #[derive(Default)]
    struct Shared {
        bucket: Option<crate::domain::lease::SharedBucket>,
        quota: Option<crate::domain::lease::SharedQuota>,
        leases: usize,
    }

    impl Shared {
        /// A verify's meter part, leasing as the service does.
        fn admit(
            &mut self,
            meter: &mut Meter,
            view: &KeyView,
            code: VerifyCode,
            now: Timestamp,
        ) -> VerifyCode {
            use crate::domain::lease::{SharedBucket, SharedQuota};
            loop {
                let need = match meter.admit(view, code, now) {
                    Ok((code, _)) => return code,
                    Err(need) => need,
                };
                self.leases += 1;
                let leased = match need {
                    Need::Tokens { limit, want } => {
                        let grant = SharedBucket::lease(self.bucket, limit, now, want);
                        self.bucket = Some(grant.bucket);
                        Leased::Tokens(grant)
                    }
                    Need::Uses { quota, day, want, owed } => {
                        let grant = SharedQuota::lease(self.quota, quota, day, want, owed);
                        self.quota = Some(grant.counter);
                        Leased::Uses(grant)
                    }
                };
                meter.leased(need, Ok(leased), now).expect("lease taken");
            }
        }
    }

    fn settings() -> Settings {
        Settings {
            title: "t".into(),
            scopes: vec!["a:read".into(), "a:write".into()],
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            ..Settings::default()
        }
    }

    fn request<'a>(scopes: &'a [String], ip: &str, accept_test_keys: bool) -> VerifyRequest<'a> {
        VerifyRequest {
            secret: "",
            client_ip: ip.parse().ok(),
            required_scopes: scopes,
            accept_test_keys,
            org_id: None,
        }
    }

    #[test]
    fn checks_report_the_first_reason_in_order() {
        let scopes = ["a:read".to_owned()];
        let ok = request(&scopes, "10.1.2.3", false);
        assert_eq!(view(settings(), Origin::default(), None).check(&ok, NOW), VerifyCode::Valid);
        let revoked = Settings { status: KeyStatus::Revoked, ..settings() };
        assert_eq!(view(revoked, Origin::default(), None).check(&ok, NOW), VerifyCode::Revoked);
        assert_eq!(
            view(settings(), Origin::default(), Some(NOW.micros())).check(&ok, NOW),
            VerifyCode::Revoked
        );
        assert_eq!(
            view(settings(), Origin::default(), Some(NOW.micros() + 1)).check(&ok, NOW),
            VerifyCode::Valid
        );
        let expiring = Origin { expires_at: Some(NOW.micros()), ..Origin::default() };
        assert_eq!(view(settings(), expiring.clone(), None).check(&ok, NOW), VerifyCode::Expired);
        assert_eq!(view(settings(), expiring, None).check(&ok, Timestamp(NOW.0 - 1)), VerifyCode::Valid);
        let inactive = Settings { status: KeyStatus::Inactive, ..settings() };
        assert_eq!(view(inactive, Origin::default(), None).check(&ok, NOW), VerifyCode::Disabled);
        let test = Origin { environment: Environment::Test, ..Origin::default() };
        assert_eq!(view(settings(), test.clone(), None).check(&ok, NOW), VerifyCode::TestKeyNotAllowed);
        assert_eq!(
            view(settings(), test, None).check(&request(&scopes, "10.1.2.3", true), NOW),
            VerifyCode::Valid
        );
        let outside = request(&scopes, "11.0.0.1", false);
        assert_eq!(view(settings(), Origin::default(), None).check(&outside, NOW), VerifyCode::IpNotAllowed);
        let no_ip = request(&scopes, "", false);
        assert_eq!(view(settings(), Origin::default(), None).check(&no_ip, NOW), VerifyCode::IpNotAllowed);
        let anywhere = Settings { allowed_cidrs: vec![], ..settings() };
        assert_eq!(view(anywhere, Origin::default(), None).check(&no_ip, NOW), VerifyCode::Valid);
        let more = ["a:read".to_owned(), "b:read".to_owned()];
        assert_eq!(
            view(settings(), Origin::default(), None).check(&request(&more, "10.0.0.1", false), NOW),
            VerifyCode::InsufficientScopes
        );
    }

    #[test]
    fn the_rate_limit_comes_before_the_quota_and_everything_is_counted() {
        let limited = Settings {
            rate_limit: Some(RateLimit { per_second: 1, burst: 2 }),
            daily_quota: Some(3),
            ..settings()
        };
        let key = view(limited, Origin::default(), None);
        let (mut meter, mut shared) = (Meter::default(), Shared::default());
        let codes: Vec<VerifyCode> =
            (0..3).map(|_| shared.admit(&mut meter, &key, VerifyCode::Valid, NOW)).collect();
        assert_eq!(codes, [VerifyCode::Valid, VerifyCode::Valid, VerifyCode::RateLimited]);
        // The refusal was decided without a lease that could not succeed: 2 token leases, 2 quota leases, 1
        // token lease that found the bucket empty.
        assert_eq!(shared.leases, 5);
        assert_eq!(shared.admit(&mut meter, &key, VerifyCode::Valid, NOW), VerifyCode::RateLimited);
        assert_eq!(shared.leases, 5, "refused from memory until the next token");
        // One second later one token is back; the quota of 3 allows one more call, then refuses.
        let later = Timestamp(NOW.0 + 1_000_000);
        assert_eq!(shared.admit(&mut meter, &key, VerifyCode::Valid, later), VerifyCode::Valid);
        let much_later = Timestamp(NOW.0 + 10_000_000);
        assert_eq!(shared.admit(&mut meter, &key, VerifyCode::Valid, much_later), VerifyCode::QuotaExceeded);
        assert_eq!(shared.admit(&mut meter, &key, VerifyCode::Disabled, much_later), VerifyCode::Disabled);
        assert_eq!((meter.pending.requests, meter.pending.denied, meter.pending.quota_used), (3, 4, 3));
    }

    #[test]
    fn without_the_store_a_meter_applies_the_limits_alone_and_owes_the_quota() {
        let limited = Settings {
            rate_limit: Some(RateLimit { per_second: 1, burst: 2 }),
            daily_quota: Some(10),
            ..settings()
        };
        let key = view(limited, Origin::default(), None);
        let mut meter = Meter::default();
        let Err(need) = meter.admit(&key, VerifyCode::Valid, NOW) else { panic!("a lease first") };
        let gone = crate::store::StoreError::Unavailable("gone".into());
        meter.leased(need, Err(gone), NOW).expect("an outage is no error");
        let codes: Vec<VerifyCode> =
            (0..3).map(|_| meter.admit(&key, VerifyCode::Valid, NOW).expect("decided alone").0).collect();
        assert_eq!(codes, [VerifyCode::Valid, VerifyCode::Valid, VerifyCode::RateLimited]);
        assert_eq!(meter.quota.as_ref().map(QuotaShare::owed), Some(2));
        assert!(!meter.is_idle(), "what the store was not told of keeps the meter");
        // A moment later the store is asked again.
        let later = Timestamp(NOW.0 + Meter::OFFLINE_MICROS);
        assert!(matches!(meter.admit(&key, VerifyCode::Valid, later), Err(Need::Tokens { .. })));
    }

    #[test]
    fn meters_with_usage_the_store_lacks_are_not_evicted() {
        let meters = Meters::new(16);
        let key = view(settings(), Origin::default(), None);
        let mut shared = Shared::default();
        for i in 0..16 {
            let meter = meters.meter(&format!("busy-{i}"));
            shared.admit(&mut meter.lock(), &key, VerifyCode::Valid, NOW);
        }
        let held = meters.meter("busy-0");
        // Every meter holds usage: the new ones make the cache grow (and ask for a flush).
        for i in 0..4 {
            let meter = meters.meter(&format!("new-{i}"));
            shared.admit(&mut meter.lock(), &key, VerifyCode::Valid, NOW);
        }
        assert_eq!(meters.meters.len(), 20);
        let batch = meters.drain();
        assert_eq!(batch.len(), 20, "no usage was lost");
        assert_eq!(meters.pending("busy-3").1.requests, 1, "what is being flushed is still reported");
        meters.flushed(&batch, true);
        assert_eq!(meters.pending("busy-3"), Default::default());
        drop(held);
        // Flushed, they may go: the cache shrinks back as new meters come.
        for i in 0..100 {
            meters.meter(&format!("later-{i}"));
        }
        assert!(meters.meters.len() <= 20, "{}", meters.meters.len());
    }

    #[test]
    fn the_api_key_cache_is_bounded_and_drops_a_key_without_a_scan() {
        let cache = ApiKeyCache::new(50);
        for i in 0..200_u8 {
            cache.fill(cache.generation(), key(&format!("k{i}"), i));
        }
        assert_eq!(cache.by_hash.len(), 50);
        let indexed: usize =
            cache.by_key.lock().unwrap_or_else(PoisonError::into_inner).values().map(Vec::len).sum();
        assert_eq!(indexed, 50, "evicted entries leave the index too");
        // A key with its current and a rolled secret: a change drops both, and nothing else.
        cache.fill(cache.generation(), key("rolled", 250));
        assert!(cache.get(&[250; 32]).is_some(), "read once, so the next fill does not evict it");
        cache.fill(cache.generation(), key("rolled", 251));
        assert!(cache.get(&[251; 32]).is_some());
        let before = cache.by_hash.len();
        cache.invalidate("apikey", "rolled");
        assert!(cache.get(&[250; 32]).is_none() && cache.get(&[251; 32]).is_none());
        assert_eq!(cache.by_hash.len(), before - 2);
        // A read that started before the change does not fill after it.
        let generation = cache.generation();
        cache.invalidate("apikey", "other");
        cache.fill(generation, key("late", 252));
        assert!(cache.get(&[252; 32]).is_none());
    }

    #[test]
    fn unknown_secrets_are_remembered_within_a_bound() {
        let cache = ApiKeyCache::new(10);
        assert!(!cache.is_absent(&[1; 32]));
        cache.remember_absent([1; 32]);
        assert!(cache.is_absent(&[1; 32]) && !cache.is_absent(&[2; 32]));
        for i in 0..ApiKeyCache::MAX_ABSENT as u32 + 100 {
            let mut hash = [0; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            cache.remember_absent(hash);
        }
        assert!(cache.absent.len() <= ApiKeyCache::MAX_ABSENT, "{}", cache.absent.len());
    }

    #[test]
    fn a_refused_flush_is_merged_back() {
        let mut now = Pending { requests: 1, denied: 0, last_used_at: 5, quota_day: 7, quota_used: 1 };
        now.merge(&Pending { requests: 2, denied: 1, last_used_at: 9, quota_day: 7, quota_used: 2 });
        assert_eq!(now, Pending { requests: 3, denied: 1, last_used_at: 9, quota_day: 7, quota_used: 3 });
    }
}
