//! asyncio without a Rust runtime: park an asyncio future, wake it from any thread.
//!
//! The value a waiter receives travels through a [`crate::waitq::Ticket`]; the future only
//! signals "look at your ticket now". The setter does nothing when the future is already
//! done or cancelled (the waiter then withdraws its ticket and hands on whatever it got), and
//! a closed loop is ignored, so a wake-up can never raise into the waker.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

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
