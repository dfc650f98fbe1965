//! The Python binding of the pool core: `_Pool` (subclassed by `agentperf.AgentPool`),
//! `_PoolWaiter` (an asyncio waiter's handle) and the steps of an async acquire (`_Leased`,
//! `_CreateSlot`, `_StartOver`, which Python tells apart by type).
//!
//! User code (the factory, `check`, an agent's call, destroying an agent) always runs here,
//! in the binding, with no core lock held: the core returns [`Effects`] to perform.

use super::core::{Acquire, Effects, Entry, Handoff, Limits, PoolCore, PoolTicket};
use crate::aio::{Notifier, WeakNotifier};
use crate::blocking::{self, Waited};
use crate::clock::{ManualClock, SwitchClock};
use crate::errors::{CoreError, Error};
use crate::reaper::{self, Reap, Registration};
use crate::ucall;
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// A pooled agent: the user's object and its resolved sync and async call.
#[derive(Debug)]
pub struct Agent {
    obj: Py<PyAny>,
    call: Py<PyAny>,
    acall: Py<PyAny>,
}

/// How a parked waiter is woken: `None` for a blocked thread (its ticket's condvar does it),
/// for a task a weak reference to its [`Notifier`] (plain data under the core's lock; the
/// `_PoolWaiter` owns it) and the thread of its loop.
#[derive(Debug)]
pub struct AsyncNotify {
    notifier: WeakNotifier,
    thread: ThreadId,
}

type Notify = Option<AsyncNotify>;
type Core = PoolCore<Agent, Notify, SwitchClock>;

type Fx = Effects<Agent, Notify>;

struct Inner {
    core: Core,
    /// `destroy(agent)`: calls the agent's close()/aclose(); never raises.
    destroy: Py<PyAny>,
    /// Cleanup rounds running now: agents they took out of the idle set may not be closed
    /// yet, and `close()` waits for them.
    rounds: Mutex<usize>,
    rounds_done: Condvar,
}

impl Inner {
    /// Perform what the core asked for. No lock is held here.
    fn run(&self, py: Python<'_>, fx: Fx) {
        let Effects {
            destroy,
            wake,
            forget,
        } = fx;
        for a in destroy {
            let Agent { obj, call, acall } = a;
            // `obj` outlives these (they may refer to it): its last reference, and so its
            // `__del__`, goes in `drop_ref`, behind the exit guard.
            drop((call, acall));
            if let Err(e) = ucall::call1(self.destroy.bind(py), obj.bind(py)) {
                e.write_unraisable(py, None);
            }
            ucall::drop_ref(py, obj);
        }
        for n in wake.into_iter().flatten() {
            Notifier::wake(py, &n.notifier, None);
        }
        drop(forget);
    }

    #[inline]
    fn settle(&self, py: Python<'_>, fx: Fx) {
        if !fx.is_empty() {
            self.run(py, fx);
        }
    }
}

impl Reap for Inner {
    fn reap(&self) {
        // Counted before agents leave the idle set, so a `close()` that finds the set empty
        // also finds this round.
        *self.rounds.lock() += 1;
        let mut fx = Fx::new();
        self.core.reap(&mut fx);
        if !fx.is_empty() {
            // At interpreter exit nothing can be closed any more; the objects are dropped.
            let _ = Python::try_attach(|py| self.run(py, fx));
        }
        let mut n = self.rounds.lock();
        *n -= 1;
        if *n == 0 {
            self.rounds_done.notify_all();
        }
    }
}

impl Inner {
    /// Wait (detached) until no cleanup round of this pool runs, so every agent one took out
    /// of the idle set has been destroyed. Not on the cleanup thread: an agent's `close()`
    /// that closes its own pool would wait for itself.
    fn wait_for_rounds(&self, py: Python<'_>) {
        if *self.rounds.lock() == 0 || reaper::on_cleanup_thread() {
            return;
        }
        py.detach(|| {
            let mut n = self.rounds.lock();
            while *n > 0 {
                self.rounds_done.wait(&mut n);
            }
        });
    }
}

/// A duration from `agentperf.AgentPool`, which validated it (`python/agentperf/_config.py`):
/// converted, not checked again. `None` or `inf` is no limit; nothing here fails or panics.
fn limit(v: Option<f64>) -> Option<Duration> {
    v.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok())
}

/// The lease records of one object (a factory may return the same object more than once).
enum Lease {
    One(Entry<Agent>),
    Many(Vec<Entry<Agent>>),
}

/// The Rust half of `agentperf.AgentPool`. Not for direct use.
#[pyclass(frozen, subclass, module = "agentperf._agentperf", name = "_Pool")]
pub struct PyPool {
    inner: Arc<Inner>,
    /// `make() -> (agent, call, acall)`: runs the factory (sync).
    make: Py<PyAny>,
    check: Option<Py<PyAny>>,
    /// Agents leased through `acquire`/`aacquire`, by identity.
    leases: Mutex<HashMap<usize, Lease>>,
    acquire_timeout: Option<Duration>,
    registration: Mutex<Option<Registration>>,
}

impl PyPool {
    fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Run the health check on a reused agent; a failing one is destroyed.
    fn checked(&self, py: Python<'_>, e: Entry<Agent>) -> Result<Entry<Agent>, Entry<Agent>> {
        let Some(check) = &self.check else {
            return Ok(e);
        };
        let ok = match ucall::call1(check.bind(py), e.item.obj.bind(py)) {
            Ok(v) => v.is_truthy().unwrap_or(false),
            Err(_) => false,
        };
        if ok {
            Ok(e)
        } else {
            Err(e)
        }
    }

    /// Create an agent for a reserved slot, outside every lock.
    fn create(&self, py: Python<'_>) -> PyResult<Entry<Agent>> {
        let made = ucall::call0(self.make.bind(py))
            .and_then(|t| t.extract::<(Py<PyAny>, Py<PyAny>, Py<PyAny>)>());
        match made {
            Ok((obj, call, acall)) => self.adopt(py, Agent { obj, call, acall }),
            Err(err) => {
                let mut fx = Fx::new();
                self.core().create_failed(&mut fx);
                self.inner.settle(py, fx);
                Err(err)
            }
        }
    }

    fn adopt(&self, py: Python<'_>, a: Agent) -> PyResult<Entry<Agent>> {
        match self.core().created(a) {
            Ok(e) => Ok(e),
            Err(a) => {
                let mut fx = Fx::new();
                fx.destroy.push(a);
                self.inner.run(py, fx);
                Err(CoreError::PoolClosed.into())
            }
        }
    }

    /// Acquire for the blocking API: idle, else create, else wait (detached).
    fn acquire_entry(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Entry<Agent>> {
        let wait = match timeout {
            None => self.acquire_timeout,
            t => limit(t),
        };
        let core = self.core();
        loop {
            let mut fx = Fx::new();
            let r = core.try_acquire(&mut fx);
            self.inner.settle(py, fx);
            match r? {
                Acquire::Ready(e) => match self.checked(py, e) {
                    Ok(e) => return Ok(e),
                    Err(bad) => {
                        let mut fx = Fx::new();
                        core.reject(bad, &mut fx);
                        self.inner.settle(py, fx);
                    }
                },
                Acquire::Create => return self.create(py),
                Acquire::Full => {
                    // Blocking here could wait for a task of this very loop: refuse.
                    if crate::aio::in_running_loop(py)? {
                        return Err(Error::Runtime(
                            "every agent is busy and waiting would block the running event \
                             loop: use `await pool.aacquire()` / `await pool.aexecute()`"
                                .into(),
                        )
                        .into());
                    }
                    let mut fx = Fx::new();
                    let t = core.register(None, &mut fx);
                    self.inner.settle(py, fx);
                    let t = t?;
                    let start = Instant::now();
                    let deadline = wait.and_then(|w| start.checked_add(w));
                    let got = blocking::wait(py, &t, deadline);
                    let mut fx = Fx::new();
                    let h = match got {
                        Waited::Granted(h) => h,
                        Waited::TimedOut => {
                            core.withdraw(&t, &mut fx);
                            core.record_wait(start.elapsed(), true);
                            self.inner.settle(py, fx);
                            return Err(
                                Error::PoolTimeout(wait.map_or(0.0, |w| w.as_secs_f64())).into()
                            );
                        }
                        Waited::Interrupted(e) => {
                            core.withdraw(&t, &mut fx);
                            core.record_wait(start.elapsed(), false);
                            self.inner.settle(py, fx);
                            return Err(e);
                        }
                    };
                    core.record_wait(start.elapsed(), false);
                    let h = core.take(h, &mut fx);
                    self.inner.settle(py, fx);
                    match self.serve(py, h)? {
                        Some(e) => return Ok(e),
                        None => continue,
                    }
                }
            }
        }
    }

    /// A handoff received by a blocked thread: `None` means start over.
    fn serve(&self, py: Python<'_>, h: Handoff<Agent>) -> PyResult<Option<Entry<Agent>>> {
        match h {
            Handoff::Agent(e) => match self.checked(py, e) {
                Ok(e) => Ok(Some(e)),
                Err(bad) => {
                    let mut fx = Fx::new();
                    self.core().discard_keep_slot(bad, false, &mut fx);
                    self.inner.settle(py, fx);
                    self.create(py).map(Some)
                }
            },
            Handoff::Create => self.create(py).map(Some),
            Handoff::Closed => Err(CoreError::PoolClosed.into()),
            Handoff::Retry => Ok(None),
        }
    }

    fn put_back(&self, py: Python<'_>, e: Entry<Agent>, discard: bool) {
        let mut fx = Fx::new();
        self.core().release(e, discard, &mut fx);
        self.inner.settle(py, fx);
    }

    /// Record a lease and hand out the agent (with its async call).
    fn lease(&self, py: Python<'_>, e: Entry<Agent>) -> Leased {
        self.core().acquired();
        let obj = e.item.obj.clone_ref(py);
        let acall = e.item.acall.clone_ref(py);
        let key = obj.as_ptr() as usize;
        let mut leases = self.leases.lock();
        match leases.remove(&key) {
            None => leases.insert(key, Lease::One(e)),
            Some(Lease::One(first)) => leases.insert(key, Lease::Many(vec![first, e])),
            Some(Lease::Many(mut all)) => {
                all.push(e);
                leases.insert(key, Lease::Many(all))
            }
        };
        drop(leases);
        Leased { agent: obj, acall }
    }
}

#[pymethods]
impl PyPool {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (make, check, destroy, initial_size, max_size, idle_timeout,
                        max_lifetime, acquire_timeout, cleanup_interval, _manual_clock=false))]
    fn new(
        make: Py<PyAny>,
        check: Option<Py<PyAny>>,
        destroy: Py<PyAny>,
        initial_size: usize,
        max_size: usize,
        idle_timeout: Option<f64>,
        max_lifetime: Option<f64>,
        acquire_timeout: Option<f64>,
        cleanup_interval: f64,
        _manual_clock: bool,
    ) -> Self {
        // `AgentPool` validated every value (PoolConfig, _config.py): none is checked again.
        // Out-of-range ones from a direct call are made sane, never an error or a panic.
        let max_size = max_size.max(1);
        let limits = Limits {
            initial_size: initial_size.min(max_size),
            max_size,
            idle_timeout: limit(idle_timeout),
            max_lifetime: limit(max_lifetime),
        };
        let acquire_timeout = limit(acquire_timeout);
        let interval = limit(Some(cleanup_interval));
        let inner = Arc::new(Inner {
            core: PoolCore::new(
                limits,
                if _manual_clock {
                    SwitchClock::Manual(Arc::new(ManualClock::new(1)))
                } else {
                    SwitchClock::Monotonic
                },
            ),
            destroy,
            rounds: Mutex::new(0),
            rounds_done: Condvar::new(),
        });
        let registration = match interval {
            Some(i) if limits.idle_timeout.is_some() || limits.max_lifetime.is_some() => {
                Some(reaper::register(&inner, crate::args::cleanup_interval(i)))
            }
            _ => None,
        };
        Self {
            inner,
            make,
            check,
            leases: Mutex::new(HashMap::new()),
            acquire_timeout,
            registration: Mutex::new(registration),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // So a factory or check that refers back to its pool is collectable.
        visit.call(&self.make)?;
        visit.call(&self.check)?;
        visit.call(&self.inner.destroy)?;
        // The futures of parked tasks: a task waiting here lives as long as the pool, and one
        // abandoned with it is collected.
        self.core().try_for_each_waiter(|n| match n {
            Some(a) => Notifier::visit(&a.notifier, &visit),
            None => Ok(()),
        })
    }

    fn __clear__(&self, py: Python<'_>) {
        // Only the parked tasks' futures: `make`, `check` and `destroy` are immutable (the
        // futures' own `tp_clear` breaks any cycle through them).
        let mut refs = Vec::new();
        let _ = self.core().try_for_each_waiter(|n| {
            refs.extend(
                n.as_ref()
                    .and_then(|a| Notifier::clear(&a.notifier))
                    .into_iter()
                    .flatten(),
            );
            Ok::<(), ()>(())
        });
        crate::lifecycle::drop_refs(py, refs);
    }

    /// Acquire an agent (waiting up to `acquire_timeout`), call it on `input`, release it.
    /// The agent's exception (if any) reaches the caller unchanged and the agent goes back
    /// to the pool.
    #[pyo3(signature = (input, /))]
    fn execute(&self, py: Python<'_>, input: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let e = self.acquire_entry(py, None)?;
        self.core().acquired();
        let out = ucall::call1(e.item.call.bind(py), input).map(Bound::unbind);
        self.put_back(py, e, false);
        out
    }

    /// Lease an agent, waiting up to `timeout` seconds (`None`: the pool's
    /// `acquire_timeout`) for one to become free; then `PoolTimeoutError`.
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let e = self.acquire_entry(py, timeout)?;
        Ok(self.lease(py, e).agent)
    }

    /// Give back a leased agent; `discard=True` destroys it instead. `ValueError` for an
    /// object that is not a leased agent of this pool (or was released already).
    #[pyo3(signature = (agent, discard=false))]
    fn release(&self, py: Python<'_>, agent: &Bound<'_, PyAny>, discard: bool) -> PyResult<()> {
        let key = agent.as_ptr() as usize;
        let e = {
            let mut leases = self.leases.lock();
            match leases.remove(&key) {
                Some(Lease::One(e)) => Some(e),
                Some(Lease::Many(mut all)) => {
                    let e = all.pop();
                    if all.len() == 1 {
                        leases.insert(key, Lease::One(all.remove(0)));
                    } else if !all.is_empty() {
                        leases.insert(key, Lease::Many(all));
                    }
                    e
                }
                None => None,
            }
        };
        match e {
            Some(e) => {
                self.put_back(py, e, discard);
                Ok(())
            }
            None => Err(PyValueError::new_err(format!(
                "release(agent=<{} object at {key:#x}>): not an agent leased from this pool, \
                 or released already",
                crate::args::type_name(agent)
            ))),
        }
    }

    /// Close the pool: waiters get `PoolClosedError`, idle agents are destroyed (by the
    /// time this returns, those a running cleanup round took too), agents released later are
    /// destroyed. Closing twice is harmless.
    fn close(&self, py: Python<'_>) {
        self._close_nowait(py);
        self.inner.wait_for_rounds(py);
    }

    /// `close()` without waiting for a running cleanup round (`async with` runs
    /// `_wait_cleaning()` in a worker thread instead of blocking the event loop).
    fn _close_nowait(&self, py: Python<'_>) {
        let mut fx = Fx::new();
        if self.core().close(&mut fx) {
            let reg = self.registration.lock().take();
            drop(reg);
        }
        self.inner.settle(py, fx);
    }

    /// Whether a cleanup round of this pool is running (closing agents it took).
    fn _cleaning(&self) -> bool {
        *self.inner.rounds.lock() > 0
    }

    /// Wait (detached) until no cleanup round of this pool runs.
    fn _wait_cleaning(&self, py: Python<'_>) {
        self.inner.wait_for_rounds(py);
    }

    /// Whether `close()` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.core().is_closed()
    }

    /// Create agents (sync factory) until the pool holds `initial_size`.
    fn _fill(&self, py: Python<'_>) -> PyResult<()> {
        // At most `initial_size` creations: an agent older than `max_lifetime` by the time it
        // is stored is destroyed at once, which would free its slot again forever.
        let mut left = self.core().limits().initial_size;
        while left > 0 && self.core().reserve_initial() {
            left -= 1;
            let e = self.create(py)?;
            let mut fx = Fx::new();
            self.core().add_idle(e, &mut fx);
            self.inner.settle(py, fx);
        }
        Ok(())
    }

    /// Reserve a slot for one of the `initial_size` agents (async factory).
    fn _reserve_initial(&self) -> bool {
        self.core().reserve_initial()
    }

    /// Put an agent created for a reserved initial slot in the idle set.
    fn _add_idle(
        &self,
        py: Python<'_>,
        obj: Py<PyAny>,
        call: Py<PyAny>,
        acall: Py<PyAny>,
    ) -> PyResult<()> {
        let e = self.adopt(py, Agent { obj, call, acall })?;
        let mut fx = Fx::new();
        self.core().add_idle(e, &mut fx);
        self.inner.settle(py, fx);
        Ok(())
    }

    /// Non-blocking step of an async acquire: a `_Leased` agent, a `_CreateSlot` reserved
    /// for the caller to create into, or a `_PoolWaiter` parked.
    fn _atry(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let core = this.core();
        loop {
            let mut fx = Fx::new();
            let r = core.try_acquire(&mut fx);
            this.inner.settle(py, fx);
            match r? {
                Acquire::Ready(e) => match this.checked(py, e) {
                    Ok(e) => return Ok(Py::new(py, this.lease(py, e))?.into_any()),
                    Err(bad) => {
                        let mut fx = Fx::new();
                        core.reject(bad, &mut fx);
                        this.inner.settle(py, fx);
                    }
                },
                Acquire::Create => return Ok(Py::new(py, CreateSlot)?.into_any()),
                Acquire::Full => {
                    let (notifier, future) = Notifier::new(py)?;
                    let notify = AsyncNotify {
                        notifier: Arc::downgrade(&notifier),
                        thread: std::thread::current().id(),
                    };
                    let mut fx = Fx::new();
                    let t = core.register(Some(notify), &mut fx);
                    this.inner.settle(py, fx);
                    let w = PyWaiter {
                        pool: slf.clone().unbind(),
                        ticket: Mutex::new(Some(t?)),
                        notifier,
                        future,
                        start: Instant::now(),
                    };
                    return Ok(Py::new(py, w)?.into_any());
                }
            }
        }
    }

    /// Report an agent created (async factory) for a slot from `_atry`/`take`; leases it.
    fn _adopt(
        &self,
        py: Python<'_>,
        obj: Py<PyAny>,
        call: Py<PyAny>,
        acall: Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let e = self.adopt(py, Agent { obj, call, acall })?;
        Ok(self.lease(py, e).acall)
    }

    /// Report a failed creation for a reserved slot (frees it, wakes a waiter).
    fn _create_failed(&self, py: Python<'_>) {
        let mut fx = Fx::new();
        self.core().create_failed(&mut fx);
        self.inner.settle(py, fx);
    }

    /// `((active, idle, size, max_size, waiting), (created, destroyed, recycled, acquired,
    /// released, waits, timeouts), avg_wait_ms)`.
    #[allow(clippy::type_complexity)]
    fn _stats(
        &self,
    ) -> (
        (usize, usize, usize, usize, usize),
        (u64, u64, u64, u64, u64, u64, u64),
        f64,
    ) {
        let s = self.core().stats();
        (
            (s.active, s.idle, s.size, s.max_size, s.waiting),
            (
                s.created,
                s.destroyed,
                s.recycled,
                s.acquired,
                s.released,
                s.waits,
                s.timeouts,
            ),
            s.avg_wait_ms(),
        )
    }

    /// The wait-time histogram (metrics): `(counts per bucket, sum_s)`, one observation per
    /// acquire (0 s for those that did not wait). Takes no lock.
    fn _wait_histogram(&self) -> (Vec<u64>, f64) {
        crate::histogram::py::snapshot_tuple(&self.core().wait_histogram())
    }

    /// Number of agents leased through acquire/aacquire now.
    fn _leased(&self) -> usize {
        let leases = self.leases.lock();
        leases
            .values()
            .map(|l| if let Lease::Many(v) = l { v.len() } else { 1 })
            .sum()
    }

    /// Test hook: move a pool made with ``_manual_clock=True`` forward (agents' ages and idle
    /// times are read from that clock; waits are not).
    fn _advance(&self, seconds: f64) -> PyResult<()> {
        match self.core().clock() {
            SwitchClock::Manual(c) if seconds.is_finite() && seconds >= 0.0 => {
                c.advance(Duration::from_secs_f64(seconds));
                Ok(())
            }
            _ => Err(PyValueError::new_err(format!(
                "_advance({seconds}): needs _manual_clock=True and seconds >= 0"
            ))),
        }
    }

    /// Run one cleanup round now (what the cleanup thread does every `cleanup_interval`).
    fn _reap(&self, py: Python<'_>) {
        let mut fx = Fx::new();
        self.core().reap(&mut fx);
        self.inner.settle(py, fx);
    }

    /// In a forked child: forget the parent's leases and waiters (see `AgentPool`).
    fn _after_fork_child(&self, py: Python<'_>) {
        let me = std::thread::current().id();
        let mut fx = Fx::new();
        self.core()
            .after_fork_child(|n| matches!(n, Some(a) if a.thread == me), &mut fx);
        let leases = std::mem::take(&mut *self.leases.lock());
        // Written off, not closed: they belong to threads of the parent.
        drop(leases);
        self.inner.settle(py, fx);
    }
}

/// A step of an async acquire: the agent is leased to the caller; `acall` is its async call.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_Leased")]
pub struct Leased {
    /// The leased object, as the factory made it.
    #[pyo3(get)]
    agent: Py<PyAny>,
    /// Its async call (`await acall(input)`).
    #[pyo3(get)]
    acall: Py<PyAny>,
}

#[pymethods]
impl Leased {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Immutable: no `__clear__` (an agent referring to its lease step is collectable).
        visit.call(&self.agent)?;
        visit.call(&self.acall)
    }
}

/// A step of an async acquire: a slot is reserved for the caller, who creates the agent (an
/// async factory) and reports it with `_adopt`, or its failure with `_create_failed`.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_CreateSlot")]
pub struct CreateSlot;

/// A step of an async acquire: nothing was handed over; try again from `_atry`.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_StartOver")]
pub struct StartOver;

/// An asyncio task parked on the pool: await `future`, then `take()` (or `withdraw()` on
/// cancellation or timeout). Dropping it unused withdraws it.
///
/// It owns the waiter's [`Notifier`] (the pool's queue holds a weak reference) and its own
/// reference to the future, which its `__traverse__` visits with the pool's.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_PoolWaiter")]
pub struct PyWaiter {
    pool: Py<PyPool>,
    ticket: Mutex<Option<PoolTicket<Agent>>>,
    notifier: Arc<Notifier>,
    future: Py<PyAny>,
    start: Instant,
}

impl PyWaiter {
    fn give_up(&self, py: Python<'_>, timed_out: bool) {
        // Disarmed first: the queue never holds the future of a withdrawn waiter.
        self.notifier.disarm(py);
        let t = self.ticket.lock().take();
        if let Some(t) = t {
            let pool = self.pool.get();
            let mut fx = Fx::new();
            pool.core().withdraw(&t, &mut fx);
            pool.core().record_wait(self.start.elapsed(), timed_out);
            pool.inner.settle(py, fx);
        }
    }
}

#[pymethods]
impl PyWaiter {
    /// The future to await; it resolves when something was handed to this waiter.
    #[getter]
    fn future<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.future.bind(py).clone()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Both immutable: the future's `tp_clear` breaks a cycle through them, no `__clear__`.
        visit.call(&self.pool)?;
        visit.call(&self.future)
    }

    /// Give up waiting; whatever was handed over meanwhile goes to the next waiter.
    #[pyo3(signature = (timed_out=false))]
    fn withdraw(&self, py: Python<'_>, timed_out: bool) {
        self.give_up(py, timed_out);
    }

    /// After the future resolved: a `_Leased` agent, a `_CreateSlot` to create into, or
    /// `_StartOver`; `PoolClosedError` if the pool closed.
    fn take(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let t = self.ticket.lock().take();
        let Some(t) = t else {
            return Ok(Py::new(py, StartOver)?.into_any());
        };
        let pool = self.pool.get();
        let core = pool.core();
        let Some(h) = t.try_take() else {
            // Woken without a grant (cannot happen by design): give up and start over.
            self.notifier.disarm(py);
            let mut fx = Fx::new();
            core.withdraw(&t, &mut fx);
            pool.inner.settle(py, fx);
            return Ok(Py::new(py, StartOver)?.into_any());
        };
        core.record_wait(self.start.elapsed(), false);
        let mut fx = Fx::new();
        let h = core.take(h, &mut fx);
        pool.inner.settle(py, fx);
        let step = match h {
            Handoff::Agent(e) => match pool.checked(py, e) {
                Ok(e) => Py::new(py, pool.lease(py, e))?.into_any(),
                Err(bad) => {
                    let mut fx = Fx::new();
                    core.discard_keep_slot(bad, false, &mut fx);
                    pool.inner.settle(py, fx);
                    Py::new(py, CreateSlot)?.into_any()
                }
            },
            Handoff::Create => Py::new(py, CreateSlot)?.into_any(),
            Handoff::Closed => return Err(CoreError::PoolClosed.into()),
            Handoff::Retry => Py::new(py, StartOver)?.into_any(),
        };
        Ok(step)
    }
}

impl Drop for PyWaiter {
    fn drop(&mut self) {
        if self.ticket.get_mut().is_some() {
            let _ = Python::try_attach(|py| self.give_up(py, false));
        }
        self.notifier.disarm_anywhere();
    }
}
