//! One cleanup thread for every cache and pool in the process.
//!
//! Owners register a [`Reap`] task with an interval and keep the returned [`Registration`];
//! dropping it unregisters the task. The thread starts with the first registration and exits
//! when the last one is gone, at interpreter exit ([`shutdown`]), and is restarted in a forked
//! child ([`after_fork_child`]). Tasks run with no registry lock held.
//!
//! Its locks are `std::sync`'s (a futex each), not `parking_lot`'s: the fork hook holds them
//! across `fork()`, and a `parking_lot` lock that other threads wait for is released through
//! `parking_lot`'s process-wide table of parked threads, whose bucket lock a parent thread
//! may hold at the instant of the fork: the child then hung in `after_fork_child` (5 forks in
//! 600 with six threads using a pool and a cache). A futex has no such table.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::time::{Duration, Instant};

/// A lock whose holder panicked is still the registry (every change to it is complete).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `cv.wait` until `deadline` (or a notification); returns the guard and whether it timed out.
fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Instant,
) -> (MutexGuard<'a, T>, bool) {
    let left = deadline.saturating_duration_since(Instant::now());
    match cv.wait_timeout(guard, left) {
        Ok((g, r)) => (g, r.timed_out()),
        Err(e) => {
            let (g, r) = e.into_inner();
            (g, r.timed_out())
        }
    }
}

/// Periodic maintenance (expiry sweeps, idle-agent recycling).
pub trait Reap: Send + Sync + 'static {
    /// Do one round of maintenance. Called from the cleanup thread, not attached to Python;
    /// an implementation that must touch Python objects uses `Python::try_attach`.
    fn reap(&self);
}

struct Entry {
    id: u64,
    task: Weak<dyn Reap>,
    interval: Duration,
    next: Instant,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    next_id: u64,
    /// A thread is alive and serving `entries`.
    running: bool,
    /// Set at interpreter exit: no thread is started again.
    shutdown: bool,
}

struct Reaper {
    state: Mutex<State>,
    cv: Condvar,
    /// Held while a task runs, so a fork never happens in the middle of one.
    reaping: Mutex<()>,
}

fn reaper() -> &'static Reaper {
    static R: std::sync::OnceLock<Reaper> = std::sync::OnceLock::new();
    R.get_or_init(|| Reaper {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        reaping: Mutex::new(()),
    })
}

/// Keeps a task registered; dropping it unregisters the task.
#[derive(Debug)]
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.id;
        with_registry(move |st| {
            st.entries.retain(|e| e.id != id);
            reaper().cv.notify_all();
        });
    }
}

/// Runs a blocking wait so that it cannot deadlock against the interpreter: `lifecycle`
/// installs one that releases the GIL around it when the caller holds it.
pub type BlockingHook = fn(&mut (dyn FnMut() + Send));

static BLOCKING: OnceLock<BlockingHook> = OnceLock::new();

/// Install the hook [`register`], a [`Registration`]'s drop and the queries wait through when
/// the registry lock is taken (once; later calls are ignored).
pub fn set_blocking_hook(hook: BlockingHook) {
    let _ = BLOCKING.set(hook);
}

/// How long [`with_registry`] waits for the lock before going through the blocking hook.
const BRIEF: Duration = Duration::from_micros(200);

/// `f` under the registry lock. The fork hook holds that lock across `fork()` and around the
/// other at-fork handlers, which run Python code and let other threads take the GIL: a thread
/// that waited for the lock holding the GIL would then keep the forking thread from ever
/// getting it back (it did, within seconds, with threads creating and closing caches). So a
/// lock free within [`BRIEF`] is taken in place; otherwise it is waited for through the
/// blocking hook (detached). Nobody holding the lock waits for the GIL.
fn with_registry<R: Send + Default>(f: impl FnOnce(&mut State) -> R + Send) -> R {
    let r = reaper();
    // Everyone but a fork holds the lock for microseconds: wait about that long in place, so the
    // hook (and its release of the GIL, which a daemon thread at exit must avoid) only runs
    // while a fork is in progress.
    let start = Instant::now();
    loop {
        match r.state.try_lock() {
            Ok(mut st) => return f(&mut st),
            Err(TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) if start.elapsed() < BRIEF => std::hint::spin_loop(),
            Err(TryLockError::WouldBlock) => break,
        }
    }
    let Some(hook) = BLOCKING.get() else {
        return f(&mut lock(&r.state));
    };
    let mut f = Some(f);
    let mut out = None;
    let mut run = || {
        if let Some(f) = f.take() {
            out = Some(f(&mut lock(&r.state)));
        }
    };
    hook(&mut run);
    run(); // A no-op when the hook ran it, as it must.
    out.unwrap_or_default()
}

/// Run `task.reap()` every `interval` until the returned registration is dropped or the task
/// itself is.
pub fn register<T: Reap>(task: &Arc<T>, interval: Duration) -> Registration {
    let weak: Weak<dyn Reap> = Arc::downgrade(task) as Weak<dyn Reap>;
    let id = with_registry(move |st| {
        st.next_id += 1;
        let id = st.next_id;
        st.entries.push(Entry {
            id,
            task: weak,
            interval,
            next: Instant::now() + interval,
        });
        ensure_thread(st);
        reaper().cv.notify_all();
        id
    });
    Registration { id }
}

thread_local! {
    static ON_CLEANUP_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller is the cleanup thread (inside a task's `reap`).
pub fn on_cleanup_thread() -> bool {
    ON_CLEANUP_THREAD.with(|c| c.get())
}

/// The number of registered tasks (for tests and leak checks).
pub fn registered() -> usize {
    with_registry(|st| st.entries.len())
}

/// Whether the cleanup thread is alive (for tests and leak checks).
pub fn is_running() -> bool {
    with_registry(|st| st.running)
}

fn ensure_thread(st: &mut State) {
    if st.running || st.shutdown || st.entries.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("agentperf-cleanup".into())
        .spawn(run);
    // If the OS refuses a thread, expiry stays lazy (on read) and nothing else breaks.
    st.running = spawned.is_ok();
}

fn run() {
    ON_CLEANUP_THREAD.with(|c| c.set(true));
    let r = reaper();
    let mut st = lock(&r.state);
    loop {
        st.entries.retain(|e| e.task.strong_count() > 0);
        if st.shutdown || st.entries.is_empty() {
            st.running = false;
            r.cv.notify_all();
            return;
        }
        let now = Instant::now();
        let mut due: Vec<Weak<dyn Reap>> = Vec::new();
        let mut wake = now + Duration::from_secs(3600);
        for e in st.entries.iter_mut() {
            if e.next <= now {
                due.push(e.task.clone());
                e.next = now + e.interval;
            }
            wake = wake.min(e.next);
        }
        if due.is_empty() {
            st = wait_until(&r.cv, st, wake).0;
            continue;
        }
        drop(st);
        for task in due {
            if let Some(task) = task.upgrade() {
                let _busy = lock(&r.reaping);
                // A panicking task must not take the thread (and every other task) down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.reap()));
            }
        }
        st = lock(&r.state);
    }
}

/// Stop the thread for good (interpreter exit). Waits up to `wait` for it to finish.
pub fn shutdown(wait: Duration) {
    let r = reaper();
    let mut st = lock(&r.state);
    st.shutdown = true;
    r.cv.notify_all();
    let deadline = Instant::now() + wait;
    while st.running {
        let (g, timed_out) = wait_until(&r.cv, st, deadline);
        st = g;
        if timed_out {
            break;
        }
    }
}

/// Set by [`before_fork`] when user code run by a task forks (an agent's `close()` calling
/// `os.fork()` on the cleanup thread): that thread holds `reaping` already.
static FORK_FROM_TASK: AtomicBool = AtomicBool::new(false);

/// Before `fork()`: wait for a running task to finish and hold the locks, so the child never
/// inherits them locked. Call without holding the GIL (a task may need it). On the cleanup
/// thread itself (a task's user code forks) there is no task to wait for but the caller's.
pub fn before_fork() {
    let r = reaper();
    let reaping = if on_cleanup_thread() {
        FORK_FROM_TASK.store(true, Ordering::Relaxed);
        None
    } else {
        Some(lock(&r.reaping))
    };
    let state = lock(&r.state);
    FORK_GUARDS.with(|g| *g.borrow_mut() = Some((state, reaping)));
}

type ForkGuards = (MutexGuard<'static, State>, Option<MutexGuard<'static, ()>>);

thread_local! {
    /// What [`before_fork`] holds across `fork()` (the same thread runs the after-hooks).
    static FORK_GUARDS: RefCell<Option<ForkGuards>> = const { RefCell::new(None) };
}

/// Release what [`before_fork`] took (a plain unlock: a futex wake that finds no waiter in
/// the child).
fn release_fork_guards() {
    drop(FORK_GUARDS.with(|g| g.borrow_mut().take()));
}

/// After `fork()`, in the parent: release what [`before_fork`] took.
pub fn after_fork_parent() {
    FORK_FROM_TASK.store(false, Ordering::Relaxed);
    release_fork_guards();
}

/// After `fork()`, in the child: the thread did not survive the fork; start a new one. Forked
/// from a task, this thread is the cleanup thread: it finishes the round and goes on serving.
pub fn after_fork_child() {
    let r = reaper();
    let from_task = FORK_FROM_TASK.swap(false, Ordering::Relaxed);
    release_fork_guards();
    if !from_task {
        let mut st = lock(&r.state);
        st.running = false;
        ensure_thread(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter(AtomicUsize);
    impl Reap for Counter {
        fn reap(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_for(cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    static HOOKED: AtomicUsize = AtomicUsize::new(0);

    fn counting_hook(f: &mut (dyn FnMut() + Send)) {
        HOOKED.fetch_add(1, Ordering::SeqCst);
        f();
    }

    #[test]
    fn a_contended_registry_lock_is_waited_for_through_the_hook() {
        set_blocking_hook(counting_hook);
        let held = lock(&reaper().state);
        let before = HOOKED.load(Ordering::SeqCst);
        let t = std::thread::spawn(registered);
        assert!(wait_for(|| HOOKED.load(Ordering::SeqCst) > before));
        drop(held);
        assert!(t.join().is_ok());
    }

    // One test so the process-wide thread is observed without interference.
    #[test]
    fn one_thread_serves_all_and_stops_with_the_last() {
        let a = Arc::new(Counter(AtomicUsize::new(0)));
        let b = Arc::new(Counter(AtomicUsize::new(0)));
        let ra = register(&a, Duration::from_millis(5));
        let rb = register(&b, Duration::from_millis(5));
        assert!(is_running());
        assert!(wait_for(
            || a.0.load(Ordering::SeqCst) >= 3 && b.0.load(Ordering::SeqCst) >= 3
        ));
        drop(ra);
        let before = a.0.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            a.0.load(Ordering::SeqCst) <= before + 1,
            "unregistered task still runs"
        );
        drop(rb);
        assert!(
            wait_for(|| !is_running()),
            "thread did not stop with the last registration"
        );
        // A task whose owner is gone is dropped from the registry too.
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        let rc = register(&c, Duration::from_millis(1));
        assert!(is_running());
        drop(c);
        assert!(
            wait_for(|| !is_running()),
            "thread kept running for a dead task"
        );
        drop(rc);
        assert_eq!(registered(), 0);
    }
}
