//! agentperf's Rust core: structural keys, a sharded TTL/LRU cache, an agent pool and a
//! semaphore, with thin PyO3 bindings. The cores (`cache::core`, `pool::core`, `waitq`,
//! `reaper`, `clock`) know nothing of Python.

pub mod aio;
mod args;
mod blocking;
pub mod cache;
pub mod clock;
pub mod errors;
pub mod keys;
mod lifecycle;
pub mod limiter;
pub mod pool;
pub mod reaper;
pub mod semaphore;
pub mod sync;
pub mod ucall;
pub mod waitq;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod proptests;

/// The extension module `agentperf._agentperf`; only exports.
#[pyo3::pymodule]
mod _agentperf {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::lifecycle::{
        _after_fork_child, _after_fork_parent, _before_fork, _cleanup_thread_state, _shutdown,
    };

    #[pymodule_export]
    use crate::keys::hash_key;

    #[pymodule_export]
    use crate::pool::py::{CreateSlot, Leased, PyPool, PyWaiter, StartOver};

    #[pymodule_export]
    use crate::cache::{Cache, CacheStats, CachedAgentCore, Flight};

    #[pymodule_export]
    use crate::semaphore::{Semaphore, SemaphoreWait};

    #[pymodule_export]
    use crate::limiter::{RateLimiter, RateLimiterStats, RateLimiterWait};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::errors::register(m)?;
        crate::lifecycle::init();
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
