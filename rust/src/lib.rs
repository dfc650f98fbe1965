//! agentperf's Rust core: structural keys, a sharded TTL/LRU cache, an agent pool and a
//! semaphore, with thin PyO3 bindings. The cores (`cache::core`, `pool::core`, `waitq`,
//! `reaper`, `clock`) know nothing of Python.
//!
//! The bindings and PyO3 are behind the default feature `python`; without it
//! (`cargo test --no-default-features --lib`) the cores build and test with no interpreter.

#[cfg(feature = "python")]
pub mod aio;
#[cfg(feature = "python")]
mod args;
#[cfg(feature = "python")]
mod blocking;
pub mod cache;
pub mod clock;
#[cfg(feature = "python")]
pub mod errors;
/// The cores' errors alone (the exception tree needs the `python` feature).
#[cfg(not(feature = "python"))]
pub mod errors {
    pub mod core;
    pub use self::core::CoreError;
}
pub mod histogram;
#[cfg(feature = "python")]
pub mod keys;
/// The PyO3-free key writer alone (the walker needs the `python` feature).
#[cfg(not(feature = "python"))]
pub mod keys {
    pub mod encode;
    pub use encode::VERSION;
}
#[cfg(feature = "python")]
mod lifecycle;
pub mod limiter;
pub mod pool;
pub mod reaper;
pub mod semaphore;
pub mod sync;
#[cfg(feature = "python")]
pub mod ucall;
pub mod waitq;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod proptests;

/// The extension module `agentperf._agentperf`; only exports.
#[cfg(feature = "python")]
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
    use crate::cache::{_cache_controls, Cache, CacheStats, CachedAgentCore, Fill, Flight};

    #[pymodule_export]
    use crate::semaphore::{Semaphore, SemaphoreWait};

    #[pymodule_export]
    use crate::histogram::PyHistogram;

    #[pymodule_export]
    use crate::limiter::{RateLimiter, RateLimiterStats, RateLimiterWait};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::errors::register(m)?;
        crate::lifecycle::init();
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
