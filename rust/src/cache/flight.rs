//! Single-flight, knowing nothing of Python: concurrent misses for one key run one call (the
//! *leader*'s); the others (*followers*) park a [`Ticket`] and receive that call's
//! [`Outcome`].
//!
//! The protocol, explicit so that a cross-process lease can later sit on top of it:
//!
//! 1. [`SingleFlight::join`] a key. Under the flights lock: a flight for the key exists →
//!    the caller follows ([`Joined::Wait`], unless it would wait for itself: [`Reentrant`]);
//!    else the caller's `cached` lookup runs (a hit ends there, [`Joined::Hit`]); else the
//!    caller leads ([`Joined::Lead`] with a [`Lease`]).
//! 2. The leader runs the call outside every lock and reports [`SingleFlight::finish`] with
//!    its lease and the outcome: a value (stored by the caller's `store` closure under the
//!    lock, unless the key was invalidated meanwhile), an error (shared, not stored), or
//!    [`Outcome::Retry`] (the leader gave up: each follower joins again and one of them
//!    leads). Every follower still waiting receives a clone of the outcome.
//! 3. A follower waits on its ticket (blocking or by its notifier) or gives up with
//!    [`Ticket::withdraw`], which hands back an outcome granted in the same instant.
//!
//! Nothing here runs user code or drops a caller's object under the lock: callers and
//! notifiers the core lets go of, and notifiers to call, are collected in [`Effects`], which
//! the caller settles once no lock is held. Outcome clones dropped under the lock (those of
//! followers that withdrew) are never the last reference: the leader still holds the
//! outcome it passed to `finish`.
//!
//! Fork: flights carry the fork generation they began in. [`SingleFlight::after_fork_child`]
//! bumps the generation in a forked child: flights led by threads that do not exist there
//! are dropped (their waiters' tickets untouched: a parent thread may have held a ticket's
//! lock), the waiters the child can still wake are told to start over, and flights the
//! child's own thread leads go on. `join` treats a flight of an older generation as absent.

use crate::sync::Mutex;
use crate::waitq::{Ticket, WaitQueue};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
// Counters and the generation take no part in the hand-off: plain std atomics even under
// loom, which keeps the model small.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a flight ended with; every follower receives a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V, E> {
    /// The call returned this value.
    Value(V),
    /// The call failed with this error (shared, never stored).
    Error(E),
    /// The leader gave up (cancelled): join again.
    Retry,
}

/// A follower's ticket.
pub type FlightTicket<V, E> = Arc<Ticket<Outcome<V, E>>>;

/// The leader's right to end its flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Unique per [`SingleFlight`], across fork generations.
    pub id: u64,
    /// The fork generation the flight began in.
    pub generation: u64,
}

/// How [`SingleFlight::join`] went.
#[derive(Debug)]
pub enum Joined<H, V, E> {
    /// No flight, and the `cached` lookup found this.
    Hit(H),
    /// This caller leads: run the call, then [`SingleFlight::finish`].
    Lead(Lease),
    /// A flight is running: wait on this ticket for its outcome.
    Wait(FlightTicket<V, E>),
}

/// The caller would wait for a flight it leads itself (a deadlock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reentrant;

/// Who calls: what the re-entrancy check compares.
pub trait Caller {
    /// Would this caller, waiting for a flight led by `leader`, wait for itself (the same
    /// task, or blocking the thread the leader runs on)?
    fn waits_for_itself(&self, leader: &Self) -> bool;
}

/// Work for the caller once no lock is held: call the notifiers [`Self::take_wake`] gives,
/// then drop the effects (callers and notifiers the core let go of). The common paths let
/// go of one caller and one notifier, kept inline, and the lists stay unallocated, so that
/// a miss neither allocates nor runs list drops here.
#[derive(Debug)]
pub struct Effects<N, C> {
    wake: Option<Vec<N>>,
    dropped_one: Option<N>,
    dropped: Option<Vec<N>>,
    caller_one: Option<C>,
    callers: Option<Vec<C>>,
}

impl<N, C> Default for Effects<N, C> {
    fn default() -> Self {
        Self {
            wake: None,
            dropped_one: None,
            dropped: None,
            caller_one: None,
            callers: None,
        }
    }
}

impl<N, C> Effects<N, C> {
    /// Nothing to do.
    pub fn new() -> Self {
        Self::default()
    }

    fn wake_one(&mut self, n: N) {
        self.wake.get_or_insert_with(Vec::new).push(n);
    }

    fn let_go(&mut self, n: N) {
        match self.dropped_one {
            None => self.dropped_one = Some(n),
            Some(_) => self.dropped.get_or_insert_with(Vec::new).push(n),
        }
    }

    fn let_go_caller(&mut self, c: C) {
        match self.caller_one {
            None => self.caller_one = Some(c),
            Some(_) => self.callers.get_or_insert_with(Vec::new).push(c),
        }
    }

    /// Notifiers of followers that were granted an outcome: call each once no lock is held.
    pub fn take_wake(&mut self) -> Vec<N> {
        self.wake.take().unwrap_or_default()
    }

    /// Whether a notifier is to be called.
    pub fn must_wake(&self) -> bool {
        self.wake.as_ref().is_some_and(|w| !w.is_empty())
    }

    /// Notifiers let go of, not to be called.
    pub fn dropped(&self) -> impl Iterator<Item = &N> {
        self.dropped_one.iter().chain(self.dropped.iter().flatten())
    }

    /// Callers let go of (leaders of ended flights, followers, hits).
    pub fn callers(&self) -> impl Iterator<Item = &C> {
        self.caller_one.iter().chain(self.callers.iter().flatten())
    }
}

struct InFlight<V, E, N, C> {
    lease: Lease,
    leader: C,
    followers: WaitQueue<Outcome<V, E>, N>,
    /// Invalidated while running: the outcome goes to the followers but is not stored.
    stale: bool,
}

type Map<K, V, E, N, C, S> = HashMap<K, InFlight<V, E, N, C>, S>;

/// The flights of one cache, keyed by `K`.
pub struct SingleFlight<K, V, E, N, C, S> {
    flights: Mutex<Map<K, V, E, N, C, S>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    coalesced: AtomicU64,
}

impl<K, V, E, N, C, S> Default for SingleFlight<K, V, E, N, C, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
    C: Caller,
    S: BuildHasher + Default,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, E, N, C, S> SingleFlight<K, V, E, N, C, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
    C: Caller,
    S: BuildHasher + Default,
{
    /// No flight.
    pub fn new() -> Self {
        Self {
            flights: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    /// Join the flight for `key`, or look it up with `cached`, or lead (see the module
    /// docs). `cached` runs under the flights lock, so a flight that ends and stores its
    /// value is seen either as a flight or as a hit, never as neither; it must not run user
    /// code. `who` and `notify` are kept (as the leader, or in the queue) or go to `fx`.
    pub fn join<H>(
        &self,
        key: &K,
        who: C,
        notify: N,
        cached: impl FnOnce() -> Option<H>,
        fx: &mut Effects<N, C>,
    ) -> Result<Joined<H, V, E>, Reentrant> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut map = self.flights.lock();
        let vacant = match map.entry(key.clone()) {
            Entry::Occupied(o) if o.get().lease.generation == generation => {
                let f = o.into_mut();
                if who.waits_for_itself(&f.leader) {
                    fx.let_go_caller(who);
                    fx.let_go(notify);
                    return Err(Reentrant);
                }
                let t = f.followers.push(notify);
                fx.let_go_caller(who);
                return Ok(Joined::Wait(t));
            }
            Entry::Occupied(o) => {
                // A parent's flight the fork hook did not reach: nobody will end it.
                let (k, mut f) = o.remove_entry();
                fx.let_go_caller(f.leader);
                for (_, n) in f.followers.drain() {
                    fx.let_go(n);
                }
                match map.entry(k) {
                    Entry::Vacant(v) => v,
                    Entry::Occupied(_) => unreachable!("just removed"),
                }
            }
            Entry::Vacant(v) => v,
        };
        if let Some(h) = cached() {
            fx.let_go_caller(who);
            fx.let_go(notify);
            return Ok(Joined::Hit(h));
        }
        let lease = Lease {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            generation,
        };
        vacant.insert(InFlight {
            lease,
            leader: who,
            followers: WaitQueue::new(),
            stale: false,
        });
        drop(map);
        fx.let_go(notify);
        Ok(Joined::Lead(lease))
    }

    /// End the flight `lease` of `key` with `outcome`: store a value with `store` (under the
    /// lock, unless the key was invalidated meanwhile; it must not run user code) and grant
    /// `outcome` to every follower still waiting. False if the flight had already gone
    /// (dropped at a fork); nothing is done then.
    pub fn finish(
        &self,
        key: &K,
        lease: Lease,
        outcome: &Outcome<V, E>,
        store: impl FnOnce(&V),
        fx: &mut Effects<N, C>,
    ) -> bool {
        let mut map = self.flights.lock();
        let mut f = match map.remove_entry(key) {
            Some((_, f)) if f.lease.id == lease.id => f,
            Some((k, other)) => {
                // Another flight for the key (this one was dropped at a fork): leave it.
                map.insert(k, other);
                return false;
            }
            None => return false,
        };
        if let Outcome::Value(v) = outcome {
            if !f.stale {
                store(v);
            }
        }
        let woken = f.followers.grant_all(outcome);
        drop(map);
        if !woken.is_empty() {
            fx.wake.get_or_insert_with(Vec::new).extend(woken);
        }
        fx.let_go_caller(f.leader);
        true
    }

    /// Mark the flight of `key` (if any) so that its value is not stored, and run `remove`
    /// (the store's removal) under the same lock hold, so no flight stores a value computed
    /// before the invalidation after it.
    pub fn invalidate<R>(&self, key: &K, remove: impl FnOnce() -> R) -> R {
        let mut map = self.flights.lock();
        if let Some(f) = map.get_mut(key) {
            f.stale = true;
        }
        remove()
    }

    /// [`Self::invalidate`] for every key; `clear` runs under the lock.
    pub fn invalidate_all<R>(&self, clear: impl FnOnce() -> R) -> R {
        let mut map = self.flights.lock();
        for f in map.values_mut() {
            f.stale = true;
        }
        clear()
    }

    /// In a forked child (see the module docs): flights whose leader `keep_flight` rejects
    /// are dropped; followers `keep_follower` accepts are granted [`Outcome::Retry`] (their
    /// notifiers to wake in `fx`), the others dropped with their tickets untouched.
    pub fn after_fork_child(
        &self,
        keep_flight: impl Fn(&C) -> bool,
        keep_follower: impl Fn(&N) -> bool,
        fx: &mut Effects<N, C>,
    ) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut map = self.flights.lock();
        let mut gone = Vec::new();
        for (k, f) in map.iter_mut() {
            for (t, n) in f.followers.drain() {
                if keep_follower(&n) && t.grant(Outcome::Retry).is_ok() {
                    fx.wake_one(n);
                } else {
                    fx.let_go(n);
                }
            }
            if keep_flight(&f.leader) {
                f.lease.generation = generation;
            } else {
                gone.push(k.clone());
            }
        }
        for k in gone {
            if let Some(f) = map.remove(&k) {
                fx.let_go_caller(f.leader);
            }
        }
    }

    /// Call `leader` on the leader of every flight and `follower` on the notifier of every
    /// queued follower, if the flights lock is free right now, else do nothing (an owner's
    /// `__traverse__` and `__clear__`: they must never block).
    pub fn try_for_each<Er>(
        &self,
        mut leader: impl FnMut(&C) -> Result<(), Er>,
        mut follower: impl FnMut(&N) -> Result<(), Er>,
    ) -> Result<(), Er> {
        let Some(map) = self.flights.try_lock() else {
            return Ok(());
        };
        for f in map.values() {
            leader(&f.leader)?;
            f.followers.notifiers().try_for_each(&mut follower)?;
        }
        Ok(())
    }

    /// Count a caller served by another's flight (see [`Self::coalesced`]).
    pub fn note_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// Callers that received another caller's outcome (value or error) instead of running
    /// the call.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Flights running now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }

    /// Followers queued on the flight of `key` (withdrawn ones included).
    pub fn queued(&self, key: &K) -> usize {
        self.flights
            .lock()
            .get(key)
            .map_or(0, |f| f.followers.len())
    }

    /// Followers still waiting on every flight (withdrawn ones not counted).
    pub fn waiters(&self) -> usize {
        self.flights
            .lock()
            .values()
            .map(|f| f.followers.waiting())
            .sum()
    }

    /// The current fork generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    /// A caller: (thread, task); a task waits for itself on its own flight, a blocking
    /// caller (task None) on any flight of its thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Who(u32, Option<u32>);

    impl Caller for Who {
        fn waits_for_itself(&self, leader: &Self) -> bool {
            match (self.1, leader.1) {
                (Some(a), Some(b)) => a == b,
                _ => self.0 == leader.0,
            }
        }
    }

    type F = SingleFlight<&'static str, u32, &'static str, &'static str, Who, RandomState>;

    fn fx() -> Effects<&'static str, Who> {
        Effects::new()
    }

    #[test]
    fn one_leader_followers_get_the_value_and_it_is_stored() {
        let f = F::new();
        let mut e = fx();
        let mut stored = None;
        let Ok(Joined::Lead(lease)) = f.join(&"k", Who(1, None), "n1", || None::<u32>, &mut e)
        else {
            panic!("the first caller leads")
        };
        let Ok(Joined::Wait(t2)) = f.join(&"k", Who(2, None), "n2", || None::<u32>, &mut e) else {
            panic!("the second follows")
        };
        let Ok(Joined::Wait(t3)) = f.join(&"k", Who(3, Some(7)), "n3", || None::<u32>, &mut e)
        else {
            panic!("a task follows too")
        };
        assert_eq!(f.in_flight(), 1);
        assert_eq!(f.queued(&"k"), 2);
        let mut e = fx();
        assert!(f.finish(
            &"k",
            lease,
            &Outcome::Value(5),
            |v| stored = Some(*v),
            &mut e
        ));
        assert_eq!(stored, Some(5));
        assert_eq!(e.take_wake(), vec!["n2", "n3"]);
        assert_eq!(e.callers().collect::<Vec<_>>(), vec![&Who(1, None)]);
        assert_eq!(t2.try_take(), Some(Outcome::Value(5)));
        assert_eq!(t3.try_take(), Some(Outcome::Value(5)));
        assert_eq!(f.in_flight(), 0);
        // A finished lease ends nothing.
        assert!(!f.finish(&"k", lease, &Outcome::Value(6), |_| panic!(), &mut e));
    }

    #[test]
    fn a_hit_under_the_lock_and_an_error_shared_not_stored() {
        let f = F::new();
        let mut e = fx();
        match f.join(&"k", Who(1, None), "n", || Some(42u32), &mut e) {
            Ok(Joined::Hit(42)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(e.dropped().collect::<Vec<_>>(), vec![&"n"]);
        assert_eq!(e.callers().collect::<Vec<_>>(), vec![&Who(1, None)]);
        let mut e = fx();
        let Ok(Joined::Lead(l)) = f.join(&"k", Who(1, None), "n", || None::<u32>, &mut e) else {
            panic!()
        };
        let Ok(Joined::Wait(t)) = f.join(&"k", Who(2, None), "m", || None::<u32>, &mut e) else {
            panic!()
        };
        assert!(f.finish(
            &"k",
            l,
            &Outcome::Error("429"),
            |_| panic!("stored"),
            &mut e
        ));
        assert_eq!(t.try_take(), Some(Outcome::Error("429")));
    }

    #[test]
    fn reentrancy_is_refused() {
        let f = F::new();
        let mut e = fx();
        let Ok(Joined::Lead(_)) = f.join(&"k", Who(1, Some(9)), "a", || None::<u32>, &mut e) else {
            panic!()
        };
        // The same task, and a blocking call on the leader task's thread.
        assert!(matches!(
            f.join(&"k", Who(1, Some(9)), "b", || None::<u32>, &mut e),
            Err(Reentrant)
        ));
        assert!(matches!(
            f.join(&"k", Who(1, None), "c", || None::<u32>, &mut e),
            Err(Reentrant)
        ));
        // Another task of that thread may wait.
        assert!(matches!(
            f.join(&"k", Who(1, Some(10)), "d", || None::<u32>, &mut e),
            Ok(Joined::Wait(_))
        ));
    }

    #[test]
    fn retry_hands_the_call_on_and_withdrawn_followers_get_nothing() {
        let f = F::new();
        let mut e = fx();
        let Ok(Joined::Lead(l)) = f.join(&"k", Who(1, None), "a", || None::<u32>, &mut e) else {
            panic!()
        };
        let Ok(Joined::Wait(t1)) = f.join(&"k", Who(2, None), "b", || None::<u32>, &mut e) else {
            panic!()
        };
        let Ok(Joined::Wait(t2)) = f.join(&"k", Who(3, None), "c", || None::<u32>, &mut e) else {
            panic!()
        };
        assert_eq!(t2.withdraw(), None);
        let mut e = fx();
        assert!(f.finish(&"k", l, &Outcome::Retry, |_| panic!(), &mut e));
        assert_eq!(e.take_wake(), vec!["b"]);
        assert_eq!(t1.try_take(), Some(Outcome::Retry));
        // The follower joins again and leads.
        assert!(matches!(
            f.join(&"k", Who(2, None), "b", || None::<u32>, &mut e),
            Ok(Joined::Lead(_))
        ));
    }

    #[test]
    fn invalidated_while_in_flight_is_not_stored() {
        let f = F::new();
        let mut e = fx();
        let Ok(Joined::Lead(l)) = f.join(&"k", Who(1, None), "a", || None::<u32>, &mut e) else {
            panic!()
        };
        assert!(!f.invalidate(&"k", || false));
        assert!(f.finish(&"k", l, &Outcome::Value(1), |_| panic!("stored"), &mut e));
        let Ok(Joined::Lead(l)) = f.join(&"j", Who(1, None), "a", || None::<u32>, &mut e) else {
            panic!()
        };
        f.invalidate_all(|| ());
        assert!(f.finish(&"j", l, &Outcome::Value(1), |_| panic!("stored"), &mut e));
    }

    #[test]
    fn after_fork_the_parents_flights_are_gone_and_own_followers_start_over() {
        let f = F::new();
        let mut e = fx();
        // Thread 1 (a parent thread) leads "k"; thread 2 (the forking one) leads "m".
        let Ok(Joined::Lead(lk)) = f.join(&"k", Who(1, None), "-", || None::<u32>, &mut e) else {
            panic!()
        };
        let Ok(Joined::Lead(lm)) = f.join(&"m", Who(2, Some(1)), "-", || None::<u32>, &mut e)
        else {
            panic!()
        };
        let Ok(Joined::Wait(blocked)) = f.join(&"k", Who(3, None), "t3", || None::<u32>, &mut e)
        else {
            panic!()
        };
        let Ok(Joined::Wait(task)) = f.join(&"k", Who(2, Some(5)), "t2", || None::<u32>, &mut e)
        else {
            panic!()
        };
        let g = f.generation();
        let mut e = fx();
        f.after_fork_child(|c| c.0 == 2, |n| *n == "t2", &mut e);
        assert_eq!(f.generation(), g + 1);
        assert_eq!(e.take_wake(), vec!["t2"]);
        assert_eq!(e.dropped().collect::<Vec<_>>(), vec![&"t3"]);
        assert_eq!(e.callers().collect::<Vec<_>>(), vec![&Who(1, None)]);
        assert_eq!(task.try_take(), Some(Outcome::Retry));
        assert!(
            blocked.is_waiting(),
            "a parent thread's ticket is not touched"
        );
        assert_eq!(f.in_flight(), 1, "the forking thread's own flight goes on");
        // The retried task now leads "k"; the parent's lease ends nothing.
        let mut e = fx();
        let Ok(Joined::Lead(l2)) = f.join(&"k", Who(2, Some(5)), "t2", || None::<u32>, &mut e)
        else {
            panic!()
        };
        assert_eq!(l2.generation, g + 1);
        assert!(!f.finish(&"k", lk, &Outcome::Value(0), |_| panic!(), &mut e));
        assert!(f.finish(&"k", l2, &Outcome::Value(1), |_| {}, &mut e));
        assert!(f.finish(&"m", lm, &Outcome::Value(2), |_| {}, &mut e));
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_flight_of_an_older_generation_is_absent_to_join() {
        let f = F::new();
        let mut e = fx();
        let Ok(Joined::Lead(_)) = f.join(&"k", Who(1, None), "-", || None::<u32>, &mut e) else {
            panic!()
        };
        // As if the hook had not reached this flight yet.
        f.generation.fetch_add(1, Ordering::AcqRel);
        let mut e = fx();
        assert!(matches!(
            f.join(&"k", Who(2, None), "-", || None::<u32>, &mut e),
            Ok(Joined::Lead(_))
        ));
        assert_eq!(e.callers().collect::<Vec<_>>(), vec![&Who(1, None)]);
    }
}
