//! The synchronisation primitives of the cores, swappable for loom's under `--cfg loom`.
//!
//! Normal builds re-export `parking_lot`, `std::sync::atomic` and `crossbeam_channel` as they
//! are: no wrapper, no cost. Under `cfg(loom)` the same names are thin wrappers over loom's
//! mocks, with the parking_lot calling convention the cores use (`lock()` returns a guard, no
//! `Result`; `Condvar::wait(&mut guard)`), so the model checker sees every lock, wait, notify,
//! atomic access and fence of [`crate::waitq`], [`crate::semaphore::core`] and
//! [`crate::pool::core`]. Two things loom cannot see are modelled:
//!
//! * Time: [`Condvar::wait_until`] under loom never blocks; it reports a timeout at once, so a
//!   timed waiter is a waiter that gives up at an arbitrary point of the interleaving (when it
//!   would otherwise block), racing with any grant.
//! * The pool's lock-free idle channel: under loom, `channel` is a FIFO `VecDeque` behind a loom
//!   mutex with the same `try_send` / `try_recv` / `len` API: a linearizable stand-in for
//!   crossbeam's channel, whose own internals are not checked here.

#[cfg(not(loom))]
pub use crossbeam_channel as channel;
#[cfg(not(loom))]
pub use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::sync::atomic;

#[cfg(loom)]
pub use self::loom_impl::{channel, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub use loom::sync::atomic;

#[cfg(loom)]
mod loom_impl {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    /// A loom mutex with parking_lot's signature.
    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    /// Its guard. The `Option` lets [`Condvar`] move the inner guard through loom's by-value
    /// `wait` (or unlock and relock) behind a `&mut`; it is `Some` whenever user code sees it.
    #[derive(Debug)]
    pub struct MutexGuard<'a, T> {
        m: &'a loom::sync::Mutex<T>,
        g: Option<loom::sync::MutexGuard<'a, T>>,
    }

    fn relock<T>(m: &loom::sync::Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl<T> Mutex<T> {
        /// A new mutex.
        pub fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }

        /// Lock (loom mutexes are never poisoned in a passing model).
        pub fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                m: &self.0,
                g: Some(relock(&self.0)),
            }
        }

        /// Lock if free right now.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|g| MutexGuard {
                m: &self.0,
                g: Some(g),
            })
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.g.as_deref().expect("guard present")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.g.as_deref_mut().expect("guard present")
        }
    }

    /// The result of [`Condvar::wait_until`].
    #[derive(Debug, Clone, Copy)]
    pub struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        /// Whether the wait timed out (always, under loom).
        pub fn timed_out(self) -> bool {
            self.0
        }
    }

    /// A loom condvar with parking_lot's signature.
    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        /// A new condvar.
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        /// Block until notified (the guard is released while waiting).
        pub fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
            let inner = g.g.take().expect("guard present");
            g.g = Some(self.0.wait(inner).unwrap_or_else(|p| p.into_inner()));
        }

        /// Time is not modelled: a timed wait unlocks, lets any other thread run (an arbitrary
        /// gap: a grant may land in it), relocks and reports a timeout (see the module docs).
        pub fn wait_until<T>(&self, g: &mut MutexGuard<'_, T>, _d: Instant) -> WaitTimeoutResult {
            drop(g.g.take());
            g.g = Some(relock(g.m));
            WaitTimeoutResult(true)
        }

        /// Wake one waiter.
        pub fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }

        /// Wake every waiter.
        pub fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    /// A FIFO channel with crossbeam's non-blocking API, made of a loom mutex and a deque.
    pub mod channel {
        use std::collections::VecDeque;
        use std::sync::Arc;

        #[derive(Debug)]
        struct Chan<T> {
            q: super::Mutex<VecDeque<T>>,
            cap: Option<usize>,
        }

        /// The sending half.
        #[derive(Debug)]
        pub struct Sender<T>(Arc<Chan<T>>);

        /// The receiving half.
        #[derive(Debug)]
        pub struct Receiver<T>(Arc<Chan<T>>);

        /// A full channel gives the value back.
        #[derive(Debug)]
        pub struct TrySendError<T>(T);

        impl<T> TrySendError<T> {
            /// The value that was not sent.
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        /// Nothing to receive.
        #[derive(Debug)]
        pub struct TryRecvError;

        fn make<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
            let c = Arc::new(Chan {
                q: super::Mutex::new(VecDeque::new()),
                cap,
            });
            (Sender(c.clone()), Receiver(c))
        }

        /// A channel of at most `cap` items.
        pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
            make(Some(cap))
        }

        /// A channel without bound.
        pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
            make(None)
        }

        impl<T> Sender<T> {
            /// Send unless full.
            pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
                let mut q = self.0.q.lock();
                if self.0.cap.is_some_and(|c| q.len() >= c) {
                    return Err(TrySendError(v));
                }
                q.push_back(v);
                Ok(())
            }
        }

        impl<T> Receiver<T> {
            /// Receive the oldest item, if any.
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                self.0.q.lock().pop_front().ok_or(TryRecvError)
            }

            /// Items queued now.
            pub fn len(&self) -> usize {
                self.0.q.lock().len()
            }

            /// Whether nothing is queued.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    }
}
