//! A key's rate limit and daily quota held across processes: the store keeps one token bucket and one day's count
//! per key, and each process leases small batches from them, so that verify calls are answered from memory and
//! the store sees one write per batch, not one per call.
//!
//! Every call a process admits used a token it took from the shared bucket (or a use of the shared count), so all
//! processes together never admit more than one bucket (or quota) allows. What a lease costs is the other way:
//! tokens a process holds and does not use are lost to the others, and tokens a process leased a while ago and
//! uses now come on top of what the bucket gives meanwhile. Batches are therefore small next to the limit (1/40 of
//! the rate, 1/200 of the quota): in any window, processes admit at most one batch each beyond what one bucket
//! allows, and strand at most one batch each. The functions that say what a lease takes (`SharedBucket::lease`,
//! `SharedQuota::lease`) are the reference the store's SQL is tested against.

use super::{
    Timestamp,
    rate_limit::{DailyQuota, Decision, QuotaDecision, RateLimit, utc_day},
};

const PARTS_PER_TOKEN: u64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The shared bucket as the store keeps it: its level in millionths of a token at `updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBucket {
    pub level: u64,
    pub updated: Timestamp,
}

/// What one lease took from the shared bucket, and the bucket after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGrant {
    pub granted: u64,
    pub bucket: SharedBucket,
}

impl SharedBucket {
    /// Time refills the bucket for at most this long: enough to fill the largest bucket at the lowest rate
    /// (MAX_BURST tokens at 1 per second), and short enough that `elapsed × rate` fits a signed 64-bit column.
    pub const MAX_REFILL_MICROS: i64 = 1_000_000_000_000;

    /// A key's bucket capacity in millionths.
    pub fn capacity(limit: RateLimit) -> u64 {
        u64::from(limit.burst) * PARTS_PER_TOKEN
    }

    /// Takes up to `want` whole tokens at `now` from the bucket (`None`: there is none yet, so it is full). The
    /// bucket refills at the limit's rate since it was last updated (never for a clock behind it), up to its size.
    pub fn lease(current: Option<SharedBucket>, limit: RateLimit, now: Timestamp, want: u64) -> BucketGrant {
        let capacity = Self::capacity(limit);
        let bucket = current.unwrap_or(SharedBucket { level: capacity, updated: now });
        let elapsed = (now.0.saturating_sub(bucket.updated.0)).clamp(0, Self::MAX_REFILL_MICROS) as u64;
        let available = (bucket.level + elapsed * u64::from(limit.per_second)).min(capacity);
        let granted = (available / PARTS_PER_TOKEN).min(want);
        BucketGrant {
            granted,
            bucket: SharedBucket {
                level: available - granted * PARTS_PER_TOKEN,
                updated: bucket.updated.max(now),
            },
        }
    }
}

/// What a process does with a call when it has no leased token left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed(Decision),
    Refused(Decision),
    /// Lease this many tokens from the shared bucket, then try again.
    Lease(u64),
}

/// This process's share of one key's shared bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketShare {
    limit: RateLimit,
    /// Whole tokens leased and not used yet.
    tokens: u64,
    /// The shared bucket as the last lease left it.
    seen: Option<SharedBucket>,
    /// No lease before this: the last one found no whole token, and none will be there before then.
    next_lease: Timestamp,
}

impl BucketShare {
    pub fn new(limit: RateLimit) -> Self {
        BucketShare { limit, tokens: 0, seen: None, next_lease: Timestamp(i64::MIN) }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Tokens one lease asks for: 1/40 of a second's rate (at least 1, at most the burst). At most 40 leases per
    /// second per key and process however many calls come, and what three processes strand is under 10 % of
    /// a second's rate.
    pub fn batch(limit: RateLimit) -> u64 {
        u64::from((limit.per_second / 40).clamp(1, limit.burst.max(1)))
    }

    /// Takes a leased token, refuses (the shared bucket had none when last asked, and cannot have one yet), or
    /// says to lease.
    pub fn try_take(&mut self, now: Timestamp) -> Take {
        if self.tokens > 0 {
            self.tokens -= 1;
            return Take::Allowed(self.decision(true));
        }
        if now < self.next_lease {
            Take::Refused(self.decision(false))
        } else {
            Take::Lease(Self::batch(self.limit))
        }
    }

    /// The tokens to lease before a call can be decided: None while a leased token is left, or while the shared
    /// bucket cannot have a batch yet (the call is refused from memory).
    pub fn lease_needed(&self, now: Timestamp) -> Option<u64> {
        (self.tokens == 0 && now >= self.next_lease).then(|| Self::batch(self.limit))
    }

    /// Takes what a lease of `want` tokens returned. When it got fewer, the shared bucket is drained: the next
    /// lease waits until a whole batch is back, so that a drained bucket costs one write per batch too.
    pub fn leased(&mut self, grant: BucketGrant, want: u64, now: Timestamp) {
        self.tokens += grant.granted;
        self.seen = Some(grant.bucket);
        self.next_lease = if grant.granted >= want { now } else { self.time_when(want * PARTS_PER_TOKEN) };
    }

    /// Tokens leased here and not used yet.
    pub fn held(&self) -> u64 {
        self.tokens
    }

    /// What the caller is told: the tokens held here and those the shared bucket had, when it will be full
    /// again, and for a refusal when the next token comes.
    fn decision(&self, allowed: bool) -> Decision {
        let shared = self.seen.map_or(0, |seen| seen.level / PARTS_PER_TOKEN);
        Decision {
            allowed,
            limit: self.limit.burst,
            remaining: u32::try_from(self.tokens + shared).unwrap_or(u32::MAX).min(self.limit.burst),
            reset: self.time_when(SharedBucket::capacity(self.limit)),
            retry_after: (!allowed).then_some(self.next_lease),
        }
    }

    /// When the shared bucket, as last seen, reaches `target` millionths if no one takes from it.
    fn time_when(&self, target: u64) -> Timestamp {
        let Some(seen) = self.seen else { return Timestamp(i64::MIN) };
        let missing = target.saturating_sub(seen.level);
        let micros = missing.div_ceil(u64::from(self.limit.per_second.max(1)));
        Timestamp(seen.updated.0.saturating_add(i64::try_from(micros).unwrap_or(i64::MAX)))
    }
}

/// A key's count of uses on one UTC day, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedQuota {
    pub day: i64,
    pub used: u64,
}

/// What one lease took from the day's quota, and the count after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    pub granted: u64,
    pub counter: SharedQuota,
}

impl SharedQuota {
    /// Adds `owed` (uses a process admitted while it could not reach the store) to the count of `day`, then takes
    /// up to `want` of what is left of the quota. A later day starts from zero; a process whose clock is behind
    /// the store's day counts on the store's day.
    pub fn lease(
        current: Option<SharedQuota>,
        quota: DailyQuota,
        day: i64,
        want: u64,
        owed: u64,
    ) -> QuotaGrant {
        let current = current.unwrap_or(SharedQuota { day, used: 0 });
        let base = if day > current.day { 0 } else { current.used } + owed;
        let granted = quota.limit().saturating_sub(base).min(want);
        QuotaGrant { granted, counter: SharedQuota { day: day.max(current.day), used: base + granted } }
    }
}

/// What a process does with a call for a key with a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Allowed(QuotaDecision),
    Refused(QuotaDecision),
    /// Lease this many uses of `day` (after adding `owed` to its count), then try again.
    Lease {
        day: i64,
        want: u64,
        owed: u64,
    },
}

/// This process's share of one key's daily quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaShare {
    quota: DailyQuota,
    day: i64,
    /// Uses leased and not used yet.
    tokens: u64,
    /// The day's count as the last lease left it, plus what was counted here since without the store.
    seen_used: u64,
    /// Uses admitted while the store could not be reached: added to the shared count by the next lease.
    owed: u64,
    /// The last lease found the quota used up: refuse until the day ends.
    exhausted: bool,
}

impl QuotaShare {
    pub fn new(quota: DailyQuota, now: Timestamp) -> Self {
        QuotaShare { quota, day: utc_day(now), tokens: 0, seen_used: 0, owed: 0, exhausted: false }
    }

    pub fn quota(&self) -> DailyQuota {
        self.quota
    }

    /// Uses one lease asks for: 1/200 of the quota, at least 1. What three processes strand for the day
    /// stays under 2 % of the quota.
    pub fn batch(quota: DailyQuota) -> u64 {
        (quota.limit() / 200).max(1)
    }

    /// Uses admitted here that the shared count does not hold yet.
    pub fn owed(&self) -> u64 {
        self.owed
    }

    /// The lease to take before a call can be decided, as (day, uses wanted, uses owed): None while a leased use
    /// is left or the day's quota is used up.
    pub fn lease_needed(&mut self, now: Timestamp) -> Option<(i64, u64, u64)> {
        self.roll_over(now);
        (self.tokens == 0 && !self.exhausted).then(|| (self.day, Self::batch(self.quota), self.owed))
    }

    pub fn try_use(&mut self, now: Timestamp) -> Use {
        self.roll_over(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return Use::Allowed(self.decision(true));
        }
        if self.exhausted {
            return Use::Refused(self.decision(false));
        }
        Use::Lease { day: self.day, want: Self::batch(self.quota), owed: self.owed }
    }

    /// Takes what a lease returned; `owed` is what that lease added for this process.
    pub fn leased(&mut self, grant: QuotaGrant, owed: u64) {
        if grant.counter.day > self.day {
            (self.day, self.tokens) = (grant.counter.day, 0);
        }
        self.tokens += grant.granted;
        self.owed -= owed.min(self.owed);
        self.seen_used = grant.counter.used;
        self.exhausted = grant.granted == 0;
    }

    /// Counts a use while the store cannot be reached, against the day's count as last seen (plus what was
    /// counted here since): processes cut off from the store may together exceed the quota by what each admits.
    pub fn use_offline(&mut self, now: Timestamp) -> QuotaDecision {
        self.roll_over(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return self.decision(true);
        }
        let allowed = self.seen_used < self.quota.limit();
        if allowed {
            self.seen_used += 1;
            self.owed += 1;
        }
        self.decision(allowed)
    }

    fn roll_over(&mut self, now: Timestamp) {
        let today = utc_day(now);
        if today > self.day {
            *self = QuotaShare::new(self.quota, now);
        }
    }

    fn decision(&self, allowed: bool) -> QuotaDecision {
        QuotaDecision {
            allowed,
            limit: self.quota.limit(),
            remaining: self.quota.limit().saturating_sub(self.seen_used) + self.tokens,
            resets_at: Timestamp(self.day.saturating_add(1).saturating_mul(MICROS_PER_DAY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-01-01T00:00:00Z.
    const NEW_YEAR: Timestamp = Timestamp(1_735_689_600_000_000);
    const SECOND: i64 = 1_000_000;

    fn at(micros: i64) -> Timestamp {
        Timestamp(NEW_YEAR.0 + micros)
    }

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn the_shared_bucket_refills_with_time_up_to_its_size() {
        let l = limit(10, 5);
        let first = SharedBucket::lease(None, l, at(0), 3);
        assert_eq!(
            first,
            BucketGrant { granted: 3, bucket: SharedBucket { level: 2_000_000, updated: at(0) } }
        );
        let emptied = SharedBucket::lease(Some(first.bucket), l, at(0), 10);
        assert_eq!(emptied.granted, 2);
        // 150 ms at 10/s is 1.5 tokens: one whole one is granted, the half stays.
        let later = SharedBucket::lease(Some(emptied.bucket), l, at(150_000), 10);
        assert_eq!(
            later,
            BucketGrant { granted: 1, bucket: SharedBucket { level: 500_000, updated: at(150_000) } }
        );
        // A process whose clock is behind adds nothing and does not move the bucket's time back.
        let behind = SharedBucket::lease(Some(later.bucket), l, at(0), 10);
        assert_eq!(behind, BucketGrant { granted: 0, bucket: later.bucket });
        // Idle for ten years: full, never more.
        let idle = SharedBucket::lease(Some(later.bucket), l, at(10 * 365 * 86_400 * SECOND), 100);
        assert_eq!(idle.granted, 5);
        // A lowered burst caps a level stored under the old one.
        let lowered = SharedBucket::lease(
            Some(SharedBucket { level: 5_000_000, updated: at(0) }),
            limit(10, 2),
            at(0),
            9,
        );
        assert_eq!(lowered.granted, 2);
    }

    #[test]
    fn a_share_takes_leased_tokens_then_leases_then_waits_for_the_next_token() {
        let l = limit(1, 2);
        let mut share = BucketShare::new(l);
        let mut shared = None;
        let mut call = |share: &mut BucketShare, now: Timestamp| loop {
            match share.try_take(now) {
                Take::Lease(want) => {
                    let grant = SharedBucket::lease(shared, l, now, want);
                    shared = Some(grant.bucket);
                    share.leased(grant, want, now);
                    if grant.granted == 0 {
                        // Refused from memory from now on, without asking the store.
                        return share.try_take(now);
                    }
                }
                decided => return decided,
            }
        };
        let Take::Allowed(first) = call(&mut share, at(0)) else { unreachable!() };
        assert_eq!((first.remaining, first.reset), (1, at(SECOND)));
        let Take::Allowed(second) = call(&mut share, at(10)) else { unreachable!() };
        assert_eq!((second.remaining, second.reset), (0, at(2 * SECOND)));
        let Take::Refused(third) = call(&mut share, at(20)) else { unreachable!() };
        assert_eq!((third.remaining, third.retry_after, third.reset), (0, Some(at(SECOND)), at(2 * SECOND)));
        assert!(matches!(share.try_take(at(SECOND - 1)), Take::Refused(_)), "no lease before the next token");
        assert!(matches!(call(&mut share, at(SECOND)), Take::Allowed(_)));
    }

    #[test]
    fn leased_tokens_are_kept_until_used() {
        let l = limit(400, 400);
        let mut share = BucketShare::new(l);
        assert_eq!(share.try_take(at(0)), Take::Lease(10));
        share.leased(SharedBucket::lease(None, l, at(0), 10), 10, at(0));
        assert!(matches!(share.try_take(at(1)), Take::Allowed(_)));
        assert_eq!(share.held(), 9);
        // A key verified now and then leases once per batch, not once per call.
        for call in 2..11 {
            assert!(matches!(share.try_take(at(call * 60 * SECOND)), Take::Allowed(_)), "call {call}");
        }
        assert_eq!(share.try_take(at(3_600 * SECOND)), Take::Lease(10));
    }

    #[test]
    fn batches_follow_the_limit() {
        assert_eq!(BucketShare::batch(limit(1, 1)), 1);
        assert_eq!(BucketShare::batch(limit(50, 50)), 1);
        assert_eq!(BucketShare::batch(limit(100_000, 1_000_000)), 2_500);
        assert_eq!(BucketShare::batch(limit(100_000, 10)), 10);
        let quota = |n| DailyQuota::new(n).unwrap();
        assert_eq!(QuotaShare::batch(quota(3)), 1);
        assert_eq!(QuotaShare::batch(quota(100_000)), 500);
    }

    /// Three processes, each with calls arriving every `gap` µs (offset from each other), share one bucket:
    /// together they admit what one bucket allows, within 10 % of the rate plus one burst.
    #[test]
    fn three_processes_together_stay_within_one_bucket() {
        for (per_second, burst, gap) in [(50, 50, 97), (1_000, 100, 13), (7, 3, 1_001), (100_000, 5_000, 3)] {
            let l = limit(per_second, burst);
            let mut shares = vec![BucketShare::new(l); 3];
            let (mut shared, mut admitted, mut leases) = (None, 0_u64, 0_u64);
            let seconds = 5;
            let mut now = 0;
            while now < seconds * SECOND {
                for (p, share) in shares.iter_mut().enumerate() {
                    let t = at(now + p as i64);
                    loop {
                        match share.try_take(t) {
                            Take::Allowed(_) => admitted += 1,
                            Take::Refused(_) => {}
                            Take::Lease(want) => {
                                let grant = SharedBucket::lease(shared, l, t, want);
                                (shared, leases) = (Some(grant.bucket), leases + 1);
                                share.leased(grant, want, t);
                                continue;
                            }
                        }
                        break;
                    }
                }
                now += gap;
            }
            let allowed = u64::from(burst) + u64::from(per_second) * seconds as u64;
            let floor = u64::from(per_second) * seconds as u64 * 9 / 10;
            assert!(
                (floor..=allowed).contains(&admitted),
                "{per_second}/s burst {burst}: {admitted} of {allowed}"
            );
            // Store writes are bounded by the limit's batches, not by the calls: per process and second, at most
            // one lease a batch, and as many more that find the bucket drained.
            let calls = 3 * (seconds * SECOND / gap) as u64;
            let batches = u64::from(per_second) / BucketShare::batch(l) + 1;
            assert!(leases <= 3 * 2 * batches * seconds as u64 + 3, "{leases} leases for {calls} calls");
            assert!(leases * 10 <= calls, "{leases} leases for {calls} calls");
        }
    }

    #[test]
    fn the_shared_quota_counts_per_day_and_adds_what_was_owed() {
        let quota = DailyQuota::new(10).unwrap();
        let first = SharedQuota::lease(None, quota, 7, 4, 0);
        assert_eq!(first, QuotaGrant { granted: 4, counter: SharedQuota { day: 7, used: 4 } });
        let owed = SharedQuota::lease(Some(first.counter), quota, 7, 4, 3);
        assert_eq!(owed, QuotaGrant { granted: 3, counter: SharedQuota { day: 7, used: 10 } });
        let spent = SharedQuota::lease(Some(owed.counter), quota, 7, 4, 0);
        assert_eq!(spent.granted, 0);
        let next_day = SharedQuota::lease(Some(spent.counter), quota, 8, 4, 0);
        assert_eq!(next_day, QuotaGrant { granted: 4, counter: SharedQuota { day: 8, used: 4 } });
        // A process a day behind counts on the store's day.
        let behind = SharedQuota::lease(Some(next_day.counter), quota, 7, 4, 0);
        assert_eq!(behind, QuotaGrant { granted: 4, counter: SharedQuota { day: 8, used: 8 } });
    }

    #[test]
    fn three_processes_share_one_quota_and_refuse_from_memory_once_it_is_used_up() {
        let quota = DailyQuota::new(1_000).unwrap();
        let mut shares = vec![QuotaShare::new(quota, at(0)); 3];
        let (mut shared, mut admitted, mut leases) = (None, 0_u64, 0);
        for call in 0..3_000_i64 {
            let now = at(call * 1_000);
            let share = &mut shares[call as usize % 3];
            loop {
                match share.try_use(now) {
                    Use::Allowed(_) => admitted += 1,
                    Use::Refused(decision) => assert_eq!(decision.remaining, 0),
                    Use::Lease { day, want, owed } => {
                        let grant = SharedQuota::lease(shared, quota, day, want, owed);
                        (shared, leases) = (Some(grant.counter), leases + 1);
                        share.leased(grant, owed);
                        continue;
                    }
                }
                break;
            }
        }
        assert_eq!(admitted, 1_000);
        assert!(leases <= 1_000 / 5 + 6, "{leases} leases");
        // The next UTC day starts over.
        let tomorrow = at(86_400 * SECOND);
        assert!(matches!(shares[0].try_use(tomorrow), Use::Lease { day, .. } if day == utc_day(tomorrow)));
    }

    #[test]
    fn uses_counted_without_the_store_are_owed_to_it() {
        let quota = DailyQuota::new(5).unwrap();
        let mut share = QuotaShare::new(quota, at(0));
        let Use::Lease { want, .. } = share.try_use(at(0)) else { unreachable!() };
        let grant = SharedQuota::lease(
            Some(SharedQuota { day: utc_day(at(0)), used: 2 }),
            quota,
            utc_day(at(0)),
            want,
            0,
        );
        share.leased(grant, 0);
        assert!(matches!(share.try_use(at(0)), Use::Allowed(_)));
        // The store is gone: two more uses are counted here against the 3 seen used.
        assert!(share.use_offline(at(1)).allowed);
        assert!(share.use_offline(at(2)).allowed);
        assert!(!share.use_offline(at(3)).allowed, "5 of 5 used as far as this process knows");
        assert_eq!(share.owed(), 2);
        let Use::Lease { owed, .. } = share.try_use(at(4)) else { unreachable!() };
        assert_eq!(owed, 2);
        let grant = SharedQuota::lease(Some(grant.counter), quota, utc_day(at(0)), 1, owed);
        share.leased(grant, owed);
        assert_eq!((share.owed(), grant.counter.used), (0, 5));
    }
}
