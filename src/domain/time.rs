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

/// RFC 3339 in UTC (`2026-11-26T12:00:00Z`; microseconds only when there are some): the form the JSON API shows
/// timestamps in, and the one messages for people use.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (seconds, fraction) = (self.0.div_euclid(1_000_000), self.0.rem_euclid(1_000_000));
        let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        // Days to a civil date in the proleptic Gregorian calendar (H. Hinnant, "chrono-Compatible Low-Level Date
        // Algorithms"), with eras of 400 years starting on 1 March.
        let z = days + 719_468;
        let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
        let fraction = if fraction == 0 { String::new() } else { format!(".{fraction:06}") };
        write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
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
    fn displays_as_rfc_3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_795_694_400_000_000).to_string(), "2026-11-26T12:00:00Z");
        assert_eq!(Timestamp(951_782_400_000_000 + 1).to_string(), "2000-02-29T00:00:00.000001Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp(253_402_300_799_000_000).to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn never_is_the_last_second_of_9999() {
        assert_eq!(Timestamp::NEVER.to_seconds_nanos(), (253_402_300_799, 0));
        assert_eq!(Timestamp::from_seconds_nanos(253_402_300_800, 0), None);
        assert_eq!(Timestamp::from_seconds_nanos(0, -1), None);
    }
}
