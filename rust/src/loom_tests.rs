//! Model checking of the semaphore, pool and single-flight cores with loom (`make loom`, i.e.
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`).
//!
//! Under `cfg(loom)` the cores' locks, condvars, atomics, fences and the pool's idle channel
//! are loom's (see [`crate::sync`]), so loom explores every interleaving of the threads below
//! (up to a preemption bound, 4 by default; `LOOM_MAX_PREEMPTIONS` overrides it). Time is not
//! modelled: a timed wait gives up at an arbitrary point of the schedule, which is exactly the
//! race a real timeout has with a grant. A lost permit or object shows up as a deadlock (a
//! thread parked forever), which loom reports as a failure; the checks after the joins catch
//! duplicates and leaks. Each test prints how many interleavings it explored.

use crate::cache::flight::{Caller, Effects as FlightFx, Joined, Outcome, SingleFlight};
use crate::clock::ManualClock;
use crate::pool::core::{Acquire as PoolAcquire, Effects, Handoff, Limits, PoolCore};
use crate::semaphore::core::{Acquire, Semaphore};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use std::time::{Duration, Instant};

/// Run `f` under loom (preemption bound 4 unless `LOOM_MAX_PREEMPTIONS` is set) and print
/// the number of interleavings explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    let bound = b.preemption_bound;
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    println!(
        "loom {name}: {} interleavings (preemption bound {bound:?})",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A deadline loom never reaches by the clock: the wait gives up at a point loom chooses.
fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(3600))
}

// ---------------------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------------------

type Sem = Semaphore<usize>;

/// Acquire (blocking) and hold: checks mutual exclusion with a loom counter, then releases.
fn sem_critical(s: &Sem, inside: &AtomicUsize, limit: usize) {
    let n = inside.fetch_add(1, SeqCst) + 1;
    assert!(n <= limit, "{n} holders of {limit} permits");
    inside.fetch_sub(1, SeqCst);
    s.release().expect("a held permit releases");
}

fn sem_settled(s: &Sem) {
    assert_eq!(
        s.available(),
        s.permits(),
        "a permit was lost or duplicated"
    );
    assert_eq!(s.waiting(), 0, "a waiter was left queued");
}

#[test]
fn loom_semaphore_blocking_acquire_release() {
    // Three threads, one permit, every one blocks until served: no permit lost (else a
    // thread parks forever), none duplicated (two holders at once).
    model("semaphore: 3 blocking acquirers, 1 permit", || {
        let s = Arc::new(Sem::new(1).unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let (s, inside) = (s.clone(), inside.clone());
                thread::spawn(move || {
                    assert!(s.acquire_until(None, || i));
                    sem_critical(&s, &inside, 1);
                })
            })
            .collect();
        assert!(s.acquire_until(None, || 9));
        sem_critical(&s, &inside, 1);
        for h in hs {
            h.join().unwrap();
        }
        sem_settled(&s);
    });
}

#[test]
fn loom_semaphore_timeout_hands_a_granted_permit_on() {
    // The holder releases while one waiter times out (at any point, possibly just after the
    // permit was handed to it) and another waits without a deadline: the permit must reach
    // the patient waiter, or loom sees it parked forever.
    model("semaphore: release vs timeout vs blocking waiter", || {
        let s = Arc::new(Sem::new(1).unwrap());
        assert!(s.try_acquire());
        let inside = Arc::new(AtomicUsize::new(0));
        let timed = {
            let (s, inside) = (s.clone(), inside.clone());
            thread::spawn(move || {
                if s.acquire_until(soon(), || 1) {
                    sem_critical(&s, &inside, 1);
                }
            })
        };
        let patient = {
            let (s, inside) = (s.clone(), inside.clone());
            thread::spawn(move || {
                assert!(s.acquire_until(None, || 2));
                sem_critical(&s, &inside, 1);
            })
        };
        s.release().unwrap();
        timed.join().unwrap();
        patient.join().unwrap();
        sem_settled(&s);
    });
}

#[test]
fn loom_semaphore_cancel_hands_a_granted_permit_on() {
    // An async-style waiter (queued ticket, then cancelled: `withdraw`) races with the
    // release; a permit granted to it in that instant goes to the next waiter.
    model("semaphore: release vs cancel vs blocking waiter", || {
        let s = Arc::new(Sem::new(1).unwrap());
        assert!(s.try_acquire());
        let inside = Arc::new(AtomicUsize::new(0));
        let cancelled = {
            let (s, inside) = (s.clone(), inside.clone());
            thread::spawn(move || match s.acquire_or_enqueue(|| 1) {
                Acquire::Acquired => sem_critical(&s, &inside, 1),
                Acquire::Queued(t) => {
                    let (kept, _wake) = s.withdraw(&t);
                    assert!(!kept, "withdraw never keeps");
                    assert_eq!(t.try_take(), None, "a withdrawn ticket yields nothing");
                }
            })
        };
        let patient = {
            let (s, inside) = (s.clone(), inside.clone());
            thread::spawn(move || {
                assert!(s.acquire_until(None, || 2));
                sem_critical(&s, &inside, 1);
            })
        };
        s.release().unwrap();
        cancelled.join().unwrap();
        patient.join().unwrap();
        sem_settled(&s);
    });
}

/// The async notifier's shape (`aio::Notifier`, without Python): the waiter's handle owns a
/// slot with its future (here a number), the queue holds a `Weak` to it.
type Slot = crate::sync::Mutex<Option<u32>>;
type WeakSlot = Option<std::sync::Weak<Slot>>;

/// Wake through a queue's notifier: upgrade, take the future out (the lock released before
/// anything is done with it), count it.
fn notifier_wake(n: Option<WeakSlot>, woken: &AtomicUsize) {
    if let Some(Some(w)) = n {
        if let Some(slot) = w.upgrade() {
            let fut = slot.lock().take();
            if fut.is_some() {
                woken.fetch_add(1, SeqCst);
            }
        }
    }
}

#[test]
fn loom_notifier_grant_races_with_cancel() {
    // An asyncio waiter is cancelled (its handle disarms the notifier, then withdraws the
    // ticket) while a release grants it and wakes it through the queue's weak notifier, and
    // a blocked thread waits behind it. The future is resolved or disarmed exactly once, never
    // both; a permit granted in the same instant as the cancel goes to the blocked thread.
    model("notifier: grant vs cancel vs blocking waiter", || {
        let s = Arc::new(Semaphore::<WeakSlot>::new(1).unwrap());
        assert!(s.try_acquire());
        let woken = Arc::new(AtomicUsize::new(0));
        let disarmed = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let cancelled = {
            let (s, woken, disarmed) = (s.clone(), woken.clone(), disarmed.clone());
            thread::spawn(move || {
                let slot: std::sync::Arc<Slot> = std::sync::Arc::new(Slot::new(Some(7)));
                match s.acquire_or_enqueue(|| Some(std::sync::Arc::downgrade(&slot))) {
                    Acquire::Acquired => {
                        let _ = slot.lock().take();
                        s.release().unwrap();
                    }
                    Acquire::Queued(t) => {
                        if slot.lock().take().is_some() {
                            disarmed.fetch_add(1, SeqCst);
                        }
                        let (kept, next) = s.finish(&t, false);
                        assert!(!kept);
                        notifier_wake(next, &woken);
                    }
                }
                drop(slot);
            })
        };
        let patient = {
            let (s, inside, woken) = (s.clone(), inside.clone(), woken.clone());
            thread::spawn(move || {
                assert!(s.acquire_until(None, || None));
                let n = inside.fetch_add(1, SeqCst) + 1;
                assert!(n <= 1);
                inside.fetch_sub(1, SeqCst);
                // Queued ahead of the async waiter, it may hand its permit to it.
                notifier_wake(s.release().unwrap(), &woken);
            })
        };
        let next = s.release().unwrap();
        notifier_wake(next, &woken);
        cancelled.join().unwrap();
        patient.join().unwrap();
        assert!(
            woken.load(SeqCst) + disarmed.load(SeqCst) <= 1,
            "a future resolved and disarmed, or resolved twice"
        );
        assert_eq!(s.available(), 1, "a permit leaked");
        assert_eq!(s.waiting(), 0);
    });
}

#[test]
fn loom_semaphore_fifo_among_queued_waiters() {
    // Waiters are served in the order they queued (the order the notifier factory ran,
    // under the semaphore's lock); grants are serialised by the single permit.
    model("semaphore: FIFO hand-off, 2 queued waiters", || {
        let s = Arc::new(Sem::new(1).unwrap());
        assert!(s.try_acquire());
        let queued = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let served = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let hs: Vec<_> = (1..=2usize)
            .map(|id| {
                let (s, queued, served) = (s.clone(), queued.clone(), served.clone());
                thread::spawn(move || {
                    let r = s.acquire_or_enqueue(|| {
                        queued.lock().unwrap().push(id);
                        id
                    });
                    if let Acquire::Queued(t) = r {
                        assert_eq!(t.wait_until(None), Some(()));
                        served.lock().unwrap().push(id);
                    }
                    s.release().unwrap();
                })
            })
            .collect();
        s.release().unwrap();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*served.lock().unwrap(), *queued.lock().unwrap());
        sem_settled(&s);
    });
}

// ---------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------

type Core = PoolCore<u32, usize, std::sync::Arc<ManualClock>>;
type Fx = Effects<u32, usize>;

fn pool(initial: usize, max: usize) -> Core {
    let limits = Limits {
        initial_size: initial,
        max_size: max,
        idle_timeout: None,
        max_lifetime: None,
    };
    let c = PoolCore::new(limits, std::sync::Arc::new(ManualClock::new(1)));
    let mut fx = Fx::new();
    let mut n = 100;
    while c.reserve_initial() {
        n += 1;
        let e = c.created(n).unwrap();
        c.add_idle(e, &mut fx);
    }
    assert!(fx.is_empty());
    c
}

/// How a pool waiter behaves once parked.
#[derive(Clone, Copy)]
enum Wait {
    /// Blocks until served.
    Forever,
    /// Gives up at a point loom chooses (a timeout).
    Timeout,
    /// Registers, then is cancelled without waiting (an asyncio task cancelled at once).
    Cancel,
}

/// One acquire/hold/release of a pool object, the way the binding does it. Returns whether
/// an object was held, and how many objects this thread was told to destroy. `created`
/// numbers new objects.
fn pool_use(
    c: &Core,
    inside: &AtomicUsize,
    created: &AtomicUsize,
    how: Wait,
    id: usize,
) -> (bool, usize) {
    let mut fx = Fx::new();
    let new = |fx: &mut Fx| -> Option<crate::pool::core::Entry<u32>> {
        let item = 200 + created.fetch_add(1, SeqCst) as u32;
        match c.created(item) {
            Ok(e) => Some(e),
            Err(_) => {
                fx.destroy.push(item);
                None
            }
        }
    };
    let got = match c.try_acquire(&mut fx) {
        Err(_) => None,
        Ok(PoolAcquire::Ready(e)) => Some(e),
        Ok(PoolAcquire::Create) => new(&mut fx),
        Ok(PoolAcquire::Full) => match c.register(id, &mut fx) {
            Err(_) => None,
            Ok(t) => {
                let h = match how {
                    Wait::Forever => t.wait_until(None),
                    Wait::Timeout => t.wait_until(soon()),
                    Wait::Cancel => None,
                };
                match h {
                    None => {
                        c.withdraw(&t, &mut fx);
                        None
                    }
                    Some(h) => match c.take(h, &mut fx) {
                        Handoff::Agent(e) => Some(e),
                        Handoff::Create => new(&mut fx),
                        Handoff::Closed | Handoff::Retry => None,
                    },
                }
            }
        },
    };
    let held = got.is_some();
    if let Some(e) = got {
        c.acquired();
        let n = inside.fetch_add(1, SeqCst) + 1;
        assert!(
            n <= c.limits().max_size,
            "{n} objects out of {}",
            c.limits().max_size
        );
        inside.fetch_sub(1, SeqCst);
        c.release(e, false, &mut fx);
    }
    (held, fx.destroy.len())
}

fn pool_settled(c: &Core) {
    let s = c.stats();
    assert_eq!(s.waiting, 0, "a waiter was left counted: {s:?}");
    assert_eq!(s.acquired, s.released, "{s:?}");
    assert_eq!(s.created - s.destroyed, s.size as u64, "{s:?}");
    assert!(s.size <= s.max_size, "{s:?}");
    assert_eq!(
        s.idle, s.size,
        "a live object is neither idle nor out: {s:?}"
    );
}

fn pool_threads(c: &Arc<Core>, hows: &[Wait]) -> Vec<thread::JoinHandle<(bool, usize)>> {
    let inside = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    hows.iter()
        .enumerate()
        .map(|(id, &how)| {
            let (c, inside, created) = (c.clone(), inside.clone(), created.clone());
            thread::spawn(move || pool_use(&c, &inside, &created, how, id))
        })
        .collect()
}

#[test]
fn loom_pool_release_hands_off_to_a_blocked_waiter() {
    // max_size 1, one object: two threads contend, each blocking until served. The object
    // goes round without loss (else a thread parks forever) or duplication.
    model("pool: 2 blocking users, 1 object", || {
        let c = Arc::new(pool(1, 1));
        for h in pool_threads(&c, &[Wait::Forever, Wait::Forever]) {
            assert!(h.join().unwrap().0);
        }
        pool_settled(&c);
        assert_eq!(c.stats().size, 1);
    });
}

#[test]
fn loom_pool_create_slot_hand_off() {
    // max_size 1, empty pool: one thread gets the slot to create, the other parks and is
    // handed the object, or the freed slot; both are served.
    model("pool: 2 blocking users, create on demand", || {
        let c = Arc::new(pool(0, 1));
        for h in pool_threads(&c, &[Wait::Forever, Wait::Forever]) {
            assert!(h.join().unwrap().0);
        }
        pool_settled(&c);
        assert!(c.stats().created >= 1);
    });
}

#[test]
fn loom_pool_timeout_and_cancel_hand_the_object_on() {
    // The main thread holds the only object and releases it while one waiter times out and
    // another is cancelled: whatever was granted to them meanwhile goes back to the idle set.
    model("pool: release vs timeout vs cancel", || {
        let c = Arc::new(pool(1, 1));
        let mut fx = Fx::new();
        let Ok(PoolAcquire::Ready(e)) = c.try_acquire(&mut fx) else {
            panic!("the initial object is idle")
        };
        c.acquired();
        let hs = pool_threads(&c, &[Wait::Timeout, Wait::Cancel]);
        c.release(e, false, &mut fx);
        for h in hs {
            h.join().unwrap();
        }
        pool_settled(&c);
        assert_eq!(c.stats().size, 1, "the object survived");
        assert_eq!(c.stats().idle, 1);
    });
}

#[test]
fn loom_pool_timeout_hands_on_to_a_blocked_waiter() {
    // As above, but the second waiter blocks: it must be served even when the object was
    // first granted to the waiter that timed out.
    model("pool: release vs timeout vs blocking waiter", || {
        let c = Arc::new(pool(1, 1));
        let mut fx = Fx::new();
        let Ok(PoolAcquire::Ready(e)) = c.try_acquire(&mut fx) else {
            panic!("the initial object is idle")
        };
        c.acquired();
        let hs = pool_threads(&c, &[Wait::Timeout, Wait::Forever]);
        c.release(e, false, &mut fx);
        let served: Vec<bool> = hs.into_iter().map(|h| h.join().unwrap().0).collect();
        assert!(served[1], "the blocking waiter was served");
        pool_settled(&c);
        assert_eq!(c.stats().size, 1);
    });
}

#[test]
fn loom_pool_close_races_with_release_and_a_waiter() {
    // close() runs while the holder releases and a waiter blocks: the waiter is woken
    // (Closed, or served first), and every object is destroyed exactly once.
    model("pool: close vs release vs blocking waiter", || {
        let c = Arc::new(pool(1, 1));
        let mut fx = Fx::new();
        let Ok(PoolAcquire::Ready(e)) = c.try_acquire(&mut fx) else {
            panic!("the initial object is idle")
        };
        c.acquired();
        let hs = pool_threads(&c, &[Wait::Forever]);
        let closer = {
            let c = c.clone();
            thread::spawn(move || {
                let mut fx = Fx::new();
                assert!(c.close(&mut fx));
                fx.destroy.len()
            })
        };
        c.release(e, false, &mut fx);
        let mut destroyed = fx.destroy.len();
        for h in hs {
            destroyed += h.join().unwrap().1;
        }
        destroyed += closer.join().unwrap();
        let s = c.stats();
        assert_eq!((s.size, s.idle, s.waiting), (0, 0, 0), "{s:?}");
        assert_eq!(s.created, s.destroyed, "{s:?}");
        assert_eq!(
            destroyed as u64, s.created,
            "each object destroyed exactly once"
        );
    });
}

#[test]
fn loom_pool_failed_creation_hands_the_slot_on() {
    // The main thread reserved the only slot and its factory fails while another thread
    // acquires: the freed slot must reach that thread (as an idle-free `Create`), whether it
    // parked before or after the failure.
    model("pool: failed creation vs blocking waiter", || {
        let c = Arc::new(pool(0, 1));
        let mut fx = Fx::new();
        assert!(matches!(c.try_acquire(&mut fx), Ok(PoolAcquire::Create)));
        let hs = pool_threads(&c, &[Wait::Forever]);
        c.create_failed(&mut fx);
        for h in hs {
            assert!(h.join().unwrap().0, "the waiter was served");
        }
        pool_settled(&c);
        assert_eq!(c.stats().created, 1);
    });
}

// ---------------------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------------------

// The limiter's own state is under loom's locks and atomics; the `Arc`s that share it are
// std's (loom needs no view of reference counts here).
use std::sync::Arc as StdArc;

type Lim = crate::limiter::core::Limiter<StdArc<crate::limiter::core::ManualClock>, usize>;

fn limiter(burst: f64) -> (StdArc<Lim>, StdArc<crate::limiter::core::ManualClock>) {
    use crate::limiter::core::{Limiter, ManualClock, Params};
    let clock = StdArc::new(ManualClock::new(0.0));
    let p = Params::new(1.0, 1.0, Some(burst)).expect("valid parameters");
    (StdArc::new(Limiter::new(p, clock.clone())), clock)
}

fn lim_queued(l: &Lim, n: usize) -> StdArc<crate::limiter::core::Ticket> {
    match l.acquire_or_enqueue(1.0, || n).0 {
        crate::limiter::core::Acquire::Queued(t) => t,
        crate::limiter::core::Acquire::Granted => panic!("the limiter is spent: must queue"),
    }
}

#[test]
fn loom_limiter_cancel_races_with_a_grant_and_a_newcomer() {
    // One unit a second, burst 1, spent at t=0. A queued waiter is cancelled while the clock
    // reaches its grant instant and a newcomer acquires and polls: whether the cancelled one
    // was granted first (its grant is then given back) or not, the newcomer is served at
    // t=1 and exactly two units are granted in all.
    model("limiter: cancel vs clock vs newcomer", || {
        use crate::limiter::core::{Acquire, Poll};
        let (l, clock) = limiter(1.0);
        assert!(l.try_acquire(1.0).0);
        let a = lim_queued(&l, 1);
        let canceller = {
            let l = l.clone();
            thread::spawn(move || {
                let (kept, _) = l.withdraw(&a, false);
                assert!(!kept, "a cancelled waiter keeps nothing");
            })
        };
        let newcomer = {
            let l = l.clone();
            thread::spawn(move || match l.acquire_or_enqueue(1.0, || 2).0 {
                Acquire::Granted => None,
                Acquire::Queued(t) => match l.poll(&t).0 {
                    Poll::Granted => None,
                    Poll::Wait(_) => Some(t),
                    Poll::Over => panic!("an open ticket is not over"),
                },
            })
        };
        clock.advance(1.0);
        canceller.join().unwrap();
        if let Some(t) = newcomer.join().unwrap() {
            assert_eq!(l.poll(&t).0, Poll::Granted, "the newcomer is due at t=1");
        }
        let s = l.stats();
        assert_eq!((s.granted, s.acquired, s.waiting), (2.0, 2, 0), "{s:?}");
        assert!(!l.try_acquire(1.0).0, "nothing more than the rate");
    });
}

#[test]
fn loom_limiter_timeout_and_cancel_race_with_grants() {
    // Two queued waiters give up (one times out and keeps a grant it got in that instant,
    // one is cancelled) while the clock reaches both grant instants and a newcomer tries:
    // every unit granted is held by exactly one party, and the window bound holds.
    model("limiter: timeout vs cancel vs try_acquire", || {
        let (l, clock) = limiter(1.0);
        assert!(l.try_acquire(1.0).0);
        let timed = lim_queued(&l, 1);
        let cancelled = lim_queued(&l, 2);
        let t1 = {
            let l = l.clone();
            thread::spawn(move || l.withdraw(&timed, true).0)
        };
        let t2 = {
            let l = l.clone();
            thread::spawn(move || {
                assert!(!l.withdraw(&cancelled, false).0);
            })
        };
        clock.advance(1.0);
        let tried = l.try_acquire(1.0).0;
        let kept = t1.join().unwrap();
        t2.join().unwrap();
        let s = l.stats();
        let held = 1 + u64::from(kept) + u64::from(tried);
        assert_eq!(s.acquired, held, "{s:?} kept={kept} tried={tried}");
        assert!(
            held <= 2,
            "burst 1 at t=1 after a unit at t=0: {held} units"
        );
        assert_eq!(s.waiting, 0);
    });
}

// ---------------------------------------------------------------------------------------
// Single-flight (the cache's)
// ---------------------------------------------------------------------------------------

/// A caller: loom threads share one OS thread, so callers are told apart by number.
#[derive(Debug)]
struct Who(usize);

impl Caller for Who {
    fn waits_for_itself(&self, leader: &Self) -> bool {
        self.0 == leader.0
    }
}

type Sf = SingleFlight<u8, u32, u32, usize, Who, std::collections::hash_map::RandomState>;
/// The store under the flights: one key's value.
type Store = loom::sync::Mutex<Option<u32>>;

/// What a leader does with its call.
#[derive(Clone, Copy)]
enum Lead {
    /// Returns `10 + n` (the n-th agent call).
    Succeed,
    /// The first agent call gives up (cancelled); later ones succeed.
    AbandonFirst,
}

/// One `execute` of key 0 the way the binding runs it: join, then lead (call, store, finish)
/// or follow (wait, a Retry joins again). `calls` counts agent calls. Returns the value,
/// `Some(0)` if this caller's own call was the abandoned one, None if it gave up waiting.
fn flight_call(
    sf: &Sf,
    store: &Store,
    calls: &AtomicUsize,
    id: usize,
    how: Wait,
    lead: Lead,
) -> Option<u32> {
    loop {
        let mut fx = FlightFx::new();
        let joined = sf.join(&0, Who(id), id, || *store.lock().unwrap(), &mut fx);
        match joined.expect("no caller waits for itself here") {
            Joined::Hit(v) => return Some(v),
            Joined::Lead(lease) => {
                let n = calls.fetch_add(1, SeqCst);
                let outcome = match lead {
                    Lead::AbandonFirst if n == 0 => Outcome::Retry,
                    _ => Outcome::Value(10 + n as u32),
                };
                let mine = sf.finish(
                    &0,
                    lease,
                    &outcome,
                    |v| *store.lock().unwrap() = Some(*v),
                    &mut fx,
                );
                assert!(mine, "nobody else ends a live flight");
                return match outcome {
                    Outcome::Value(v) => Some(v),
                    _ => Some(0),
                };
            }
            Joined::Wait(t) => {
                let got = match how {
                    Wait::Forever => t.wait_until(None),
                    Wait::Timeout => t.wait_until(soon()),
                    Wait::Cancel => t.withdraw(),
                };
                match got {
                    Some(Outcome::Value(v)) => return Some(v),
                    Some(Outcome::Retry) => continue,
                    Some(Outcome::Error(e)) => panic!("no call fails here: {e}"),
                    None => return None,
                }
            }
        }
    }
}

fn flight_threads(
    sf: &Arc<Sf>,
    store: &Arc<Store>,
    calls: &Arc<AtomicUsize>,
    hows: &[Wait],
    lead: Lead,
) -> Vec<thread::JoinHandle<Option<u32>>> {
    hows.iter()
        .enumerate()
        .map(|(id, &how)| {
            let (sf, store, calls) = (sf.clone(), store.clone(), calls.clone());
            thread::spawn(move || flight_call(&sf, &store, &calls, id, how, lead))
        })
        .collect()
}

#[test]
fn loom_single_flight_one_call_for_concurrent_misses() {
    // Three callers miss one key at once: the agent runs once, everyone gets that value
    // (from the flight or, joining after it ended, from the store), no flight is left.
    model("single-flight: 3 blocking callers, one call", || {
        let sf = Arc::new(Sf::new());
        let store = Arc::new(Store::new(None));
        let calls = Arc::new(AtomicUsize::new(0));
        let hs = flight_threads(
            &sf,
            &store,
            &calls,
            &[Wait::Forever, Wait::Forever, Wait::Forever],
            Lead::Succeed,
        );
        for h in hs {
            assert_eq!(h.join().unwrap(), Some(10));
        }
        assert_eq!(calls.load(SeqCst), 1, "the agent ran more than once");
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(*store.lock().unwrap(), Some(10));
    });
}

#[test]
fn loom_single_flight_abandoned_call_is_handed_on() {
    // The first agent call is abandoned while a follower blocks and another gives up at a
    // point loom chooses: the blocked one is never left parked (it leads the next call, or
    // follows it), and no flight is left.
    model(
        "single-flight: abandoned leader vs blocking and timed followers",
        || {
            let sf = Arc::new(Sf::new());
            let store = Arc::new(Store::new(None));
            let calls = Arc::new(AtomicUsize::new(0));
            let hs = flight_threads(
                &sf,
                &store,
                &calls,
                &[Wait::Forever, Wait::Timeout],
                Lead::AbandonFirst,
            );
            let got: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            let n = calls.load(SeqCst);
            // The blocking caller ends served, or was the leader that gave up; never empty.
            assert!(matches!(got[0], Some(0) | Some(11)), "{got:?}");
            assert_eq!(
                got.iter().filter(|v| **v == Some(0)).count(),
                1,
                "one abandoned call: {got:?}"
            );
            let served = got.contains(&Some(11));
            assert_eq!(n, 1 + usize::from(served), "{n} calls for {got:?}");
            let want = served.then_some(11);
            assert_eq!(*store.lock().unwrap(), want);
            assert_eq!(sf.in_flight(), 0);
        },
    );
}

#[test]
fn loom_single_flight_invalidate_races_with_the_call() {
    // An invalidation runs while a call for the key is in flight (or before, or after):
    // once it has seen the flight begin, no value computed by that flight stays stored.
    model("single-flight: invalidate vs finish", || {
        let sf = Arc::new(Sf::new());
        let store = Arc::new(Store::new(None));
        let began = Arc::new(AtomicUsize::new(0));
        let caller = {
            let (sf, store, began) = (sf.clone(), store.clone(), began.clone());
            thread::spawn(move || {
                let mut fx = FlightFx::new();
                let j = sf.join(
                    &0,
                    Who(1),
                    1,
                    || {
                        // Runs under the flights lock just before this caller leads.
                        let v = *store.lock().unwrap();
                        if v.is_none() {
                            began.store(1, SeqCst);
                        }
                        v
                    },
                    &mut fx,
                );
                let Ok(Joined::Lead(lease)) = j else {
                    panic!("the only caller leads")
                };
                sf.finish(
                    &0,
                    lease,
                    &Outcome::Value(7),
                    |v| *store.lock().unwrap() = Some(*v),
                    &mut fx,
                )
            })
        };
        let saw = sf.invalidate(&0, || {
            store.lock().unwrap().take();
            began.load(SeqCst) == 1
        });
        assert!(caller.join().unwrap());
        let left = *store.lock().unwrap();
        if saw {
            assert_eq!(
                left, None,
                "a value computed before the invalidation stayed"
            );
        } else {
            assert_eq!(left, Some(7));
        }
        assert_eq!(sf.in_flight(), 0);
    });
}
