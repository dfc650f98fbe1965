//! The cache core ([`crate::cache::core::Cache`], one shard: exact LRU) against a reference
//! model: a recency-ordered list with expiry times and a [`ManualClock`]. Arbitrary sequences
//! of set (default TTL, no TTL, a TTL), get, contains, remove, clock advances, sweeps and
//! clears must give the same results, values handed back, LRU order and counters.

use crate::cache::core::{ByteKey, ByteKeyRef, Cache, Ttl};
use crate::clock::{Clock, ManualClock};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const NEVER: u64 = u64::MAX;
const SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Set(u8, TtlOp),
    Get(u8),
    Contains(u8),
    Remove(u8),
    Advance(u64),
    Sweep,
    Clear,
}

#[derive(Debug, Clone, Copy)]
enum TtlOp {
    Default,
    Never,
    Secs(u64),
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    hits: u64,
    misses: u64,
    evictions: u64,
    expirations: u64,
}

/// The reference: entries most recently used first.
struct Model {
    entries: Vec<(u8, u64, u64)>,
    cap: usize,
    default_ttl: Option<u64>,
    now: u64,
    n: Counts,
}

impl Model {
    fn live(&self, e: &(u8, u64, u64)) -> bool {
        e.2 == NEVER || e.2 > self.now
    }
    fn pos(&self, k: u8) -> Option<usize> {
        self.entries.iter().position(|e| e.0 == k)
    }
    fn get(&mut self, k: u8) -> (Option<u64>, Vec<u64>) {
        let Some(i) = self.pos(k) else {
            self.n.misses += 1;
            return (None, vec![]);
        };
        if !self.live(&self.entries[i]) {
            let e = self.entries.remove(i);
            self.n.expirations += 1;
            self.n.misses += 1;
            return (None, vec![e.1]);
        }
        let e = self.entries.remove(i);
        self.entries.insert(0, e);
        self.n.hits += 1;
        (Some(e.1), vec![])
    }
    /// The values that leave: the one replaced, or on a full cache every expired entry (the
    /// core drops up to `EXPIRE_ON_INSERT`, more than these caches hold), else the LRU one.
    fn set(&mut self, k: u8, v: u64, ttl: TtlOp) -> Vec<u64> {
        let life = match ttl {
            TtlOp::Default => self.default_ttl,
            TtlOp::Never => None,
            TtlOp::Secs(s) => Some(s * SEC),
        };
        let expires = life.map_or(NEVER, |l| self.now.saturating_add(l).min(NEVER - 1));
        if let Some(i) = self.pos(k) {
            let old = self.entries.remove(i);
            self.entries.insert(0, (k, v, expires));
            return vec![old.1];
        }
        let mut out = Vec::new();
        if self.entries.len() >= self.cap {
            out = self.sweep();
            if out.is_empty() {
                let t = self.entries.pop().expect("cap >= 1");
                self.n.evictions += 1;
                out.push(t.1);
            }
        }
        self.entries.insert(0, (k, v, expires));
        out
    }
    fn remove(&mut self, k: u8) -> (bool, Vec<u64>) {
        match self.pos(k) {
            None => (false, vec![]),
            Some(i) => {
                let e = self.entries.remove(i);
                let live = self.live(&e);
                if !live {
                    self.n.expirations += 1;
                }
                (live, vec![e.1])
            }
        }
    }
    fn sweep(&mut self) -> Vec<u64> {
        let now = self.now;
        let (dead, keep): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .partition(|e| e.2 != NEVER && e.2 <= now);
        self.entries = keep;
        self.n.expirations += dead.len() as u64;
        dead.into_iter().map(|e| e.1).collect()
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let key = 0u8..6;
    let ttl = prop_oneof![
        Just(TtlOp::Default),
        Just(TtlOp::Never),
        (1u64..5).prop_map(TtlOp::Secs),
    ];
    let op = prop_oneof![
        4 => (key.clone(), ttl).prop_map(|(k, t)| Op::Set(k, t)),
        4 => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::Contains),
        1 => key.prop_map(Op::Remove),
        2 => (0u64..3).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => Just(Op::Clear),
    ];
    proptest::collection::vec(op, 0..80)
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn run(cap: usize, default_ttl: Option<u64>, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(1));
    let cache: Cache<ByteKey, u64, Arc<ManualClock>> = Cache::new(
        cap,
        default_ttl.map(Duration::from_secs),
        true,
        clock.clone(),
    )
    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    prop_assert_eq!(cache.shards(), 1);
    let mut m = Model {
        entries: Vec::new(),
        cap,
        default_ttl: default_ttl.map(|s| s * SEC),
        now: clock.now(),
        n: Counts::default(),
    };
    const KEYS: [u8; 6] = [0, 1, 2, 3, 4, 5];
    let q = |k: u8| ByteKeyRef {
        tag: 0,
        bytes: &KEYS[usize::from(k)..=usize::from(k)],
    };
    for (v, op) in ops.iter().enumerate() {
        let v = v as u64;
        match *op {
            Op::Set(k, t) => {
                let ttl = match t {
                    TtlOp::Default => Ttl::Default,
                    TtlOp::Never => Ttl::Never,
                    TtlOp::Secs(s) => Ttl::For(Duration::from_secs(s)),
                };
                let mut got = Vec::new();
                let first = cache.set(ByteKey::new(0, &[k]), v, ttl, &mut got);
                got.extend(first);
                prop_assert_eq!(sorted(got), sorted(m.set(k, v, t)), "{:?}", op);
            }
            Op::Get(k) => {
                let mut trash = Vec::new();
                let got = cache.get(&q(k), |x| *x, &mut trash, true);
                let (want, want_trash) = m.get(k);
                prop_assert_eq!(got, want, "{:?}", op);
                prop_assert_eq!(trash, want_trash, "{:?}", op);
            }
            Op::Contains(k) => {
                let want = m.pos(k).is_some_and(|i| m.live(&m.entries[i]));
                prop_assert_eq!(cache.contains(&q(k)), want, "{:?}", op);
            }
            Op::Remove(k) => {
                let mut trash = Vec::new();
                let got = cache.remove(&q(k), &mut trash);
                prop_assert_eq!((got, trash), m.remove(k), "{:?}", op);
            }
            Op::Advance(s) => {
                clock.advance(Duration::from_secs(s));
                m.now += s * SEC;
            }
            Op::Sweep => {
                let mut out = Vec::new();
                let n = cache.sweep(|vs| out.extend(vs));
                let want = sorted(m.sweep());
                prop_assert_eq!(n, want.len());
                prop_assert_eq!(sorted(out), want, "{:?}", op);
            }
            Op::Clear => {
                let mut trash = Vec::new();
                cache.clear(&mut trash);
                let want = sorted(m.entries.drain(..).map(|e| e.1).collect());
                prop_assert_eq!(sorted(trash), want, "{:?}", op);
            }
        }
        let lru: Vec<u8> = m.entries.iter().rev().map(|e| e.0).collect();
        let got: Vec<u8> = cache.lru_order(0).iter().map(|k| k.bytes()[0]).collect();
        prop_assert_eq!(got, lru, "LRU order after {:?}", op);
        let s = cache.stats();
        let n = Counts {
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            expirations: s.expirations,
        };
        prop_assert_eq!(&n, &m.n, "counters after {:?}", op);
        prop_assert_eq!(s.size, m.entries.len());
        prop_assert!(s.size <= cap);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::cases(512)))]

    /// Every operation agrees with the LRU+TTL reference model.
    #[test]
    fn cache_matches_the_lru_ttl_model(
        cap in 1usize..5,
        default_ttl in prop::option::of(1u64..4),
        ops in ops(),
    ) {
        run(cap, default_ttl, &ops)?;
    }
}
