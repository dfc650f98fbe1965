//! The result cache: a PyO3-free sharded TTL/LRU core ([`core`]), a PyO3-free single-flight
//! core ([`flight`]) and their thin Python bindings (`ap.Cache`, the Rust half of
//! `ap.CachedAgent`).

pub mod core;
pub mod flight;
#[cfg(feature = "python")]
mod py;
pub mod sketch;
#[cfg(feature = "python")]
mod tier;

#[cfg(feature = "python")]
pub use py::{Cache, CacheStats, CachedAgentCore, Flight};
#[cfg(feature = "python")]
pub use tier::{_cache_controls, Fill};
