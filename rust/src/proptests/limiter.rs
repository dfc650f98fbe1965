//! The rate limiter core ([`crate::limiter::core::Limiter`]) under arbitrary sequences of
//! try-acquires, queued acquires, polls, withdrawals (cancel and timeout), pauses and clock
//! advances on a [`ManualClock`], against a reference model of what may be granted:
//!
//! * the window bound: the units granted in any closed window of `W` seconds that starts and
//!   ends at grants are at most `W * rate / per + max(burst, largest cost in it)`; for costs up
//!   to `burst` and `W = per` that is the contract's `rate + burst`;
//! * FIFO: a queued waiter is granted only once every waiter queued before it is granted or
//!   gone, and `try_acquire` never succeeds while anyone is queued;
//! * pause: no grant before the latest pause's end;
//! * accounting: `stats().granted` is the sum of the grants the model saw callers hold (a
//!   grant given back on cancellation counts in neither);
//! * liveness: every waiter left in the queue is granted at the instant its poll names.

use crate::limiter::core::{Acquire, Clock, Limiter, ManualClock, Params, Poll, Ticket};
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    /// Clock forward by `k / 32` of `per`.
    Advance(u8),
    /// Costs are `k / 16` of `burst` (above 16: a cost above burst).
    Try(u8),
    Enqueue(u8),
    Poll(usize),
    Withdraw(usize, bool),
    /// Pause for `k / 16` of `per`.
    Pause(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40).prop_map(Op::Advance),
        3 => (1u8..40).prop_map(|k| Op::Try(if k > 20 { k - 20 } else { k })),
        3 => (1u8..40).prop_map(|k| Op::Enqueue(if k > 20 { k - 20 } else { k })),
        3 => any::<usize>().prop_map(Op::Poll),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, k)| Op::Withdraw(i, k)),
        1 => (0u8..24).prop_map(Op::Pause),
    ]
}

struct Waiter {
    ticket: Arc<Ticket>,
    cost: f64,
    /// Index into `grants` once granted.
    granted: Option<usize>,
    gone: bool,
}

struct Run {
    l: Limiter<Arc<ManualClock>, ()>,
    clock: Arc<ManualClock>,
    p: Params,
    waiters: Vec<Waiter>,
    /// (time, cost, still counted)
    grants: Vec<(f64, f64, bool)>,
    paused_until: f64,
}

impl Run {
    fn grant(&mut self, i: usize) {
        assert!(
            self.waiters[i].granted.is_none(),
            "waiter {i} granted twice"
        );
        for (j, w) in self.waiters[..i].iter().enumerate() {
            assert!(
                w.granted.is_some() || w.gone,
                "FIFO: waiter {i} granted before waiter {j}"
            );
        }
        let g = self.record(self.waiters[i].cost);
        self.waiters[i].granted = Some(g);
    }

    fn record(&mut self, cost: f64) -> usize {
        let now = self.clock.now();
        assert!(
            now >= self.paused_until,
            "granted at {now}, during a pause until {}",
            self.paused_until
        );
        self.grants.push((now, cost, true));
        self.grants.len() - 1
    }

    /// Record grants the last operation made to queued waiters (in queue order).
    fn observe(&mut self) {
        for i in 0..self.waiters.len() {
            let w = &self.waiters[i];
            if w.granted.is_none() && !w.gone && w.ticket.is_granted() {
                self.grant(i);
            }
        }
    }

    fn pick(&self, i: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.waiters.len())
            .filter(|&j| !self.waiters[j].gone)
            .collect();
        (!open.is_empty()).then(|| open[i % open.len()])
    }

    fn apply(&mut self, op: &Op) {
        let burst = self.p.burst;
        match *op {
            Op::Advance(k) => self.clock.advance(f64::from(k) * self.p.per / 32.0),
            Op::Try(k) => {
                let cost = f64::from(k) * burst / 16.0;
                let (got, _) = self.l.try_acquire(cost);
                self.observe();
                let still_queued = self.waiters.iter().any(|w| !w.gone && w.granted.is_none());
                if got {
                    assert!(!still_queued, "try_acquire jumped the queue");
                    self.record(cost);
                }
            }
            Op::Enqueue(k) => {
                let cost = f64::from(k) * burst / 16.0;
                let (a, _) = self.l.acquire_or_enqueue(cost, || ());
                self.observe();
                match a {
                    Acquire::Granted => {
                        self.record(cost);
                    }
                    Acquire::Queued(ticket) => self.waiters.push(Waiter {
                        ticket,
                        cost,
                        granted: None,
                        gone: false,
                    }),
                }
            }
            Op::Poll(i) => {
                let Some(i) = self.pick(i) else { return };
                let (p, _) = self.l.poll(&self.waiters[i].ticket.clone());
                // The polled waiter's grant is taken (no longer visible on its ticket): record
                // the grants in queue order, it included.
                for j in 0..self.waiters.len() {
                    let w = &self.waiters[j];
                    let taken = j == i && p == Poll::Granted;
                    if w.granted.is_none() && !w.gone && (taken || w.ticket.is_granted()) {
                        self.grant(j);
                    }
                }
                match p {
                    Poll::Granted => self.waiters[i].gone = true,
                    Poll::Wait(_) => assert!(self.waiters[i].granted.is_none()),
                    Poll::Over => panic!("an open waiter is never over"),
                }
            }
            Op::Withdraw(i, keep) => {
                let Some(i) = self.pick(i) else { return };
                let t = self.waiters[i].ticket.clone();
                let (kept, _) = self.l.withdraw(&t, keep);
                self.waiters[i].gone = true;
                match self.waiters[i].granted {
                    Some(g) => {
                        assert_eq!(kept, keep, "a granted waiter keeps only if asked");
                        if !keep {
                            // Given back: nobody holds it (its units may stay spent).
                            self.grants[g].2 = false;
                        }
                    }
                    None => assert!(!kept, "nothing granted, nothing kept"),
                }
                self.observe();
            }
            Op::Pause(k) => {
                let s = f64::from(k) * self.p.per / 16.0;
                self.l.pause(s).unwrap();
                self.paused_until = self.paused_until.max(self.clock.now() + s);
            }
        }
    }

    fn check(&self) {
        let p = self.p;
        let mut gs: Vec<(f64, f64)> = self
            .grants
            .iter()
            .filter(|g| g.2)
            .map(|g| (g.0, g.1))
            .collect();
        gs.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in [p.per, 2.5 * p.per] {
            for (i, &(t0, _)) in gs.iter().enumerate() {
                let mut sum = 0.0;
                let mut cmax: f64 = 0.0;
                for &(t, c) in &gs[i..] {
                    if t > t0 + w {
                        break;
                    }
                    sum += c;
                    cmax = cmax.max(c);
                }
                let bound = w * p.rate / p.per + p.burst.max(cmax);
                assert!(
                    sum <= bound * (1.0 + 1e-9) + 1e-9,
                    "{sum} units in [{t0}, {t0} + {w}] > {bound} ({p:?})"
                );
            }
        }
        let total: f64 = gs.iter().map(|g| g.1).sum();
        let granted = self.l.stats().granted;
        assert!(
            (total - granted).abs() <= 1e-9 * total.max(1.0),
            "stats say {granted}, grants sum to {total}"
        );
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        prop_oneof![Just(1.0), Just(3.0), Just(10.0), Just(64.0), 0.5f64..100.0],
        prop_oneof![Just(1.0), Just(0.5), Just(60.0), 0.1f64..10.0],
        prop_oneof![Just(None), (1.0f64..20.0).prop_map(Some)],
    )
        .prop_map(|(r, per, b)| Params::new(r, per, b).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::cases(256)))]

    #[test]
    fn grants_stay_within_the_window_bound_fifo_and_pauses(
        p in params(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let clock = Arc::new(ManualClock::new(0.0));
        let mut run = Run {
            l: Limiter::new(p, clock.clone()),
            clock,
            p,
            waiters: Vec::new(),
            grants: Vec::new(),
            paused_until: f64::NEG_INFINITY,
        };
        for op in &ops {
            run.apply(op);
            run.check();
        }
        // Liveness: each waiter still queued is granted at the instant its poll names (its
        // grant instant as the head), in queue order.
        for i in 0..run.waiters.len() {
            if run.waiters[i].gone {
                continue;
            }
            let mut served = run.waiters[i].granted.is_some();
            for _ in 0..4 {
                if served {
                    break;
                }
                let t = run.waiters[i].ticket.clone();
                match run.l.poll(&t).0 {
                    Poll::Granted => {
                        run.grant(i);
                        served = true;
                    }
                    Poll::Wait(Some(d)) => {
                        run.clock.advance(d.max(1e-12));
                        run.observe();
                    }
                    other => prop_assert!(false, "waiter {i} is the head but polled {other:?}"),
                }
            }
            prop_assert!(served, "waiter {i} not served at its grant instant");
            run.waiters[i].gone = true;
        }
        run.check();
        prop_assert_eq!(run.l.waiting(), 0);
    }
}
