//! Blocking waits of Python threads: detached from the interpreter (other threads run), and
//! woken every few tens of milliseconds to run Python's signal handlers, so Ctrl-C interrupts
//! a thread blocked in `pool.acquire()` or `sem.acquire()` as it does `threading.Lock`.

use crate::waitq::Ticket;
use pyo3::prelude::*;
use std::time::{Duration, Instant};

const SLICE: Duration = Duration::from_millis(50);

/// How a blocking wait ended. On `TimedOut` and `Interrupted` the ticket is still queued: the
/// caller withdraws it through its owner, which hands on anything granted meanwhile.
pub enum Waited<T> {
    /// The value arrived.
    Granted(T),
    /// `deadline` passed.
    TimedOut,
    /// A signal handler raised (e.g. `KeyboardInterrupt`).
    Interrupted(PyErr),
}

/// Wait on `ticket` until granted or `deadline` (`None`: forever).
pub fn wait<T: Send>(py: Python<'_>, ticket: &Ticket<T>, deadline: Option<Instant>) -> Waited<T> {
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return match ticket.try_take() {
                Some(v) => Waited::Granted(v),
                None => Waited::TimedOut,
            };
        }
        let until = match deadline {
            Some(d) => d.min(now + SLICE),
            None => now + SLICE,
        };
        if let Some(v) = py.detach(|| ticket.wait_slice(until)) {
            return Waited::Granted(v);
        }
        if let Err(e) = py.check_signals() {
            return Waited::Interrupted(e);
        }
    }
}
