//! Process events in one place: fork and interpreter exit (`python/agentperf/_lifecycle.py`
//! holds the package's one `os.register_at_fork` and `atexit` hook and calls these), and
//! dropping Python objects from Rust safely around them ([`drop_refs`]).

use pyo3::ffi;
use pyo3::prelude::*;
use std::os::raw::c_int;
use std::time::Duration;

extern "C" {
    // Outside the limited API (pyo3-ffi declares it only for full-API builds), but exported by
    // every CPython since 3.4, free-threaded builds included: "does this thread hold the GIL".
    fn PyGILState_Check() -> c_int;
}

/// The reaper's blocking hook: run `f` detached when this thread holds the GIL, so a thread
/// waiting for the registry lock (held by a fork in progress) never keeps the GIL from the
/// forking thread.
fn detached_if_attached(f: &mut (dyn FnMut() + Send)) {
    // SAFETY: both may be called from any thread at any time; `PyGILState_Check` is asked
    // only once the interpreter exists (it says "attached" before that).
    let attached = unsafe { ffi::Py_IsInitialized() != 0 && PyGILState_Check() == 1 };
    if attached {
        // SAFETY: `PyGILState_Check` says this thread holds the GIL.
        let py = unsafe { Python::assume_attached() };
        py.detach(f);
    } else {
        f();
    }
}

/// Drop references to Python objects from Rust behind `ucall`'s exit guard: where one is a
/// user object's last reference, its `__del__` (user code, which may sleep or do I/O) runs as
/// safely as a call into user code, also on a daemon thread at interpreter exit. For what
/// Rust evicts, expires or drops with its owner (cached values, keys, a collected pool's
/// agents).
pub fn drop_refs(py: Python<'_>, objs: impl IntoIterator<Item = Py<PyAny>>) {
    for obj in objs {
        crate::ucall::drop_ref(py, obj);
    }
}

/// Wire the process-event handling up (at module import).
pub fn init() {
    crate::reaper::set_blocking_hook(detached_if_attached);
}

/// A part of the core with process-wide state that `fork()` must see to. Every such part is
/// listed in [`PARTS`]; `python/agentperf/_lifecycle.py` calls the three hooks below from the
/// package's one `os.register_at_fork`, and Python parts register their callbacks there.
struct ForkPart {
    /// Before `fork()`, detached (it may wait for other threads): take what the child must not
    /// inherit held.
    before: fn(),
    /// After `fork()` in the parent: release it.
    after_in_parent: fn(),
    /// After `fork()` in the child (its only thread): release it, restart threads.
    after_in_child: fn(),
}

/// `before` hooks run in this order; the `after` ones in the reverse.
const PARTS: &[ForkPart] = &[ForkPart {
    before: crate::reaper::before_fork,
    after_in_parent: crate::reaper::after_fork_parent,
    after_in_child: crate::reaper::after_fork_child,
}];

/// Quiesce the core (the cleanup thread) before `fork()`.
#[pyfunction]
pub fn _before_fork(py: Python<'_>) {
    // The cleanup thread may be waiting for the GIL inside a task; wait for it detached.
    py.detach(|| PARTS.iter().for_each(|p| (p.before)()));
}

/// Resume after `fork()` in the parent.
#[pyfunction]
pub fn _after_fork_parent() {
    PARTS.iter().rev().for_each(|p| (p.after_in_parent)());
}

/// Resume after `fork()` in the child (restarts the cleanup thread).
#[pyfunction]
pub fn _after_fork_child() {
    PARTS.iter().rev().for_each(|p| (p.after_in_child)());
}

/// Stop the cleanup thread at interpreter exit (waits at most two seconds).
#[pyfunction]
pub fn _shutdown(py: Python<'_>) {
    py.detach(|| crate::reaper::shutdown(Duration::from_secs(2)));
}

/// Whether the shared cleanup thread is alive, and how many tasks it serves.
#[pyfunction]
pub fn _cleanup_thread_state() -> (bool, usize) {
    (crate::reaper::is_running(), crate::reaper::registered())
}
