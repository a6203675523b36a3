//! The per-key limits a verify call checks: a token bucket for the rate and a counter for the daily quota.
//!
//! Both are pure state machines: the caller passes the current time and keeps one of each per key in memory.
//! When a key has both, take from the bucket first: a call the rate limit refuses then uses none of the quota.

use std::num::NonZeroU32;

use super::{DomainError, Timestamp, validate::Violations};

/// The highest sustained rate a key may be given, in calls per second.
pub const MAX_PER_SECOND: u32 = 100_000;
/// The largest bucket a key may be given, in calls.
pub const MAX_BURST: u32 = 1_000_000;
/// The largest daily quota a key may be given. Far above what any rate limit lets through in a day, and well
/// inside the signed 64-bit columns that SQLite and PostgreSQL persist usage in.
pub const MAX_DAILY_QUOTA: u64 = 1_000_000_000_000;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A token is kept in millionths, so that a refill of `per_second` tokens per second adds exactly `per_second`
/// millionths per microsecond: integer arithmetic with no remainder to lose, hence no drift however long the
/// bucket runs or idles.
const PARTS_PER_TOKEN: u64 = 1_000_000;

/// A key's token bucket: `burst` is the bucket's size (how many calls may come at once after a quiet period),
/// `per_second` the rate at which it refills (the sustained rate). The two are independent: a burst smaller
/// than the rate is allowed and smooths traffic more than the rate alone would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` from 1 to 100 000, `burst` from 1 to 1 000 000; every bad field is reported.
    pub fn validate(&self) -> Result<(), DomainError> {
        let mut violations = Violations::new();
        if !(1..=MAX_PER_SECOND).contains(&self.per_second) {
            violations.add(
                "rateLimit.perSecond",
                format!("must be between 1 and {MAX_PER_SECOND} calls per second"),
            );
        }
        if !(1..=MAX_BURST).contains(&self.burst) {
            violations.add("rateLimit.burst", format!("must be between 1 and {MAX_BURST} calls"));
        }
        violations.into_result()
    }
}

/// What the bucket said to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u32,
    /// Whole tokens left after this call.
    pub remaining: u32,
    /// When the bucket will be full again, if no call takes from it meanwhile.
    pub reset: Timestamp,
    /// For a refused call, the first moment at which a retry will be allowed.
    pub retry_after: Option<Timestamp>,
}

/// One key's token bucket. It starts full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    per_second: NonZeroU32,
    burst: u32,
    /// Millionths of a token, at most `burst * PARTS_PER_TOKEN`.
    level: u64,
    /// The latest time the bucket has seen; `level` is its content at that time.
    updated: Timestamp,
}

impl TokenBucket {
    /// A full bucket for a valid limit.
    pub fn new(limit: RateLimit, now: Timestamp) -> Result<Self, DomainError> {
        limit.validate()?;
        let Some(per_second) = NonZeroU32::new(limit.per_second) else {
            return Err(DomainError::invalid("rateLimit.perSecond", "must be at least 1"));
        };
        Ok(TokenBucket {
            per_second,
            burst: limit.burst,
            level: u64::from(limit.burst) * PARTS_PER_TOKEN,
            updated: now,
        })
    }

    pub fn limit(&self) -> RateLimit {
        RateLimit { per_second: self.per_second.get(), burst: self.burst }
    }

    /// Takes one token if there is a whole one.
    pub fn try_take(&mut self, now: Timestamp) -> Decision {
        self.refill(now);
        let allowed = self.level >= PARTS_PER_TOKEN;
        if allowed {
            self.level -= PARTS_PER_TOKEN;
        }
        Decision {
            allowed,
            limit: self.burst,
            remaining: u32::try_from(self.level / PARTS_PER_TOKEN).unwrap_or(u32::MAX),
            reset: self.time_when(self.capacity()),
            retry_after: (!allowed).then(|| self.time_when(PARTS_PER_TOKEN)),
        }
    }

    /// Whether the bucket has refilled completely by `now`: then it is the same as a new one.
    pub fn is_full(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        self.level >= self.capacity()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.burst) * PARTS_PER_TOKEN
    }

    fn refill(&mut self, now: Timestamp) {
        // A clock that stepped back adds nothing, and `updated` stays where it was so that the time between
        // the two is not counted twice once the clock has caught up.
        if now <= self.updated {
            return;
        }
        let elapsed = u128::from(now.0.abs_diff(self.updated.0));
        let added = elapsed * u128::from(self.per_second.get());
        let level = (u128::from(self.level) + added).min(u128::from(self.capacity()));
        self.level = u64::try_from(level).unwrap_or(self.capacity());
        self.updated = now;
    }

    /// When the level reaches `target`, rounded up to the microsecond so that a call made then succeeds.
    fn time_when(&self, target: u64) -> Timestamp {
        let missing = target.saturating_sub(self.level);
        let micros = missing.div_ceil(u64::from(self.per_second.get()));
        Timestamp(self.updated.0.saturating_add(i64::try_from(micros).unwrap_or(i64::MAX)))
    }
}

/// How many verify calls a key may make per UTC day. A key without a quota has no `DailyQuota` at all
/// (`Option<DailyQuota>`), so a limit of 0 is never a stand-in for "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyQuota {
    limit: u64,
}

impl DailyQuota {
    pub fn new(limit: u64) -> Result<Self, DomainError> {
        if limit == 0 {
            return Err(DomainError::invalid(
                "dailyQuota",
                "must be at least 1 call per day; a key without a quota has no daily quota rather than one of 0",
            ));
        }
        if limit > MAX_DAILY_QUOTA {
            return Err(DomainError::invalid(
                "dailyQuota",
                format!("must be at most {MAX_DAILY_QUOTA} calls per day"),
            ));
        }
        Ok(DailyQuota { limit })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// What the quota said to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    pub allowed: bool,
    pub limit: u64,
    /// Uses left today after this call.
    pub remaining: u64,
    /// The UTC midnight at which the count starts again.
    pub resets_at: Timestamp,
}

/// The UTC day a moment falls on, counted from 1970-01-01 (day 0); earlier moments give negative days.
pub fn utc_day(at: Timestamp) -> i64 {
    at.0.div_euclid(MICROS_PER_DAY)
}

/// One key's uses on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCounter {
    quota: DailyQuota,
    day: i64,
    count: u64,
}

impl QuotaCounter {
    /// A counter with no uses yet today.
    pub fn new(quota: DailyQuota, now: Timestamp) -> Self {
        QuotaCounter { quota, day: utc_day(now), count: 0 }
    }

    /// A counter rebuilt from persisted usage: `count` uses on `day` (as `utc_day` numbers days). A count above
    /// the limit, as after the quota was lowered, is kept: the key stays refused until the day ends.
    pub fn restore(quota: DailyQuota, count: u64, day: i64) -> Self {
        QuotaCounter { quota, day, count }
    }

    pub fn quota(&self) -> DailyQuota {
        self.quota
    }

    /// Uses counted on `day()`, the value to persist.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn day(&self) -> i64 {
        self.day
    }

    /// Counts one use if the day has one left; a refused call is not counted.
    pub fn try_use(&mut self, now: Timestamp) -> QuotaDecision {
        // Only a later day starts a new count: a clock that stepped back over midnight must not hand out a
        // second quota for a day that was already used.
        let today = utc_day(now);
        if today > self.day {
            self.day = today;
            self.count = 0;
        }
        let allowed = self.count < self.quota.limit;
        if allowed {
            self.count += 1;
        }
        QuotaDecision {
            allowed,
            limit: self.quota.limit,
            remaining: self.quota.limit.saturating_sub(self.count),
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

    fn at(base: Timestamp, micros: i64) -> Timestamp {
        Timestamp(base.0 + micros)
    }

    fn bucket(per_second: u32, burst: u32, now: Timestamp) -> TokenBucket {
        TokenBucket::new(RateLimit { per_second, burst }, now).unwrap()
    }

    fn quota(limit: u64) -> DailyQuota {
        DailyQuota::new(limit).unwrap()
    }

    fn fields(error: DomainError) -> Vec<String> {
        let DomainError::InvalidArgument(violations) = error else { unreachable!("{error:?}") };
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_full_bucket_allows_burst_calls_at_one_instant_then_says_when_to_retry() {
        let t = at(NEW_YEAR, 123);
        let mut b = bucket(10, 5, t);
        for _ in 0..5 {
            assert!(b.try_take(t).allowed);
        }
        let denied = b.try_take(t);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Some(at(t, 100_000)));
        assert_eq!(denied.reset, at(t, 500_000));

        assert!(!b.try_take(at(t, 99_999)).allowed);
        let retried = b.try_take(at(t, 100_000));
        assert!(retried.allowed);
        assert_eq!(retried.retry_after, None);
        assert!(!b.try_take(at(t, 100_000)).allowed);
    }

    #[test]
    fn remaining_and_reset_count_down() {
        let t = NEW_YEAR;
        let mut b = bucket(10, 3, t);
        let taken: Vec<(u32, Timestamp)> = (0..3)
            .map(|_| {
                let d = b.try_take(t);
                assert!(d.allowed);
                assert_eq!(d.limit, 3);
                (d.remaining, d.reset)
            })
            .collect();
        assert_eq!(taken, [(2, at(t, 100_000)), (1, at(t, 200_000)), (0, at(t, 300_000))]);
        // Half a token has come back: not a whole one, so still none remaining.
        let d = b.try_take(at(t, 50_000));
        assert_eq!((d.allowed, d.remaining, d.reset), (false, 0, at(t, 300_000)));
    }

    #[test]
    fn a_long_idle_never_fills_beyond_burst() {
        let t = NEW_YEAR;
        let mut b = bucket(100_000, 4, t);
        for _ in 0..4 {
            b.try_take(t);
        }
        let later = at(t, 10 * 365 * 86_400 * SECOND);
        let first = b.try_take(later);
        assert_eq!((first.allowed, first.remaining, first.reset), (true, 3, at(later, 10)));
        let allowed = (0..10).filter(|_| b.try_take(later).allowed).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn a_clock_stepping_back_neither_panics_nor_refills() {
        let t = NEW_YEAR;
        let mut b = bucket(10, 2, t);
        b.try_take(t);
        b.try_take(t);
        let back = b.try_take(at(t, -3_600 * SECOND));
        assert!(!back.allowed);
        assert_eq!(back.retry_after, Some(at(t, 100_000)));
        assert!(!b.try_take(at(t, 99_999)).allowed);
        assert!(b.try_take(at(t, 100_000)).allowed);
        assert!(!b.try_take(at(t, 100_000)).allowed);
    }

    #[test]
    fn the_extremes_of_time_do_not_panic() {
        let mut b = bucket(MAX_PER_SECOND, MAX_BURST, Timestamp(i64::MIN));
        for _ in 0..MAX_BURST {
            b.try_take(Timestamp(i64::MIN));
        }
        let d = b.try_take(Timestamp(i64::MAX));
        assert_eq!((d.allowed, d.remaining, d.reset), (true, MAX_BURST - 1, Timestamp(i64::MAX)));

        let mut q = QuotaCounter::new(quota(1), Timestamp(i64::MIN));
        let first_midnight = q.try_use(Timestamp(i64::MIN)).resets_at;
        assert!(first_midnight > Timestamp(i64::MIN) && first_midnight.0 - i64::MIN <= MICROS_PER_DAY);
        assert_eq!(q.try_use(Timestamp(i64::MAX)).resets_at, Timestamp(i64::MAX));
    }

    #[test]
    fn a_fractional_rate_does_not_drift() {
        let t = NEW_YEAR;
        let mut b = bucket(3, 2, t);
        b.try_take(t);
        b.try_take(t);
        // A third of a second is 333 333.3 µs, so the token is whole only at the next microsecond.
        assert_eq!(b.try_take(t).retry_after, Some(at(t, 333_334)));
        assert!(!b.try_take(at(t, 333_333)).allowed);
        assert!(b.try_take(at(t, 333_334)).allowed);

        let mut b = bucket(3, 2, t);
        let calls = 1_000 * 100;
        let allowed = (0..=calls).filter(|i| b.try_take(at(t, i * 10_000)).allowed).count();
        assert!((3 * 1_000 + 2 - 1..=3 * 1_000 + 2 + 1).contains(&allowed), "{allowed} allowed");
    }

    #[test]
    fn a_retry_at_retry_after_is_always_allowed_and_waits_add_up_exactly() {
        for per_second in [1, 3, 7, 999, 65_537, MAX_PER_SECOND] {
            let mut b = bucket(per_second, 2, NEW_YEAR);
            b.try_take(NEW_YEAR);
            b.try_take(NEW_YEAR);
            let mut now = NEW_YEAR;
            for _ in 0..1_000 {
                let denied = b.try_take(now);
                now = denied.retry_after.unwrap();
                assert!(b.try_take(now).allowed, "{per_second}/s at {now:?}");
            }
            // Each wait is rounded up to the microsecond, but what the rounding adds stays in the bucket, so
            // 1 000 tokens take 1 000 tokens' worth of time, rounded up once.
            let elapsed = u64::try_from(now.0 - NEW_YEAR.0).unwrap();
            assert_eq!(elapsed, (1_000 * 1_000_000_u64).div_ceil(u64::from(per_second)), "{per_second}/s");
        }
    }

    #[test]
    fn a_bucket_of_one_loses_what_overflows_it() {
        // With room for a single token, the fraction a rounded-up wait adds beyond it spills over, as anything
        // beyond `burst` does: a caller retrying exactly on time gets slightly less than the rate, never more.
        let mut b = bucket(3, 1, NEW_YEAR);
        let mut now = NEW_YEAR;
        for _ in 0..1_000 {
            assert!(b.try_take(now).allowed);
            now = b.try_take(now).retry_after.unwrap();
        }
        assert_eq!(now.0 - NEW_YEAR.0, 1_000 * 333_334);
    }

    #[test]
    fn rate_limit_validation_names_every_bad_field() {
        let both = RateLimit { per_second: 0, burst: 0 }.validate().unwrap_err();
        assert_eq!(fields(both), ["rateLimit.perSecond", "rateLimit.burst"]);
        let too_much = RateLimit { per_second: MAX_PER_SECOND + 1, burst: MAX_BURST + 1 };
        assert_eq!(fields(too_much.validate().unwrap_err()), ["rateLimit.perSecond", "rateLimit.burst"]);
        assert!(RateLimit { per_second: 1, burst: 1 }.validate().is_ok());
        assert!(RateLimit { per_second: MAX_PER_SECOND, burst: MAX_BURST }.validate().is_ok());
        assert!(RateLimit { per_second: 1_000, burst: 1 }.validate().is_ok());
        assert!(TokenBucket::new(RateLimit { per_second: 0, burst: 10 }, NEW_YEAR).is_err());
    }

    #[test]
    fn a_quota_of_zero_or_beyond_reason_is_refused() {
        let zero = DailyQuota::new(0).unwrap_err();
        assert!(zero.to_string().contains("dailyQuota: must be at least 1"), "{zero}");
        assert_eq!(fields(DailyQuota::new(MAX_DAILY_QUOTA + 1).unwrap_err()), ["dailyQuota"]);
        assert_eq!(fields(DailyQuota::new(u64::MAX).unwrap_err()), ["dailyQuota"]);
        assert_eq!(quota(1).limit(), 1);
        assert_eq!(quota(MAX_DAILY_QUOTA).limit(), MAX_DAILY_QUOTA);
    }

    #[test]
    fn a_quota_allows_limit_uses_per_day_and_resets_at_utc_midnight() {
        let midnight = at(NEW_YEAR, 86_400 * SECOND);
        let morning = at(NEW_YEAR, 9 * 3_600 * SECOND);
        let mut q = QuotaCounter::new(quota(3), morning);
        let remaining: Vec<u64> = (0..3)
            .map(|_| {
                let d = q.try_use(morning);
                assert!(d.allowed);
                assert_eq!((d.limit, d.resets_at), (3, midnight));
                d.remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let denied = q.try_use(morning);
        assert_eq!((denied.allowed, denied.remaining, denied.resets_at), (false, 0, midnight));
        assert!(!q.try_use(at(midnight, -1)).allowed);
        assert_eq!(q.count(), 3);

        let next_day = q.try_use(midnight);
        assert_eq!((next_day.allowed, next_day.remaining), (true, 2));
        assert_eq!(next_day.resets_at, at(midnight, 86_400 * SECOND));
        assert_eq!((q.day(), q.count()), (utc_day(midnight), 1));
    }

    #[test]
    fn a_clock_stepping_back_over_midnight_does_not_start_a_new_quota() {
        let midnight = at(NEW_YEAR, 86_400 * SECOND);
        let mut q = QuotaCounter::new(quota(1), midnight);
        assert!(q.try_use(midnight).allowed);
        let back = q.try_use(at(midnight, -1));
        assert_eq!((back.allowed, back.resets_at), (false, at(midnight, 86_400 * SECOND)));
    }

    #[test]
    fn a_restored_counter_continues_from_the_persisted_count() {
        let noon = at(NEW_YEAR, 12 * 3_600 * SECOND);
        let mut q = QuotaCounter::restore(quota(5), 4, utc_day(noon));
        let last = q.try_use(noon);
        assert_eq!((last.allowed, last.remaining), (true, 0));
        assert!(!q.try_use(noon).allowed);
        assert_eq!(q.count(), 5);

        // The quota was lowered below what was already used today.
        let mut lowered = QuotaCounter::restore(quota(2), 4, utc_day(noon));
        assert_eq!(
            lowered.try_use(noon),
            QuotaDecision {
                allowed: false,
                limit: 2,
                remaining: 0,
                resets_at: at(NEW_YEAR, 86_400 * SECOND)
            }
        );
        assert_eq!(lowered.count(), 4);

        // Usage persisted on an earlier day no longer counts.
        let mut stale = QuotaCounter::restore(quota(5), 5, utc_day(noon) - 1);
        assert_eq!(stale.try_use(noon).remaining, 4);
    }

    #[test]
    fn days_before_1970_are_counted_too() {
        assert_eq!(utc_day(Timestamp(-1)), -1);
        assert_eq!(utc_day(Timestamp(0)), 0);
        let mut q = QuotaCounter::new(quota(1), Timestamp(-1));
        assert_eq!(q.try_use(Timestamp(-1)).resets_at, Timestamp(0));
    }
}
