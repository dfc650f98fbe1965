//! The Rust-managed semaphore: permit accounting in [`core`] (no PyO3), the bindings in `py`.

pub mod core;
#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
pub use py::{Semaphore, SemaphoreWait};
