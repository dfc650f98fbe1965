//! Process events: fork and interpreter exit. `python/agentperf/__init__.py` registers these
//! with `os.register_at_fork` and `atexit`.

use pyo3::prelude::*;
use std::time::Duration;

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
