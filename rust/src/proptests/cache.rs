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

// ---------------------------------------------------------------- W-TinyLFU and weights

use crate::cache::core::{Key, Policy, Seg};
use crate::cache::sketch::{Climber, Sketch};

/// The policy reference: each list a `Vec` of keys, most recently used first, entries in a
/// plain vector; the same sketch and climber (tested on their own in `cache::sketch`).
struct PolicyModel {
    /// `(key, value, expires, weight)`.
    entries: Vec<(u8, u64, u64, u64)>,
    lists: [Vec<u8>; 3],
    tiny: bool,
    cap: usize,
    max_weight: u64,
    window_max: usize,
    protected_max: usize,
    sketch: Sketch,
    climber: Climber,
    rng: u64,
    default_ttl: Option<u64>,
    now: u64,
    n: Counts,
}

fn h(k: u8) -> u64 {
    Key::hash64(&ByteKey::new(0, &[k]))
}

impl PolicyModel {
    fn new(cap: usize, tiny: bool, max_weight: u64, default_ttl: Option<u64>) -> Self {
        let window_max = (cap / 100).max(1);
        PolicyModel {
            entries: Vec::new(),
            lists: [Vec::new(), Vec::new(), Vec::new()],
            tiny,
            cap,
            max_weight,
            window_max,
            protected_max: cap.saturating_sub(window_max) * 4 / 5,
            sketch: Sketch::new(cap),
            climber: Climber::new(cap),
            rng: 0x2545_f491_4f6c_dd1d,
            default_ttl,
            now: 1,
            n: Counts::default(),
        }
    }
    fn pos(&self, k: u8) -> Option<usize> {
        self.entries.iter().position(|e| e.0 == k)
    }
    fn seg(&self, k: u8) -> usize {
        (0..3).find(|&s| self.lists[s].contains(&k)).unwrap_or(0)
    }
    fn weight(&self) -> u64 {
        self.entries.iter().map(|e| e.3).sum()
    }
    fn unlink(&mut self, k: u8) {
        for l in self.lists.iter_mut() {
            l.retain(|&x| x != k);
        }
    }
    fn move_to(&mut self, k: u8, s: usize) {
        self.unlink(k);
        self.lists[s].insert(0, k);
    }
    fn remove(&mut self, k: u8) -> u64 {
        self.unlink(k);
        let i = self.pos(k).unwrap_or(0);
        self.entries.remove(i).1
    }
    fn tail(&self, s: usize, except: u8) -> Option<u8> {
        self.lists[s].iter().rev().copied().find(|&x| x != except)
    }
    fn victim(&self, except: u8) -> Option<u8> {
        if self.tiny {
            if let Some(v) = self.tail(1, except).or_else(|| self.tail(2, except)) {
                return Some(v);
            }
        }
        self.tail(0, except)
    }
    fn adjust(&mut self, adj: i64) {
        let hi = self.cap.saturating_sub(1).max(1) as i64;
        self.window_max = (self.window_max as i64 + adj).clamp(1, hi) as usize;
        self.protected_max = self.cap.saturating_sub(self.window_max) * 4 / 5;
    }
    fn touch(&mut self, k: u8, hit: bool) {
        if !self.tiny {
            self.move_to(k, 0);
            return;
        }
        self.sketch.increment(h(k));
        let adj = if hit { self.climber.record(true) } else { 0 };
        match self.seg(k) {
            0 => self.move_to(k, 0),
            2 => self.move_to(k, 2),
            _ => {
                self.move_to(k, 2);
                if self.lists[2].len() > self.protected_max.max(1) {
                    if let Some(&d) = self.lists[2].last() {
                        if d != k {
                            self.move_to(d, 1);
                        }
                    }
                }
            }
        }
        if adj != 0 {
            self.adjust(adj);
        }
    }
    fn expired(&self) -> Vec<u8> {
        let mut e: Vec<_> = self
            .entries
            .iter()
            .filter(|e| e.2 != NEVER && e.2 <= self.now)
            .map(|e| e.0)
            .collect();
        e.sort_unstable();
        e
    }
    fn drop_expired(&mut self) -> Vec<u64> {
        let dead = self.expired();
        self.n.expirations += dead.len() as u64;
        dead.into_iter().map(|k| self.remove(k)).collect()
    }
    fn get(&mut self, k: u8) -> Option<u64> {
        let Some(i) = self.pos(k) else {
            self.n.misses += 1;
            return None;
        };
        let e = self.entries[i];
        if e.2 != NEVER && e.2 <= self.now {
            self.remove(k);
            self.n.expirations += 1;
            self.n.misses += 1;
            return None;
        }
        self.touch(k, true);
        self.n.hits += 1;
        Some(e.1)
    }
    fn evict(&mut self, k: u8, out: &mut Vec<u64>) {
        self.n.evictions += 1;
        out.push(self.remove(k));
    }
    fn rebalance(&mut self, new: u8, out: &mut Vec<u64>) {
        let mut moves = 0;
        loop {
            let over = self.lists[0].len() > self.window_max;
            if self.entries.len() <= self.cap {
                if !over || moves >= 4 {
                    return;
                }
                let c = *self.lists[0].last().unwrap_or(&new);
                self.move_to(c, 1);
                moves += 1;
                continue;
            }
            let c = if over {
                self.lists[0].last().copied()
            } else {
                None
            };
            let v = self.tail(1, new).or_else(|| self.tail(2, new));
            match (c.filter(|&c| c != new), v) {
                (None, v) => match v.or_else(|| self.victim(new)) {
                    Some(v) => self.evict(v, out),
                    None => return,
                },
                (Some(c), None) => self.evict(c, out),
                (Some(c), Some(v)) => {
                    let (cf, vf) = (self.sketch.frequency(h(c)), self.sketch.frequency(h(v)));
                    let admit = cf > vf || {
                        cf > 5 && {
                            self.rng ^= self.rng << 13;
                            self.rng ^= self.rng >> 7;
                            self.rng ^= self.rng << 17;
                            self.rng & 127 == 0
                        }
                    };
                    if admit {
                        self.evict(v, out);
                        self.move_to(c, 1);
                    } else {
                        self.evict(c, out);
                    }
                }
            }
        }
    }
    fn shed(&mut self, keep: u8, out: &mut Vec<u64>) {
        if self.weight() <= self.max_weight {
            return;
        }
        out.extend(self.drop_expired());
        while self.weight() > self.max_weight {
            match self.victim(keep) {
                Some(v) => self.evict(v, out),
                None => break,
            }
        }
    }
    fn set(&mut self, k: u8, v: u64, ttl: TtlOp, w: u64) -> Vec<u64> {
        let life = match ttl {
            TtlOp::Default => self.default_ttl,
            TtlOp::Never => None,
            TtlOp::Secs(s) => Some(s * SEC),
        };
        let expires = life.map_or(NEVER, |l| self.now.saturating_add(l).min(NEVER - 1));
        if w > self.max_weight {
            let mut out = vec![v];
            if self.pos(k).is_some() {
                out.push(self.remove(k));
            }
            return out;
        }
        let mut out = Vec::new();
        if let Some(i) = self.pos(k) {
            out.push(self.entries[i].1);
            self.entries[i] = (k, v, expires, w);
            self.touch(k, false);
            self.shed(k, &mut out);
            return out;
        }
        if self.entries.len() >= self.cap {
            out = self.drop_expired();
            if out.is_empty() && !self.tiny {
                if let Some(t) = self.tail(0, k) {
                    self.evict(t, &mut out);
                }
            }
        }
        self.entries.push((k, v, expires, w));
        self.lists[0].insert(0, k);
        if self.tiny {
            self.sketch.increment(h(k));
            let adj = self.climber.record(false);
            if adj != 0 {
                self.adjust(adj);
            }
            self.rebalance(k, &mut out);
        }
        self.shed(k, &mut out);
        out
    }
}

#[derive(Debug, Clone)]
enum POp {
    Set(u8, TtlOp, u64),
    Get(u8),
    Remove(u8),
    Advance(u64),
    Clear,
}

fn pops(keys: u8) -> impl Strategy<Value = Vec<POp>> {
    let ttl = prop_oneof![
        3 => Just(TtlOp::Default),
        2 => Just(TtlOp::Never),
        1 => (1u64..5).prop_map(TtlOp::Secs),
    ];
    let op = prop_oneof![
        4 => (0..keys, ttl, 0u64..6).prop_map(|(k, t, w)| POp::Set(k, t, w)),
        6 => (0..keys).prop_map(POp::Get),
        1 => (0..keys).prop_map(POp::Remove),
        1 => (0u64..3).prop_map(POp::Advance),
        1 => Just(POp::Clear),
    ];
    proptest::collection::vec(op, 0..300)
}

fn run_policy(
    cap: usize,
    tiny: bool,
    max_weight: Option<u64>,
    default_ttl: Option<u64>,
    ops: &[POp],
) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(1));
    let policy = if tiny { Policy::TinyLfu } else { Policy::Lru };
    let cache: Cache<ByteKey, u64, Arc<ManualClock>> = Cache::with_policy(
        cap,
        default_ttl.map(Duration::from_secs),
        true,
        clock.clone(),
        policy,
        max_weight,
    )
    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let mut m = PolicyModel::new(
        cap,
        tiny,
        max_weight.unwrap_or(u64::MAX),
        default_ttl.map(|s| s * SEC),
    );
    let keys: Vec<u8> = (0..=255).collect();
    for (v, op) in ops.iter().enumerate() {
        let v = v as u64;
        match *op {
            POp::Set(k, t, w) => {
                let ttl = match t {
                    TtlOp::Default => Ttl::Default,
                    TtlOp::Never => Ttl::Never,
                    TtlOp::Secs(s) => Ttl::For(Duration::from_secs(s)),
                };
                let mut got = Vec::new();
                let first = cache.set_weighted(ByteKey::new(0, &[k]), v, ttl, w, &mut got);
                got.extend(first);
                prop_assert_eq!(sorted(got), sorted(m.set(k, v, t, w)), "{:?}", op);
            }
            POp::Get(k) => {
                let q = ByteKeyRef {
                    tag: 0,
                    bytes: &keys[usize::from(k)..=usize::from(k)],
                };
                let mut trash = Vec::new();
                let got = cache.get(&q, |x| *x, &mut trash, true);
                prop_assert_eq!(got, m.get(k), "{:?}", op);
            }
            POp::Remove(k) => {
                let q = ByteKeyRef {
                    tag: 0,
                    bytes: &keys[usize::from(k)..=usize::from(k)],
                };
                let mut trash = Vec::new();
                cache.remove(&q, &mut trash);
                if let Some(i) = m.pos(k) {
                    let e = m.entries[i];
                    if e.2 != NEVER && e.2 <= m.now {
                        m.n.expirations += 1;
                    }
                    m.remove(k);
                }
            }
            POp::Advance(s) => {
                clock.advance(Duration::from_secs(s));
                m.now += s * SEC;
            }
            POp::Clear => {
                let mut trash = Vec::new();
                cache.clear(&mut trash);
                m.entries.clear();
                m.lists = [Vec::new(), Vec::new(), Vec::new()];
            }
        }
        let (lists, window_max) = cache.segments(0);
        for s in [Seg::Window, Seg::Probation, Seg::Protected] {
            let got: Vec<u8> = lists[s as usize].iter().map(|k| k.bytes()[0]).collect();
            let want: Vec<u8> = m.lists[s as usize].iter().rev().copied().collect();
            prop_assert_eq!(got, want, "{:?} list after {:?}", s, op);
        }
        if tiny {
            prop_assert_eq!(window_max, Some(m.window_max));
        }
        let st = cache.stats();
        let n = Counts {
            hits: st.hits,
            misses: st.misses,
            evictions: st.evictions,
            expirations: st.expirations,
        };
        prop_assert_eq!(&n, &m.n, "counters after {:?}", op);
        prop_assert_eq!(st.size, m.entries.len());
        prop_assert_eq!(st.weight, m.weight());
        prop_assert!(st.size <= cap);
        if let Some(mw) = max_weight {
            prop_assert!(st.weight <= mw, "weight {} > {}", st.weight, mw);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::cases(256)))]

    /// W-TinyLFU and LRU, with and without a weight bound and TTLs, agree with the policy
    /// model: lists, window size, values handed back, counters, size and weight.
    #[test]
    fn cache_matches_the_policy_model(
        cap in 1usize..12,
        tiny in any::<bool>(),
        max_weight in prop::option::of(1u64..20),
        default_ttl in prop::option::of(1u64..4),
        ops in (2u8..24).prop_flat_map(pops),
    ) {
        run_policy(cap, tiny, max_weight, default_ttl, &ops)?;
    }
}
