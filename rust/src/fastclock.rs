//! A cheap monotonic clock for the hot paths (the cache's TTL check, the pool's age check).
//!
//! Every TTL check of a `get` and every pooled call need "now". On some hosts (this project's VMs among them)
//! `clock_gettime` costs 50–60 ns, as much as the rest of a hit. On x86-64 with an invariant
//! TSC (`constant_tsc` and `nonstop_tsc`) this clock reads the TSC instead (~7 ns) and scales it
//! to nanoseconds with a rate calibrated once against the monotonic clock; elsewhere it is
//! [`MonotonicClock`]. The calibration error (a few parts per million) shifts expiry by
//! milliseconds at most over a 10-minute TTL.

use crate::clock::{Clock, MonotonicClock, Nanos};
use std::sync::OnceLock;

/// The process's fast clock; readings are nanoseconds on [`MonotonicClock`]'s scale.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastClock;

#[derive(Debug)]
struct Tsc {
    base_ns: Nanos,
    base_tsc: u64,
    ns_per_tick: f64,
}

fn tsc() -> Option<&'static Tsc> {
    static T: OnceLock<Option<Tsc>> = OnceLock::new();
    T.get_or_init(calibrate).as_ref()
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(target_arch = "x86_64")]
fn calibrate() -> Option<Tsc> {
    if std::env::var_os("AGENTPERF_NO_TSC").is_some() {
        return None;
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = flags.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| line.split_whitespace().any(|w| w == f);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    // Trust the TSC only where the kernel does: its own clocksource must be the TSC (a VM
    // whose TSC is unstable across vCPUs or migrations runs on kvm-clock/hpet instead).
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .ok()?;
    if source.trim() != "tsc" {
        return None;
    }
    let mono = MonotonicClock;
    let (n0, c0) = (mono.now(), rdtsc());
    let mut n1;
    let mut c1;
    loop {
        n1 = mono.now();
        c1 = rdtsc();
        if n1 - n0 >= 2_000_000 {
            break;
        }
    }
    if c1 <= c0 {
        return None;
    }
    let rate = (n1 - n0) as f64 / (c1 - c0) as f64;
    // Sane TSCs run between 100 MHz and 20 GHz.
    if !(0.05..=10.0).contains(&rate) {
        return None;
    }
    Some(Tsc {
        base_ns: n1,
        base_tsc: c1,
        ns_per_tick: rate,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn calibrate() -> Option<Tsc> {
    None
}

impl FastClock {
    /// Calibrate now (about 2 ms, once per process) rather than on the first read.
    pub fn init() -> Self {
        let _ = tsc();
        FastClock
    }

    /// Whether the TSC path is in use.
    pub fn uses_tsc() -> bool {
        tsc().is_some()
    }
}

impl Clock for FastClock {
    #[inline]
    fn now(&self) -> Nanos {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = tsc() {
            let ticks = rdtsc().wrapping_sub(t.base_tsc);
            // A core whose TSC reads slightly behind the base yields a huge `ticks`; clamp.
            if ticks < (1u64 << 62) {
                return t.base_ns + (ticks as f64 * t.ns_per_tick) as Nanos;
            }
            return t.base_ns;
        }
        MonotonicClock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tracks_the_monotonic_clock() {
        let f = FastClock::init();
        let m = MonotonicClock;
        let (a, b) = (f.now(), m.now());
        assert!(a.abs_diff(b) < 5_000_000, "fast {a} vs monotonic {b}");
        std::thread::sleep(Duration::from_millis(50));
        let (c, d) = (f.now(), m.now());
        assert!(c >= a, "went back");
        let (df, dm) = ((c - a) as f64, (d - b) as f64);
        assert!(
            (df - dm).abs() < dm * 0.05 + 2_000_000.0,
            "fast {df} vs monotonic {dm}"
        );
    }
}
