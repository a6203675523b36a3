//! Points in time as the domain sees them, and the clock that supplies the current one.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC: the resolution events and read models keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 9999-12-31T23:59:59Z: the expiration of a key that was given none.
    pub const NEVER: Timestamp = Timestamp(253_402_300_799 * 1_000_000);

    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Whole seconds and the nanoseconds past them, as google.protobuf.Timestamp wants them.
    pub fn to_seconds_nanos(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(1_000_000);
        let nanos = (self.0.rem_euclid(1_000_000) * 1_000) as i32;
        (seconds, nanos)
    }

    /// From seconds and nanoseconds; None when out of the range a Timestamp holds (year 1 to 9999).
    pub fn from_seconds_nanos(seconds: i64, nanos: i32) -> Option<Self> {
        const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
        const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        Some(Timestamp(seconds * 1_000_000 + i64::from(nanos) / 1_000))
    }
}

/// Where the current time comes from, so that rules can be tested at any moment without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_nanos_round_trip() {
        let t = Timestamp(1_735_911_590_032_123);
        let (s, n) = t.to_seconds_nanos();
        assert_eq!((s, n), (1_735_911_590, 32_123_000));
        assert_eq!(Timestamp::from_seconds_nanos(s, n), Some(t));
    }

    #[test]
    fn never_is_the_last_second_of_9999() {
        assert_eq!(Timestamp::NEVER.to_seconds_nanos(), (253_402_300_799, 0));
        assert_eq!(Timestamp::from_seconds_nanos(253_402_300_800, 0), None);
        assert_eq!(Timestamp::from_seconds_nanos(0, -1), None);
    }
}
