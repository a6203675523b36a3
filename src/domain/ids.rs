//! Object IDs: decimal strings of 63-bit, time-ordered integers that stay unique across processes sharing one
//! database, as long as each process has its own node number.

use std::sync::Mutex;

use super::Timestamp;

/// 2024-01-01T00:00:00Z in milliseconds: the IDs' epoch. 41 bits of milliseconds last until about 2093.
const EPOCH_MILLIS: i64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;

/// Makes IDs: milliseconds since the epoch, then the node number, then a counter within the millisecond.
#[derive(Debug)]
pub struct IdGenerator {
    node: u16,
    last: Mutex<(i64, u16)>,
}

impl IdGenerator {
    /// `node` must be unique among processes sharing a database; values above MAX_NODE are folded into range.
    pub fn new(node: u16) -> Self {
        IdGenerator { node: node & MAX_NODE, last: Mutex::new((0, 0)) }
    }

    /// The next ID. `now` comes from the caller's clock; a clock that steps back does not produce duplicates,
    /// because the generator keeps counting from the last millisecond it used.
    pub fn next_id(&self, now: Timestamp) -> String {
        let now_ms = (now.micros() / 1_000 - EPOCH_MILLIS).max(0);
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut millis, mut counter) = *last;
        if now_ms > millis {
            millis = now_ms;
            counter = 0;
        } else {
            counter += 1;
            if counter >> COUNTER_BITS != 0 {
                // The counter ran out within one millisecond: borrow the next one.
                millis += 1;
                counter = 0;
            }
        }
        *last = (millis, counter);
        let id = (millis << (NODE_BITS + COUNTER_BITS))
            | (i64::from(self.node) << COUNTER_BITS)
            | i64::from(counter);
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_increase_even_within_one_millisecond() {
        let ids = IdGenerator::new(7);
        let now = Timestamp(1_764_000_000_000_000);
        let all: Vec<i64> = (0..10_000).map(|_| ids.next_id(now).parse().unwrap_or_default()).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    }

    #[test]
    fn different_nodes_never_collide() {
        let (a, b) = (IdGenerator::new(1), IdGenerator::new(2));
        let now = Timestamp(1_764_000_000_000_000);
        let from_a: HashSet<String> = (0..1000).map(|_| a.next_id(now)).collect();
        assert!((0..1000).all(|_| !from_a.contains(&b.next_id(now))));
    }

    #[test]
    fn a_clock_stepping_back_keeps_ids_increasing() {
        let ids = IdGenerator::new(0);
        let first: i64 = ids.next_id(Timestamp(1_764_000_000_000_000)).parse().unwrap_or_default();
        let second: i64 = ids.next_id(Timestamp(1_763_000_000_000_000)).parse().unwrap_or_default();
        assert!(second > first);
    }
}
