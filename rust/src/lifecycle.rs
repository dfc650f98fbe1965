//! Process events: fork and interpreter exit (`python/agentperf/__init__.py` registers these
//! with `os.register_at_fork` and `atexit`), and dropping Python objects from Rust safely
//! around them ([`drop_refs`]).

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

/// Quiesce the cleanup thread before `fork()`.
#[pyfunction]
pub fn _before_fork(py: Python<'_>) {
    // The thread may be waiting for the GIL inside a task; wait for it detached.
    py.detach(crate::reaper::before_fork);
}

/// Resume after `fork()` in the parent.
#[pyfunction]
pub fn _after_fork_parent() {
    crate::reaper::after_fork_parent();
}

/// Restart the cleanup thread in a forked child.
#[pyfunction]
pub fn _after_fork_child() {
    crate::reaper::after_fork_child();
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
