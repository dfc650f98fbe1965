//! The semaphore core without Python: the uncontended fast path, and threads contending for
//! fewer permits than there are threads (every acquire past the limit parks and is handed a
//! permit FIFO). Baseline: a plain `Mutex<usize>` + `Condvar` semaphore.

use _agentperf::semaphore::core::Semaphore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parking_lot::{Condvar, Mutex};
use std::hint::black_box;
use std::sync::Arc;
use std::thread;

struct Naive {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Naive {
    fn acquire(&self) {
        let mut f = self.free.lock();
        while *f == 0 {
            self.cv.wait(&mut f);
        }
        *f -= 1;
    }
    fn release(&self) {
        *self.free.lock() += 1;
        self.cv.notify_one();
    }
}

const PER_THREAD: usize = 2_000;

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore/uncontended");
    g.throughput(Throughput::Elements(1));
    let s: Semaphore<()> = Semaphore::new(4).unwrap();
    g.bench_function("agentperf try_acquire+release", |b| {
        b.iter(|| {
            black_box(s.try_acquire());
            black_box(s.release().ok());
        })
    });
    g.bench_function("agentperf acquire_until+release", |b| {
        b.iter(|| {
            black_box(s.acquire_until(None, || ()));
            black_box(s.release().ok());
        })
    });
    let n = Naive {
        free: Mutex::new(4),
        cv: Condvar::new(),
    };
    g.bench_function("mutex+condvar acquire+release", |b| {
        b.iter(|| {
            n.acquire();
            n.release();
        })
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore/contended 4 threads, 2 permits");
    g.throughput(Throughput::Elements((4 * PER_THREAD) as u64));
    g.sample_size(20);
    g.bench_function("agentperf (FIFO)", |b| {
        b.iter(|| {
            let s: Arc<Semaphore<()>> = Arc::new(Semaphore::new(2).unwrap());
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for _ in 0..PER_THREAD {
                            s.acquire_until(None, || ());
                            let _ = s.release();
                        }
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
        })
    });
    g.bench_function("mutex+condvar (unfair)", |b| {
        b.iter(|| {
            let s = Arc::new(Naive {
                free: Mutex::new(2),
                cv: Condvar::new(),
            });
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for _ in 0..PER_THREAD {
                            s.acquire();
                            s.release();
                        }
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
