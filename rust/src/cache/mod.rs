//! The result cache: a PyO3-free sharded TTL/LRU core ([`core`]) and its Python bindings
//! (`ap.Cache`, the Rust half of `ap.CachedAgent` with single-flight).

pub mod core;
mod py;

pub use py::{Cache, CacheStats, CachedAgentCore, Flight};
