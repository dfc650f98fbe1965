//! asyncio without a Rust runtime: park an asyncio future, wake it from any thread.
//!
//! [`Notifier`] is the one way an asyncio waiter is woken, shared by the semaphore, the pool,
//! single-flight and the rate limiter. The waiter's handle (a `#[pyclass]`) owns it (`Arc`); the owner's queue,
//! under the owner's lock, holds only a [`WeakNotifier`]: plain data, whose drop never
//! releases a Python object. Waking (upgrade, take the future out, unlock, resolve it) and
//! giving up ([`Notifier::disarm`]) happen with no Rust lock held, and the Python references
//! taken out are dropped after every lock is released. For the garbage collector, the owner
//! visits the futures of its queued waiters ([`Notifier::visit`], never blocking: a lock that
//! is busy skips the visit, which only keeps objects alive one collection longer), so a
//! parked task lives as long as its owner does (as with `asyncio.Semaphore`), and a task, its
//! coroutine, its waiter and its future abandoned together with the owner are collected.
//!
//! The value a waiter receives travels through a [`crate::waitq::Ticket`]; the future only
//! signals "look at your ticket now". The setter does nothing when the future is already
//! done or cancelled (the waiter then withdraws its ticket and hands on whatever it got), and
//! a closed loop is ignored, so a wake-up can never raise into the waker.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;
use std::sync::{Arc, Weak};

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static PEEK_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SETTER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn asyncio_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// The running event loop; `RuntimeError` outside one.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    asyncio_attr(py, &GET_RUNNING_LOOP, "get_running_loop")?.call0()
}

/// Whether an event loop runs in this thread (the sync twins refuse to block it).
pub fn in_running_loop(py: Python<'_>) -> PyResult<bool> {
    Ok(!asyncio_attr(py, &PEEK_RUNNING_LOOP, "_get_running_loop")?
        .call0()?
        .is_none())
}

#[pyfunction]
fn set_if_pending(fut: &Bound<'_, PyAny>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    match exc {
        None => fut.call_method1("set_result", (true,))?,
        Some(e) => fut.call_method1("set_exception", (e,))?,
    };
    Ok(())
}

fn setter(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    SETTER
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(wrap_pyfunction!(set_if_pending, py)?.into_any().unbind())
        })
        .map(|f| f.bind(py))
}

/// A parked asyncio future and the loop it belongs to.
#[derive(Debug)]
pub struct AsyncWaiter {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
}

impl AsyncWaiter {
    /// A new future on the running loop.
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        let lp = running_loop(py)?;
        let fut = lp.call_method0("create_future")?;
        Ok(Self {
            event_loop: lp.unbind(),
            future: fut.unbind(),
        })
    }

    /// The loop and the future, to be dropped with [`crate::lifecycle::drop_refs`] (a future
    /// whose exception nobody retrieved reports it from `__del__`, through the loop's
    /// exception handler: user code).
    pub fn into_refs(self) -> [Py<PyAny>; 2] {
        [self.future, self.event_loop]
    }

    /// The future to await.
    pub fn future<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.future.bind(py).clone()
    }

    /// Wake the awaiting task (its future resolves to `True`). Call from any thread, with no
    /// Rust lock held.
    pub fn wake(&self, py: Python<'_>) {
        self.resolve(py, None);
    }

    /// Fail the awaiting task with `err` (e.g. the pool closed under it).
    pub fn fail(&self, py: Python<'_>, err: PyErr) {
        let exc = err.into_value(py).into_any();
        self.resolve(py, Some(exc.bind(py)));
    }

    fn resolve(&self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) {
        let fut = self.future.bind(py);
        let lp = self.event_loop.bind(py);
        let same_thread = asyncio_attr(py, &PEEK_RUNNING_LOOP, "_get_running_loop")
            .and_then(|f| f.call0())
            .map(|cur| cur.is(lp))
            .unwrap_or(false);
        let res = if same_thread {
            set_if_pending(fut, exc)
        } else {
            // A socket write: may release the GIL, hence `ucall`.
            setter(py).and_then(|s| {
                let args = (s, fut, exc).into_pyobject(py)?;
                let schedule = lp.getattr(intern!(py, "call_soon_threadsafe"))?;
                crate::ucall::call(&schedule, &args).map(|_| ())
            })
        };
        // A closed loop or a finished future means nobody awaits any more; the waiter's own
        // cleanup hands on what it was granted.
        if let Err(e) = res {
            drop(e);
        }
    }
}

/// An asyncio waiter's wake-up: its future and loop, until woken, given up or cleared. Owned
/// by the waiter's handle; the owner's queue holds a [`WeakNotifier`] (see the module docs).
#[derive(Debug)]
pub struct Notifier {
    // Not `crate::sync`: never held across anything but a take or a clone, and not modelled.
    slot: parking_lot::Mutex<Option<AsyncWaiter>>,
}

/// What an owner's queue stores for an asyncio waiter (`None` in the queue: a blocked
/// thread, woken by its ticket's condvar).
pub type WeakNotifier = Weak<Notifier>;

impl Notifier {
    /// A new future on the running loop, armed; returns the notifier and the future to await
    /// (a reference of the caller's own).
    pub fn new(py: Python<'_>) -> PyResult<(Arc<Self>, Py<PyAny>)> {
        let w = AsyncWaiter::new(py)?;
        let fut = w.future.clone_ref(py);
        Ok((
            Arc::new(Self {
                slot: parking_lot::Mutex::new(Some(w)),
            }),
            fut,
        ))
    }

    /// A notifier with no future yet (a waiter that parks more than once, like the rate
    /// limiter's: each [`Self::arm`] gives it a fresh future).
    pub fn idle() -> Arc<Self> {
        Arc::new(Self {
            slot: parking_lot::Mutex::new(None),
        })
    }

    /// A fresh future on the running loop in place of the previous one (dropped with no lock
    /// held); returns the future to await (a reference of the caller's own). Call with no
    /// Rust lock held.
    pub fn arm(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let w = AsyncWaiter::new(py)?;
        let fut = w.future.clone_ref(py);
        let old = self.slot.lock().replace(w);
        if let Some(old) = old {
            crate::lifecycle::drop_refs(py, old.into_refs());
        }
        Ok(fut)
    }

    fn take(&self) -> Option<AsyncWaiter> {
        self.slot.lock().take()
    }

    /// Resolve the future of the waiter `n` points to (if it still waits): `err` fails it,
    /// else it resolves to `True`. Call with no Rust lock held.
    pub fn wake(py: Python<'_>, n: &WeakNotifier, err: Option<PyErr>) {
        let Some(me) = n.upgrade() else { return };
        let waiter = me.take();
        drop(me);
        if let Some(w) = waiter {
            match err {
                None => w.wake(py),
                Some(e) => w.fail(py, e),
            }
            crate::lifecycle::drop_refs(py, w.into_refs());
        }
    }

    /// The waiter gives up: its future is no longer resolved by the owner. Call before
    /// withdrawing its ticket, so the queue only ever holds disarmed notifiers of withdrawn
    /// waiters; with no Rust lock held.
    pub fn disarm(&self, py: Python<'_>) {
        if let Some(w) = self.take() {
            crate::lifecycle::drop_refs(py, w.into_refs());
        }
    }

    /// `disarm` where no interpreter may be attached (a handle's `Drop`).
    pub fn disarm_anywhere(&self) {
        if let Some(w) = self.take() {
            let refs = w.into_refs();
            let _ = Python::try_attach(|py| crate::lifecycle::drop_refs(py, refs));
        }
    }

    /// `__traverse__` of an owner: visit the future and loop of the queued waiter `n` points
    /// to. Never blocks (a busy slot is skipped).
    pub fn visit(n: &WeakNotifier, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(me) = n.upgrade() else {
            return Ok(());
        };
        let Some(g) = me.slot.try_lock() else {
            return Ok(());
        };
        if let Some(w) = g.as_ref() {
            visit.call(&w.future)?;
            visit.call(&w.event_loop)?;
        }
        Ok(())
    }

    /// `__clear__` of an owner: take the Python references of the queued waiter `n` points to
    /// out (the caller drops them once its lock is released). The waiter is garbage: nothing
    /// will wake it.
    pub fn clear(n: &WeakNotifier) -> Option<[Py<PyAny>; 2]> {
        let me = n.upgrade()?;
        let g = me.slot.try_lock().and_then(|mut g| g.take());
        g.map(AsyncWaiter::into_refs)
    }
}
