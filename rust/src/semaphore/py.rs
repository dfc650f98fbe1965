//! The Python face of the semaphore: `agentperf._agentperf.Semaphore` (subclassed in
//! `python/agentperf/semaphore.py`, which adds the `async` methods) and the wait handle an
//! asyncio waiter parks on.

use super::core::{Acquire, Permit, Semaphore as Core};
use crate::aio::{Notifier, WeakNotifier};
use crate::blocking::{self, Waited};
use crate::errors::Error;
use crate::waitq::Ticket;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyBool, PyInt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue's notifier: `None` for a blocked thread (its ticket's condvar wakes it), else a
/// weak reference to the asyncio waiter's [`Notifier`] (plain data under the core lock).
type Notify = Option<WeakNotifier>;

fn wake(py: Python<'_>, n: Option<Notify>) {
    if let Some(Some(w)) = n {
        Notifier::wake(py, &w, None);
    }
}

/// A counting semaphore whose permits are kept in Rust: one limit shared by threads and by
/// asyncio tasks on any number of event loops, FIFO-fair among waiters of every kind.
///
/// >>> sem = Semaphore(2)
/// >>> with sem:
/// ...     sem.available
/// 1
#[pyclass(frozen, subclass, weakref, module = "agentperf", name = "Semaphore")]
pub struct Semaphore {
    core: Arc<Core<Notify>>,
}

/// The `timeout` argument as a wait limit (`None`: forever), validated.
fn timeout_limit(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let secs = match timeout.filter(|t| !t.is_none()) {
        None => return Ok(None),
        Some(t) => crate::args::seconds_of("timeout", t)?,
    };
    Ok(crate::args::wait_limit("timeout", Some(secs))?)
}

#[pymethods]
impl Semaphore {
    /// `Semaphore(permits)`: `permits` is an int >= 1.
    #[new]
    fn new(permits: &Bound<'_, PyAny>) -> PyResult<Self> {
        let repr = || crate::args::shown(permits);
        if permits.is_instance_of::<PyBool>() || !permits.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "permits={}: expected an int, got {}",
                repr(),
                crate::args::type_name(permits)
            )));
        }
        let n: i128 = permits.extract().unwrap_or(i128::MAX);
        if n < 1 {
            return Err(Error::Config {
                field: "permits",
                value: repr(),
                why: "must be >= 1",
            }
            .into());
        }
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| {
                PyErr::from(Error::Config {
                    field: "permits",
                    value: repr(),
                    why: "must be < 2**32",
                })
            })?;
        Ok(Self {
            core: Arc::new(Core::new(n)?),
        })
    }

    /// Take a permit if one is free right now (never waits, never jumps the queue).
    fn try_acquire(&self) -> bool {
        self.core.try_acquire()
    }

    /// Take a permit, blocking the calling thread (without the GIL) up to `timeout` seconds
    /// (`None`: forever; `0`: do not wait). Returns whether a permit was taken. On a thread
    /// whose event loop is running, waiting is refused with `RuntimeError` (use `aacquire`).
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        // A bad timeout is an error even when a permit is free.
        let limit = timeout_limit(timeout)?;
        if self.core.try_acquire() {
            return Ok(true);
        }
        // Blocking here could wait for a task of this very loop, which then never runs: refuse
        // (as the pool does). `timeout=0` never waits.
        if limit != Some(Duration::ZERO) && crate::aio::in_running_loop(py)? {
            return Err(Error::Runtime(
                "no permit is free and waiting would block the running event loop: use \
                 `async with sem:` / `await sem.aacquire()`"
                    .into(),
            )
            .into());
        }
        let deadline = limit.and_then(|d| Instant::now().checked_add(d));
        let ticket = match self.core.acquire_or_enqueue(|| None) {
            Acquire::Acquired => return Ok(true),
            Acquire::Queued(t) => t,
        };
        match blocking::wait(py, &ticket, deadline) {
            Waited::Granted(()) => Ok(true),
            // A permit granted as the deadline passed is kept: the acquire succeeded.
            Waited::TimedOut => {
                let (got, next) = self.core.finish(&ticket, true);
                wake(py, next);
                Ok(got)
            }
            Waited::Interrupted(e) => {
                let (_, next) = self.core.withdraw(&ticket);
                wake(py, next);
                Err(e)
            }
        }
    }

    /// Give a permit back (to the oldest waiter if any). Releasing more often than acquiring
    /// raises `ValueError` instead of silently raising the limit.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let n = self.core.release()?;
        wake(py, n);
        Ok(())
    }

    /// Asyncio slow path: `None` if a permit was free (the caller holds it), else
    /// `(future, wait)`: queued in FIFO order, `future` resolves when a permit is granted.
    fn _wait_async(&self, py: Python<'_>) -> PyResult<Option<(Py<PyAny>, SemaphoreWait)>> {
        if self.core.try_acquire() {
            return Ok(None);
        }
        let (notifier, future) = Notifier::new(py)?;
        match self
            .core
            .acquire_or_enqueue(|| Some(Arc::downgrade(&notifier)))
        {
            Acquire::Acquired => {
                notifier.disarm(py);
                Ok(None)
            }
            Acquire::Queued(ticket) => Ok(Some((
                future,
                SemaphoreWait {
                    core: self.core.clone(),
                    ticket,
                    notifier,
                },
            ))),
        }
    }

    /// Permits free right now.
    #[getter]
    fn available(&self) -> usize {
        self.core.available()
    }

    /// The number of permits the semaphore was created with.
    #[getter]
    fn permits(&self) -> usize {
        self.core.permits()
    }

    /// Callers (threads and tasks) queued for a permit right now.
    #[getter]
    fn waiting(&self) -> usize {
        self.core.waiting()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The futures of queued tasks: a task parked here lives as long as the semaphore,
        // and one abandoned with it is collected.
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

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().acquire(slf.py(), None)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Semaphore(permits={}, available={})",
            self.core.permits(),
            self.core.available()
        )
    }
}

/// A queued asyncio acquire: await its future, then call `finish(True)`; on cancellation call
/// `finish(False)`. Dropped unfinished (its task destroyed), it withdraws and hands on any
/// permit it was granted, so nothing leaks.
///
/// It owns the waiter's [`Notifier`]; the semaphore's queue holds a weak reference to it, and
/// the semaphore's `__traverse__` visits the future while the acquire is queued.
#[pyclass(frozen, module = "agentperf._agentperf", name = "_SemaphoreWait")]
pub struct SemaphoreWait {
    core: Arc<Core<Notify>>,
    ticket: Arc<Ticket<Permit>>,
    notifier: Arc<Notifier>,
}

#[pymethods]
impl SemaphoreWait {
    /// End the wait. With `keep`, returns whether a permit is now held (granted, possibly in the
    /// same instant as a timeout). Without, anything granted is handed on; returns `False`.
    fn finish(&self, py: Python<'_>, keep: bool) -> bool {
        self.notifier.disarm(py);
        let (kept, next) = self.core.finish(&self.ticket, keep);
        wake(py, next);
        kept
    }
}

impl Drop for SemaphoreWait {
    fn drop(&mut self) {
        // Normally already finished (a no-op then). A wait dropped unfinished gives back a
        // permit it was granted but never took.
        self.notifier.disarm_anywhere();
        let (_, next) = self.core.finish(&self.ticket, false);
        if next.is_some() {
            let _ = Python::try_attach(|py| wake(py, next));
        }
    }
}
