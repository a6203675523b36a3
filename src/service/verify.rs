//! VerifyApiKey, answered from memory: keys by the hash of their secret (filled from the store on a miss,
//! dropped when their aggregate changes), and per-key meters (token bucket, daily quota, usage not yet
//! flushed). A verify never waits for a database write: usage goes to the store in batches.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use crate::{
    crypto::{
        api_key_secret,
        secret::{hash_secret, hashes_equal},
    },
    domain::{
        AggregateType, Timestamp,
        api_key::{Environment, KeyStatus, Origin, Settings},
        cidr::AllowList,
        rate_limit::{DailyQuota, Decision, QuotaCounter, RateLimit, TokenBucket},
    },
    store::{ApiKeyRow, UsageDelta, UsageRow},
};

use super::{Error, Result, Services};

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
    /// The hash this entry was found by, and when that secret stops working (None: the current secret).
    secret_hash: String,
    secret_expires_at: Option<i64>,
    /// The quota count last flushed, to carry on from after a restart.
    flushed: UsageRow,
}

impl KeyView {
    fn from_row(row: ApiKeyRow, secret_hash: String, secret_expires_at: Option<i64>) -> Result<KeyView> {
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
            flushed: row.usage,
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

/// Keys by the hash of their secret. This process's writes drop a key's entries before the write returns;
/// other processes' writes arrive through the store's change feed.
#[derive(Debug, Default)]
pub(super) struct ApiKeyCache(RwLock<CacheEntries>);

#[derive(Debug, Default)]
struct CacheEntries {
    by_hash: HashMap<String, Arc<KeyView>>,
    /// Well-formed secrets the store does not know, and when it said so. A secret is 256 random bits: one that was
    /// never issued will not be issued later, so remembering its absence is safe, and it spares the store a query
    /// per guess (the checksum is public, so anyone can make well-formed secrets).
    absent: HashMap<String, std::time::Instant>,
    /// Bumped by every invalidation: a store read that started before one must not fill the cache after it.
    generation: u64,
}

impl ApiKeyCache {
    /// Bounds memory: past this many secrets the cache starts over.
    const MAX_ENTRIES: usize = 100_000;
    /// Absent secrets are remembered this long, and at most this many.
    const ABSENT_FOR: Duration = Duration::from_secs(30);
    const MAX_ABSENT: usize = 10_000;

    fn is_absent(&self, hash: &str) -> bool {
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        entries.absent.get(hash).is_some_and(|since| since.elapsed() < Self::ABSENT_FOR)
    }

    fn remember_absent(&self, hash: String) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.absent.len() >= Self::MAX_ABSENT {
            entries.absent.retain(|_, since| since.elapsed() < Self::ABSENT_FOR);
            if entries.absent.len() >= Self::MAX_ABSENT {
                entries.absent.clear();
            }
        }
        entries.absent.insert(hash, std::time::Instant::now());
    }

    fn get(&self, hash: &str) -> Option<Arc<KeyView>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).by_hash.get(hash).cloned()
    }

    fn generation(&self) -> u64 {
        self.0.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    fn fill(&self, generation: u64, view: Arc<KeyView>) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        if entries.by_hash.len() >= Self::MAX_ENTRIES {
            entries.by_hash.clear();
        }
        entries.by_hash.insert(view.secret_hash.clone(), view);
    }

    /// Forgets what a change to one aggregate may have made stale.
    pub fn invalidate(&self, aggregate_type: &str, id: &str) {
        if aggregate_type != AggregateType::ApiKey.as_str() {
            return;
        }
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        entries.by_hash.retain(|_, view| view.id != id);
    }

    pub fn clear(&self) {
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        entries.generation += 1;
        entries.by_hash.clear();
    }
}

/// One key's limits and the usage not yet written to the store. Survives cache invalidation: changing a key
/// must not refill its bucket or forget its usage.
#[derive(Debug, Default)]
struct Meter {
    bucket: Option<TokenBucket>,
    quota: Option<QuotaCounter>,
    pending: Pending,
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

/// The meters of every key this process has verified.
#[derive(Debug, Default)]
pub(super) struct Meters(RwLock<HashMap<String, Arc<Mutex<Meter>>>>);

impl Meters {
    fn meter(&self, key_id: &str) -> Arc<Mutex<Meter>> {
        if let Some(meter) = self.0.read().unwrap_or_else(PoisonError::into_inner).get(key_id) {
            return meter.clone();
        }
        self.0.write().unwrap_or_else(PoisonError::into_inner).entry(key_id.to_owned()).or_default().clone()
    }

    /// The usage of a key counted here and not yet flushed.
    pub fn pending(&self, key_id: &str) -> Pending {
        let meters = self.0.read().unwrap_or_else(PoisonError::into_inner);
        meters
            .get(key_id)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner).pending)
            .unwrap_or_default()
    }

    /// Takes every key's pending usage, leaving zeros.
    fn drain(&self) -> Vec<(String, Pending)> {
        let meters = self.0.read().unwrap_or_else(PoisonError::into_inner);
        meters
            .iter()
            .filter_map(|(id, meter)| {
                let mut meter = meter.lock().unwrap_or_else(PoisonError::into_inner);
                (!meter.pending.is_empty()).then(|| {
                    let taken = meter.pending;
                    meter.pending = Pending { quota_day: taken.quota_day, ..Pending::default() };
                    (id.clone(), taken)
                })
            })
            .collect()
    }

    /// Above this many meters, flushes forget the idle ones.
    const PRUNE_ABOVE: usize = 10_000;

    /// When there are more than `above` meters, forgets those that hold nothing a new meter would not: no
    /// unflushed usage, no quota count, and no bucket or a full one (a new bucket starts full). Keeps memory to
    /// the keys in recent use. A meter some verify holds right now is kept: under the write lock no one can take
    /// a new hold, so the count is exact.
    fn prune(&self, now: Timestamp, above: usize) {
        let mut meters = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if meters.len() <= above {
            return;
        }
        meters.retain(|_, meter| {
            Arc::strong_count(meter) > 1 || !meter.lock().unwrap_or_else(PoisonError::into_inner).is_idle(now)
        });
    }

    fn restore(&self, batch: &[(String, Pending)]) {
        for (id, pending) in batch {
            self.meter(id).lock().unwrap_or_else(PoisonError::into_inner).pending.merge(pending);
        }
    }
}

impl Meter {
    fn is_idle(&mut self, now: Timestamp) -> bool {
        self.pending.is_empty() && self.quota.is_none() && self.bucket.as_mut().is_none_or(|b| b.is_full(now))
    }

    /// Applies the key's rate limit, then its quota (a throttled call uses no quota), and counts the call.
    fn admit(&mut self, view: &KeyView, code: VerifyCode, now: Timestamp) -> (VerifyCode, Option<Decision>) {
        let mut rate = None;
        let mut code = code;
        if code == VerifyCode::Valid
            && let Some(bucket) = self.bucket_for(view.settings.rate_limit, now)
        {
            let decision = bucket.try_take(now);
            if !decision.allowed {
                code = VerifyCode::RateLimited;
            }
            rate = Some(decision);
        }
        if code == VerifyCode::Valid
            && let Some(counter) = self.quota_for(view, now)
        {
            let (allowed, day) = (counter.try_use(now).allowed, counter.day());
            if allowed {
                if self.pending.quota_day != day {
                    self.pending.quota_day = day;
                    self.pending.quota_used = 0;
                }
                self.pending.quota_used += 1;
            } else {
                code = VerifyCode::QuotaExceeded;
            }
        }
        if code == VerifyCode::Valid {
            self.pending.requests += 1;
        } else {
            self.pending.denied += 1;
        }
        self.pending.last_used_at = self.pending.last_used_at.max(now.micros());
        (code, rate)
    }

    /// The bucket for the key's current limit: a changed limit starts a new, full bucket.
    fn bucket_for(&mut self, limit: Option<RateLimit>, now: Timestamp) -> Option<&mut TokenBucket> {
        let Some(limit) = limit else {
            self.bucket = None;
            return None;
        };
        if self.bucket.as_ref().is_none_or(|bucket| bucket.limit() != limit) {
            self.bucket = TokenBucket::new(limit, now).ok();
        }
        self.bucket.as_mut()
    }

    /// The quota counter for the key's current quota, carrying on from the count last flushed (by any process
    /// sharing the store) when this process has not counted yet.
    fn quota_for(&mut self, view: &KeyView, now: Timestamp) -> Option<&mut QuotaCounter> {
        let Some(quota) = view.daily_quota else {
            self.quota = None;
            return None;
        };
        match &mut self.quota {
            Some(counter) if counter.quota() == quota => {}
            Some(counter) => *counter = QuotaCounter::restore(quota, counter.count(), counter.day()),
            None => {
                let flushed = &view.flushed;
                let counter = QuotaCounter::restore(
                    quota,
                    u64::try_from(flushed.quota_count).unwrap_or(0),
                    flushed.quota_day,
                );
                self.quota =
                    Some(if flushed.quota_day == 0 { QuotaCounter::new(quota, now) } else { counter });
            }
        }
        self.quota.as_mut()
    }
}

impl Services {
    /// Checks a presented secret. Malformed secrets are NOT_FOUND without a store lookup; known keys are
    /// answered from memory after the first lookup.
    pub async fn verify_api_key(&self, request: VerifyRequest<'_>) -> Result<Verdict> {
        let not_found = Verdict { code: VerifyCode::NotFound, key: None, rate: None };
        if api_key_secret::parse(request.secret).is_err() {
            return Ok(not_found);
        }
        let hash = hash_secret(request.secret);
        let cached = self.api_keys_read.get(&hash);
        let view = match cached {
            Some(view) if self.memory_is_current() => view,
            None if self.api_keys_read.is_absent(&hash) => return Ok(not_found),
            cached => {
                let generation = self.api_keys_read.generation();
                match self.store.api_key_by_secret(&hash).await {
                    Ok(Some(found)) => {
                        let view =
                            Arc::new(KeyView::from_row(found.key, hash.clone(), found.secret_expires_at)?);
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
        if !hashes_equal(&view.secret_hash, &hash) || request.org_id.is_some_and(|org| org != view.org_id) {
            return Ok(not_found);
        }
        let now = self.now();
        let code = view.check(&request, now);
        let meter = self.meters.meter(&view.id);
        let (code, rate) = meter.lock().unwrap_or_else(PoisonError::into_inner).admit(&view, code, now);
        Ok(Verdict { code, key: Some(view), rate })
    }

    /// Writes the usage counted since the last flush. A batch the store refuses is kept for the next try.
    pub async fn flush_usage(&self) -> Result<usize> {
        let batch = self.meters.drain();
        if batch.is_empty() {
            self.meters.prune(self.now(), Meters::PRUNE_ABOVE);
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
        if let Err(e) = self.store.record_usage(&deltas).await {
            self.meters.restore(&batch);
            return Err(e.into());
        }
        self.meters.prune(self.now(), Meters::PRUNE_ABOVE);
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
        let pending = self.meters.pending(key_id);
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let last = flushed.last_used_at.max(pending.last_used_at);
        Usage {
            total_requests: count(flushed.total_requests) + pending.requests,
            total_denied: count(flushed.total_denied) + pending.denied,
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
        KeyView::from_row(row, "h".into(), secret_expires_at).expect("valid row")
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
        let mut meter = Meter::default();
        let codes: Vec<VerifyCode> = (0..3).map(|_| meter.admit(&key, VerifyCode::Valid, NOW).0).collect();
        assert_eq!(codes, [VerifyCode::Valid, VerifyCode::Valid, VerifyCode::RateLimited]);
        // One second later one token is back; the quota of 3 allows one more call, then refuses.
        let later = Timestamp(NOW.0 + 1_000_000);
        assert_eq!(meter.admit(&key, VerifyCode::Valid, later).0, VerifyCode::Valid);
        let much_later = Timestamp(NOW.0 + 10_000_000);
        assert_eq!(meter.admit(&key, VerifyCode::Valid, much_later).0, VerifyCode::QuotaExceeded);
        assert_eq!(meter.admit(&key, VerifyCode::Disabled, much_later).0, VerifyCode::Disabled);
        assert_eq!((meter.pending.requests, meter.pending.denied, meter.pending.quota_used), (3, 3, 3));
    }

    #[test]
    fn pruning_forgets_only_meters_a_new_one_would_equal() {
        let meters = Meters::default();
        let limited = Settings { rate_limit: Some(RateLimit { per_second: 1, burst: 1 }), ..settings() };
        let with_quota = Settings { daily_quota: Some(5), ..settings() };
        let (limited, with_quota) =
            (view(limited, Origin::default(), None), view(with_quota, Origin::default(), None));
        for i in 0..=Meters::PRUNE_ABOVE + 4 {
            meters.meter(&format!("idle-{i}"));
        }
        let admit = |id: &str, key: &KeyView| {
            let meter = meters.meter(id);
            meter.lock().unwrap_or_else(PoisonError::into_inner).admit(key, VerifyCode::Valid, NOW);
        };
        admit("pending", &limited);
        admit("quota", &with_quota);
        admit("emptied-bucket", &limited);
        meters.drain();
        admit("pending", &limited);
        let held = meters.meter("held");

        meters.prune(NOW, Meters::PRUNE_ABOVE);
        let left: std::collections::BTreeSet<String> =
            meters.0.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        assert_eq!(left, ["emptied-bucket", "held", "pending", "quota"].map(String::from).into());
        // A second later the bucket is full again: nothing tells that meter from a new one.
        meters.drain();
        drop(held);
        meters.prune(Timestamp(NOW.0 + 1_000_000), 0);
        assert_eq!(
            meters.0.read().unwrap_or_else(PoisonError::into_inner).len(),
            1,
            "only the quota's meter stays"
        );
    }

    #[test]
    fn unknown_secrets_are_remembered_within_a_bound() {
        let cache = ApiKeyCache::default();
        assert!(!cache.is_absent("h"));
        cache.remember_absent("h".into());
        assert!(cache.is_absent("h") && !cache.is_absent("other"));
        for i in 0..ApiKeyCache::MAX_ABSENT {
            cache.remember_absent(format!("guess-{i}"));
        }
        let remembered = cache.0.read().unwrap_or_else(PoisonError::into_inner).absent.len();
        assert!(remembered <= ApiKeyCache::MAX_ABSENT, "{remembered}");
    }

    #[test]
    fn a_refused_flush_is_merged_back() {
        let mut now = Pending { requests: 1, denied: 0, last_used_at: 5, quota_day: 7, quota_used: 1 };
        now.merge(&Pending { requests: 2, denied: 1, last_used_at: 9, quota_day: 7, quota_used: 2 });
        assert_eq!(now, Pending { requests: 3, denied: 1, last_used_at: 9, quota_day: 7, quota_used: 3 });
    }
}
