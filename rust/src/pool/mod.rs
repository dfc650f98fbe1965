//! The agent pool: a PyO3-free core generic over the pooled object ([`core`]) and its thin
//! Python binding ([`py`]).

pub mod core;
pub mod py;
