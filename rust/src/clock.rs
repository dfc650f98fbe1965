//! Time for the cores. Real code uses [`MonotonicClock`]; Rust tests swap in [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since an arbitrary, fixed origin. Monotonic.
pub type Nanos = u64;

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in nanoseconds since the clock's origin.
    fn now(&self) -> Nanos;
}

/// The process's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Nanos {
        // Saturates after ~584 years of uptime.
        u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start` nanoseconds.
    pub fn new(start: Nanos) -> Self {
        Self(AtomicU64::new(start))
    }
    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(to_nanos(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Nanos {
        (**self).now()
    }
}

/// A duration in nanoseconds, saturating.
#[inline]
pub fn to_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Validate a user-supplied duration in seconds: finite and > 0 (or +inf, meaning "never").
/// Returns `None` for infinity.
pub fn seconds(field: &'static str, v: f64) -> Result<Option<Duration>, crate::errors::Error> {
    if v.is_nan() || v <= 0.0 {
        return Err(crate::errors::Error::Config {
            field,
            value: format!("{v}"),
            why: "must be a positive number of seconds",
        });
    }
    if v.is_infinite() {
        return Ok(None);
    }
    Duration::try_from_secs_f64(v)
        .map(Some)
        .map_err(|_| crate::errors::Error::Config {
            field,
            value: format!("{v}"),
            why: "is too large",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now(), 5);
        c.advance(Duration::from_millis(2));
        assert_eq!(c.now(), 2_000_005);
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let c = MonotonicClock;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn seconds_validation() {
        assert!(seconds("ttl", 0.0).is_err());
        assert!(seconds("ttl", -1.0).is_err());
        assert!(seconds("ttl", f64::NAN).is_err());
        assert_eq!(seconds("ttl", f64::INFINITY).unwrap(), None);
        assert_eq!(
            seconds("ttl", 1.5).unwrap(),
            Some(Duration::from_millis(1500))
        );
        let e = seconds("ttl", -2.0).unwrap_err().to_string();
        assert!(e.contains("ttl") && e.contains("-2"), "{e}");
    }
}
