//! The PyO3-free cache core: get hit and set, str-like and digest keys, on the clock the
//! bindings use (`MonotonicClock`).
//! `cargo bench --bench cache`

use _agentperf::cache::core::{ByteKey, ByteKeyRef, Cache, Ttl};
use _agentperf::clock::MonotonicClock;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 10_000;

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("user:{i}:profile")).collect()
}

fn bench(c: &mut Criterion) {
    let ks = keys();
    for (name, ttl) in [("no_ttl", None), ("ttl", Some(Duration::from_secs(600)))] {
        let cache: Cache<ByteKey, u64, MonotonicClock> =
            Cache::new(N, ttl, true, MonotonicClock).expect("valid size");
        for (i, k) in ks.iter().enumerate() {
            let _ = cache.set(
                ByteKey::new(0, k.as_bytes()),
                i as u64,
                Ttl::Default,
                &mut Vec::new(),
            );
        }
        let mut i = 0usize;
        c.bench_function(&format!("core/get_hit/str/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % N;
                let q = ByteKeyRef {
                    tag: 0,
                    bytes: ks[i].as_bytes(),
                };
                let mut t = Vec::new();
                black_box(cache.get(&q, |v| *v, &mut t, true))
            })
        });
        c.bench_function(&format!("core/set_replace/str/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % N;
                let mut t = Vec::new();
                black_box(cache.set(
                    ByteKey::new(0, ks[i].as_bytes()),
                    i as u64,
                    Ttl::Default,
                    &mut t,
                ))
            })
        });
    }
    // Insert of new keys into a full cache: every set evicts the LRU entry.
    let cache: Cache<ByteKey, u64, MonotonicClock> =
        Cache::new(N, None, true, MonotonicClock).expect("valid size");
    let mut n = 0u64;
    c.bench_function("core/set_evict/str", |b| {
        b.iter(|| {
            n += 1;
            let k = n.to_le_bytes();
            let mut t = Vec::new();
            black_box(cache.set(ByteKey::new(0, &k), n, Ttl::Default, &mut t))
        })
    });
    // Digest keys (what CachedAgent stores).
    let digests: Vec<[u8; 32]> = (0..N as u64)
        .map(|i| {
            let mut d = [0u8; 32];
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            d[..8].copy_from_slice(&h.to_le_bytes());
            d[8..16].copy_from_slice(&i.to_le_bytes());
            d
        })
        .collect();
    let dc: Cache<[u8; 32], u64, MonotonicClock> =
        Cache::new(N, Some(Duration::from_secs(600)), true, MonotonicClock).expect("valid");
    for (i, d) in digests.iter().enumerate() {
        let _ = dc.set(*d, i as u64, Ttl::Default, &mut Vec::new());
    }
    c.bench_function("core/get_hit/digest/ttl", |b| {
        b.iter(|| {
            i_next(&mut n);
            let mut t = Vec::new();
            black_box(dc.get(&digests[(n as usize) % N], |v| *v, &mut t, true))
        })
    });
}

fn i_next(n: &mut u64) {
    *n = n.wrapping_add(1);
}

criterion_group!(benches, bench);
criterion_main!(benches);
