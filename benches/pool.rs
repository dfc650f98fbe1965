//! Criterion benches of the pool core (no Python): the hit path (acquire idle + release),
//! the same under 4 threads, and a handoff to a parked waiter.

use _agentperf::clock::MonotonicClock;
use _agentperf::pool::core::{Acquire, Effects, Handoff, Limits, PoolCore};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Core = PoolCore<u64, (), MonotonicClock>;

fn core(max: usize, lifetime: bool) -> Core {
    let limits = Limits {
        initial_size: max,
        max_size: max,
        idle_timeout: Some(Duration::from_secs(300)),
        max_lifetime: lifetime.then(|| Duration::from_secs(1800)),
    };
    let c = PoolCore::new(limits, MonotonicClock);
    let mut fx = Effects::new();
    let mut n = 0;
    while c.reserve_initial() {
        n += 1;
        let e = c.created(n).unwrap_or_else(|_| unreachable!());
        c.add_idle(e, &mut fx);
    }
    c
}

fn cycle(c: &Core) {
    let mut fx = Effects::new();
    match c.try_acquire(&mut fx) {
        Ok(Acquire::Ready(e)) => {
            c.acquired();
            black_box(&e.item);
            c.release(e, false, &mut fx);
        }
        _ => unreachable!("the pool holds idle objects"),
    }
}

fn hit_path(cr: &mut Criterion) {
    let c = core(8, true);
    cr.bench_function("pool_core/acquire_release", |b| b.iter(|| cycle(&c)));
    let c = core(8, false);
    cr.bench_function("pool_core/acquire_release_no_lifetime", |b| {
        b.iter(|| cycle(&c))
    });
}

fn contended(cr: &mut Criterion) {
    let c = Arc::new(core(8, true));
    cr.bench_function("pool_core/acquire_release_4_threads_x1000", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    for _ in 0..4 {
                        s.spawn(|| (0..1000).for_each(|_| cycle(&c)));
                    }
                });
            }
            start.elapsed()
        })
    });
}

fn handoff(cr: &mut Criterion) {
    let c = core(1, true);
    cr.bench_function("pool_core/register_grant_take", |b| {
        b.iter(|| {
            let mut fx = Effects::new();
            let Ok(Acquire::Ready(e)) = c.try_acquire(&mut fx) else {
                unreachable!()
            };
            c.acquired();
            let t = c.register((), &mut fx).unwrap_or_else(|_| unreachable!());
            c.release(e, false, &mut fx);
            let Some(h) = t.try_take() else {
                unreachable!()
            };
            let Handoff::Agent(e) = c.take(h, &mut fx) else {
                unreachable!()
            };
            c.acquired();
            c.release(e, false, &mut fx);
        })
    });
}

criterion_group!(benches, hit_path, contended, handoff);
criterion_main!(benches);
