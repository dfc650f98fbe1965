//! The result cache: a PyO3-free sharded TTL/LRU core ([`core`]), a PyO3-free single-flight
//! core ([`flight`]) and their thin Python bindings (`ap.Cache`, the Rust half of
//! `ap.CachedAgent`).

pub mod core;
pub mod flight;
mod py;
pub mod sketch;

pub use py::{Cache, CacheStats, CachedAgentCore, Flight};
