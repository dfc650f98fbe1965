//! Permit accounting for the shared semaphore, free of PyO3.
//!
//! One lock guards the free count and one FIFO [`WaitQueue`] of waiters of every kind (blocked
//! threads and asyncio tasks alike); the notifier `N` tells the binding how to wake an async
//! waiter and is returned to be called once the lock is released.
//!
//! Invariant: `available > 0` implies the queue holds no live waiter. A release hands its permit
//! to the oldest live waiter before it ever raises `available`, and a caller only queues when
//! `available == 0`. So the fast path (`try_acquire`) never barges past a queued waiter, and
//! FIFO fairness needs no extra bookkeeping. A permit granted to a waiter that gives up in the
//! same instant comes back through [`Semaphore::withdraw`] and goes to the next waiter.

use crate::errors::core::CoreError;
use crate::sync::Mutex;
use crate::waitq::{Ticket, WaitQueue};
// Mirrors for readers (the metrics), not part of the hand-off: plain std atomics under loom.
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// A permit handed to a waiter; the ticket carries no value beyond "you have one".
pub type Permit = ();

#[derive(Debug)]
struct Inner<N> {
    available: usize,
    waiters: WaitQueue<Permit, N>,
    /// Waiters that gave up since the last sweep (an upper bound: some were skipped by grants).
    withdrawn: usize,
}

/// Outcome of [`Semaphore::acquire_or_enqueue`].
#[derive(Debug)]
pub enum Acquire {
    /// A permit was free; the caller holds it now.
    Acquired,
    /// The caller is queued; wait on the ticket (or its notifier), then take or withdraw it.
    Queued(Arc<Ticket<Permit>>),
}

/// A counting semaphore with `permits` permits, FIFO-fair among waiters of every kind.
///
/// [`Self::available`] and [`Self::waiting`] read atomics that the lock holder keeps up to
/// date, so reading them (the metrics do, at every scrape) never takes the lock that
/// `try_acquire` and `release` hold.
#[derive(Debug)]
pub struct Semaphore<N> {
    permits: usize,
    inner: Mutex<Inner<N>>,
    /// `inner.available`, stored under the lock after each change.
    free: AtomicUsize,
    /// Queued waiters neither granted nor withdrawn: +1 on queuing, -1 on a grant or on
    /// withdrawing a ticket that was still waiting.
    nwaiting: AtomicUsize,
}

impl<N> Semaphore<N> {
    /// A semaphore with `permits` free permits (`permits >= 1`).
    pub fn new(permits: usize) -> Result<Self, CoreError> {
        if permits == 0 {
            return Err(CoreError::Config {
                field: "permits",
                value: "0".into(),
                why: "must be >= 1",
            });
        }
        Ok(Self {
            permits,
            inner: Mutex::new(Inner {
                available: permits,
                waiters: WaitQueue::new(),
                withdrawn: 0,
            }),
            free: AtomicUsize::new(permits),
            nwaiting: AtomicUsize::new(0),
        })
    }

    /// The number of permits the semaphore was created with.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Permits free right now (an atomic read, no lock).
    pub fn available(&self) -> usize {
        self.free.load(Relaxed)
    }

    /// Live waiters right now (an atomic read, no lock).
    pub fn waiting(&self) -> usize {
        self.nwaiting.load(Relaxed)
    }

    /// Take a permit if one is free. Never barges past a queued waiter (see the invariant).
    pub fn try_acquire(&self) -> bool {
        let mut g = self.inner.lock();
        if g.available > 0 {
            g.available -= 1;
            self.free.store(g.available, Relaxed);
            true
        } else {
            false
        }
    }

    /// Take a free permit, or queue at the back with `notify` (built only when queuing).
    pub fn acquire_or_enqueue(&self, notify: impl FnOnce() -> N) -> Acquire {
        let mut g = self.inner.lock();
        if g.available > 0 {
            g.available -= 1;
            self.free.store(g.available, Relaxed);
            return Acquire::Acquired;
        }
        let n = notify();
        self.nwaiting.fetch_add(1, Relaxed);
        Acquire::Queued(g.waiters.push(n))
    }

    /// Block the calling thread until a permit is granted or `deadline` passes; `notify` is
    /// the notifier stored with a thread waiter (the ticket's condvar does the waking). Never
    /// holds the lock while waiting. Returns whether a permit is now held.
    pub fn acquire_until(&self, deadline: Option<Instant>, notify: impl FnOnce() -> N) -> bool {
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return self.try_acquire();
        }
        match self.acquire_or_enqueue(notify) {
            Acquire::Acquired => true,
            Acquire::Queued(t) => match t.wait_until(deadline) {
                Some(()) => true,
                None => {
                    // Timed out while waiting: `wait_until` withdrew the ticket.
                    self.nwaiting.fetch_sub(1, Relaxed);
                    self.note_withdrawn();
                    false
                }
            },
        }
    }

    /// Give a permit back: to the oldest live waiter if any (returning its notifier, to call
    /// once no lock is held), else to the free count. More releases than acquires is an error
    /// (`ValueError`), not a silently growing limit.
    pub fn release(&self) -> Result<Option<N>, CoreError> {
        let mut g = self.inner.lock();
        if g.available >= self.permits {
            return Err(CoreError::OverReleased {
                permits: self.permits,
            });
        }
        Ok(self.hand_on(&mut g))
    }

    fn hand_on(&self, g: &mut Inner<N>) -> Option<N> {
        match g.waiters.grant_next(()) {
            Ok(n) => {
                self.nwaiting.fetch_sub(1, Relaxed);
                Some(n)
            }
            Err(()) => {
                g.available += 1;
                self.free.store(g.available, Relaxed);
                None
            }
        }
    }

    /// A queued waiter gives up (cancelled, timed out). Returns `(kept, notify)`: `kept` is
    /// false; if a permit had been granted in the same instant it is handed on at once and
    /// `notify` is the next waiter to wake. With `keep`, see [`Self::finish`].
    pub fn withdraw(&self, ticket: &Ticket<Permit>) -> (bool, Option<N>) {
        self.finish(ticket, false)
    }

    /// End a wait: withdraw the ticket; a permit granted meanwhile is kept if `keep` (returns
    /// `(true, None)`), else handed on to the next waiter (returns `(false, its notifier)`).
    pub fn finish(&self, ticket: &Ticket<Permit>, keep: bool) -> (bool, Option<N>) {
        // A ticket leaves `Waiting` only by a grant (counted there) or a withdrawal; a second
        // finish of a ticket already done counts nothing.
        let was_waiting = ticket.is_waiting();
        match ticket.withdraw() {
            Some(()) if keep => (true, None),
            Some(()) => {
                let mut g = self.inner.lock();
                (false, self.hand_on(&mut g))
            }
            None => {
                if was_waiting {
                    self.nwaiting.fetch_sub(1, Relaxed);
                }
                self.note_withdrawn();
                (false, None)
            }
        }
    }

    /// Count a withdrawn ticket and sweep the queue once they make up half of it, so a long
    /// run of timeouts with no release cannot grow the queue without bound.
    fn note_withdrawn(&self) {
        let mut g = self.inner.lock();
        g.withdrawn += 1;
        if g.withdrawn >= 32 && g.withdrawn * 2 >= g.waiters.len() {
            g.withdrawn = 0;
            g.waiters.live();
        }
    }

    /// Call `f` on the notifier of every queued waiter if the lock is free right now, else do
    /// nothing (an owner's `__traverse__` and `__clear__`: they must never block).
    pub fn try_for_each_waiter<E>(&self, f: impl FnMut(&N) -> Result<(), E>) -> Result<(), E> {
        match self.inner.try_lock() {
            Some(g) => g.waiters.notifiers().try_for_each(f),
            None => Ok(()),
        }
    }

    /// Queued tickets, withdrawn ones included (for tests).
    pub fn queued(&self) -> usize {
        self.inner.lock().waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type S = Semaphore<u32>;

    #[test]
    fn available_and_waiting_read_no_lock_and_count_every_exit() {
        let s = Arc::new(S::new(1).unwrap());
        assert!(s.try_acquire());
        let q = |s: &S, n| match s.acquire_or_enqueue(|| n) {
            Acquire::Queued(t) => t,
            Acquire::Acquired => panic!("expected to queue"),
        };
        let (a, b, c) = (q(&s, 1), q(&s, 2), q(&s, 3));
        {
            // Read from another thread while the lock is held: a locking reader would hang.
            let guard = s.inner.lock();
            let (tx, rx) = std::sync::mpsc::channel();
            let s2 = Arc::clone(&s);
            std::thread::spawn(move || {
                let _ = tx.send((s2.available(), s2.waiting()));
            });
            let got = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a reader locked");
            drop(guard);
            assert_eq!(got, (0, 3));
        }
        assert!(!s.withdraw(&b).0); // withdrawn while waiting
        assert_eq!(s.waiting(), 2);
        assert!(!s.withdraw(&b).0); // twice: counts nothing more
        assert_eq!(s.waiting(), 2);
        assert_eq!(s.release().unwrap(), Some(1)); // granted to a
        assert_eq!(s.waiting(), 1);
        assert!(s.finish(&a, true).0);
        assert_eq!(s.waiting(), 1);
        // Granted and given up in the same instant: handed on, counted once.
        assert_eq!(s.release().unwrap(), Some(3));
        assert_eq!(s.withdraw(&c), (false, None));
        assert_eq!((s.waiting(), s.available()), (0, 1));
        assert!(s.try_acquire());
        let soon = std::time::Instant::now() + Duration::from_millis(10);
        assert!(!s.acquire_until(Some(soon), || 9)); // queued, then timed out
        assert_eq!((s.waiting(), s.available()), (0, 0));
    }

    #[test]
    fn zero_permits_is_a_config_error() {
        let e = S::new(0).unwrap_err();
        assert!(e.to_string().contains("permits=0"), "{e}");
    }

    #[test]
    fn try_acquire_and_release_count() {
        let s = S::new(2).unwrap();
        assert!(s.try_acquire());
        assert!(s.try_acquire());
        assert!(!s.try_acquire());
        assert_eq!(s.available(), 0);
        assert!(s.release().unwrap().is_none());
        assert!(s.release().unwrap().is_none());
        assert_eq!(s.available(), 2);
        assert!(s.release().is_err(), "over-release is an error");
        assert_eq!(s.available(), 2);
    }

    #[test]
    fn fifo_and_no_barging() {
        let s = S::new(1).unwrap();
        assert!(s.try_acquire());
        let Acquire::Queued(a) = s.acquire_or_enqueue(|| 1) else {
            panic!()
        };
        let Acquire::Queued(b) = s.acquire_or_enqueue(|| 2) else {
            panic!()
        };
        assert_eq!(s.release().unwrap(), Some(1), "the oldest waiter is served");
        assert!(!s.try_acquire(), "a newcomer does not barge past the queue");
        assert_eq!(a.try_take(), Some(()));
        assert_eq!(s.release().unwrap(), Some(2));
        assert_eq!(b.try_take(), Some(()));
        assert!(s.release().unwrap().is_none());
        assert_eq!(s.available(), 1);
    }

    #[test]
    fn withdrawn_waiter_is_skipped_and_a_granted_permit_is_handed_on() {
        let s = S::new(1).unwrap();
        assert!(s.try_acquire());
        let Acquire::Queued(a) = s.acquire_or_enqueue(|| 1) else {
            panic!()
        };
        let Acquire::Queued(b) = s.acquire_or_enqueue(|| 2) else {
            panic!()
        };
        let Acquire::Queued(c) = s.acquire_or_enqueue(|| 3) else {
            panic!()
        };
        assert_eq!(
            s.withdraw(&a),
            (false, None),
            "nothing granted, nothing given back"
        );
        assert_eq!(s.release().unwrap(), Some(2));
        // b is cancelled in the same instant it was granted: its permit goes to c.
        assert_eq!(s.withdraw(&b), (false, Some(3)));
        assert_eq!(s.finish(&c, true), (true, None));
        assert!(s.release().unwrap().is_none());
        assert_eq!(s.available(), 1);
    }

    #[test]
    fn blocking_acquire_times_out_and_is_woken() {
        let s = Arc::new(S::new(1).unwrap());
        assert!(s.try_acquire());
        let t0 = Instant::now();
        assert!(!s.acquire_until(Some(Instant::now() + Duration::from_millis(20)), || 0));
        assert!(t0.elapsed() >= Duration::from_millis(19));
        assert!(
            !s.acquire_until(Some(Instant::now()), || 0),
            "zero timeout does not wait"
        );
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.acquire_until(None, || 0));
        while s.waiting() == 0 {
            std::thread::yield_now();
        }
        s.release().unwrap();
        assert!(h.join().unwrap());
        assert_eq!(s.available(), 0);
        s.release().unwrap();
        assert_eq!(s.available(), 1);
    }

    #[test]
    fn timed_out_waiters_are_swept() {
        let s = S::new(1).unwrap();
        assert!(s.try_acquire());
        for _ in 0..1000 {
            assert!(!s.acquire_until(Some(Instant::now()), || 0));
        }
        assert!(s.queued() < 100, "queue grew to {}", s.queued());
    }

    #[test]
    fn threads_never_exceed_the_limit_and_leak_nothing() {
        let s = Arc::new(S::new(3).unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (s, inside, peak) = (s.clone(), inside.clone(), peak.clone());
                std::thread::spawn(move || {
                    for k in 0..300 {
                        let got = if (i + k) % 3 == 0 {
                            s.acquire_until(Some(Instant::now() + Duration::from_micros(50)), || 0)
                        } else {
                            s.acquire_until(None, || 0)
                        };
                        if got {
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            s.release().unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(s.available(), 3);
    }
}
