//! GCRA rate limiting with weighted costs and a FIFO of waiters, free of PyO3.
//!
//! The limiter grants `rate` units per `per` seconds. Its whole state is one *theoretical
//! arrival time* `tat` (seconds on the limiter's [`Clock`]): the instant at which the limiter
//! would be fully rested again. With `T = per / rate` seconds per unit and `burst` units of
//! tolerance, a cost `c` may be granted at `now` when
//!
//! ```text
//! now >= tat - (burst - min(c, burst)) * T      and      now >= paused_until
//! ```
//!
//! and granting it sets `tat = max(tat, now) + c * T`. A cost up to `burst` is the classic GCRA
//! (at most `rate + burst` units in any window of `per` seconds). A cost above `burst` needs the
//! limiter fully rested (`now >= tat`), and its excess over `burst` stays in `tat` as a debt the
//! next grants wait out, so it neither waits forever nor breaks the rate over a longer run.
//!
//! **Waiters.** An acquire that cannot be granted at once queues at the back of one FIFO of
//! waiters of every kind (blocked threads, asyncio tasks). Queued waiters hold no reservation:
//! only the head of the queue has a grant instant, computed from `tat` when asked
//! ([`Limiter::poll`]). Whoever touches the limiter (the head woken by its own timer, any
//! other waiter's poll, a `try_acquire`, a withdrawal) first runs [`Limiter::advance`], which
//! grants every head that conforms now, in order, and tells the new head (once) that it is the
//! head, so it arms a timer for its grant instant. Nothing needs a background thread.
//!
//! Because a later waiter is only considered once every earlier one is granted or gone, a small
//! cost never overtakes a larger earlier one, and a waiter that gives up (timeout,
//! cancellation) simply leaves: the waiters behind it move up. A grant made to a waiter that
//! gives up in the same instant is undone exactly when no later grant was computed on top of it
//! (the usual case: `tat` is restored); otherwise its units stay spent (never more than the
//! rate allows, only less). Either way it leaves the counters, which count what callers hold.
//!
//! Lock order: the limiter's lock, then a ticket's (a leaf). Notifiers `N` (how the binding
//! wakes an asyncio waiter) are returned to be called once no lock is held.

use crate::errors::CoreError as Error;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A monotonic source of seconds for the limiter.
pub trait Clock: Send + Sync {
    /// Seconds since the clock's origin (monotonic, finite, `>= 0`).
    fn now(&self) -> f64;
}

/// The process's monotonic clock (`std::time::Instant`), counted from its creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock reading 0 now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}

/// A clock that moves only when told to (tests, proptests, loom models).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start` seconds.
    pub fn new(start: f64) -> Self {
        Self(AtomicU64::new(start.to_bits()))
    }

    /// Move the clock forward by `secs` (a negative or NaN step is ignored: time is monotonic).
    pub fn advance(&self, secs: f64) {
        let now = f64::from_bits(self.0.load(Ordering::SeqCst));
        if secs > 0.0 {
            self.0.store((now + secs).to_bits(), Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> f64 {
        (**self).now()
    }
}

/// The validated configuration: `rate` units per `per` seconds, `burst` units at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Units granted per `per` seconds.
    pub rate: f64,
    /// The period of `rate`, in seconds.
    pub per: f64,
    /// Units that may go at once after idleness (the GCRA tolerance).
    pub burst: f64,
}

fn bad(field: &'static str, v: f64, why: &'static str) -> Error {
    Error::Config {
        field,
        value: format!("{v:?}"),
        why,
    }
}

impl Params {
    /// Validate `rate > 0`, `per > 0` (both finite) and `burst >= 1` (finite); `burst=None` is
    /// `rate * min(per, 1) / per` (the rate over one second, or over `per` if shorter), at
    /// least 1.
    pub fn new(rate: f64, per: f64, burst: Option<f64>) -> Result<Self, Error> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(bad("rate", rate, "must be a positive, finite number"));
        }
        if !(per.is_finite() && per > 0.0) {
            return Err(bad(
                "per",
                per,
                "must be a positive, finite number of seconds",
            ));
        }
        let t = per / rate;
        if !(t.is_normal() && t > 0.0) {
            return Err(bad("rate", rate, "is too large for `per`"));
        }
        let burst = match burst {
            None => (rate * per.min(1.0) / per).max(1.0),
            Some(b) if !(b.is_finite() && b >= 1.0) => {
                return Err(bad(
                    "burst",
                    b,
                    "must be a finite number >= 1 (the cost of one call)",
                ))
            }
            Some(b) => b,
        };
        if !(burst * t).is_finite() {
            return Err(bad("burst", burst, "is too large"));
        }
        Ok(Self { rate, per, burst })
    }

    /// Seconds per unit.
    #[inline]
    pub fn interval(&self) -> f64 {
        self.per / self.rate
    }
}

/// What a grant changed, so that a grant to a waiter that gave up in the same instant can be
/// undone.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grant {
    /// The limiter's grant count right after this grant (it is the latest while they match).
    seq: u64,
    prev_tat: f64,
    cost: f64,
    waited: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Waiting,
    Granted(Grant),
    /// Granted and taken by its waiter.
    Done,
    Withdrawn,
}

#[derive(Debug)]
struct TicketState {
    status: Status,
    /// Something changed for this waiter (granted, or it became the head): poll again.
    poked: bool,
}

/// A queued acquire. Its status only changes under the limiter's lock; its own lock and
/// condvar let a blocked thread sleep until it is poked or its timer runs out.
#[derive(Debug)]
pub struct Ticket {
    state: Mutex<TicketState>,
    cv: Condvar,
}

impl Ticket {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(TicketState {
                status: Status::Waiting,
                poked: false,
            }),
            cv: Condvar::new(),
        })
    }

    fn status(&self) -> Status {
        self.state.lock().status
    }

    fn set(&self, status: Status) {
        let mut s = self.state.lock();
        s.status = status;
        s.poked = true;
        self.cv.notify_one();
    }

    fn poke(&self) {
        let mut s = self.state.lock();
        s.poked = true;
        self.cv.notify_one();
    }

    fn is_waiting(&self) -> bool {
        matches!(self.status(), Status::Waiting)
    }

    /// Block the calling thread until the ticket is poked (granted, or made the head) or
    /// `until` passes. A poke that came before the call returns at once.
    pub fn sleep_until(&self, until: Instant) {
        let mut s = self.state.lock();
        if !s.poked && matches!(s.status, Status::Waiting) {
            let _ = self.cv.wait_until(&mut s, until);
        }
        s.poked = false;
    }

    /// Granted and not yet taken (for tests).
    pub fn is_granted(&self) -> bool {
        matches!(self.status(), Status::Granted(_))
    }
}

#[derive(Debug)]
struct Entry<N> {
    ticket: Arc<Ticket>,
    cost: f64,
    since: f64,
    notify: N,
    /// The waiter was told it is the head (it knows to arm a timer for its grant instant).
    told: bool,
}

#[derive(Debug)]
struct Inner<N> {
    tat: f64,
    pause_start: f64,
    paused_until: f64,
    /// Seconds of finished pauses (the current one is added by `stats`).
    paused_done: f64,
    queue: VecDeque<Entry<N>>,
    /// Entries still waiting.
    live: usize,
    /// Entries withdrawn but not yet dropped from the queue.
    withdrawn: usize,
    seq: u64,
    granted: f64,
    acquired: u64,
    waited: u64,
    wait_s: f64,
}

/// Outcome of [`Limiter::acquire_or_enqueue`].
#[derive(Debug)]
pub enum Acquire {
    /// Granted now; the caller holds its units.
    Granted,
    /// Queued at the back: poll the ticket until granted, or withdraw it.
    Queued(Arc<Ticket>),
}

/// Outcome of [`Limiter::poll`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Poll {
    /// Granted: the caller holds its units now.
    Granted,
    /// Still queued. `Some(s)`: this is the head, grantable in `s` seconds (poll again then).
    /// `None`: others are ahead; the ticket is poked when it becomes the head.
    Wait(Option<f64>),
    /// The ticket was withdrawn or already taken.
    Over,
}

/// A snapshot of a limiter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Units granted.
    pub granted: f64,
    /// Acquisitions granted.
    pub acquired: u64,
    /// Acquisitions granted after waiting in the queue.
    pub waited: u64,
    /// Seconds those acquisitions waited, summed.
    pub wait_s: f64,
    /// Wall-clock seconds the limiter spent paused (pauses that overlap count once).
    pub paused_s: f64,
    /// Waiters queued now.
    pub waiting: usize,
}

/// A GCRA rate limiter shared by any number of waiters (see the module docs).
///
/// [`Limiter::stats`], [`Limiter::waiting`] and [`Limiter::paused_for`] read [`Published`]
/// atomics, never the lock the acquires hold (the metrics read them at every scrape).
#[derive(Debug)]
pub struct Limiter<C, N> {
    params: Params,
    interval: f64,
    clock: C,
    inner: Mutex<Inner<N>>,
    seen: Published,
}

/// The figures of [`Stats`] as the last lock holder left them (f64 as bits). Mirrors for
/// readers, not part of the grant logic: plain std atomics even under loom.
#[derive(Debug, Default)]
struct Published {
    granted: std::sync::atomic::AtomicU64,
    acquired: std::sync::atomic::AtomicU64,
    waited: std::sync::atomic::AtomicU64,
    wait_s: std::sync::atomic::AtomicU64,
    pause_start: std::sync::atomic::AtomicU64,
    paused_until: std::sync::atomic::AtomicU64,
    paused_done: std::sync::atomic::AtomicU64,
    live: std::sync::atomic::AtomicUsize,
}

impl Published {
    fn publish<N>(&self, g: &Inner<N>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.granted.store(g.granted.to_bits(), Relaxed);
        self.acquired.store(g.acquired, Relaxed);
        self.waited.store(g.waited, Relaxed);
        self.wait_s.store(g.wait_s.to_bits(), Relaxed);
        self.pause_start.store(g.pause_start.to_bits(), Relaxed);
        self.paused_until.store(g.paused_until.to_bits(), Relaxed);
        self.paused_done.store(g.paused_done.to_bits(), Relaxed);
        self.live.store(g.live, Relaxed);
    }

    fn f64(a: &std::sync::atomic::AtomicU64) -> f64 {
        f64::from_bits(a.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The limiter's lock held by an operation: publishes the figures when dropped, before the
/// lock is released.
struct Locked<'a, N> {
    g: MutexGuard<'a, Inner<N>>,
    seen: &'a Published,
}

impl<N> Drop for Locked<'_, N> {
    fn drop(&mut self) {
        self.seen.publish(&self.g);
    }
}

impl<N> std::ops::Deref for Locked<'_, N> {
    type Target = Inner<N>;
    fn deref(&self) -> &Inner<N> {
        &self.g
    }
}

impl<N> std::ops::DerefMut for Locked<'_, N> {
    fn deref_mut(&mut self) -> &mut Inner<N> {
        &mut self.g
    }
}

impl<C: Clock, N: Clone> Limiter<C, N> {
    /// A fully rested limiter.
    pub fn new(params: Params, clock: C) -> Self {
        let now = clock.now();
        let seen = Published::default();
        for a in [&seen.pause_start, &seen.paused_until] {
            a.store(now.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
        Self {
            seen,
            interval: params.interval(),
            params,
            clock,
            inner: Mutex::new(Inner {
                tat: now,
                pause_start: now,
                paused_until: now,
                paused_done: 0.0,
                queue: VecDeque::new(),
                live: 0,
                withdrawn: 0,
                seq: 0,
                granted: 0.0,
                acquired: 0,
                waited: 0,
                wait_s: 0.0,
            }),
        }
    }

    fn locked(&self) -> Locked<'_, N> {
        Locked {
            g: self.inner.lock(),
            seen: &self.seen,
        }
    }

    /// The configuration.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The clock's reading.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Validate a cost: positive and finite, and small enough that its debt is finite.
    pub fn check_cost(&self, cost: f64) -> Result<(), Error> {
        if !(cost.is_finite() && cost > 0.0) {
            return Err(bad("cost", cost, "must be a positive, finite number"));
        }
        if !(cost * self.interval).is_finite() {
            return Err(bad("cost", cost, "is too large"));
        }
        Ok(())
    }

    /// The earliest instant `cost` may be granted given the state now (FIFO aside).
    fn grant_at(&self, g: &Inner<N>, cost: f64, now: f64) -> f64 {
        let slack = (self.params.burst - cost.min(self.params.burst)) * self.interval;
        (g.tat - slack).max(now).max(g.paused_until)
    }

    fn take(&self, g: &mut Inner<N>, cost: f64, now: f64, since: Option<f64>) -> Grant {
        let prev_tat = g.tat;
        g.tat = g.tat.max(now) + cost * self.interval;
        g.seq += 1;
        g.granted += cost;
        g.acquired += 1;
        let waited = since.map_or(0.0, |s| (now - s).max(0.0));
        if since.is_some() {
            g.waited += 1;
            g.wait_s += waited;
        }
        Grant {
            seq: g.seq,
            prev_tat,
            cost,
            waited,
        }
    }

    /// Grant every head of the queue that conforms at `now`, in order; tell the new head (once)
    /// that it is the head. Returns the notifiers of those waiters.
    fn advance(&self, g: &mut Inner<N>, now: f64) -> Vec<N> {
        let mut wake = Vec::new();
        loop {
            let (cost, waiting) = match g.queue.front() {
                None => break,
                Some(e) => (e.cost, e.ticket.is_waiting()),
            };
            if !waiting {
                g.queue.pop_front();
                g.withdrawn = g.withdrawn.saturating_sub(1);
                continue;
            }
            if self.grant_at(g, cost, now) <= now {
                if let Some(e) = g.queue.pop_front() {
                    let grant = self.take(g, cost, now, Some(e.since));
                    g.live = g.live.saturating_sub(1);
                    e.ticket.set(Status::Granted(grant));
                    wake.push(e.notify);
                }
                continue;
            }
            if let Some(e) = g.queue.front_mut() {
                if !e.told {
                    e.told = true;
                    e.ticket.poke();
                    wake.push(e.notify.clone());
                }
            }
            break;
        }
        wake
    }

    /// Grant `cost` now if it conforms and nobody is queued (never jumps the queue). Returns
    /// whether it was granted, and the notifiers of queued waiters granted or made the head on
    /// the way.
    pub fn try_acquire(&self, cost: f64) -> (bool, Vec<N>) {
        let now = self.clock.now();
        let mut g = self.locked();
        let wake = if g.live > 0 {
            self.advance(&mut g, now)
        } else {
            Vec::new()
        };
        if g.live == 0 && self.grant_at(&g, cost, now) <= now {
            self.take(&mut g, cost, now, None);
            (true, wake)
        } else {
            (false, wake)
        }
    }

    /// Grant `cost` now, or queue at the back with `notify` (built only when queuing).
    pub fn acquire_or_enqueue(&self, cost: f64, notify: impl FnOnce() -> N) -> (Acquire, Vec<N>) {
        let now = self.clock.now();
        let mut g = self.locked();
        let wake = if g.live > 0 {
            self.advance(&mut g, now)
        } else {
            Vec::new()
        };
        if g.live == 0 && self.grant_at(&g, cost, now) <= now {
            self.take(&mut g, cost, now, None);
            return (Acquire::Granted, wake);
        }
        let ticket = Ticket::new();
        g.queue.push_back(Entry {
            ticket: ticket.clone(),
            cost,
            since: now,
            notify: notify(),
            told: false,
        });
        g.live += 1;
        (Acquire::Queued(ticket), wake)
    }

    /// Where a queued waiter stands: granted (it takes its units now), the head with its grant
    /// instant, or behind others. Grants whatever conforms first (see [`Self::advance`]).
    pub fn poll(&self, ticket: &Arc<Ticket>) -> (Poll, Vec<N>) {
        let now = self.clock.now();
        let mut g = self.locked();
        let wake = self.advance(&mut g, now);
        let p = match ticket.status() {
            Status::Granted(_) => {
                ticket.set(Status::Done);
                Poll::Granted
            }
            Status::Waiting => {
                let head = g
                    .queue
                    .front()
                    .filter(|e| Arc::ptr_eq(&e.ticket, ticket))
                    .map(|e| e.cost);
                match head {
                    Some(cost) => {
                        if let Some(e) = g.queue.front_mut() {
                            e.told = true;
                        }
                        Poll::Wait(Some((self.grant_at(&g, cost, now) - now).max(0.0)))
                    }
                    None => Poll::Wait(None),
                }
            }
            Status::Done | Status::Withdrawn => Poll::Over,
        };
        (p, wake)
    }

    /// End a wait without being served, or after a grant its waiter did not see. A grant made
    /// meanwhile is kept if `keep` (returns `(true, [])`: the acquire succeeded); otherwise it is
    /// given back: it leaves the counters (nobody holds it), its units return to the budget if
    /// no later grant was made on top of it (else they stay spent: the limit errs on the safe
    /// side), and the next waiter is served. Returns whether units are held, and the notifiers
    /// to call.
    pub fn withdraw(&self, ticket: &Arc<Ticket>, keep: bool) -> (bool, Vec<N>) {
        let now = self.clock.now();
        let mut g = self.locked();
        match ticket.status() {
            Status::Granted(grant) => {
                ticket.set(Status::Done);
                if keep {
                    return (true, Vec::new());
                }
                // Nobody holds these units: they leave the counters either way.
                g.granted -= grant.cost;
                g.acquired = g.acquired.saturating_sub(1);
                g.waited = g.waited.saturating_sub(1);
                g.wait_s = (g.wait_s - grant.waited).max(0.0);
                if grant.seq == g.seq {
                    g.tat = grant.prev_tat;
                    g.seq -= 1;
                    // The head may now go sooner than it was told: tell it again.
                    if let Some(e) = g.queue.front_mut() {
                        e.told = false;
                    }
                }
                (false, self.advance(&mut g, now))
            }
            Status::Waiting => {
                ticket.set(Status::Withdrawn);
                g.live = g.live.saturating_sub(1);
                g.withdrawn += 1;
                let was_head = g
                    .queue
                    .front()
                    .is_some_and(|e| Arc::ptr_eq(&e.ticket, ticket));
                let wake = if was_head {
                    self.advance(&mut g, now)
                } else {
                    Vec::new()
                };
                if g.withdrawn >= 32 && g.withdrawn * 2 >= g.queue.len() {
                    g.queue.retain(|e| e.ticket.is_waiting());
                    g.withdrawn = 0;
                }
                (false, wake)
            }
            Status::Done | Status::Withdrawn => (false, Vec::new()),
        }
    }

    /// Grant nothing to anyone before `now + secs`. A pause that ends later extends the one in
    /// force; one that ends sooner changes nothing.
    pub fn pause(&self, secs: f64) -> Result<(), Error> {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(bad(
                "seconds",
                secs,
                "must be a finite, non-negative number of seconds",
            ));
        }
        let now = self.clock.now();
        let until = now + secs;
        let mut g = self.locked();
        if until <= g.paused_until {
            return Ok(());
        }
        if g.paused_until > now {
            g.paused_until = until;
        } else {
            g.paused_done += g.paused_until - g.pause_start;
            g.pause_start = now;
            g.paused_until = until;
        }
        Ok(())
    }

    /// Seconds until the pause in force ends (0 when none is).
    pub fn paused_for(&self) -> f64 {
        let now = self.clock.now();
        (Published::f64(&self.seen.paused_until) - now).max(0.0)
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let now = self.clock.now();
        let p = &self.seen;
        let f = Published::f64;
        let (start, until) = (f(&p.pause_start), f(&p.paused_until));
        Stats {
            granted: f(&p.granted),
            acquired: p.acquired.load(std::sync::atomic::Ordering::Relaxed),
            waited: p.waited.load(std::sync::atomic::Ordering::Relaxed),
            wait_s: f(&p.wait_s),
            paused_s: f(&p.paused_done) + (until.min(now) - start).max(0.0),
            waiting: p.live.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Waiters queued now.
    pub fn waiting(&self) -> usize {
        self.seen.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Call `f` on the notifier of every queued entry (withdrawn ones included) if the lock is
    /// free right now, else do nothing (an owner's `__traverse__` and `__clear__`: they must
    /// never block).
    pub fn try_for_each_waiter<E>(&self, f: impl FnMut(&N) -> Result<(), E>) -> Result<(), E> {
        match self.inner.try_lock() {
            Some(g) => g.queue.iter().map(|e| &e.notify).try_for_each(f),
            None => Ok(()),
        }
    }

    /// Queue entries, withdrawn ones not yet dropped included (for tests).
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    type L = Limiter<Arc<ManualClock>, u32>;

    fn lim(rate: f64, per: f64, burst: Option<f64>) -> (L, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(0.0));
        (
            Limiter::new(Params::new(rate, per, burst).unwrap(), clock.clone()),
            clock,
        )
    }

    fn queued(l: &L, cost: f64, n: u32) -> Arc<Ticket> {
        match l.acquire_or_enqueue(cost, || n).0 {
            Acquire::Queued(t) => t,
            Acquire::Granted => panic!("expected to queue"),
        }
    }

    #[test]
    fn stats_read_no_lock_and_match_the_state() {
        let (l, clock) = lim(10.0, 1.0, Some(2.0));
        assert!(l.try_acquire(2.0).0);
        let t = queued(&l, 1.0, 7);
        l.pause(3.0).unwrap();
        clock.advance(1.0);
        let l = Arc::new(l);
        // Hold the limiter's lock: a reader that took it would never answer.
        let guard = l.inner.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = Arc::clone(&l);
        std::thread::spawn(move || {
            let _ = tx.send((l2.stats(), l2.waiting(), l2.paused_for()));
        });
        let (s, waiting, paused_for) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("stats() waited for the limiter's lock");
        drop(guard);
        assert_eq!((s.granted, s.acquired, s.waiting, waiting), (2.0, 1, 1, 1));
        assert_eq!((s.paused_s, paused_for), (1.0, 2.0));
        let _ = l.withdraw(&t, false);
        assert_eq!((l.stats().waiting, l.waiting()), (0, 0));
    }

    #[test]
    fn bad_configuration_names_the_field() {
        for (r, p, b, field) in [
            (0.0, 1.0, None, "rate=0.0"),
            (-1.0, 1.0, None, "rate=-1.0"),
            (f64::NAN, 1.0, None, "rate=NaN"),
            (f64::INFINITY, 1.0, None, "rate=inf"),
            (1.0, 0.0, None, "per=0.0"),
            (1.0, f64::NAN, None, "per=NaN"),
            (1.0, 1.0, Some(0.5), "burst=0.5"),
            (1.0, 1.0, Some(0.0), "burst=0.0"),
            (1.0, 1.0, Some(f64::NAN), "burst=NaN"),
        ] {
            let e = Params::new(r, p, b).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e} should name {field}");
        }
        let (l, _) = lim(10.0, 1.0, None);
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(l
                .check_cost(c)
                .unwrap_err()
                .to_string()
                .starts_with("cost="));
        }
        assert!(l.pause(-1.0).is_err() && l.pause(f64::NAN).is_err());
    }

    #[test]
    fn default_burst() {
        assert_eq!(Params::new(500.0, 60.0, None).unwrap().burst, 500.0 / 60.0);
        assert_eq!(Params::new(10.0, 1.0, None).unwrap().burst, 10.0);
        assert_eq!(Params::new(10.0, 0.5, None).unwrap().burst, 10.0);
        assert_eq!(
            Params::new(0.5, 1.0, None).unwrap().burst,
            1.0,
            "at least 1"
        );
        assert_eq!(Params::new(30.0, 3600.0, None).unwrap().burst, 1.0);
    }

    #[test]
    fn burst_then_the_rate() {
        let (l, clock) = lim(10.0, 1.0, Some(5.0));
        for _ in 0..5 {
            assert!(l.try_acquire(1.0).0);
        }
        assert!(!l.try_acquire(1.0).0, "the burst is spent");
        clock.advance(0.1);
        assert!(l.try_acquire(1.0).0, "one unit per 0.1 s");
        assert!(!l.try_acquire(1.0).0);
        clock.advance(10.0);
        assert!(l.try_acquire(5.0).0, "rested: the whole burst at once");
        assert!(!l.try_acquire(0.5).0);
        assert_eq!(l.stats().granted, 11.0);
    }

    #[test]
    fn window_bound_over_a_long_run() {
        // Greedy try_acquire every millisecond for 10 s: every window of `per` holds at most
        // rate + burst units.
        let (l, clock) = lim(20.0, 1.0, Some(4.0));
        let mut grants = Vec::new();
        for _ in 0..10_000 {
            while l.try_acquire(1.0).0 {
                grants.push(l.now());
            }
            clock.advance(0.001);
        }
        for (i, &t) in grants.iter().enumerate() {
            let n = grants[i..].iter().take_while(|&&u| u <= t + 1.0).count();
            assert!(n <= 24, "{n} units in the window from {t}");
        }
        assert!(grants.len() >= 200, "the rate is reached: {}", grants.len());
    }

    #[test]
    fn fifo_a_later_small_cost_does_not_overtake() {
        // Dyadic times and rates keep the float arithmetic exact.
        let (l, clock) = lim(8.0, 1.0, Some(4.0));
        assert!(l.try_acquire(4.0).0);
        let big = queued(&l, 4.0, 1);
        let small = queued(&l, 1.0, 2);
        assert!(!l.try_acquire(0.5).0, "no barging past the queue");
        clock.advance(0.125);
        // One unit is back: the small waiter could go, but the big one is first.
        assert_eq!(l.poll(&small).0, Poll::Wait(None));
        assert!(!small.is_granted());
        assert_eq!(l.poll(&big).0, Poll::Wait(Some(0.375)));
        clock.advance(0.375);
        let (p, wake) = l.poll(&small);
        assert_eq!(
            wake,
            vec![1, 2],
            "big is granted by small's poll; small is the head"
        );
        assert_eq!(p, Poll::Wait(Some(0.125)));
        assert_eq!(l.poll(&big).0, Poll::Granted);
        clock.advance(0.125);
        assert_eq!(l.poll(&small).0, Poll::Granted);
        let s = l.stats();
        assert_eq!((s.granted, s.acquired, s.waited, s.waiting), (9.0, 3, 2, 0));
        assert_eq!(s.wait_s, 0.5 + 0.625, "{s:?}");
    }

    #[test]
    fn a_new_head_is_told_once() {
        let (l, clock) = lim(1.0, 1.0, Some(1.0));
        assert!(l.try_acquire(1.0).0);
        let a = queued(&l, 1.0, 1);
        let b = queued(&l, 1.0, 2);
        assert_eq!(l.poll(&a).0, Poll::Wait(Some(1.0)));
        clock.advance(1.0);
        // a's grant makes b the head; b is told (its notifier returned) once.
        assert_eq!(l.try_acquire(1.0), (false, vec![1, 2]));
        assert_eq!(l.try_acquire(1.0), (false, vec![]));
        assert_eq!(l.poll(&b).0, Poll::Wait(Some(1.0)));
    }

    #[test]
    fn debt_of_a_cost_above_burst() {
        let (l, clock) = lim(8.0, 1.0, Some(4.0));
        assert!(l.try_acquire(1.0).0);
        assert!(
            !l.try_acquire(16.0).0,
            "above burst: waits until fully rested"
        );
        clock.advance(0.125);
        assert!(l.try_acquire(16.0).0, "rested: granted at once");
        // 16 units at 8/s are 2 s of rate, so the limiter is rested again at 2.125 s; a unit
        // needs (4 - 1) / 8 s less than that: the debt is waited out at 1.75 s.
        clock.advance(1.5);
        assert!(!l.try_acquire(1.0).0, "in debt");
        clock.advance(0.125);
        assert!(l.try_acquire(1.0).0, "the debt is waited out");
        assert!(!l.try_acquire(1.0).0);
    }

    #[test]
    fn pause_blocks_everyone_and_only_extends() {
        let (l, clock) = lim(100.0, 1.0, None);
        l.pause(2.0).unwrap();
        assert!(!l.try_acquire(1.0).0);
        l.pause(0.5).unwrap();
        let t = queued(&l, 1.0, 7);
        assert_eq!(
            l.poll(&t).0,
            Poll::Wait(Some(2.0)),
            "a shorter pause does not shorten"
        );
        clock.advance(1.0);
        l.pause(3.0).unwrap();
        assert_eq!(l.poll(&t).0, Poll::Wait(Some(3.0)), "a longer one extends");
        clock.advance(2.75);
        assert_eq!(l.poll(&t).0, Poll::Wait(Some(0.25)));
        clock.advance(0.25);
        assert_eq!(l.poll(&t).0, Poll::Granted);
        assert!(l.try_acquire(1.0).0, "rested after the pause");
        assert!((l.stats().paused_s - 4.0).abs() < 1e-9);
        clock.advance(10.0);
        l.pause(1.0).unwrap();
        clock.advance(0.25);
        assert!(
            (l.stats().paused_s - 4.25).abs() < 1e-9,
            "a pause in force counts so far"
        );
    }

    #[test]
    fn cancelled_head_hands_its_turn_on() {
        let (l, clock) = lim(1.0, 1.0, Some(2.0));
        assert!(l.try_acquire(2.0).0);
        let big = queued(&l, 2.0, 1);
        let small = queued(&l, 1.0, 2);
        clock.advance(1.0);
        assert_eq!(l.poll(&small).0, Poll::Wait(None), "behind the big one");
        // The big one gives up: the small one goes at once.
        let (kept, wake) = l.withdraw(&big, false);
        assert!(!kept);
        assert_eq!(wake, vec![2]);
        assert!(small.is_granted());
        assert_eq!(l.poll(&small).0, Poll::Granted);
        assert_eq!(l.poll(&big).0, Poll::Over);
        assert_eq!(l.stats().granted, 3.0);
    }

    #[test]
    fn a_grant_given_back_is_undone() {
        let (l, clock) = lim(1.0, 1.0, Some(1.0));
        assert!(l.try_acquire(1.0).0);
        let a = queued(&l, 1.0, 1);
        let b = queued(&l, 1.0, 2);
        clock.advance(1.0);
        assert_eq!(l.poll(&b).0, Poll::Wait(Some(1.0)), "b is the head after a");
        assert!(a.is_granted(), "granted by b's poll, not yet seen by a");
        // a is cancelled in the same instant: its unit goes to b, now.
        let (kept, wake) = l.withdraw(&a, false);
        assert!(!kept);
        assert_eq!(wake, vec![2]);
        assert!(b.is_granted());
        let s = l.stats();
        assert_eq!((s.granted, s.acquired, s.waited), (2.0, 2, 1));
        // A grant kept on timeout is the caller's.
        let c = queued(&l, 1.0, 3);
        clock.advance(1.0);
        l.poll(&b);
        assert!(c.is_granted());
        assert_eq!(l.withdraw(&c, true), (true, vec![]));
        assert_eq!(l.withdraw(&c, true), (false, vec![]), "taken once");
    }

    #[test]
    fn a_grant_given_back_after_a_later_grant_counts_as_spent() {
        let (l, clock) = lim(1.0, 1.0, Some(2.0));
        assert!(l.try_acquire(2.0).0);
        let a = queued(&l, 1.0, 1);
        let b = queued(&l, 1.0, 2);
        clock.advance(2.0);
        assert_eq!(l.poll(&b).0, Poll::Granted, "a then b, both at once");
        assert!(a.is_granted());
        // a gives back after b's grant was computed on top of it: its unit stays spent, but
        // nobody holds it.
        assert_eq!(l.withdraw(&a, false), (false, vec![]));
        assert!(!l.try_acquire(1.0).0, "never more than the rate");
        assert_eq!((l.stats().granted, l.stats().acquired), (3.0, 2));
    }

    #[test]
    fn withdrawn_waiters_are_swept() {
        let (l, _clock) = lim(1.0, 1.0, Some(1.0));
        assert!(l.try_acquire(1.0).0);
        let head = queued(&l, 1.0, 0);
        for i in 0..1000 {
            let t = queued(&l, 1.0, i);
            assert_eq!(l.withdraw(&t, false), (false, vec![]));
        }
        assert!(l.queued() < 100, "queue grew to {}", l.queued());
        assert_eq!(l.waiting(), 1);
        assert_eq!(l.poll(&head).0, Poll::Wait(Some(1.0)));
    }

    #[test]
    fn threads_share_the_limit_with_the_real_clock() {
        use std::time::Duration;
        let l: Arc<Limiter<MonotonicClock, ()>> = Arc::new(Limiter::new(
            Params::new(200.0, 1.0, Some(5.0)).unwrap(),
            MonotonicClock::new(),
        ));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut times = Vec::new();
                    for _ in 0..20 {
                        let t = match l.acquire_or_enqueue(1.0, || ()).0 {
                            Acquire::Granted => {
                                times.push(l.now());
                                continue;
                            }
                            Acquire::Queued(t) => t,
                        };
                        loop {
                            match l.poll(&t).0 {
                                Poll::Granted => break,
                                Poll::Wait(d) => {
                                    let d = d.unwrap_or(0.05).min(0.05);
                                    t.sleep_until(Instant::now() + Duration::from_secs_f64(d));
                                }
                                Poll::Over => panic!("over"),
                            }
                        }
                        times.push(l.now());
                    }
                    times
                })
            })
            .collect();
        let mut all: Vec<f64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all.len(), 80);
        // 80 units at 200/s with a burst of 5: the last grant is at least 75 / 200 s in.
        assert!(all[79] >= 75.0 / 200.0 - 1e-6, "{}", all[79]);
        assert_eq!(l.stats().granted, 80.0);
        assert_eq!(l.waiting(), 0);
    }
}
