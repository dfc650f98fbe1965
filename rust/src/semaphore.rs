//! The Rust-managed semaphore: permit accounting in [`core`] (no PyO3), the bindings in `py`.

pub mod core;
mod py;

pub use py::{Semaphore, SemaphoreWait};
