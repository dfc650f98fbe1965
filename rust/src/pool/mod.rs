//! The agent pool: a PyO3-free core generic over the pooled object ([`core`]) and its thin
//! Python binding ([`py`]).

pub mod core;
#[cfg(feature = "python")]
pub mod py;
