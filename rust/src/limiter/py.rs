//! The Python face of the rate limiter: `agentperf._agentperf.RateLimiter` (subclassed in
//! `python/agentperf/limiter.py`, which adds `aacquire`), its stats, and the wait handle an
//! asyncio waiter parks on.

use super::core::{Acquire, Limiter, MonotonicClock, Params, Poll, Stats, Ticket};
use crate::aio::{Notifier, WeakNotifier};
use crate::errors::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyBool, PyFloat, PyInt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue's notifier: `None` for a blocked thread (its ticket's condvar wakes it), else a
/// weak reference to the asyncio waiter's [`Notifier`] (plain data under the limiter's lock).
type Notify = Option<WeakNotifier>;
type Core = Limiter<MonotonicClock, Notify>;

/// How long a blocked thread sleeps at most before it looks at Python's signal handlers (and
/// at the queue) again, so Ctrl-C interrupts `acquire()`.
const SLICE: Duration = Duration::from_millis(50);

fn wake(py: Python<'_>, ns: Vec<Notify>) {
    for n in ns.into_iter().flatten() {
        Notifier::wake(py, &n, None);
    }
}

/// A real number (`int` or `float`, not `bool`) as `f64`.
fn number(field: &'static str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    if v.is_instance_of::<PyBool>()
        || !(v.is_instance_of::<PyFloat>() || v.is_instance_of::<PyInt>())
    {
        return Err(Error::ConfigType {
            field,
            value: format!("{} ({})", crate::args::shown(v), crate::args::type_name(v)),
            expected: "an int or a float",
        }
        .into());
    }
    v.extract::<f64>().map_err(|_| {
        Error::Config {
            field,
            value: crate::args::shown(v),
            why: "is too large",
        }
        .into()
    })
}

/// The `timeout` argument as a wait limit (`None`: forever), validated.
fn timeout_limit(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let secs = match timeout.filter(|t| !t.is_none()) {
        None => return Ok(None),
        Some(t) => crate::args::seconds_of("timeout", t)?,
    };
    Ok(crate::args::wait_limit("timeout", Some(secs))?)
}

/// A counter snapshot of a [`RateLimiter`].
#[pyclass(frozen, get_all, module = "agentperf", name = "RateLimiterStats")]
#[derive(Debug, Clone)]
pub struct RateLimiterStats {
    /// Units granted.
    granted: f64,
    /// Acquisitions granted.
    acquired: u64,
    /// Acquisitions granted after waiting.
    waited: u64,
    /// Seconds those acquisitions waited, summed.
    wait_s: f64,
    /// Wall-clock seconds paused.
    paused_s: f64,
    /// Waiters queued when the snapshot was taken.
    waiting: usize,
}

impl From<Stats> for RateLimiterStats {
    fn from(s: Stats) -> Self {
        Self {
            granted: s.granted,
            acquired: s.acquired,
            waited: s.waited,
            wait_s: s.wait_s,
            paused_s: s.paused_s,
            waiting: s.waiting,
        }
    }
}

#[pymethods]
impl RateLimiterStats {
    fn __repr__(&self) -> String {
        format!(
            "RateLimiterStats(granted={:?}, acquired={}, waited={}, wait_s={:.6}, paused_s={:.6}, \
             waiting={})",
            self.granted, self.acquired, self.waited, self.wait_s, self.paused_s, self.waiting
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Self>().is_ok_and(|o| {
            let o = o.get();
            (
                o.granted, o.acquired, o.waited, o.wait_s, o.paused_s, o.waiting,
            ) == (
                self.granted,
                self.acquired,
                self.waited,
                self.wait_s,
                self.paused_s,
                self.waiting,
            )
        })
    }
}

/// A GCRA rate limiter kept in Rust: `rate` units of cost per `per` seconds, smoothly, shared by
/// threads and by asyncio tasks on any number of loops, first come first served.
#[pyclass(frozen, subclass, weakref, module = "agentperf", name = "RateLimiter")]
pub struct RateLimiter {
    core: Arc<Core>,
}

impl RateLimiter {
    fn cost(&self, cost: Option<&Bound<'_, PyAny>>) -> PyResult<f64> {
        let c = match cost {
            None => 1.0,
            Some(c) => number("cost", c)?,
        };
        self.core.check_cost(c)?;
        Ok(c)
    }
}

#[pymethods]
impl RateLimiter {
    /// `RateLimiter(rate, per=1.0, burst=None)`.
    #[new]
    #[pyo3(signature = (rate, per=None, burst=None), text_signature = "(rate, per=1.0, burst=None)")]
    fn new(
        rate: &Bound<'_, PyAny>,
        per: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let r = number("rate", rate)?;
        let p = match per {
            None => 1.0,
            Some(p) => crate::args::seconds_of("per", p)?,
        };
        let b = match burst.filter(|b| !b.is_none()) {
            None => None,
            Some(b) => Some(number("burst", b)?),
        };
        let params = Params::new(r, p, b)?;
        Ok(Self {
            core: Arc::new(Limiter::new(params, MonotonicClock::new())),
        })
    }

    /// Take `cost` units now if they are free and nobody is queued (never waits, never jumps
    /// the queue).
    #[pyo3(signature = (cost=None), text_signature = "($self, cost=1.0)")]
    fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let c = self.cost(cost)?;
        let (got, ns) = self.core.try_acquire(c);
        wake(py, ns);
        Ok(got)
    }

    /// Take `cost` units, blocking the calling thread (without the GIL) up to `timeout` seconds
    /// (`None`: forever; `0`: do not wait). Returns whether they were granted.
    #[pyo3(signature = (cost=None, timeout=None), text_signature = "($self, cost=1.0, timeout=None)")]
    fn acquire(
        &self,
        py: Python<'_>,
        cost: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let c = self.cost(cost)?;
        let limit = timeout_limit(timeout)?;
        let (got, ns) = self.core.try_acquire(c);
        wake(py, ns);
        if got {
            return Ok(true);
        }
        if limit == Some(Duration::ZERO) {
            return Ok(false);
        }
        // Blocking here could wait for a task of this very loop: refuse.
        if crate::aio::in_running_loop(py)? {
            return Err(Error::Runtime(
                "the rate limit is reached and waiting would block the running event loop: \
                 use `await limiter.aacquire()`"
                    .into(),
            )
            .into());
        }
        let deadline = limit.and_then(|d| Instant::now().checked_add(d));
        let (a, ns) = self.core.acquire_or_enqueue(c, || None);
        wake(py, ns);
        let ticket = match a {
            Acquire::Granted => return Ok(true),
            Acquire::Queued(t) => t,
        };
        loop {
            let (p, ns) = self.core.poll(&ticket);
            wake(py, ns);
            let head_in = match p {
                Poll::Granted => return Ok(true),
                Poll::Over => return Ok(false),
                Poll::Wait(d) => d,
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                // Units granted as the deadline passed are kept: the acquire succeeded.
                let (got, ns) = self.core.withdraw(&ticket, true);
                wake(py, ns);
                return Ok(got);
            }
            let mut until = now + SLICE;
            if let Some(d) = head_in {
                if d < SLICE.as_secs_f64() {
                    until = now + Duration::from_secs_f64(d.max(0.0));
                }
            }
            if let Some(d) = deadline {
                until = until.min(d);
            }
            py.detach(|| ticket.sleep_until(until));
            if let Err(e) = py.check_signals() {
                let (_, ns) = self.core.withdraw(&ticket, false);
                wake(py, ns);
                return Err(e);
            }
        }
    }

    /// Asyncio slow path: `None` if `cost` was granted now, else a wait handle queued in FIFO
    /// order (see `limiter.py`).
    #[pyo3(signature = (cost=None), text_signature = "($self, cost=1.0)")]
    fn _wait_async(
        &self,
        py: Python<'_>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<RateLimiterWait>> {
        let c = self.cost(cost)?;
        let (got, ns) = self.core.try_acquire(c);
        wake(py, ns);
        if got {
            return Ok(None);
        }
        // Armed by the waiter's first `arm()`.
        let notifier = Notifier::idle();
        let (a, ns) = self
            .core
            .acquire_or_enqueue(c, || Some(Arc::downgrade(&notifier)));
        wake(py, ns);
        match a {
            Acquire::Granted => Ok(None),
            Acquire::Queued(ticket) => Ok(Some(RateLimiterWait {
                core: self.core.clone(),
                ticket,
                notifier,
            })),
        }
    }

    /// Grant nothing to anyone before `seconds` from now (the cool-down after a rate-limit
    /// answer). A longer pause extends the one in force; a shorter one does not shorten it.
    fn pause(&self, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let s = crate::args::seconds_of("seconds", seconds)?;
        Ok(self.core.pause(s)?)
    }

    /// Seconds until the pause in force ends (`0.0` when none is).
    #[getter]
    fn paused_for(&self) -> f64 {
        self.core.paused_for()
    }

    /// The counters now: `granted` units, `acquired`, `waited` (acquisitions that waited),
    /// `wait_s` (their waits summed), `paused_s` (wall time paused), `waiting` (queued now).
    fn stats(&self) -> RateLimiterStats {
        self.core.stats().into()
    }

    /// Units granted per `per` seconds.
    #[getter]
    fn rate(&self) -> f64 {
        self.core.params().rate
    }

    /// The period of `rate`, in seconds.
    #[getter]
    fn per(&self) -> f64 {
        self.core.params().per
    }

    /// Units that may go at once after idleness.
    #[getter]
    fn burst(&self) -> f64 {
        self.core.params().burst
    }

    /// Callers (threads and tasks) queued right now.
    #[getter]
    fn waiting(&self) -> usize {
        self.core.waiting()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The futures of queued tasks: a task parked here lives as long as the limiter, and
        // one abandoned with it is collected.
        self.core.try_for_each_waiter(|n| match n {
            Some(w) => Notifier::visit(w, &visit),
            None => Ok(()),
        })
    }

    fn __clear__(&self, py: Python<'_>) {
        let mut refs = Vec::new();
        let _ = self.core.try_for_each_waiter(|n| {
            refs.extend(n.as_ref().and_then(Notifier::clear).into_iter().flatten());
            Ok::<(), ()>(())
        });
        crate::lifecycle::drop_refs(py, refs);
    }

    fn __repr__(&self) -> String {
        let p = self.core.params();
        format!(
            "RateLimiter(rate={:?}, per={:?}, burst={:?})",
            p.rate, p.per, p.burst
        )
    }
}

/// A queued asyncio acquire. Loop: `arm()` returns `None` once granted, else `(future, delay)`:
/// await the future, for at most `delay` seconds when it is not `None` (this waiter is the head
/// and its grant instant is then), and `arm()` again. On cancellation or timeout call
/// `finish(keep)`. Dropped unfinished (its task destroyed), it withdraws and gives back any
/// grant, so nothing leaks.
///
/// It owns the waiter's [`Notifier`] (the current future); the limiter's queue holds a weak
/// reference to it, and the limiter's `__traverse__` visits the future while the acquire is
/// queued.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_RateLimiterWait")]
pub struct RateLimiterWait {
    core: Arc<Core>,
    ticket: Arc<Ticket>,
    notifier: Arc<Notifier>,
}

#[pymethods]
impl RateLimiterWait {
    /// `None` once granted; else a fresh future (resolved when this waiter is granted or
    /// becomes the head) and the seconds until its grant instant if it is the head.
    fn arm(&self, py: Python<'_>) -> PyResult<Option<(Py<PyAny>, Option<f64>)>> {
        // The future is in place before the poll, so a poke that follows the poll finds it.
        let future = self.notifier.arm(py)?;
        let (p, ns) = self.core.poll(&self.ticket);
        wake(py, ns);
        match p {
            Poll::Granted => {
                self.notifier.disarm(py);
                Ok(None)
            }
            Poll::Wait(d) => Ok(Some((future, d))),
            Poll::Over => {
                self.notifier.disarm(py);
                Err(PyRuntimeError::new_err(
                    "this rate-limiter wait is already over",
                ))
            }
        }
    }

    /// End the wait. With `keep`, returns whether the units are held (granted, possibly in the
    /// same instant as a timeout). Without, a grant is given back; returns `False`.
    fn finish(&self, py: Python<'_>, keep: bool) -> bool {
        self.notifier.disarm(py);
        let (kept, ns) = self.core.withdraw(&self.ticket, keep);
        wake(py, ns);
        kept
    }
}

impl Drop for RateLimiterWait {
    fn drop(&mut self) {
        // Normally already finished (a no-op then). A wait dropped unfinished gives back a
        // grant it never took.
        self.notifier.disarm_anywhere();
        let (_, ns) = self.core.withdraw(&self.ticket, false);
        if ns.iter().any(Option::is_some) {
            let _ = Python::try_attach(|py| wake(py, ns));
        }
    }
}
