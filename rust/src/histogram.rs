//! A fixed-bucket histogram of durations kept in atomics: observing takes no lock, reading
//! takes none either (the metrics exporters read it while the hot paths observe). Knows
//! nothing of Python; the binding is `histogram/py.rs`.
//!
//! The buckets are the same for every histogram (pool waits, batch item durations), chosen
//! for LLM work: from 100 µs to 5 minutes, then `+Inf`. A snapshot read while observations
//! land may see a bucket count and the sum a few observations apart (each atomic is exact on
//! its own); the count is the sum of the buckets, so buckets and count always agree.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[cfg(feature = "python")]
pub(crate) mod py;
#[cfg(feature = "python")]
pub use py::Histogram as PyHistogram;

/// Upper bounds (inclusive, seconds) of the finite buckets; a last bucket takes the rest.
pub const BOUNDS_S: [f64; 19] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0,
];
/// Buckets: one per bound and `+Inf`.
pub const BUCKETS: usize = BOUNDS_S.len() + 1;

/// [`BOUNDS_S`] in nanoseconds (exact: every bound is a whole number of nanoseconds).
const BOUNDS_NS: [u64; 19] = [
    100_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
];

/// The bucket of a duration of `ns` nanoseconds.
#[inline]
pub fn bucket_of(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// Nanoseconds from seconds: negative and NaN are 0, huge values saturate.
#[inline]
pub fn nanos_of_secs(s: f64) -> u64 {
    if s.is_nan() || s <= 0.0 {
        0
    } else {
        // `as` saturates at u64::MAX for values past its range.
        (s * 1e9).round() as u64
    }
}

/// A histogram of durations: one atomic count per bucket and the sum in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A histogram at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Observations per bucket ([`BOUNDS_S`] order, `+Inf` last); not cumulative.
    pub counts: [u64; BUCKETS],
    /// Sum of the observations, nanoseconds (saturating).
    pub sum_ns: u64,
}

impl Snapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations in seconds.
    pub fn sum_s(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// One observation of `ns` nanoseconds: two relaxed atomic adds.
    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        self.counts[bucket_of(ns)].fetch_add(1, Relaxed);
        add_saturating(&self.sum_ns, ns);
    }

    /// One observation of a [`Duration`].
    #[inline]
    pub fn observe(&self, d: Duration) {
        self.observe_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations of `secs` seconds each, added bucket by bucket: one atomic add per
    /// bucket touched, however many they are.
    pub fn observe_many_secs(&self, secs: impl IntoIterator<Item = f64>) {
        let mut local = [0u64; BUCKETS];
        let mut sum = 0u64;
        for s in secs {
            let ns = nanos_of_secs(s);
            local[bucket_of(ns)] += 1;
            sum = sum.saturating_add(ns);
        }
        self.add_counts(&local, sum);
    }

    /// Add `counts` observations per bucket summing to `sum_ns`.
    pub fn add_counts(&self, counts: &[u64; BUCKETS], sum_ns: u64) {
        for (a, &n) in self.counts.iter().zip(counts) {
            if n != 0 {
                a.fetch_add(n, Relaxed);
            }
        }
        if sum_ns != 0 {
            add_saturating(&self.sum_ns, sum_ns);
        }
    }

    /// The counts and the sum now (no lock; see the module docs).
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            sum_ns: self.sum_ns.load(Relaxed),
            ..Snapshot::default()
        };
        for (c, a) in s.counts.iter_mut().zip(&self.counts) {
            *c = a.load(Relaxed);
        }
        s
    }
}

/// `a += n`, saturating at `u64::MAX` (584 years of nanoseconds).
#[inline]
fn add_saturating(a: &AtomicU64, n: u64) {
    let old = a.fetch_add(n, Relaxed);
    if old.checked_add(n).is_none() {
        a.store(u64::MAX, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_agree() {
        for (s, ns) in BOUNDS_S.iter().zip(BOUNDS_NS) {
            assert_eq!(nanos_of_secs(*s), ns);
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100_000), 0);
        assert_eq!(bucket_of(100_001), 1);
        assert_eq!(bucket_of(1_000_000_000), 11);
        assert_eq!(bucket_of(300_000_000_000), 18);
        assert_eq!(bucket_of(300_000_000_001), 19);
        assert_eq!(bucket_of(u64::MAX), 19);
    }

    #[test]
    fn observe_and_observe_many_agree() {
        let one = Histogram::new();
        let many = Histogram::new();
        let xs = [0.0, 0.00005, 0.003, 0.003, 1.0, 7.0, 400.0, -1.0, f64::NAN];
        for x in xs {
            one.observe_ns(nanos_of_secs(x));
        }
        many.observe_many_secs(xs);
        let (a, b) = (one.snapshot(), many.snapshot());
        assert_eq!(a, b);
        assert_eq!(a.count(), xs.len() as u64);
        assert_eq!(a.counts[0], 4); // 0, 50 µs, and the two clamped to 0
        assert_eq!(a.counts[4], 2);
        assert_eq!(a.counts[19], 1);
        assert!((a.sum_s() - 408.006_05).abs() < 1e-9);
    }

    #[test]
    fn sum_saturates() {
        let h = Histogram::new();
        h.observe_ns(u64::MAX - 1);
        h.observe_ns(10);
        let s = h.snapshot();
        assert_eq!((s.count(), s.sum_ns), (2, u64::MAX));
        h.observe(Duration::MAX);
        assert_eq!(h.snapshot().counts[BUCKETS - 1], 2);
    }

    #[test]
    fn threads_lose_no_observation() {
        let h = Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        if i % 2 == 0 {
                            h.observe_ns(i * 1000 + t);
                        } else {
                            h.observe_many_secs([0.002, 0.2]);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 4 * (5_000 + 10_000));
        assert_eq!(s.counts[9], 4 * 5_000);
    }
}
