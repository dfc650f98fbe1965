//! A bounded object pool that knows nothing of Python.
//!
//! * Idle objects sit in a crossbeam channel (FIFO), so the hit path of an acquire and a
//!   release takes no lock.
//! * Waiters of every kind (blocked threads, asyncio tasks) share ONE FIFO
//!   [`WaitQueue`]. What a waiter receives is a [`Handoff`]: a reused object, a permission to
//!   create one (a reserved slot), `Closed`, or `Retry`.
//! * Creation happens outside every lock: [`PoolCore::try_acquire`] hands out
//!   [`Acquire::Create`] (a reserved slot); the caller runs its factory and reports
//!   [`PoolCore::created`] or [`PoolCore::create_failed`] (which frees the slot and, if
//!   someone waits, hands the slot on).
//! * Nothing here runs user code. Objects to destroy and waiters to wake are collected in
//!   [`Effects`], which the caller performs after every lock is released.
//!
//! Lost wake-ups are excluded by publishing before checking on both sides: a waiter pushes
//! its ticket and bumps `nwaiting`, then re-checks the idle channel and the free slots; a
//! releaser publishes the object (or the freed slot), then checks `nwaiting`. With SeqCst
//! fences between publishing and checking, at least one of the two sees the other.

use crate::clock::{to_nanos, Clock, Nanos};
use crate::errors::core::CoreError;
use crate::histogram::{self, Histogram};
use crate::sync::atomic::{fence, AtomicBool, AtomicUsize};
use crate::sync::channel::{self, Receiver, Sender};
use crate::sync::Mutex;
use crate::waitq::{Ticket, WaitQueue};
// The counters and the fork generation take no part in the hand-off: plain std atomics even
// under loom, which keeps the model small.
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

/// Limits of a pool (validated by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects created up front; idleness never shrinks the pool below it.
    pub initial_size: usize,
    /// Most objects alive (or being created) at once.
    pub max_size: usize,
    /// An idle object older (in idleness) than this is recycled by [`PoolCore::reap`].
    pub idle_timeout: Option<Duration>,
    /// An object older than this is never handed out again.
    pub max_lifetime: Option<Duration>,
}

/// A pooled object with its bookkeeping.
#[derive(Debug)]
pub struct Entry<T> {
    /// The pooled object.
    pub item: T,
    created: Nanos,
    idle_since: Nanos,
    generation: u64,
}

impl<T> Entry<T> {
    /// When the object was created (clock nanos).
    pub fn created_at(&self) -> Nanos {
        self.created
    }
}

/// What a parked waiter receives.
#[derive(Debug)]
pub enum Handoff<T> {
    /// A reused object.
    Agent(Entry<T>),
    /// Permission to create one: a slot is reserved for the waiter.
    Create,
    /// The pool closed.
    Closed,
    /// Start the acquire over (after a fork).
    Retry,
}

/// The outcome of a non-blocking acquire.
#[derive(Debug)]
pub enum Acquire<T> {
    /// An idle object, checked for age.
    Ready(Entry<T>),
    /// A slot is reserved: create an object and report [`PoolCore::created`] or
    /// [`PoolCore::create_failed`].
    Create,
    /// The pool is at `max_size` with nothing idle: park a waiter.
    Full,
}

/// Work for the caller to do once no lock is held: destroy objects, wake waiters, drop
/// objects without destroying them (leftovers of a forked parent).
#[derive(Debug)]
pub struct Effects<T, N> {
    /// Objects to destroy (close).
    pub destroy: Vec<T>,
    /// Notifiers of waiters that were granted something.
    pub wake: Vec<N>,
    /// Objects to drop without closing.
    pub forget: Vec<T>,
}

impl<T, N> Default for Effects<T, N> {
    fn default() -> Self {
        Self {
            destroy: Vec::new(),
            wake: Vec::new(),
            forget: Vec::new(),
        }
    }
}

impl<T, N> Effects<T, N> {
    /// Nothing to do.
    pub fn new() -> Self {
        Self::default()
    }
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.destroy.is_empty() && self.wake.is_empty() && self.forget.is_empty()
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Objects handed out and not yet returned.
    pub active: usize,
    /// Objects idle in the pool.
    pub idle: usize,
    /// Live objects (`created - destroyed`).
    pub size: usize,
    /// The bound.
    pub max_size: usize,
    /// Waiters parked now.
    pub waiting: usize,
    /// Objects created.
    pub created: u64,
    /// Objects destroyed (for any reason).
    pub destroyed: u64,
    /// Objects destroyed for idleness or age.
    pub recycled: u64,
    /// Successful acquires.
    pub acquired: u64,
    /// Releases.
    pub released: u64,
    /// Acquires that had to wait.
    pub waits: u64,
    /// Acquires that timed out.
    pub timeouts: u64,
    /// Total wait of the acquires that waited, nanoseconds.
    pub wait_ns: u64,
}

impl Stats {
    /// Mean wait of the acquires that had to wait (timed-out ones included), milliseconds.
    pub fn avg_wait_ms(&self) -> f64 {
        if self.waits == 0 {
            0.0
        } else {
            self.wait_ns as f64 / self.waits as f64 / 1e6
        }
    }
}

/// Largest `max_size` whose idle set is a preallocated array channel.
const BOUNDED_UP_TO: usize = 4096;

/// A parked waiter's ticket.
pub type PoolTicket<T> = Arc<Ticket<Handoff<T>>>;

/// The pool core, generic over the pooled object `T`, the waiter notifier `N` and the clock.
///
/// No lock on the hit path: a close racing with a release is resolved like a wake-up (the
/// releaser re-checks `closed` after publishing the object, `close` drains after publishing
/// `closed`).
pub struct PoolCore<T, N, C> {
    limits: Limits,
    clock: C,
    max_lifetime: Option<Nanos>,
    idle_timeout: Option<Nanos>,
    idle_tx: Sender<Entry<T>>,
    idle_rx: Receiver<Entry<T>>,
    waiters: Mutex<WaitQueue<Handoff<T>, N>>,
    /// Live (not yet granted, not withdrawn) waiters.
    nwaiting: AtomicUsize,
    /// Live objects plus reserved slots; never above `max_size`.
    size: AtomicUsize,
    closed: AtomicBool,
    generation: AtomicU64,
    created: AtomicU64,
    destroyed: AtomicU64,
    recycled: AtomicU64,
    acquired: AtomicU64,
    released: AtomicU64,
    waits: AtomicU64,
    timeouts: AtomicU64,
    wait_ns: AtomicU64,
    /// Waits that ended with a grant ([`Self::take`] of an object or a slot): the acquires
    /// that did not wait are `acquired - granted_waits`, so the fast path observes nothing.
    granted_waits: AtomicU64,
    /// Every wait (timed out, withdrawn or granted), by duration.
    wait_hist: Histogram,
}

impl<T, N, C: Clock> PoolCore<T, N, C> {
    /// An empty pool; the caller creates `initial_size` objects with [`Self::reserve_initial`].
    pub fn new(limits: Limits, clock: C) -> Self {
        // The idle set never holds more than `max_size` objects: a bounded (array) channel
        // is faster; a huge bound would preallocate too much, so past it the list flavor.
        let (idle_tx, idle_rx) = if limits.max_size <= BOUNDED_UP_TO {
            channel::bounded(limits.max_size)
        } else {
            channel::unbounded()
        };
        Self {
            limits,
            clock,
            max_lifetime: limits.max_lifetime.map(to_nanos),
            idle_timeout: limits.idle_timeout.map(to_nanos),
            idle_tx,
            idle_rx,
            waiters: Mutex::new(WaitQueue::new()),
            nwaiting: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            created: AtomicU64::new(0),
            destroyed: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            acquired: AtomicU64::new(0),
            released: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            wait_ns: AtomicU64::new(0),
            granted_waits: AtomicU64::new(0),
            wait_hist: Histogram::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The clock ages and idle times are read from.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Whether [`Self::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    fn expired(&self, e: &Entry<T>, now: Nanos) -> bool {
        matches!(self.max_lifetime, Some(l) if now.saturating_sub(e.created) >= l)
    }

    fn expired_now(&self, e: &Entry<T>) -> bool {
        self.max_lifetime.is_some() && self.expired(e, self.clock.now())
    }

    fn try_reserve(&self, limit: usize) -> bool {
        let mut cur = self.size.load(SeqCst);
        while cur < limit {
            match self
                .size
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Put an object in the idle set. A close that ran meanwhile may have drained the set
    /// already: whoever sees the other's write (the object, or `closed`) drains it.
    fn stash(&self, e: Entry<T>, fx: &mut Effects<T, N>) {
        // Idle objects never outnumber `max_size` (the channel's bound) and the receiver
        // lives as long as `self`; should that ever fail, the object is destroyed, not lost.
        if let Err(err) = self.idle_tx.try_send(e) {
            self.destroy_entry(err.into_inner(), false, fx);
            return;
        }
        fence(SeqCst);
        if self.closed.load(SeqCst) {
            self.drain_idle(fx);
        }
    }

    /// Give a slot back. Saturating: a creation in flight on the forking thread's event loop
    /// during a fork reports after the child has recounted `size` without its slot.
    fn free_slot(&self) {
        let _ = self
            .size
            .fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
    }

    fn drain_idle(&self, fx: &mut Effects<T, N>) {
        while let Ok(e) = self.idle_rx.try_recv() {
            self.destroyed.fetch_add(1, Relaxed);
            self.free_slot();
            fx.destroy.push(e.item);
        }
    }

    /// Hand `h` to the oldest live waiter; if there is none, an object goes idle and a slot
    /// is freed. Under the queue lock, so a waiter registering next re-checks after us.
    fn dispatch(&self, h: Handoff<T>, fx: &mut Effects<T, N>) {
        let mut q = self.waiters.lock();
        match q.grant_next(h) {
            Ok(n) => {
                self.nwaiting.fetch_sub(1, SeqCst);
                fx.wake.push(n);
            }
            Err(Handoff::Agent(e)) => self.stash(e, fx),
            Err(Handoff::Create) => {
                self.free_slot();
            }
            Err(Handoff::Closed | Handoff::Retry) => {}
        }
    }

    /// A slot was freed: if someone waits, reserve it again and hand it on as `Create`.
    fn refill(&self, fx: &mut Effects<T, N>) {
        fence(SeqCst);
        if self.nwaiting.load(SeqCst) > 0
            && !self.is_closed()
            && self.try_reserve(self.limits.max_size)
        {
            self.dispatch(Handoff::Create, fx);
        }
    }

    fn destroy_entry(&self, e: Entry<T>, recycled: bool, fx: &mut Effects<T, N>) {
        self.destroyed.fetch_add(1, Relaxed);
        if recycled {
            self.recycled.fetch_add(1, Relaxed);
        }
        self.free_slot();
        fx.destroy.push(e.item);
        self.refill(fx);
    }

    /// Return an object to the idle set, or to the oldest waiter. `fresh_idle` restarts its
    /// idle clock (a release); the cleanup's re-queue keeps it.
    fn offer(&self, mut e: Entry<T>, fresh_idle: bool, fx: &mut Effects<T, N>) {
        let now = self.clock.now();
        if self.is_closed() {
            return self.destroy_entry(e, false, fx);
        }
        if self.expired(&e, now) {
            return self.destroy_entry(e, true, fx);
        }
        if fresh_idle {
            e.idle_since = now;
        }
        if self.nwaiting.load(SeqCst) > 0 {
            return self.dispatch(Handoff::Agent(e), fx);
        }
        self.stash(e, fx);
        if self.nwaiting.load(SeqCst) > 0 {
            if let Ok(e) = self.idle_rx.try_recv() {
                self.dispatch(Handoff::Agent(e), fx);
            }
        }
    }

    /// Non-blocking acquire: an idle object (never one past `max_lifetime`), else a reserved
    /// slot to create one, else [`Acquire::Full`]. Expired idle objects met on the way are
    /// put in `fx.destroy`.
    pub fn try_acquire(&self, fx: &mut Effects<T, N>) -> Result<Acquire<T>, CoreError> {
        if self.is_closed() {
            return Err(CoreError::PoolClosed);
        }
        while let Ok(e) = self.idle_rx.try_recv() {
            if self.expired_now(&e) {
                self.destroy_entry(e, true, fx);
                continue;
            }
            return Ok(Acquire::Ready(e));
        }
        if self.try_reserve(self.limits.max_size) {
            return Ok(Acquire::Create);
        }
        Ok(Acquire::Full)
    }

    /// Count a successful acquire (after the caller's health check passed).
    #[inline]
    pub fn acquired(&self) {
        self.acquired.fetch_add(1, Relaxed);
    }

    /// Park a waiter at the back of the queue. Re-checks the idle set and the free slots
    /// after publishing, so a release racing with this registration is never missed.
    pub fn register(&self, notify: N, fx: &mut Effects<T, N>) -> Result<PoolTicket<T>, CoreError> {
        let t = {
            let mut q = self.waiters.lock();
            if self.is_closed() {
                return Err(CoreError::PoolClosed);
            }
            if q.len() > 2 * self.nwaiting.load(SeqCst) + 64 {
                q.live();
            }
            let t = q.push(notify);
            self.nwaiting.fetch_add(1, SeqCst);
            t
        };
        fence(SeqCst);
        if let Ok(e) = self.idle_rx.try_recv() {
            self.dispatch(Handoff::Agent(e), fx);
        }
        if self.try_reserve(self.limits.max_size) {
            self.dispatch(Handoff::Create, fx);
        }
        Ok(t)
    }

    /// A waiter gives up (cancelled, timed out, interrupted). Anything granted to it in the
    /// meantime is handed on, so nothing is lost. Call once per ticket, and not after the
    /// ticket's value was taken.
    pub fn withdraw(&self, t: &Ticket<Handoff<T>>, fx: &mut Effects<T, N>) {
        match t.withdraw() {
            None => {
                self.nwaiting.fetch_sub(1, SeqCst);
            }
            Some(Handoff::Agent(e)) => self.offer(e, false, fx),
            Some(Handoff::Create) => {
                if self.is_closed() {
                    self.free_slot();
                } else {
                    self.dispatch(Handoff::Create, fx);
                }
            }
            Some(Handoff::Closed | Handoff::Retry) => {}
        }
    }

    /// What a woken waiter got: an object past `max_lifetime` is destroyed and its slot kept
    /// for the waiter, which then creates a fresh one.
    pub fn take(&self, h: Handoff<T>, fx: &mut Effects<T, N>) -> Handoff<T> {
        if matches!(h, Handoff::Agent(_) | Handoff::Create) {
            self.granted_waits.fetch_add(1, Relaxed);
        }
        match h {
            Handoff::Agent(e) if self.expired_now(&e) => {
                self.discard_keep_slot(e, true, fx);
                Handoff::Create
            }
            other => other,
        }
    }

    /// Record one acquire that waited `waited` (timed out or not).
    pub fn record_wait(&self, waited: Duration, timed_out: bool) {
        self.waits.fetch_add(1, Relaxed);
        self.wait_ns.fetch_add(to_nanos(waited), Relaxed);
        self.wait_hist.observe(waited);
        if timed_out {
            self.timeouts.fetch_add(1, Relaxed);
        }
    }

    /// Return a handed-out object; `discard` destroys it instead of reusing it.
    pub fn release(&self, e: Entry<T>, discard: bool, fx: &mut Effects<T, N>) {
        if e.generation != self.generation.load(Acquire) {
            // Leased in a forked parent and already written off.
            fx.forget.push(e.item);
            return;
        }
        self.released.fetch_add(1, Relaxed);
        if discard {
            self.destroy_entry(e, false, fx);
        } else {
            self.offer(e, true, fx);
        }
    }

    /// Destroy an object that failed the caller's health check; its slot is freed.
    pub fn reject(&self, e: Entry<T>, fx: &mut Effects<T, N>) {
        self.destroy_entry(e, false, fx);
    }

    /// Destroy an object but keep its slot: the caller now holds a permission to create.
    pub fn discard_keep_slot(&self, e: Entry<T>, recycled: bool, fx: &mut Effects<T, N>) {
        self.destroyed.fetch_add(1, Relaxed);
        if recycled {
            self.recycled.fetch_add(1, Relaxed);
        }
        fx.destroy.push(e.item);
    }

    /// Report a successful creation for a reserved slot. On a closed pool the object comes
    /// back (`Err`) for the caller to destroy.
    pub fn created(&self, item: T) -> Result<Entry<T>, T> {
        self.created.fetch_add(1, Relaxed);
        if self.is_closed() {
            self.destroyed.fetch_add(1, Relaxed);
            self.free_slot();
            return Err(item);
        }
        let now = self.clock.now();
        Ok(Entry {
            item,
            created: now,
            idle_since: now,
            generation: self.generation.load(Acquire),
        })
    }

    /// Report a failed creation: the slot is freed and, if someone waits, handed on.
    pub fn create_failed(&self, fx: &mut Effects<T, N>) {
        self.free_slot();
        self.refill(fx);
    }

    /// Reserve a slot while the pool holds fewer than `initial_size` objects.
    pub fn reserve_initial(&self) -> bool {
        !self.is_closed() && self.try_reserve(self.limits.initial_size)
    }

    /// Put a freshly created object (from [`Self::reserve_initial`]) in the idle set.
    pub fn add_idle(&self, e: Entry<T>, fx: &mut Effects<T, N>) {
        self.offer(e, true, fx);
    }

    /// One round of maintenance: destroy idle objects past `max_lifetime`, and those idle
    /// longer than `idle_timeout` while the pool is above `initial_size`.
    pub fn reap(&self, fx: &mut Effects<T, N>) {
        if self.is_closed() || (self.idle_timeout.is_none() && self.max_lifetime.is_none()) {
            return;
        }
        let now = self.clock.now();
        for _ in 0..self.idle_rx.len() {
            let Ok(e) = self.idle_rx.try_recv() else {
                break;
            };
            let idle_too_long = matches!(self.idle_timeout,
                Some(t) if now.saturating_sub(e.idle_since) >= t);
            if self.expired(&e, now)
                || (idle_too_long && self.size.load(SeqCst) > self.limits.initial_size)
            {
                self.destroy_entry(e, true, fx);
            } else {
                self.offer(e, false, fx);
            }
        }
    }

    /// Close: every waiter gets `Closed`, idle objects go to `fx.destroy`. Returns false if
    /// already closed. Objects released later are destroyed.
    pub fn close(&self, fx: &mut Effects<T, N>) -> bool {
        if self.closed.swap(true, SeqCst) {
            return false;
        }
        let tickets = self.waiters.lock().drain();
        for (t, n) in tickets {
            if t.grant(Handoff::Closed).is_ok() {
                self.nwaiting.fetch_sub(1, SeqCst);
                fx.wake.push(n);
            }
        }
        fence(SeqCst);
        self.drain_idle(fx);
        true
    }

    /// In a forked child: objects handed out in the parent are written off (counted as
    /// released and destroyed, never closed here; a later release of one is ignored);
    /// waiters for which `keep` says true get `Retry`, the others (threads of the parent)
    /// are dropped untouched.
    pub fn after_fork_child(&self, mut keep: impl FnMut(&N) -> bool, fx: &mut Effects<T, N>) {
        self.generation.fetch_add(1, AcqRel);
        let tickets = self.waiters.lock().drain();
        self.nwaiting.store(0, SeqCst);
        for (t, n) in tickets {
            // A dropped ticket is not touched: a parent thread may have held its lock.
            if keep(&n) && t.grant(Handoff::Retry).is_ok() {
                fx.wake.push(n);
            }
        }
        // Idle objects are the child's own: restamp them with the new generation.
        let mut seen = Vec::new();
        while let Ok(e) = self.idle_rx.try_recv() {
            seen.push(e);
        }
        let mut idle = 0usize;
        for mut e in seen {
            e.generation = self.generation.load(Acquire);
            match self.idle_tx.try_send(e) {
                Ok(()) => idle += 1,
                Err(err) => fx.forget.push(err.into_inner().item),
            }
        }
        // Every live object that is not idle belonged to a thread of the parent: leased,
        // handed to a waiter that is gone, being checked or released. Written off (counted
        // released and destroyed), and the slots reserved for creations in progress freed,
        // so `created - destroyed == size == idle` holds in the child.
        let live = self
            .created
            .load(SeqCst)
            .saturating_sub(self.destroyed.load(SeqCst));
        self.destroyed
            .fetch_add(live.saturating_sub(idle as u64), SeqCst);
        let acquired = self.acquired.load(SeqCst);
        self.released.fetch_max(acquired, SeqCst);
        self.size.store(idle, SeqCst);
    }

    /// The wait-time histogram: every wait, plus one observation of 0 s in the first bucket
    /// for each acquire that did not wait (derived from the counters, so the fast path pays
    /// nothing for it). Takes no lock.
    pub fn wait_histogram(&self) -> histogram::Snapshot {
        let mut s = self.wait_hist.snapshot();
        let fast = self
            .acquired
            .load(Relaxed)
            .saturating_sub(self.granted_waits.load(Relaxed));
        s.counts[0] = s.counts[0].saturating_add(fast);
        s
    }

    /// Call `f` on the notifier of every queued waiter if the queue's lock is free right now,
    /// else do nothing (an owner's `__traverse__` and `__clear__`: they must never block).
    pub fn try_for_each_waiter<E>(&self, f: impl FnMut(&N) -> Result<(), E>) -> Result<(), E> {
        match self.waiters.try_lock() {
            Some(q) => q.notifiers().try_for_each(f),
            None => Ok(()),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let created = self.created.load(SeqCst);
        let destroyed = self.destroyed.load(SeqCst);
        let acquired = self.acquired.load(SeqCst);
        let released = self.released.load(SeqCst);
        Stats {
            active: usize::try_from(acquired.saturating_sub(released)).unwrap_or(usize::MAX),
            idle: self.idle_rx.len(),
            size: usize::try_from(created.saturating_sub(destroyed)).unwrap_or(usize::MAX),
            max_size: self.limits.max_size,
            waiting: self.nwaiting.load(SeqCst),
            created,
            destroyed,
            recycled: self.recycled.load(SeqCst),
            acquired,
            released,
            waits: self.waits.load(SeqCst),
            timeouts: self.timeouts.load(SeqCst),
            wait_ns: self.wait_ns.load(SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Instant;

    type Core = PoolCore<u32, &'static str, Arc<ManualClock>>;
    type Fx = Effects<u32, &'static str>;

    fn pool(
        initial: usize,
        max: usize,
        idle: Option<u64>,
        life: Option<u64>,
    ) -> (Core, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1));
        let limits = Limits {
            initial_size: initial,
            max_size: max,
            idle_timeout: idle.map(Duration::from_secs),
            max_lifetime: life.map(Duration::from_secs),
        };
        (PoolCore::new(limits, clock.clone()), clock)
    }

    fn get(c: &Core, fx: &mut Fx, next: &mut u32) -> Option<Entry<u32>> {
        match c.try_acquire(fx).unwrap() {
            Acquire::Ready(e) => {
                c.acquired();
                Some(e)
            }
            Acquire::Create => {
                *next += 1;
                c.acquired();
                Some(c.created(*next).unwrap())
            }
            Acquire::Full => None,
        }
    }

    fn fill(c: &Core, next: &mut u32) {
        let mut fx = Fx::new();
        while c.reserve_initial() {
            *next += 1;
            let e = c.created(*next).unwrap();
            c.add_idle(e, &mut fx);
        }
    }

    #[test]
    fn a_creation_in_flight_across_a_fork_frees_no_slot_twice() {
        let (c, _) = pool(0, 2, None, None);
        let mut fx = Fx::new();
        for _ in 0..2 {
            assert!(matches!(c.try_acquire(&mut fx).unwrap(), Acquire::Create));
        }
        c.after_fork_child(|_| true, &mut fx);
        // The child recounted both reserved slots as free; one creation then fails in it.
        c.create_failed(&mut fx);
        for _ in 0..2 {
            assert!(
                matches!(c.try_acquire(&mut fx).unwrap(), Acquire::Create),
                "the slot count wrapped below zero: the pool looks full"
            );
        }
        assert!(matches!(c.try_acquire(&mut fx).unwrap(), Acquire::Full));
    }

    #[test]
    fn bounded_by_max_size_and_reuses() {
        let (c, _) = pool(0, 2, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let b = get(&c, &mut fx, &mut n).unwrap();
        assert!(
            get(&c, &mut fx, &mut n).is_none(),
            "a third object past max_size"
        );
        assert_eq!((a.item, b.item), (1, 2));
        c.release(a, false, &mut fx);
        let again = get(&c, &mut fx, &mut n).unwrap();
        assert_eq!(again.item, 1, "the released object is reused");
        let s = c.stats();
        assert_eq!((s.size, s.active, s.idle, s.created), (2, 2, 0, 2));
        assert!(fx.is_empty());
    }

    #[test]
    fn initial_size_is_created_up_front() {
        let (c, _) = pool(3, 5, None, None);
        let mut n = 0;
        fill(&c, &mut n);
        let s = c.stats();
        assert_eq!((s.size, s.idle, s.created, s.active), (3, 3, 3, 0));
        assert!(!c.reserve_initial());
    }

    #[test]
    fn waiters_are_served_first_come_first_served() {
        let (c, _) = pool(0, 1, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let t1 = c.register("first", &mut fx).unwrap();
        let t2 = c.register("second", &mut fx).unwrap();
        let t3 = c.register("third", &mut fx).unwrap();
        assert!(fx.wake.is_empty());
        assert_eq!(c.stats().waiting, 3);
        c.withdraw(&t2, &mut fx);
        c.release(a, false, &mut fx);
        assert_eq!(
            fx.wake,
            vec!["first"],
            "handed straight to the oldest waiter"
        );
        let Some(Handoff::Agent(e)) = t1.try_take() else {
            panic!("first got nothing")
        };
        assert_eq!(c.stats().idle, 0);
        c.release(e, false, &mut fx);
        assert_eq!(
            fx.wake,
            vec!["first", "third"],
            "a withdrawn waiter is skipped"
        );
        assert!(matches!(t3.try_take(), Some(Handoff::Agent(_))));
        assert_eq!(c.stats().waiting, 0);
    }

    #[test]
    fn timed_out_waiter_loses_nothing() {
        let (c, _) = pool(0, 1, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let t = c.register("w", &mut fx).unwrap();
        assert!(t
            .wait_until(Some(Instant::now() + Duration::from_millis(5)))
            .is_none());
        c.withdraw(&t, &mut fx);
        c.record_wait(Duration::from_millis(5), true);
        assert_eq!(c.stats().waiting, 0);
        c.release(a, false, &mut fx);
        assert!(fx.wake.is_empty());
        let s = c.stats();
        assert_eq!((s.idle, s.size, s.timeouts, s.waits), (1, 1, 1, 1));
        assert!((s.avg_wait_ms() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn withdraw_after_grant_hands_the_object_on() {
        let (c, _) = pool(0, 1, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let t1 = c.register("one", &mut fx).unwrap();
        let t2 = c.register("two", &mut fx).unwrap();
        c.release(a, false, &mut fx);
        // "one" was granted but gives up (cancelled) before taking it: "two" gets it.
        c.withdraw(&t1, &mut fx);
        assert_eq!(fx.wake, vec!["one", "two"]);
        assert!(matches!(t2.try_take(), Some(Handoff::Agent(e)) if e.item == 1));
        assert_eq!(c.stats().waiting, 0);
    }

    #[test]
    fn failed_creation_frees_the_slot_for_a_waiter() {
        let (c, _) = pool(0, 1, None, None);
        let mut fx = Fx::new();
        assert!(matches!(c.try_acquire(&mut fx).unwrap(), Acquire::Create));
        assert!(matches!(c.try_acquire(&mut fx).unwrap(), Acquire::Full));
        let t = c.register("w", &mut fx).unwrap();
        c.create_failed(&mut fx);
        assert_eq!(fx.wake, vec!["w"]);
        assert!(matches!(t.try_take(), Some(Handoff::Create)));
        assert_eq!(c.stats().size, 0);
        assert_eq!(c.size.load(SeqCst), 1, "the slot is the waiter's now");
    }

    #[test]
    fn discard_frees_a_slot_for_a_waiter() {
        let (c, _) = pool(0, 1, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let t = c.register("w", &mut fx).unwrap();
        c.release(a, true, &mut fx);
        assert_eq!(fx.destroy, vec![1]);
        assert!(matches!(t.try_take(), Some(Handoff::Create)));
    }

    #[test]
    fn expired_objects_are_never_handed_out() {
        let (c, clock) = pool(0, 2, None, Some(10));
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        c.release(a, false, &mut fx);
        clock.advance(Duration::from_secs(10));
        let b = get(&c, &mut fx, &mut n).unwrap();
        assert_eq!(b.item, 2, "expired idle object handed out");
        assert_eq!(fx.destroy, vec![1]);
        clock.advance(Duration::from_secs(11));
        c.release(b, false, &mut fx);
        assert_eq!(fx.destroy, vec![1, 2], "expired at release");
        let s = c.stats();
        assert_eq!((s.size, s.recycled, s.idle), (0, 2, 0));
        // Handed to a waiter, then expired before it took it: the waiter creates instead.
        let x = get(&c, &mut fx, &mut n).unwrap();
        let y = get(&c, &mut fx, &mut n).unwrap();
        let t = c.register("w", &mut fx).unwrap();
        c.release(x, false, &mut fx);
        clock.advance(Duration::from_secs(10));
        let h = t.try_take().unwrap();
        assert!(matches!(c.take(h, &mut fx), Handoff::Create));
        let _ = y;
    }

    #[test]
    fn reap_recycles_idle_but_keeps_initial_size() {
        let (c, clock) = pool(2, 5, Some(60), None);
        let (mut fx, mut n) = (Fx::new(), 0);
        fill(&c, &mut n);
        let more: Vec<_> = (0..5).filter_map(|_| get(&c, &mut fx, &mut n)).collect();
        assert_eq!(more.len(), 5);
        for e in more {
            c.release(e, false, &mut fx);
        }
        clock.advance(Duration::from_secs(30));
        c.reap(&mut fx);
        assert_eq!(c.stats().size, 5, "nothing idle long enough yet");
        clock.advance(Duration::from_secs(30));
        c.reap(&mut fx);
        let s = c.stats();
        assert_eq!(
            (s.size, s.idle, s.recycled),
            (2, 2, 3),
            "idleness shrinks to initial_size"
        );
        clock.advance(Duration::from_secs(600));
        c.reap(&mut fx);
        assert_eq!(c.stats().size, 2, "never below initial_size");
    }

    #[test]
    fn reap_enforces_max_lifetime_below_the_floor() {
        let (c, clock) = pool(2, 5, None, Some(100));
        let mut n = 0;
        fill(&c, &mut n);
        clock.advance(Duration::from_secs(100));
        let mut fx = Fx::new();
        c.reap(&mut fx);
        assert_eq!(fx.destroy.len(), 2);
        assert_eq!(c.stats().size, 0);
    }

    #[test]
    fn close_fails_waiters_and_destroys_idle_and_late_releases() {
        let (c, _) = pool(1, 2, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        fill(&c, &mut n);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let b = get(&c, &mut fx, &mut n).unwrap();
        let t = c.register("w", &mut fx).unwrap();
        assert!(c.close(&mut fx));
        assert!(!c.close(&mut fx));
        assert_eq!(fx.wake, vec!["w"]);
        assert!(matches!(t.try_take(), Some(Handoff::Closed)));
        assert!(matches!(c.try_acquire(&mut fx), Err(CoreError::PoolClosed)));
        assert!(matches!(
            c.register("x", &mut fx),
            Err(CoreError::PoolClosed)
        ));
        c.release(a, false, &mut fx);
        c.release(b, false, &mut fx);
        let s = c.stats();
        assert_eq!((s.size, s.active, s.idle, s.waiting), (0, 0, 0, 0));
        assert_eq!(fx.destroy.len(), 2);
    }

    #[test]
    fn after_fork_writes_off_leases_and_keeps_own_waiters() {
        let (c, _) = pool(0, 2, None, None);
        let (mut fx, mut n) = (Fx::new(), 0);
        let a = get(&c, &mut fx, &mut n).unwrap();
        let b = get(&c, &mut fx, &mut n).unwrap();
        c.release(b, false, &mut fx);
        let b = get(&c, &mut fx, &mut n).unwrap();
        let mine = c.register("mine", &mut fx).unwrap();
        let _theirs = c.register("theirs", &mut fx).unwrap();
        c.after_fork_child(|n| *n == "mine", &mut fx);
        assert_eq!(fx.wake, vec!["mine"]);
        assert!(matches!(mine.try_take(), Some(Handoff::Retry)));
        let s = c.stats();
        assert_eq!((s.active, s.size, s.waiting), (0, 0, 0));
        c.release(a, false, &mut fx);
        assert_eq!(fx.forget, vec![1], "a parent's lease is ignored");
        let _ = b;
        assert_eq!(s.created - s.destroyed, s.size as u64);
    }

    #[test]
    fn threads_stress_keeps_invariants() {
        let (c, _) = pool(2, 4, None, None);
        let c = Arc::new(c);
        let mut n = 0;
        fill(&c, &mut n);
        let next = Arc::new(AtomicU64::new(1000));
        let peak = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (c, next, peak) = (c.clone(), next.clone(), peak.clone());
                std::thread::spawn(move || {
                    for k in 0..2000u32 {
                        let mut fx = Fx::new();
                        let e = match c.try_acquire(&mut fx).unwrap() {
                            Acquire::Ready(e) => Some(e),
                            Acquire::Create => {
                                Some(c.created(next.fetch_add(1, SeqCst) as u32).unwrap())
                            }
                            Acquire::Full => {
                                let t = c.register("t", &mut fx).unwrap();
                                let deadline = Instant::now()
                                    + Duration::from_millis(if k % 7 == 0 { 0 } else { 200 });
                                match t.wait_until(Some(deadline)) {
                                    None => {
                                        c.withdraw(&t, &mut fx);
                                        None
                                    }
                                    Some(h) => match c.take(h, &mut fx) {
                                        Handoff::Agent(e) => Some(e),
                                        Handoff::Create => Some(
                                            c.created(next.fetch_add(1, SeqCst) as u32).unwrap(),
                                        ),
                                        _ => unreachable!(),
                                    },
                                }
                            }
                        };
                        if let Some(e) = e {
                            c.acquired();
                            peak.fetch_max(c.stats().active, SeqCst);
                            c.release(e, (k + i) % 5 == 0, &mut fx);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let s = c.stats();
        assert_eq!(s.acquired, s.released);
        assert_eq!(s.created - s.destroyed, s.size as u64);
        assert_eq!(s.waiting, 0);
        assert!(s.size <= 4 && peak.load(SeqCst) <= 4);
        assert_eq!(s.idle, s.size, "every live object is back, none lost");
    }

    #[test]
    fn close_racing_with_releases_strands_nothing() {
        for round in 0..50 {
            let (c, _) = pool(4, 4, None, None);
            let c = Arc::new(c);
            let mut n = 0;
            fill(&c, &mut n);
            let destroyed = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (c, destroyed) = (c.clone(), destroyed.clone());
                    std::thread::spawn(move || {
                        let mut fx = Fx::new();
                        for _ in 0..200 {
                            match c.try_acquire(&mut fx) {
                                Ok(Acquire::Ready(e)) => {
                                    c.acquired();
                                    c.release(e, false, &mut fx);
                                }
                                Ok(_) => std::thread::yield_now(),
                                Err(_) => break,
                            }
                        }
                        destroyed.fetch_add(fx.destroy.len(), SeqCst);
                    })
                })
                .collect();
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            let mut fx = Fx::new();
            c.close(&mut fx);
            for h in hs {
                h.join().unwrap();
            }
            let s = c.stats();
            assert_eq!(
                (s.size, s.idle, s.active),
                (0, 0, 0),
                "round {round}: {s:?}"
            );
            assert_eq!(fx.destroy.len() + destroyed.load(SeqCst), 4);
        }
    }
}
