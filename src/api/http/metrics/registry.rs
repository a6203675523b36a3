//! Metric primitives of a fixed shape, allocated once: recording is one or two relaxed atomic adds, never a lock
//! or an allocation. And the writer of the Prometheus text exposition format (0.0.4).

use std::{
    fmt::Write,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// Upper bounds of the latency buckets, in microseconds: from a verify answered from memory (tens of µs) to a
/// call near the request deadline.
pub const BOUNDS_US: [u64; 17] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// A latency histogram. Buckets are kept apart (not cumulative), so an observation adds to one bucket and to the
/// sum; the count is the buckets' total.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// What a histogram holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bound of `BOUNDS_US`, then +Inf (the count).
    pub cumulative: [u64; BOUNDS_US.len() + 1],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative[BOUNDS_US.len()]
    }
}

impl Histogram {
    pub fn observe(&self, micros: u64) {
        let bucket = BOUNDS_US.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BOUNDS_US.len() + 1];
        let mut total = 0;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            *slot = total;
        }
        HistogramSnapshot { cumulative, sum_us: self.sum_us.load(Ordering::Relaxed) }
    }
}

/// Counts by a label whose values are `&'static str`s from the code (error reasons): a fixed table filled on
/// first sight of each value, lock-free (open addressing over `OnceLock` slots). Values beyond the table's size
/// count as `other`, so the label's cardinality stays bounded whatever happens.
#[derive(Debug)]
pub struct LabelCounts {
    slots: Box<[Slot]>,
    other: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    label: OnceLock<&'static str>,
    count: AtomicU64,
}

impl LabelCounts {
    pub fn new(size: usize) -> Self {
        LabelCounts { slots: (0..size.max(1)).map(|_| Slot::default()).collect(), other: AtomicU64::new(0) }
    }

    pub fn add(&self, label: &'static str) {
        // FNV-1a: a few ns for a reason code, and no state to share.
        let hash = label
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let size = self.slots.len();
        for probe in 0..size {
            let slot = &self.slots[(hash as usize).wrapping_add(probe) % size];
            if *slot.label.get_or_init(|| label) == label {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// Every value seen and its count, sorted by value; `other` last when anything overflowed.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut seen: Vec<(&'static str, u64)> = self
            .slots
            .iter()
            .filter_map(|slot| slot.label.get().map(|label| (*label, slot.count.load(Ordering::Relaxed))))
            .collect();
        seen.sort_unstable();
        let other = self.other.load(Ordering::Relaxed);
        if other > 0 {
            seen.push(("other", other));
        }
        seen
    }
}

/// A text exposition (format 0.0.4) being written: families with their HELP and TYPE, then their samples.
#[derive(Debug, Default)]
pub struct Exposition(String);

/// The labels of one sample: pairs of name and value (values are escaped as they are written).
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl std::fmt::Display) {
        self.0.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.0, " {value}");
    }

    /// A histogram's samples: `_bucket` per bound (in seconds) and +Inf, `_sum` (seconds) and `_count`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, histogram: &HistogramSnapshot) {
        for (bound, count) in BOUNDS_US.iter().zip(&histogram.cumulative) {
            let _ = write!(self.0, "{name}_bucket");
            self.labels(labels, Some(&seconds(*bound)));
            let _ = writeln!(self.0, " {count}");
        }
        let _ = write!(self.0, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", histogram.count());
        self.sample(&format!("{name}_sum"), labels, seconds(histogram.sum_us));
        self.sample(&format!("{name}_count"), labels, histogram.count());
    }

    fn labels(&mut self, labels: Labels<'_>, le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.0.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (n, (name, value)) in all.enumerate() {
            if n > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{name}=\"");
            escape_into(&mut self.0, value);
            self.0.push('"');
        }
        self.0.push('}');
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Microseconds as seconds, exactly (no float rounding in the bounds).
pub fn seconds(micros: u64) -> String {
    let (whole, fraction) = (micros / 1_000_000, micros % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:06}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_with_inclusive_bounds() {
        let histogram = Histogram::default();
        for micros in [25, 26, 1_000, 20_000_000] {
            histogram.observe(micros);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1, "le=0.000025 holds 25 µs");
        assert_eq!(snapshot.cumulative[1], 2);
        assert_eq!(snapshot.cumulative[5], 3, "le=0.001 holds 1 ms");
        assert_eq!(snapshot.cumulative[BOUNDS_US.len() - 1], 3);
        assert_eq!(snapshot.count(), 4, "+Inf holds everything");
        assert_eq!(snapshot.sum_us, 25 + 26 + 1_000 + 20_000_000);
    }

    #[test]
    fn label_counts_stay_bounded() {
        let counts = LabelCounts::new(2);
        for label in ["B", "A", "B", "C", "D"] {
            counts.add(label);
        }
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), 3, "{snapshot:?}");
        assert_eq!(snapshot.last(), Some(&("other", 2)));
        assert!(snapshot.contains(&("B", 2)));
    }

    #[test]
    fn the_text_format_escapes_and_writes_seconds() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "An example.");
        out.sample("x_total", &[("reason", "a\"b\\c\nd")], 3);
        let histogram = Histogram::default();
        histogram.observe(1_500);
        out.histogram("y_seconds", &[], &histogram.snapshot());
        let text = out.finish();
        assert!(text.starts_with("# HELP x_total An example.\n# TYPE x_total counter\n"));
        assert!(text.contains("x_total{reason=\"a\\\"b\\\\c\\nd\"} 3\n"), "{text}");
        assert!(text.contains("y_seconds_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("y_seconds_bucket{le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("y_seconds_bucket{le=\"+Inf\"} 1\ny_seconds_sum 0.0015\ny_seconds_count 1\n"));
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(25), "0.000025");
    }
}
