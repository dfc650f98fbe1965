//! Python bindings of the cache: `ap.Cache` (str/bytes keys), the Rust half of
//! `ap.CachedAgent` (digest + lookup in one call, single-flight) and `ap.CacheStats`.
//!
//! Single-flight is [`super::flight`]'s; this file supplies the Python parts (the caller's
//! thread and task, asyncio wake-ups, the shared exception) and settles its effects.
//!
//! Locks: `flights` (per cached agent) may be held while a store shard lock is taken, never
//! the reverse. No Python code runs under either; values leaving the store are dropped after
//! both are released.

use super::core::{ByteKey, ByteKeyRef, Cache as Store, Policy, Ttl};
use super::flight::{self, Caller, FlightTicket, Lease, Reentrant, SingleFlight};
use super::tier::{self, Control, Keep};
use crate::aio::{Notifier, WeakNotifier};
use crate::args;
use crate::blocking::{self, Waited};
use crate::clock::{Clock, ManualClock, MonotonicClock, Nanos};
use crate::errors::Error;
use crate::reaper::{self, Reap, Registration};
use crate::ucall;
use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString, PyTuple};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

/// The clock of a Python-facing cache: the monotonic clock, or a manual one for tests.
#[derive(Debug, Clone)]
pub enum AnyClock {
    /// Real time ([`MonotonicClock`]).
    Mono,
    /// Moved by `_advance` (tests).
    Manual(Arc<ManualClock>),
}

impl Clock for AnyClock {
    #[inline]
    fn now(&self) -> Nanos {
        match self {
            AnyClock::Mono => MonotonicClock.now(),
            AnyClock::Manual(c) => c.now(),
        }
    }
}

type PyStore<K> = Store<K, Py<PyAny>, AnyClock>;

/// Drop Python objects from a thread that may not be attached (the cleanup thread).
fn drop_attached(v: Vec<Py<PyAny>>) {
    let mut v = Some(v);
    let _ = Python::try_attach(|_py| drop(v.take()));
    if let Some(v) = v {
        // The interpreter is finalizing: leaking beats touching it.
        std::mem::forget(v);
    }
}

/// A store that the cleanup thread sweeps.
struct Swept<K>(PyStore<K>);

impl<K: super::core::Key + Send + Sync + 'static> Reap for Swept<K> {
    fn reap(&self) {
        self.0.sweep(drop_attached);
    }
}

// ---------------------------------------------------------------- argument validation

fn max_size_arg(v: &Bound<'_, PyAny>) -> PyResult<usize> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(args::type_error("max_size", v, "an int"));
    }
    let n: i128 = v.extract().unwrap_or(i128::MAX);
    let value = || args::shown(v);
    if n < 1 {
        return Err(Error::Config {
            field: "max_size",
            value: value(),
            why: "must be >= 1",
        }
        .into());
    }
    usize::try_from(n).map_err(|_| {
        Error::Config {
            field: "max_size",
            value: value(),
            why: "is too large",
        }
        .into()
    })
}

/// Seconds from an int, float or timedelta; `None` stands for None. Validated positive
/// (`inf` allowed). Returns `Ok(None)` for None, `Ok(Some(None))` for infinity.
fn seconds_arg(
    field: &'static str,
    v: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Option<Duration>>> {
    match v.filter(|v| !v.is_none()) {
        None => Ok(None),
        Some(v) => Ok(Some(crate::clock::seconds(
            field,
            args::seconds_of(field, v)?,
        )?)),
    }
}

fn make_store<K: super::core::Key>(
    max_size: usize,
    ttl: Option<Duration>,
    count: bool,
    clock: AnyClock,
    (policy, max_weight): (Policy, Option<u64>),
) -> PyResult<PyStore<K>> {
    Store::with_policy(max_size, ttl, count, clock, policy, max_weight).map_err(|_| {
        Error::Config {
            field: "max_size",
            value: max_size.to_string(),
            why: "is too large",
        }
        .into()
    })
}

fn closed_error(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!("this {what} is closed"))
}

// ---------------------------------------------------------------- CacheStats

/// Counters and size of a cache at one instant.
///
/// ``hit_rate`` is ``hits / (hits + misses)`` in percent (0 when nothing was looked up).
/// Every call of a cached agent counts once, as a hit or a miss. A caller served by another
/// caller's in-flight call counts as a hit when that call succeeded and as a miss when it
/// raised; either way it also counts in ``coalesced``.
#[pyclass(frozen, get_all, module = "agentperf")]
#[derive(Debug, Clone)]
pub struct CacheStats {
    /// Lookups served without running the agent: from the cache, or by another caller's
    /// in-flight call that succeeded.
    hits: u64,
    /// Lookups that found nothing (for a cached agent: calls that ran the agent, callers of
    /// a shared call that raised, and callers that gave up waiting).
    misses: u64,
    /// ``hits / (hits + misses)`` in percent, 0..100.
    hit_rate: f64,
    /// Entries held (expired ones the cleanup has not reached yet included).
    size: usize,
    /// The bound on live entries.
    max_size: usize,
    /// Sum of the held entries' weights (``weigher(value)`` each; 1 each without a weigher).
    weight: u64,
    /// The bound on ``weight`` (``None``: no weight bound).
    max_weight: Option<u64>,
    /// Live entries removed to make room.
    evictions: u64,
    /// Expired entries removed.
    expirations: u64,
    /// Callers that received the outcome (value or exception) of another caller's in-flight
    /// call instead of running the agent (always 0 for a plain ``Cache``).
    coalesced: u64,
    /// Calls served by the second tier (a store): also counted in ``hits``. 0 without one.
    store_hits: u64,
    /// Calls the store could not serve (not there, expired, or unreadable).
    store_misses: u64,
    /// Store failures (down, slow, skipped by its breaker) and entries that failed to
    /// decode or could not be encoded; the calls went on without the store.
    store_errors: u64,
}

#[pymethods]
impl CacheStats {
    fn __repr__(&self) -> String {
        format!(
            "CacheStats(hits={}, misses={}, hit_rate={:.2}, size={}, max_size={}, \
             weight={}, max_weight={}, evictions={}, expirations={}, coalesced={}, \
             store_hits={}, store_misses={}, store_errors={})",
            self.hits,
            self.misses,
            self.hit_rate,
            self.size,
            self.max_size,
            self.weight,
            self.max_weight
                .map_or_else(|| "None".to_string(), |w| w.to_string()),
            self.evictions,
            self.expirations,
            self.coalesced,
            self.store_hits,
            self.store_misses,
            self.store_errors
        )
    }

    /// A copy with the second tier's counters (for ``agentperf.CachedAgent`` with a store).
    fn _with_store(&self, store_hits: u64, store_misses: u64, store_errors: u64) -> Self {
        CacheStats {
            store_hits,
            store_misses,
            store_errors,
            ..self.clone()
        }
    }
}

fn stats_of<K: super::core::Key>(s: &PyStore<K>, coalesced: u64) -> CacheStats {
    let st = s.stats();
    let looked = st.hits + st.misses;
    CacheStats {
        hits: st.hits,
        misses: st.misses,
        hit_rate: if looked == 0 {
            0.0
        } else {
            st.hits as f64 * 100.0 / looked as f64
        },
        size: st.size,
        max_size: s.max_size(),
        weight: st.weight,
        max_weight: s.max_weight(),
        evictions: st.evictions,
        expirations: st.expirations,
        coalesced,
        store_hits: 0,
        store_misses: 0,
        store_errors: 0,
    }
}

// ---------------------------------------------------------------- Cache

/// A sharded, thread-safe TTL/LRU cache for ``str`` and ``bytes`` keys.
///
/// ``Cache(max_size=10_000, ttl=None, *, cleanup_interval=60.0, enable_stats=True,
/// policy="lru", max_weight=None, weigher=None)``; an argument given as ``None`` takes its
/// default. ``policy="tinylfu"`` admits by frequency (W-TinyLFU); ``max_weight`` with
/// ``weigher(value) -> int`` bounds the sum of weights (one shard then; a heavier value is
/// not stored). Holds at most ``max_size`` live entries (least recently used evicted first: exact LRU up to
/// 8191 entries, per shard above); ``ttl`` seconds is the default lifetime (``None``: forever).
/// Expired entries are never returned; the shared cleanup thread removes them every
/// ``cleanup_interval`` seconds. Values are stored and returned as-is (no copy).
///
/// >>> c = Cache(max_size=2)
/// >>> c.set("a", 1); c.get("a")
/// 1
#[pyclass(frozen, subclass, weakref, module = "agentperf")]
pub struct Cache {
    store: Arc<Swept<ByteKey>>,
    weigher: Option<Py<PyAny>>,
    manual: Option<Arc<ManualClock>>,
    reg: Mutex<Option<Registration>>,
    closed: AtomicBool,
}

const STR: u8 = 0;
const BYTES: u8 = 1;

#[inline]
fn with_key<R>(key: &Bound<'_, PyAny>, f: impl FnOnce(ByteKeyRef<'_>) -> R) -> PyResult<R> {
    if let Ok(s) = key.cast::<PyString>() {
        Ok(f(ByteKeyRef {
            tag: STR,
            bytes: s.to_str()?.as_bytes(),
        }))
    } else if let Ok(b) = key.cast::<PyBytes>() {
        Ok(f(ByteKeyRef {
            tag: BYTES,
            bytes: b.as_bytes(),
        }))
    } else {
        Err(PyTypeError::new_err(format!(
            "Cache keys are str or bytes, not {}",
            crate::args::type_name(key)
        )))
    }
}

impl Cache {
    #[inline]
    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed_error("Cache"));
        }
        Ok(())
    }
}

#[pymethods]
impl Cache {
    #[new]
    #[pyo3(signature = (max_size=None, ttl=None, *, cleanup_interval=None, enable_stats=None, policy=None, max_weight=None, weigher=None, _manual_clock=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_size: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        cleanup_interval: Option<&Bound<'_, PyAny>>,
        enable_stats: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
        max_weight: Option<&Bound<'_, PyAny>>,
        weigher: Option<&Bound<'_, PyAny>>,
        _manual_clock: bool,
    ) -> PyResult<Self> {
        let policy = args::cache_policy(policy)?;
        let (max_weight, weigher) = args::cache_weights(max_weight, weigher)?;
        let max_size = match max_size {
            Some(v) => max_size_arg(v)?,
            None => 10_000,
        };
        let ttl = seconds_arg("ttl", ttl)?.flatten();
        let interval = match cleanup_interval {
            None => Some(Duration::from_secs(60)),
            Some(v) if v.is_none() => {
                return Err(args::type_error(
                    "cleanup_interval",
                    v,
                    "a positive number of seconds",
                ))
            }
            Some(v) => seconds_arg("cleanup_interval", Some(v))?.flatten(),
        };
        let enable_stats = match enable_stats {
            None => true,
            Some(v) => match v.cast::<PyBool>() {
                Ok(b) => b.is_true(),
                Err(_) => return Err(args::type_error("enable_stats", v, "a bool")),
            },
        };
        let manual = _manual_clock.then(|| Arc::new(ManualClock::new(0)));
        let clock = manual.clone().map_or(AnyClock::Mono, AnyClock::Manual);
        let store = Arc::new(Swept(make_store(
            max_size,
            ttl,
            enable_stats,
            clock,
            (policy, max_weight),
        )?));
        // An infinite interval means no background sweep (expiry stays lazy).
        let reg = interval.map(|i| reaper::register(&store, args::cleanup_interval(i)));
        Ok(Cache {
            store,
            weigher,
            manual,
            reg: Mutex::new(reg),
            closed: AtomicBool::new(false),
        })
    }

    /// The value stored under ``key``, or ``default`` if absent or expired.
    #[pyo3(signature = (key, default=None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let mut trash = Vec::new();
        let got = with_key(key, |q| {
            self.store.0.get(&q, |v| v.clone_ref(py), &mut trash, true)
        })?;
        drop(trash);
        Ok(match got {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None()),
        })
    }

    /// Store ``value`` under ``key``. ``ttl`` overrides the default lifetime for this entry:
    /// ``None`` keeps the default, ``math.inf`` never expires. With a weigher, ``weigher(value)``
    /// runs first (no lock held); a value heavier than ``max_weight`` is not stored (and an
    /// older value of ``key`` is removed).
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: Py<PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_open()?;
        let ttl = match seconds_arg("ttl", ttl)? {
            None => Ttl::Default,
            Some(None) => Ttl::Never,
            Some(Some(d)) => Ttl::For(d),
        };
        let weight = match &self.weigher {
            Some(w) => args::weigh(w.bind(py), value.bind(py))?,
            None => 1,
        };
        let mut trash = Vec::new();
        let old = with_key(key, |q| {
            self.store
                .0
                .set_weighted(ByteKey::new(q.tag, q.bytes), value, ttl, weight, &mut trash)
        })?;
        drop(old);
        drop(trash);
        Ok(())
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.check_open()?;
        with_key(key, |q| self.store.0.contains(&q))
    }

    fn __len__(&self) -> usize {
        self.store.0.len()
    }

    /// Remove ``key``; ``True`` if a live entry was removed.
    fn delete(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.check_open()?;
        let mut trash = Vec::new();
        let r = with_key(key, |q| self.store.0.remove(&q, &mut trash));
        drop(trash);
        r
    }

    /// Remove every entry (the counters are kept).
    fn clear(&self) {
        let mut trash = Vec::new();
        self.store.0.clear(&mut trash);
        drop(trash);
    }

    /// Hits, misses, hit rate, size, max_size, evictions and expirations.
    fn stats(&self) -> CacheStats {
        stats_of(&self.store.0, 0)
    }

    /// The bound on live entries.
    #[getter]
    fn max_size(&self) -> usize {
        self.store.0.max_size()
    }

    /// Drop every entry and leave the cleanup thread. Closing twice is harmless; other
    /// methods then raise ``RuntimeError``.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let reg = self.reg.lock().take();
        drop(reg);
        self.clear();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Cache(max_size={}, len={})",
            self.store.0.max_size(),
            self.store.0.len()
        )
    }

    /// Test hook: move a cache made with ``_manual_clock=True`` forward.
    fn _advance(&self, seconds: f64) -> PyResult<()> {
        let Some(c) = &self.manual else {
            return Err(PyRuntimeError::new_err(
                "_advance needs Cache(..., _manual_clock=True)",
            ));
        };
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(Error::Value(format!("_advance({seconds}): must be >= 0")).into());
        }
        c.advance(Duration::from_secs_f64(seconds));
        Ok(())
    }

    /// Test hook: run one cleanup sweep now; returns how many entries it removed.
    fn _sweep(&self) -> usize {
        self.store.0.sweep(drop)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // So a weigher that refers back to its cache is collectable.
        visit.call(&self.weigher)
    }

    /// Diagnostics: bytes of Rust memory the store holds (slabs, tables, queues, sketches;
    /// not key bytes on the heap nor the values' Python objects).
    fn _memory_bytes(&self) -> usize {
        self.store.0.memory_bytes()
    }

    /// The eviction policy: ``"lru"`` or ``"tinylfu"``.
    #[getter]
    fn policy(&self) -> &'static str {
        match self.store.0.policy() {
            Policy::Lru => "lru",
            Policy::TinyLfu => "tinylfu",
        }
    }
}

// ---------------------------------------------------------------- single-flight

/// The exception a shared call raised, with its traceback as the leader's agent left it.
struct Failure {
    exc: Py<PyAny>,
    tb: Option<Py<PyAny>>,
}

impl Failure {
    fn new(exc: Bound<'_, PyAny>) -> Self {
        let tb = exc
            .getattr(pyo3::intern!(exc.py(), "__traceback__"))
            .ok()
            .filter(|t| !t.is_none())
            .map(Bound::unbind);
        Failure {
            exc: exc.unbind(),
            tb,
        }
    }

    /// The shared exception, its traceback reset to the leader's: each raise appends the
    /// raising frames, and without the reset the traceback would keep a frame of every
    /// caller it was ever raised to.
    fn raise(&self, py: Python<'_>) -> PyErr {
        let exc = self.exc.bind(py);
        let tb = match &self.tb {
            Some(t) => t.bind(py).clone(),
            None => py.None().into_bound(py),
        };
        if let Err(e) = exc.setattr(pyo3::intern!(py, "__traceback__"), tb) {
            drop(e);
        }
        PyErr::from_value(exc.clone())
    }
}

/// What a flight ended with, as its followers receive it.
type Outcome = flight::Outcome<Arc<Py<PyAny>>, Arc<Failure>>;

/// A digest is uniform: its first 8 bytes are a fine hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// Who calls: the thread, and the asyncio task of an async caller.
struct PyCaller {
    thread: ThreadId,
    task: Option<Py<PyAny>>,
}

impl Caller for PyCaller {
    fn waits_for_itself(&self, leader: &Self) -> bool {
        match (&self.task, &leader.task) {
            (Some(t), Some(lt)) => t.as_ptr() == lt.as_ptr(),
            // A blocking caller on the leader's thread (the loop thread of an async leader,
            // or a sync leader's own thread) would block the leader forever; so would a task
            // on a blocked sync leader's thread (a nested event loop).
            _ => self.thread == leader.thread,
        }
    }
}

/// How a parked follower is woken: `None` for a blocked thread (its ticket's condvar does
/// it), else a weak reference to the task's [`Notifier`] (plain data under the flights lock;
/// its `Flight` owns it) and the thread of its loop.
type Notify = Option<(WeakNotifier, ThreadId)>;

type Flights = SingleFlight<
    [u8; 32],
    Arc<Py<PyAny>>,
    Arc<Failure>,
    Notify,
    PyCaller,
    BuildHasherDefault<DigestHasher>,
>;
type Fx = flight::Effects<Notify, PyCaller>;
type Joined = flight::Joined<Py<PyAny>, Arc<Py<PyAny>>, Arc<Failure>>;
type PyTicket = FlightTicket<Arc<Py<PyAny>>, Arc<Failure>>;

/// Wake the followers granted an outcome, then drop what the core let go of (attached, no
/// lock held).
#[inline]
fn settle(py: Python<'_>, mut fx: Fx) {
    if fx.must_wake() {
        for (w, _) in fx.take_wake().into_iter().flatten() {
            Notifier::wake(py, &w, None);
        }
    }
    drop(fx);
}

/// The state shared by a cached agent and its in-flight handles.
struct Shared {
    store: PyStore<[u8; 32]>,
    weigher: Option<Py<PyAny>>,
    flights: Flights,
    closed: AtomicBool,
}

impl Reap for Shared {
    fn reap(&self) {
        self.store.sweep(drop_attached);
    }
}

static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn current_task(py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    let f = CURRENT_TASK.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("current_task")?.unbind())
    })?;
    let t = f.bind(py).call0()?;
    Ok((!t.is_none()).then(|| t.unbind()))
}

fn reentrant_error() -> PyErr {
    PyRuntimeError::new_err(
        "re-entrant CachedAgent call: the agent asked its own cache for the key it is \
         computing (same thread or task); this would deadlock",
    )
}

impl Shared {
    /// Join the flight for `key`, find the key cached, or lead. `task` is the caller's
    /// asyncio task (None for a blocking caller); `waiter` the notifier of the future an
    /// async caller will await.
    fn join(
        &self,
        py: Python<'_>,
        key: &[u8; 32],
        task: Option<Py<PyAny>>,
        waiter: Option<&Arc<Notifier>>,
        refresh: bool,
    ) -> PyResult<Joined> {
        let me = std::thread::current().id();
        let mut trash = Vec::new();
        let mut fx = Fx::new();
        let r = self.flights.join(
            key,
            PyCaller { thread: me, task },
            waiter.map(|w| (Arc::downgrade(w), me)),
            || {
                if refresh {
                    None
                } else {
                    self.store.get(key, |v| v.clone_ref(py), &mut trash, false)
                }
            },
            &mut fx,
        );
        drop(trash);
        settle(py, fx);
        match r {
            Err(Reentrant) => Err(reentrant_error()),
            Ok(j) => {
                if matches!(j, Joined::Lead(_)) {
                    self.store.note_miss();
                }
                Ok(j)
            }
        }
    }

    /// End the flight `lease` of `key` with `outcome`: cache a value (unless invalidated
    /// meanwhile or closed), hand the outcome to every follower and wake the async ones.
    /// A weigher that fails turns the outcome into its error (returned, and shared with the
    /// followers); nothing is cached then. `keep` says for how long (or whether) to cache a
    /// value, and whether the leader's miss was a hit of the second tier.
    fn finish(
        &self,
        py: Python<'_>,
        key: &[u8; 32],
        lease: Lease,
        outcome: Outcome,
        keep: Keep,
    ) -> PyResult<()> {
        if keep.hit && matches!(outcome, Outcome::Value(_)) {
            self.store.unnote_miss();
            self.store.note_hit();
        }
        // The weigher is user code: it runs here, before any lock is taken.
        let (outcome, weight, failed) = match (&self.weigher, &outcome) {
            (Some(w), Outcome::Value(v)) if keep.store => match args::weigh(w.bind(py), v.bind(py))
            {
                Ok(n) => (outcome, n, None),
                Err(e) => {
                    let f = Failure::new(e.value(py).clone().into_any());
                    (Outcome::Error(Arc::new(f)), 0, Some(e))
                }
            },
            _ => (outcome, 1, None),
        };
        let mut trash = Vec::new();
        let mut fx = Fx::new();
        self.flights.finish(
            key,
            lease,
            &outcome,
            |v| {
                if keep.store && !self.closed.load(Ordering::Relaxed) {
                    let old = self.store.set_weighted(
                        *key,
                        v.clone_ref(py),
                        keep.ttl,
                        weight,
                        &mut trash,
                    );
                    trash.extend(old);
                }
            },
            &mut fx,
        );
        settle(py, fx);
        drop(trash);
        drop(outcome);
        failed.map_or(Ok(()), Err)
    }

    fn invalidate(&self, key: &[u8; 32]) -> bool {
        let mut trash = Vec::new();
        let removed = self
            .flights
            .invalidate(key, || self.store.remove(key, &mut trash));
        drop(trash);
        removed
    }

    fn invalidate_all(&self) {
        let mut trash = Vec::new();
        self.flights.invalidate_all(|| self.store.clear(&mut trash));
        drop(trash);
    }

    /// In a forked child: the flights led by other threads of the parent will never end.
    /// They are dropped (their blocked followers, threads of the parent, untouched);
    /// followers that are tasks of this thread's loop start over (one of them leads).
    /// Flights led by this thread (the agent itself forked) go on in the child.
    fn after_fork_child(&self, py: Python<'_>) {
        let me = std::thread::current().id();
        let mut fx = Fx::new();
        self.flights.after_fork_child(
            |c| c.thread == me,
            |n| matches!(n, Some((_, th)) if *th == me),
            &mut fx,
        );
        settle(py, fx);
    }

    /// Count a caller served by another's flight: a hit if it succeeded, else a miss.
    fn note_served(&self, ok: bool) {
        if ok {
            self.store.note_hit();
        } else {
            self.store.note_miss();
        }
        if self.store.counting() {
            self.flights.note_coalesced();
        }
    }
}

/// Hand a follower its outcome: the value, or the shared exception raised again.
fn served(py: Python<'_>, shared: &Shared, o: &Outcome) -> Option<PyResult<Py<PyAny>>> {
    match o {
        Outcome::Value(v) => {
            shared.note_served(true);
            Some(Ok(v.clone_ref(py)))
        }
        Outcome::Error(e) => {
            shared.note_served(false);
            Some(Err(e.raise(py)))
        }
        Outcome::Retry => None,
    }
}

fn checked_key(k: &Bound<'_, PyAny>) -> PyResult<()> {
    if k.is_instance_of::<PyString>() || k.is_instance_of::<PyBytes>() {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "key_generator returned {}: expected str or bytes",
            crate::args::type_name(k)
        )))
    }
}

/// The Rust half of ``CachedAgent``: key digest, lookup and single-flight. Use
/// ``agentperf.CachedAgent``.
#[pyclass(frozen, subclass, weakref, module = "agentperf")]
pub struct CachedAgentCore {
    shared: Arc<Shared>,
    /// The agent's sync call (`execute`); the async path calls the agent from Python.
    call: Py<PyAny>,
    key_gen: Option<Py<PyAny>>,
    reg: Mutex<Option<Registration>>,
}

impl CachedAgentCore {
    fn key_object<'py>(&self, input: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(g) = &self.key_gen else {
            return Ok(None);
        };
        let k = ucall::call1(g.bind(input.py()), input)?;
        checked_key(&k)?;
        Ok(Some(k))
    }

    #[inline]
    fn digest(&self, input: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
        match self.key_object(input)? {
            None => crate::keys::digest(input),
            Some(k) => crate::keys::digest(&k),
        }
    }

    /// The digest of `key` (what `key_generator(input)` returned, computed by the Python
    /// caller) if given, else of `input`.
    #[inline]
    fn digest_of(
        &self,
        input: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<[u8; 32]> {
        match key {
            Some(k) => {
                checked_key(k)?;
                crate::keys::digest(k)
            }
            None => self.digest(input),
        }
    }

    #[inline]
    fn check_open(&self) -> PyResult<()> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(closed_error("CachedAgent"));
        }
        Ok(())
    }

    #[inline]
    fn lookup(&self, py: Python<'_>, key: &[u8; 32]) -> Option<Py<PyAny>> {
        let mut trash = Vec::new();
        let got = self
            .shared
            .store
            .get(key, |v| v.clone_ref(py), &mut trash, false);
        drop(trash);
        got
    }
}

#[pymethods]
impl CachedAgentCore {
    #[new]
    #[pyo3(signature = (call, max_size, ttl, cleanup_interval, enable_stats, key_generator, _manual_clock=false, *, policy=None, max_weight=None, weigher=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        call: Py<PyAny>,
        max_size: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
        cleanup_interval: &Bound<'_, PyAny>,
        enable_stats: bool,
        key_generator: Option<Py<PyAny>>,
        _manual_clock: bool,
        policy: Option<&Bound<'_, PyAny>>,
        max_weight: Option<&Bound<'_, PyAny>>,
        weigher: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let max_size = max_size_arg(max_size)?;
        let policy = args::cache_policy(policy)?;
        let (max_weight, weigher) = args::cache_weights(max_weight, weigher)?;
        let ttl = seconds_arg("ttl", ttl)?.flatten();
        let interval = seconds_arg("cleanup_interval", Some(cleanup_interval))?.flatten();
        let clock = if _manual_clock {
            AnyClock::Manual(Arc::new(ManualClock::new(0)))
        } else {
            AnyClock::Mono
        };
        let shared = Arc::new(Shared {
            store: make_store(max_size, ttl, enable_stats, clock, (policy, max_weight))?,
            weigher,
            flights: Flights::new(),
            closed: AtomicBool::new(false),
        });
        let reg = interval.map(|i| reaper::register(&shared, args::cleanup_interval(i)));
        Ok(CachedAgentCore {
            shared,
            call,
            key_gen: key_generator,
            reg: Mutex::new(reg),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // So an agent or key_generator that refers back to its cache is collectable.
        visit.call(&self.call)?;
        visit.call(&self.shared.weigher)?;
        visit.call(&self.key_gen)?;
        // The calls in flight: their leaders' tasks and their followers' futures (a task
        // waiting here lives as long as the cache; one abandoned with it is collected).
        self.shared.flights.try_for_each(
            |c| visit.call(&c.task),
            |n| match n {
                Some((w, _)) => Notifier::visit(w, &visit),
                None => Ok(()),
            },
        )
    }

    fn __clear__(&self, py: Python<'_>) {
        // The followers' futures (mutable: taken out); the rest is immutable or is released
        // when its flight ends.
        let mut refs = Vec::new();
        let _ = self.shared.flights.try_for_each(
            |_| Ok::<(), ()>(()),
            |n| {
                refs.extend(
                    n.as_ref()
                        .and_then(|(w, _)| Notifier::clear(w))
                        .into_iter()
                        .flatten(),
                );
                Ok(())
            },
        );
        crate::lifecycle::drop_refs(py, refs);
    }

    /// Run the agent on ``input``, or return the cached output for it. Concurrent misses
    /// for one key run the agent once; the others wait (detached) and receive its output or
    /// its exception. On a thread whose event loop runs, waiting would block the loop:
    /// ``RuntimeError`` instead.
    #[pyo3(signature = (input, /))]
    fn execute(&self, py: Python<'_>, input: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let ctl = tier::control(py)?;
        let key = self.digest(input)?;
        if !ctl.refresh {
            if let Some(v) = self.lookup(py, &key) {
                return Ok(v);
            }
        }
        loop {
            match self.shared.join(py, &key, None, None, ctl.refresh)? {
                Joined::Hit(v) => return Ok(v),
                Joined::Lead(lease) => {
                    let r = ucall::call1(self.call.bind(py), input);
                    let (r, keep) = match r {
                        Ok(v) => {
                            let (v, keep) = Keep::under(ctl).of(&v);
                            (Ok(v), keep)
                        }
                        Err(e) => (Err(e), Keep::under(ctl)),
                    };
                    let outcome = match &r {
                        Ok(v) => Outcome::Value(Arc::new(v.clone().unbind())),
                        Err(e) if e.is_instance_of::<PyException>(py) => {
                            Outcome::Error(Arc::new(Failure::new(e.value(py).clone().into_any())))
                        }
                        // Cancellation, exit: the next caller leads.
                        Err(_) => Outcome::Retry,
                    };
                    self.shared.finish(py, &key, lease, outcome, keep)?;
                    return r.map(Bound::unbind);
                }
                Joined::Wait(ticket) if crate::aio::in_running_loop(py)? => {
                    // Blocking here would block the loop, maybe under the very task that
                    // leads: refuse, unless the outcome is already there.
                    match ticket.withdraw() {
                        Some(o) => {
                            if let Some(r) = served(py, &self.shared, &o) {
                                return r;
                            }
                        }
                        None => {
                            self.shared.store.note_miss();
                            return Err(Error::Runtime(
                                "another caller's call for this input is in flight and \
                                 waiting for it would block the running event loop: use \
                                 `await cached.aexecute(...)`"
                                    .into(),
                            )
                            .into());
                        }
                    }
                }
                Joined::Wait(ticket) => match blocking::wait(py, &ticket, None) {
                    Waited::Granted(o) => {
                        if let Some(r) = served(py, &self.shared, &o) {
                            return r;
                        }
                        // The leader gave up: join again (one of the waiters leads).
                    }
                    // No deadline: cannot happen; were it to, the ticket goes and we rejoin.
                    Waited::TimedOut => drop(ticket.withdraw()),
                    Waited::Interrupted(e) => {
                        ticket.withdraw();
                        // Interrupted before being served: a miss (counted once).
                        self.shared.store.note_miss();
                        return Err(e);
                    }
                },
            }
        }
    }

    /// Async half of ``aexecute``: the cached output, or a ``Flight`` to lead or await.
    #[pyo3(signature = (input, key=None, /))]
    fn _alookup(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open()?;
        let ctl = tier::control(py)?;
        let key = self.digest_of(input, key)?;
        if !ctl.refresh {
            if let Some(v) = self.lookup(py, &key) {
                return Ok(v);
            }
        }
        let task = current_task(py)?;
        let (notifier, fut) = Notifier::new(py)?;
        let joined = self
            .shared
            .join(py, &key, task, Some(&notifier), ctl.refresh);
        let flight = match joined {
            Ok(Joined::Wait(t)) => Flight {
                shared: self.shared.clone(),
                key,
                ctl,
                lead: None,
                done: AtomicBool::new(false),
                ticket: Some(t),
                notifier: Some(notifier),
                future: Some(fut),
            },
            other => {
                notifier.disarm(py);
                crate::lifecycle::drop_refs(py, [fut]);
                match other? {
                    Joined::Hit(v) => return Ok(v),
                    Joined::Lead(lease) => Flight::for_leader(&self.shared, key, lease, ctl),
                    Joined::Wait(_) => unreachable!("matched above"),
                }
            }
        };
        Ok(Py::new(py, flight)?.into_any())
    }

    /// ``key_generator(input)`` if set, else ``hash_key(input)``.
    #[pyo3(signature = (input, /))]
    fn cache_key<'py>(&self, input: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self.key_object(input)? {
            Some(k) => Ok(k),
            None => Ok(PyString::new(
                input.py(),
                &crate::keys::to_hex(&crate::keys::digest(input)?),
            )
            .into_any()),
        }
    }

    /// Remove the entry for ``input``; ``True`` if one was removed. A call for it still in
    /// flight delivers its result to its waiters but does not cache it.
    #[pyo3(signature = (input, /))]
    fn invalidate(&self, input: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = self.digest(input)?;
        Ok(self.shared.invalidate(&key))
    }

    /// ``invalidate`` with ``key_generator(input)`` computed by the caller (None: digest
    /// ``input``).
    #[pyo3(signature = (input, key=None, /))]
    fn _invalidate(
        &self,
        input: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = self.digest_of(input, key)?;
        Ok(self.shared.invalidate(&key))
    }

    /// Remove every entry (calls in flight are not cached either).
    fn invalidate_all(&self) {
        self.shared.invalidate_all();
    }

    /// Second tier: keep ``value`` for ``input`` (``key``: ``key_generator(input)``, computed
    /// by the caller) for ``ttl`` seconds (``None``: the default), as a store's bulk lookup
    /// found it. Counts nothing. A value heavier than ``max_weight`` is not kept.
    #[pyo3(signature = (input, key, value, ttl=None, /))]
    fn _put(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        value: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        self.check_open()?;
        let key = self.digest_of(input, key)?;
        let ttl = tier::ttl_of(ttl)?;
        let weight = match &self.shared.weigher {
            Some(w) => args::weigh(w.bind(py), value)?,
            None => 1,
        };
        let mut trash = Vec::new();
        let old =
            self.shared
                .store
                .set_weighted(key, value.clone().unbind(), ttl, weight, &mut trash);
        drop(trash);
        drop(old);
        Ok(())
    }

    /// Hits, misses, hit rate (percent), size, max_size, evictions, expirations and
    /// coalesced callers.
    fn stats(&self) -> CacheStats {
        stats_of(&self.shared.store, self.shared.flights.coalesced())
    }

    /// Entries held.
    fn __len__(&self) -> usize {
        self.shared.store.len()
    }

    /// Drop every entry and leave the cleanup thread; closing twice is harmless.
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        let reg = self.reg.lock().take();
        drop(reg);
        self.shared.invalidate_all();
    }

    /// Test hook: move a core made with ``_manual_clock=True`` forward.
    fn _advance(&self, seconds: f64) -> PyResult<()> {
        match self.shared.store.clock() {
            AnyClock::Manual(c) if seconds.is_finite() && seconds >= 0.0 => {
                c.advance(Duration::from_secs_f64(seconds));
                Ok(())
            }
            _ => Err(PyRuntimeError::new_err(
                "_advance needs _manual_clock=True and seconds >= 0",
            )),
        }
    }

    /// Test hook: calls in flight now.
    fn _in_flight(&self) -> usize {
        self.shared.flights.in_flight()
    }

    /// Test hook: callers waiting now on a call in flight (threads and tasks).
    fn _waiters(&self) -> usize {
        self.shared.flights.waiters()
    }

    /// Fork hook (``agentperf.cache`` registers it): in a forked child, forget the calls in
    /// flight in the parent's other threads, so the child never waits for them.
    fn _after_fork_child(&self, py: Python<'_>) {
        self.shared.after_fork_child(py);
    }
}

/// A miss of ``CachedAgent.aexecute``: either this caller leads (runs the agent and reports
/// with ``succeed``/``fail``/``abandon``) or it awaits ``future`` and reads ``outcome()``.
/// A leader dropped without reporting abandons, so a key is never left stuck.
#[pyclass(frozen, module = "agentperf")]
pub struct Flight {
    shared: Arc<Shared>,
    key: [u8; 32],
    /// The `cache_control` of the caller (a leader keeps nothing under `no_store`).
    ctl: Control,
    lead: Option<Lease>,
    done: AtomicBool,
    ticket: Option<PyTicket>,
    /// A follower's wake-up (the flight's queue holds a weak reference to it).
    notifier: Option<Arc<Notifier>>,
    /// A follower's own reference to the future it awaits (visited by `__traverse__`).
    future: Option<Py<PyAny>>,
}

impl Flight {
    /// The flight of the caller that runs the agent for `key`.
    fn for_leader(shared: &Arc<Shared>, key: [u8; 32], lease: Lease, ctl: Control) -> Self {
        Flight {
            shared: shared.clone(),
            key,
            ctl,
            lead: Some(lease),
            done: AtomicBool::new(false),
            ticket: None,
            notifier: None,
            future: None,
        }
    }

    fn end(&self, py: Python<'_>, outcome: Outcome, keep: Keep) -> PyResult<()> {
        if let Some(lease) = self.lead {
            if !self.done.swap(true, Ordering::AcqRel) {
                return self.shared.finish(py, &self.key, lease, outcome, keep);
            }
        }
        Ok(())
    }
}

#[pymethods]
impl Flight {
    /// True if this caller must run the agent.
    #[getter]
    fn leader(&self) -> bool {
        self.lead.is_some()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Immutable: the future's `tp_clear` breaks a cycle through it, no `__clear__`.
        visit.call(&self.future)
    }

    /// The future a waiter awaits (None for a leader).
    #[getter]
    fn future(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.future.as_ref().map(|f| f.clone_ref(py))
    }

    /// Leader: the agent returned ``value`` (a ``_Fill`` says how the cache keeps it).
    fn succeed(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let (v, keep) = Keep::under(self.ctl).of(&value);
        self.end(py, Outcome::Value(Arc::new(v.unbind())), keep)
    }

    /// Leader: the agent raised ``exc`` (an ``Exception``); it is shared, not cached.
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        let _ = self.end(
            py,
            Outcome::Error(Arc::new(Failure::new(exc))),
            Keep::under(self.ctl),
        );
    }

    /// Leader: cancelled (or a ``BaseException``); a waiter or the next caller runs the agent.
    fn abandon(&self, py: Python<'_>) {
        let _ = self.end(py, Outcome::Retry, Keep::under(self.ctl));
    }

    /// Waiter: ``(True, value)``, the leader's exception raised, or ``(False, None)`` if the
    /// leader was cancelled (try again). Not yet granted is ``(False, None)`` too.
    fn outcome(&self, py: Python<'_>) -> PyResult<(bool, Py<PyAny>)> {
        let got = self.ticket.as_ref().and_then(|t| t.try_take());
        if let Some(o) = got {
            if let Some(r) = served(py, &self.shared, &o) {
                self.done.store(true, Ordering::Release);
                return r.map(|v| (true, v));
            }
        }
        Ok((false, py.None()))
    }

    /// Waiter: give up (cancelled); anything granted meanwhile is dropped. The caller was
    /// not served, so it counts as a miss (every call counts once: hits + misses == calls).
    fn withdraw(&self, py: Python<'_>) {
        if let Some(n) = &self.notifier {
            // Disarmed first: the queue never holds the future of a withdrawn follower.
            n.disarm(py);
        }
        if let Some(t) = &self.ticket {
            let got = t.withdraw();
            if !self.done.swap(true, Ordering::AcqRel) {
                self.shared.store.note_miss();
            }
            drop(got);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.lead.is_some() && !self.done.load(Ordering::Acquire) {
            Python::attach(|py| {
                let _ = self.end(py, Outcome::Retry, Keep::under(self.ctl));
            });
        }
        if let Some(n) = &self.notifier {
            n.disarm_anywhere();
        }
        if let Some(t) = &self.ticket {
            drop(t.withdraw());
        }
    }
}
