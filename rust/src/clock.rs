//! Time for the cores. Real code uses [`MonotonicClock`]; Rust tests swap in [`ManualClock`].
//! No PyO3 here: the bindings map [`BadSeconds`] to their errors.
//!
//! The monotonic clock is `clock_gettime(CLOCK_MONOTONIC)` (the vDSO on Linux), read directly
//! for nanoseconds, without `Instant`'s `Duration` arithmetic. An earlier TSC clock (`rdtsc`
//! scaled by a rate calibrated once) saved about 7 ns a `Cache.get` with a TTL and nothing
//! measurable on `CachedAgent.execute` hits; it spun 2 ms with the GIL held on first use, its
//! fixed rate ignored NTP slewing, and its clamp could step backwards. CLOCK_MONOTONIC is
//! slewed, never steps backwards, and is the same clock on every CPU.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(target_os = "linux"))]
use std::sync::OnceLock;
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::Instant;

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

#[cfg(not(target_os = "linux"))]
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

#[cfg(target_os = "linux")]
impl Clock for MonotonicClock {
    /// Nanoseconds since boot (CLOCK_MONOTONIC's origin).
    #[inline]
    fn now(&self) -> Nanos {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write. CLOCK_MONOTONIC exists on every Linux and
        // the pointer is valid, so the call cannot fail (EINVAL, EFAULT are its only errors).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        // Both fields are non-negative for this clock; saturates after ~584 years of uptime.
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
}

#[cfg(not(target_os = "linux"))]
impl Clock for MonotonicClock {
    /// Nanoseconds since the first reading in this process.
    #[inline]
    fn now(&self) -> Nanos {
        // Saturates after ~584 years.
        u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The monotonic clock, or a [`ManualClock`] for the bindings' `_manual_clock=True` test
/// hooks (one branch on a read).
#[derive(Debug, Clone)]
pub enum SwitchClock {
    /// [`MonotonicClock`]: what every user gets.
    Monotonic,
    /// Moved by a test hook (`_advance`).
    Manual(std::sync::Arc<ManualClock>),
}

impl Clock for SwitchClock {
    #[inline]
    fn now(&self) -> Nanos {
        match self {
            SwitchClock::Monotonic => MonotonicClock.now(),
            SwitchClock::Manual(c) => c.now(),
        }
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

/// A duration in seconds that [`seconds`] refuses: the field, the value, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSeconds {
    /// The configuration field or argument.
    pub field: &'static str,
    /// The value given.
    pub value: f64,
    /// Why it is refused.
    pub why: &'static str,
}

impl std::fmt::Display for BadSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}: {}", self.field, self.value, self.why)
    }
}

impl std::error::Error for BadSeconds {}

/// Validate a user-supplied duration in seconds: finite and > 0 (or +inf, meaning "never").
/// Returns `None` for infinity.
pub fn seconds(field: &'static str, v: f64) -> Result<Option<Duration>, BadSeconds> {
    let bad = |why| BadSeconds {
        field,
        value: v,
        why,
    };
    if v.is_nan() || v <= 0.0 {
        return Err(bad("must be a positive number of seconds"));
    }
    if v.is_infinite() {
        return Ok(None);
    }
    Duration::try_from_secs_f64(v)
        .map(Some)
        .map_err(|_| bad("is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now(), 5);
        c.advance(Duration::from_millis(2));
        assert_eq!(c.now(), 2_000_005);
    }

    #[test]
    fn monotonic_clock_does_not_go_back_on_any_thread() {
        // Readings handed from thread to thread (so across CPUs) never decrease.
        let last = std::sync::Arc::new(AtomicU64::new(MonotonicClock.now()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let last = last.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let seen = last.load(Ordering::SeqCst);
                        let now = MonotonicClock.now();
                        assert!(now >= seen, "{now} < {seen}");
                        last.fetch_max(now, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
    }

    #[test]
    fn monotonic_clock_runs_at_instants_rate() {
        // Each reading is bracketed by two Instants (the kernel's CLOCK_MONOTONIC, NTP-slewed),
        // so the interval is bounded exactly. The TSC clock this replaced failed it every time
        // on a loaded VM: its rate, calibrated once over 2 ms, ran 570 ppm slow.
        let (i0, a, i1) = (Instant::now(), MonotonicClock.now(), Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        let (j0, b, j1) = (Instant::now(), MonotonicClock.now(), Instant::now());
        let d = Duration::from_nanos(b - a);
        assert!(
            d >= j0 - i1 && d <= j1 - i0,
            "{d:?} outside [{:?}, {:?}]",
            j0 - i1,
            j1 - i0
        );
        assert!(d >= Duration::from_millis(100));
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
        assert_eq!(
            seconds("ttl", 1e300).unwrap_err().why,
            "is too large",
            "a value past Duration::MAX"
        );
    }
}
