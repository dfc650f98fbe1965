//! The rate limiter: GCRA accounting and its FIFO of waiters in [`core`] (no PyO3), the
//! bindings in `py`.

pub mod core;
#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
pub use py::{RateLimiter, RateLimiterStats, RateLimiterWait};
