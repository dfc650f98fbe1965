//! A FIFO queue of parked waiters, shared by the semaphore, the pool and single-flight.
//!
//! A waiter is a [`Ticket`]: a one-shot slot that a granter fills with a value (a permit, an
//! agent, a result). Blocked threads wait on the ticket's condvar; asyncio tasks are woken by
//! the notifier `N` stored beside the ticket, which the owner calls *after* dropping its own
//! lock. A waiter that gives up calls [`Ticket::withdraw`]: if a value was granted in the same
//! instant it gets it back, to keep or hand on, so nothing is ever lost. Withdrawn tickets are
//! skipped lazily by [`WaitQueue::grant_next`].
//!
//! Free of PyO3, so `cargo test` and loom exercise it without an interpreter.

use crate::sync::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
enum Slot<T> {
    Waiting,
    Granted(T),
    Done,
}

/// A one-shot slot a waiter parks on.
#[derive(Debug)]
pub struct Ticket<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
}

impl<T> Default for Ticket<T> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(Slot::Waiting),
            cv: Condvar::new(),
        }
    }
}

impl<T> Ticket<T> {
    /// A new, waiting ticket.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Fill the slot and wake a blocked thread. Gives the value back if the waiter has
    /// already withdrawn or been served.
    pub fn grant(&self, value: T) -> Result<(), T> {
        let mut s = self.slot.lock();
        match *s {
            Slot::Waiting => {
                *s = Slot::Granted(value);
                self.cv.notify_one();
                Ok(())
            }
            _ => Err(value),
        }
    }

    /// Block until granted or until `deadline`; on timeout the ticket is withdrawn. A value
    /// granted in the same instant as the timeout is returned, never lost.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<T> {
        self.wait(deadline, true)
    }

    /// Take the granted value, if any, without waiting (after an async wake-up).
    pub fn try_take(&self) -> Option<T> {
        let mut s = self.slot.lock();
        match std::mem::replace(&mut *s, Slot::Done) {
            Slot::Granted(v) => Some(v),
            Slot::Waiting => {
                *s = Slot::Waiting;
                None
            }
            Slot::Done => None,
        }
    }

    /// Give up waiting. Returns the value if one was granted in the meantime; the caller
    /// keeps it or hands it on.
    pub fn withdraw(&self) -> Option<T> {
        let mut s = self.slot.lock();
        match std::mem::replace(&mut *s, Slot::Done) {
            Slot::Granted(v) => Some(v),
            _ => None,
        }
    }

    /// Block until granted or until `until`, without giving up: `None` means the ticket is
    /// still waiting (wait again, or [`Self::withdraw`]). Lets a blocked thread wake now and
    /// then, e.g. to run Python's signal handlers, without losing its place in the queue.
    pub fn wait_slice(&self, until: Instant) -> Option<T> {
        self.wait(Some(until), false)
    }

    fn wait(&self, deadline: Option<Instant>, withdraw_on_timeout: bool) -> Option<T> {
        let mut s = self.slot.lock();
        loop {
            match std::mem::replace(&mut *s, Slot::Done) {
                Slot::Granted(v) => return Some(v),
                Slot::Done => return None,
                Slot::Waiting => *s = Slot::Waiting,
            }
            match deadline {
                None => self.cv.wait(&mut s),
                Some(d) => {
                    if self.cv.wait_until(&mut s, d).timed_out() {
                        // Leaves `Done` (withdrawn) unless the caller keeps its place.
                        return match std::mem::replace(&mut *s, Slot::Done) {
                            Slot::Granted(v) => Some(v),
                            other => {
                                if !withdraw_on_timeout {
                                    *s = other;
                                }
                                None
                            }
                        };
                    }
                }
            }
        }
    }

    /// Still waiting (neither granted nor withdrawn).
    pub fn is_waiting(&self) -> bool {
        matches!(*self.slot.lock(), Slot::Waiting)
    }
}

/// FIFO of tickets with a notifier each. Protected by the owner's lock.
#[derive(Debug)]
pub struct WaitQueue<T, N> {
    q: VecDeque<(Arc<Ticket<T>>, N)>,
}

impl<T, N> Default for WaitQueue<T, N> {
    fn default() -> Self {
        Self { q: VecDeque::new() }
    }
}

impl<T, N> WaitQueue<T, N> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Park a new waiter at the back; returns its ticket.
    pub fn push(&mut self, notify: N) -> Arc<Ticket<T>> {
        let t = Ticket::new();
        self.q.push_back((t.clone(), notify));
        t
    }

    /// Hand `value` to the oldest live waiter. Returns that waiter's notifier (to call once
    /// the owner's lock is released), or the value back if nobody is waiting.
    pub fn grant_next(&mut self, mut value: T) -> Result<N, T> {
        while let Some((t, n)) = self.q.pop_front() {
            match t.grant(value) {
                Ok(()) => return Ok(n),
                Err(v) => value = v,
            }
        }
        Err(value)
    }

    /// Hand a clone of `value` to every live waiter; returns their notifiers.
    pub fn grant_all(&mut self, value: &T) -> Vec<N>
    where
        T: Clone,
    {
        self.q
            .drain(..)
            .filter_map(|(t, n)| t.grant(value.clone()).ok().map(|()| n))
            .collect()
    }

    /// Drop withdrawn tickets; returns how many live waiters remain.
    pub fn live(&mut self) -> usize {
        self.q.retain(|(t, _)| t.is_waiting());
        self.q.len()
    }

    /// Live waiters, counted without dropping the withdrawn ones (introspection for tests).
    pub fn waiting(&self) -> usize {
        self.q.iter().filter(|(t, _)| t.is_waiting()).count()
    }

    /// The notifiers of the queued tickets, withdrawn ones included (an owner's
    /// `__traverse__` and `__clear__` walk them).
    pub fn notifiers(&self) -> impl Iterator<Item = &N> {
        self.q.iter().map(|(_, n)| n)
    }

    /// Queued tickets, withdrawn ones included (cheap upper bound of [`Self::live`]).
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// No ticket queued.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Remove every waiter (e.g. on close); returns the tickets with their notifiers so the
    /// owner can fail them outside its lock.
    pub fn drain(&mut self) -> Vec<(Arc<Ticket<T>>, N)> {
        self.q.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fifo_order_and_lazy_skip_of_withdrawn() {
        let mut q: WaitQueue<u32, &'static str> = WaitQueue::new();
        let a = q.push("a");
        let b = q.push("b");
        let c = q.push("c");
        assert_eq!(b.withdraw(), None);
        assert_eq!(q.grant_next(1), Ok("a"));
        assert_eq!(q.grant_next(2), Ok("c"));
        assert_eq!(q.grant_next(3), Err(3));
        assert_eq!(a.try_take(), Some(1));
        assert_eq!(c.wait_until(None), Some(2));
        assert_eq!(b.try_take(), None);
    }

    #[test]
    fn withdraw_after_grant_returns_the_value() {
        let mut q: WaitQueue<u32, ()> = WaitQueue::new();
        let t = q.push(());
        q.grant_next(7).unwrap();
        assert_eq!(t.withdraw(), Some(7));
        assert_eq!(t.try_take(), None, "a value is taken once");
    }

    #[test]
    fn timeout_withdraws() {
        let mut q: WaitQueue<u32, ()> = WaitQueue::new();
        let t = q.push(());
        let got = t.wait_until(Some(Instant::now() + Duration::from_millis(5)));
        assert_eq!(got, None);
        assert_eq!(
            q.grant_next(9),
            Err(9),
            "a timed-out waiter is never granted"
        );
        assert_eq!(q.live(), 0);
    }

    #[test]
    fn a_wait_slice_keeps_the_place_in_the_queue() {
        let mut q: WaitQueue<u32, ()> = WaitQueue::new();
        let t = q.push(());
        assert_eq!(
            t.wait_slice(Instant::now() + Duration::from_millis(2)),
            None
        );
        assert!(t.is_waiting(), "a slice that ran out does not withdraw");
        assert_eq!(q.grant_next(5), Ok(()));
        assert_eq!(t.wait_slice(Instant::now()), Some(5));
        assert_eq!(t.wait_slice(Instant::now()), None, "a value is taken once");
    }

    #[test]
    fn blocked_thread_is_woken() {
        let t: Arc<Ticket<u32>> = Ticket::new();
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.wait_until(None));
        std::thread::sleep(Duration::from_millis(10));
        t.grant(42).unwrap();
        assert_eq!(h.join().unwrap(), Some(42));
    }

    #[test]
    fn grant_all_reaches_every_live_waiter() {
        let mut q: WaitQueue<Arc<str>, usize> = WaitQueue::new();
        let ts: Vec<_> = (0..4).map(|i| q.push(i)).collect();
        ts[2].withdraw();
        let woken = q.grant_all(&Arc::from("r"));
        assert_eq!(woken, vec![0, 1, 3]);
        assert!(q.is_empty());
        assert_eq!(ts[3].try_take().as_deref(), Some("r"));
    }
}
