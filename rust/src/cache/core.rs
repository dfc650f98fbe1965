//! The sharded TTL/LRU (or W-TinyLFU) store under `ap.Cache` and `ap.CachedAgent`. Knows
//! nothing of Python.
//!
//! # Layout
//!
//! The store is split in N shards, each a [`parking_lot::Mutex`] around:
//! * a `hashbrown::HashTable<u32>` of slot indexes (the key's 64-bit hash comes from the key
//!   itself: [`Key::hash64`]; for SHA-256 digests it is simply their first 8 bytes);
//! * a slab `Vec<Option<Node>>` holding key, value, expiry and the LRU links (`u32` indexes:
//!   an intrusive doubly-linked list, O(1) touch, no per-entry allocation);
//! * a free list of slab slots.
//!
//! The shard of a key is taken from bits 32.. of its hash (hashbrown uses the low bits for the
//! bucket and the top 7 for its control byte).
//!
//! # The bound, and where LRU stops being exact
//!
//! There are never more than `max_size` live entries: shard `i` holds at most
//! `max_size / N` entries (the remainder spread over the first shards), so the capacities add up
//! to `max_size` exactly. While `max_size < 2 * SHARD_MIN` ([`SHARD_MIN`] = 4096, i.e. up to
//! 8191 entries) there is one shard and eviction is exact global LRU. Above that the shard count
//! is the largest power of two with at least `SHARD_MIN` entries per shard, at most
//! [`MAX_SHARDS`]; eviction is then LRU within the shard of the inserted key, so an entry may be
//! evicted while the cache as a whole holds slightly fewer than `max_size` entries.
//!
//! # Time
//!
//! Expiry is lazy: a read of an expired entry removes it and reports a miss. [`Cache::sweep`]
//! removes every expired entry (the bindings run it from the shared cleanup thread). Time
//! comes from a [`Clock`], so tests drive it with `ManualClock`.
//!
//! Expired entries go before live ones: an insert that finds its shard full first drops the
//! expired entries (up to [`EXPIRE_ON_INSERT`] of them), and evicts the least recently used
//! live entry only when none has expired. To find them without a scan, a shard that has
//! filled up once keeps a min-heap of `(expiry, slot)` for its expiring entries, with lazy
//! deletion: an item is current while its slot holds an entry of that expiry, stale items
//! are skipped when popped and the heap is compacted when they outnumber the current ones, so
//! the insert path stays O(log n) amortised (O(1) for the default TTL, whose expiries only
//! grow). A shard that never fills, or holds no expiring entry, never builds the heap.
//!
//! # Policies
//!
//! [`Policy::Lru`] (the default) keeps one recency list per shard: exactly the behaviour
//! described above. [`Policy::TinyLfu`] is W-TinyLFU as in Caffeine: per shard a count-min
//! sketch ([`super::sketch::Sketch`], 4-bit counters, halved every `10 * cap` increments)
//! counts every hit and insert; a new entry joins an LRU *window* (1 % of the shard at first);
//! the window's overflow enters the *probation* segment of a segmented LRU main space, and
//! when the shard is full the window's least recent entry (the candidate) competes with
//! probation's least recent (the victim): the one the sketch rates lower is evicted (a warm
//! candidate that ties also wins 1 time in 128). A hit on probation promotes to *protected*
//! (80 % of main). The window's size moves by hill climbing ([`super::sketch::Climber`]).
//! Expired entries still go first: the insert drops them before any candidate competes. A
//! hit touches the sketch and two links: no allocation, the lock held as briefly as LRU's.
//!
//! # Weights
//!
//! [`Cache::set_weighted`] gives an entry a weight (1 by default); with a `max_weight` the
//! sum of the weights is bounded as well as the count: past it expired entries go first, then
//! the policy's victims. A weighted store has one shard, so the bound is exact.
//!
//! # Values
//!
//! Values removed under a shard lock (replaced, evicted, expired, cleared) are never dropped
//! there: they are pushed to a caller-supplied `Vec` that the caller drops after the lock is
//! released (a Python decref can run arbitrary code).

use super::sketch::{Climber, Sketch};
use crate::clock::{Clock, MonotonicClock, Nanos};
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// Fewest entries per shard; below `2 * SHARD_MIN` entries the cache has a single shard
/// (exact global LRU).
pub const SHARD_MIN: usize = 4096;
/// Most shards.
pub const MAX_SHARDS: usize = 16;
/// Expiry of an entry that never expires.
const NEVER: Nanos = u64::MAX;
const NIL: u32 = u32::MAX;
/// Slots a sweep scans per lock hold.
const SWEEP_CHUNK: usize = 4096;
/// Most expired entries one insert into a full shard drops (the rest wait for the next insert
/// or the sweep), which bounds the lock hold.
pub const EXPIRE_ON_INSERT: usize = 64;
/// Stale expiry items tolerated beyond twice the current ones before a compaction (small in
/// tests, so the reference model exercises compaction too).
const HEAP_SLACK: usize = if cfg!(test) { 2 } else { 64 };

/// A stored key: its 64 well-mixed hash bits.
pub trait Key: Eq {
    /// The hash used for shard choice and the table.
    fn hash64(&self) -> u64;
}

/// A borrowed form of a key `K`, to look up without building a `K`.
pub trait Query<K> {
    /// Equal to `K::hash64` of the matching key.
    fn hash64(&self) -> u64;
    /// Whether `k` is this key.
    fn matches(&self, k: &K) -> bool;
}

impl<K: Key> Query<K> for K {
    #[inline]
    fn hash64(&self) -> u64 {
        Key::hash64(self)
    }
    #[inline]
    fn matches(&self, k: &K) -> bool {
        self == k
    }
}

/// A SHA-256 digest key: uniform already, so its first 8 bytes are its hash.
impl Key for [u8; 32] {
    #[inline]
    fn hash64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self[..8]);
        u64::from_le_bytes(b)
    }
}

/// A process-wide random hasher state for byte-string keys (foldhash, seeded per process).
fn byte_hasher() -> &'static hashbrown::DefaultHashBuilder {
    static S: OnceLock<hashbrown::DefaultHashBuilder> = OnceLock::new();
    S.get_or_init(hashbrown::DefaultHashBuilder::default)
}

#[inline]
fn hash_bytes(tag: u8, bytes: &[u8]) -> u64 {
    byte_hasher().hash_one((tag, bytes))
}

const INLINE: usize = 22;

/// A tagged byte-string key (e.g. `str` vs `bytes`), stored inline up to 22 bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ByteKey {
    /// Short keys, no allocation.
    Inline {
        /// Kind of key (the same bytes with different tags are different keys).
        tag: u8,
        /// Used length of `buf`.
        len: u8,
        /// The bytes.
        buf: [u8; INLINE - 1],
    },
    /// Longer keys.
    Heap {
        /// Kind of key.
        tag: u8,
        /// The bytes.
        data: Box<[u8]>,
    },
}

impl ByteKey {
    /// A key of kind `tag` with these bytes.
    pub fn new(tag: u8, bytes: &[u8]) -> Self {
        if bytes.len() < INLINE {
            let mut buf = [0u8; INLINE - 1];
            buf[..bytes.len()].copy_from_slice(bytes);
            // `bytes.len() < INLINE <= u8::MAX` so the cast is exact.
            ByteKey::Inline {
                tag,
                len: bytes.len() as u8,
                buf,
            }
        } else {
            ByteKey::Heap {
                tag,
                data: bytes.into(),
            }
        }
    }
    /// The kind tag.
    pub fn tag(&self) -> u8 {
        match self {
            ByteKey::Inline { tag, .. } | ByteKey::Heap { tag, .. } => *tag,
        }
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ByteKey::Inline { len, buf, .. } => &buf[..usize::from(*len)],
            ByteKey::Heap { data, .. } => data,
        }
    }
}

impl Key for ByteKey {
    #[inline]
    fn hash64(&self) -> u64 {
        hash_bytes(self.tag(), self.bytes())
    }
}

/// A borrowed [`ByteKey`].
#[derive(Clone, Copy, Debug)]
pub struct ByteKeyRef<'a> {
    /// Kind of key.
    pub tag: u8,
    /// The bytes.
    pub bytes: &'a [u8],
}

impl Query<ByteKey> for ByteKeyRef<'_> {
    #[inline]
    fn hash64(&self) -> u64 {
        hash_bytes(self.tag, self.bytes)
    }
    #[inline]
    fn matches(&self, k: &ByteKey) -> bool {
        k.tag() == self.tag && k.bytes() == self.bytes
    }
}

/// How long an entry set now lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The cache's default.
    Default,
    /// Forever.
    Never,
    /// This long.
    For(Duration),
}

/// Counters and size at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads that found a live entry (plus hits noted with [`Cache::note_hit`]).
    pub hits: u64,
    /// Reads that found nothing live (plus misses noted with [`Cache::note_miss`]).
    pub misses: u64,
    /// Live entries removed to make room.
    pub evictions: u64,
    /// Expired entries removed (on read, by a sweep, or in place of an eviction).
    pub expirations: u64,
    /// Entries held, expired ones not yet removed included.
    pub size: usize,
    /// Sum of the held entries' weights (each weighs 1 without a weigher).
    pub weight: u64,
}

/// Which list of its shard an entry is on: LRU uses `Window` only; W-TinyLFU all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Seg {
    /// The admission window (the whole recency list under LRU).
    Window = 0,
    /// Main space, admitted once and not hit since.
    Probation = 1,
    /// Main space, hit again while on probation.
    Protected = 2,
}

struct Node<K, V> {
    key: K,
    value: V,
    expires: Nanos,
    weight: u64,
    prev: u32,
    next: u32,
    seg: Seg,
}

/// The eviction policy of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Least recently used goes first (the first release's behaviour).
    #[default]
    Lru,
    /// W-TinyLFU: an LRU admission window, then a segmented LRU main space that a candidate
    /// enters only if the frequency sketch rates it above the main space's victim.
    TinyLfu,
}

/// The W-TinyLFU state of a shard.
struct Tiny {
    sketch: Sketch,
    climber: Climber,
    window_max: usize,
    protected_max: usize,
    /// A cheap xorshift state for Caffeine's random admission of warm candidates (keeps an
    /// attacker from pinning the victim with a flood of hash collisions).
    rng: u64,
}

struct Inner<K, V> {
    table: HashTable<u32>,
    slab: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    /// Most recently used entry of each [`Seg`] list.
    heads: [u32; 3],
    /// Least recently used entry of each list.
    tails: [u32; 3],
    /// Entries on each list.
    lens: [usize; 3],
    len: usize,
    cap: usize,
    /// Sum of the entries' weights (1 each without a weigher), and its bound.
    weight: u64,
    max_weight: u64,
    tiny: Option<Tiny>,
    /// Entries with a finite expiry (a sweep skips shards without any).
    expiring: usize,
    /// `(expiry, slot)` of the expiring entries once the shard has filled up with expiring
    /// entries (`tracking`), may hold stale items (see the module docs): those set with the
    /// default TTL in a queue (their expiries only grow), the others in a min-heap.
    fifo: VecDeque<(Nanos, u32)>,
    by_expiry: BinaryHeap<Reverse<(Nanos, u32)>>,
    tracking: bool,
    hits: u64,
    misses: u64,
    evictions: u64,
    expirations: u64,
}

// Keep shards on separate cache lines.
#[repr(align(128))]
struct Shard<K, V>(Mutex<Inner<K, V>>, Published);

/// A shard's counters, size and weight as the last lock holder left them: [`Cache::stats`]
/// and [`Cache::len`] read these, so reading the metrics never takes a lock the hit path
/// holds. Written only under the shard lock (plain stores, no read-modify-write), next to
/// the lock on the shard's own cache lines.
#[derive(Default)]
struct Published {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    len: AtomicUsize,
    weight: AtomicU64,
}

impl Published {
    fn publish<K, V>(&self, g: &Inner<K, V>) {
        self.hits.store(g.hits, Relaxed);
        self.misses.store(g.misses, Relaxed);
        self.evictions.store(g.evictions, Relaxed);
        self.expirations.store(g.expirations, Relaxed);
        self.len.store(g.len, Relaxed);
        self.weight.store(g.weight, Relaxed);
    }
}

/// A shard's lock held by a method that may change its size or counters: publishes them
/// ([`Published`]) when dropped, before the lock is released.
struct Locked<'a, K, V> {
    g: MutexGuard<'a, Inner<K, V>>,
    seen: &'a Published,
}

impl<K, V> Drop for Locked<'_, K, V> {
    fn drop(&mut self) {
        self.seen.publish(&self.g);
    }
}

impl<K, V> Deref for Locked<'_, K, V> {
    type Target = Inner<K, V>;
    fn deref(&self) -> &Inner<K, V> {
        &self.g
    }
}

impl<K, V> DerefMut for Locked<'_, K, V> {
    fn deref_mut(&mut self) -> &mut Inner<K, V> {
        &mut self.g
    }
}

impl<K, V> Shard<K, V> {
    fn locked(&self) -> Locked<'_, K, V> {
        Locked {
            g: self.0.lock(),
            seen: &self.1,
        }
    }
}

impl<K: Key, V> Inner<K, V> {
    fn new(cap: usize, policy: Policy, max_weight: u64) -> Self {
        let tiny = match policy {
            Policy::Lru => None,
            Policy::TinyLfu => {
                let window_max = (cap / 100).max(1);
                Some(Tiny {
                    sketch: Sketch::new(cap),
                    climber: Climber::new(cap),
                    window_max,
                    protected_max: cap.saturating_sub(window_max) * 4 / 5,
                    rng: 0x2545_f491_4f6c_dd1d,
                })
            }
        };
        Inner {
            table: HashTable::new(),
            slab: Vec::new(),
            free: Vec::new(),
            heads: [NIL; 3],
            tails: [NIL; 3],
            lens: [0; 3],
            len: 0,
            cap,
            weight: 0,
            max_weight,
            tiny,
            expiring: 0,
            fifo: VecDeque::new(),
            by_expiry: BinaryHeap::new(),
            tracking: false,
            hits: 0,
            misses: 0,
            evictions: 0,
            expirations: 0,
        }
    }

    #[inline]
    fn node(&self, i: u32) -> &Node<K, V> {
        match &self.slab[i as usize] {
            Some(n) => n,
            None => unreachable!("linked slot {i} is free"),
        }
    }

    #[inline]
    fn node_mut(&mut self, i: u32) -> &mut Node<K, V> {
        match &mut self.slab[i as usize] {
            Some(n) => n,
            None => unreachable!("linked slot {i} is free"),
        }
    }

    #[inline]
    fn find<Q: Query<K> + ?Sized>(&self, h: u64, q: &Q) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(
                h,
                |&i| matches!(&slab[i as usize], Some(n) if q.matches(&n.key)),
            )
            .copied()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, s) = {
            let n = self.node(i);
            (n.prev, n.next, n.seg as usize)
        };
        if prev == NIL {
            self.heads[s] = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.tails[s] = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        self.lens[s] -= 1;
    }

    fn push_front(&mut self, i: u32, seg: Seg) {
        let s = seg as usize;
        let head = self.heads[s];
        {
            let n = self.node_mut(i);
            n.prev = NIL;
            n.next = head;
            n.seg = seg;
        }
        if head == NIL {
            self.tails[s] = i;
        } else {
            self.node_mut(head).prev = i;
        }
        self.heads[s] = i;
        self.lens[s] += 1;
    }

    /// Move slot `i` to the front of list `seg`.
    #[inline]
    fn move_to(&mut self, i: u32, seg: Seg) {
        if self.heads[seg as usize] != i {
            self.unlink(i);
            self.push_front(i, seg);
        }
    }

    /// A read hit (or a replace) of slot `i`, hash `h`: LRU moves it to the front; W-TinyLFU
    /// counts it in the sketch and moves it up its segments (no allocation either way).
    #[inline]
    fn touch(&mut self, i: u32, h: u64, hit: bool) {
        let Some(t) = &mut self.tiny else {
            self.move_to(i, Seg::Window);
            return;
        };
        t.sketch.increment(h);
        let adj = if hit { t.climber.record(true) } else { 0 };
        let protected_max = t.protected_max;
        match self.node(i).seg {
            Seg::Window => self.move_to(i, Seg::Window),
            Seg::Protected => self.move_to(i, Seg::Protected),
            Seg::Probation => {
                self.move_to(i, Seg::Protected);
                // Keep the protected segment to its share: demote its least recent entry.
                if self.lens[Seg::Protected as usize] > protected_max.max(1) {
                    let d = self.tails[Seg::Protected as usize];
                    if d != i {
                        self.move_to(d, Seg::Probation);
                    }
                }
            }
        }
        if adj != 0 {
            self.adjust_window(adj);
        }
    }

    /// The hill climber's verdict: grow (`adj > 0`) or shrink the window. The lists follow
    /// lazily: an oversized window hands its tail to probation on later inserts.
    fn adjust_window(&mut self, adj: i64) {
        let cap = self.cap;
        if let Some(t) = &mut self.tiny {
            let hi = cap.saturating_sub(1).max(1) as i64;
            let w = (t.window_max as i64).saturating_add(adj).clamp(1, hi);
            // `1 <= w <= hi <= cap`, so the cast is exact.
            t.window_max = w as usize;
            t.protected_max = cap.saturating_sub(t.window_max) * 4 / 5;
        }
    }

    /// The main space's victim (probation's least recent, else protected's), not `except`.
    fn main_victim(&self, except: u32) -> u32 {
        for s in [Seg::Probation as usize, Seg::Protected as usize] {
            let mut t = self.tails[s];
            if t == except && t != NIL {
                t = self.node(t).prev;
            }
            if t != NIL {
                return t;
            }
        }
        NIL
    }

    /// The next entry to evict, not `except`: under LRU the least recently used; under
    /// W-TinyLFU the main victim, else the window's least recent.
    fn victim(&self, except: u32) -> u32 {
        if self.tiny.is_some() {
            let v = self.main_victim(except);
            if v != NIL {
                return v;
            }
        }
        let mut t = self.tails[Seg::Window as usize];
        if t == except && t != NIL {
            t = self.node(t).prev;
        }
        t
    }

    /// Evict slot `i` (a live entry); its value goes to `out` or `trash`.
    fn evict_at(&mut self, i: u32, out: &mut Option<V>, trash: &mut Vec<V>, count: bool) {
        let h = Key::hash64(&self.node(i).key);
        let v = self.remove_at(i, h);
        if count {
            self.evictions += 1;
        }
        if out.is_none() {
            *out = Some(v);
        } else {
            trash.push(v);
        }
    }

    /// W-TinyLFU after an insert into the window: pass the window's overflow to the main
    /// space, and while the shard holds more than `cap` entries let each candidate (the
    /// window's least recent) compete with the main victim: the more frequent one stays.
    fn tiny_rebalance(&mut self, new: u32, out: &mut Option<V>, trash: &mut Vec<V>, count: bool) {
        let w = Seg::Window as usize;
        let mut moves = 0;
        loop {
            let Some(t) = &self.tiny else { return };
            let over = self.lens[w] > t.window_max;
            if self.len <= self.cap {
                // Room: the window's overflow enters probation unopposed (a few per insert
                // after the window shrank, so the lock hold stays short).
                if !over || moves >= 4 {
                    return;
                }
                let c = self.tails[w];
                self.move_to(c, Seg::Probation);
                moves += 1;
                continue;
            }
            let c = if over { self.tails[w] } else { NIL };
            let v = self.main_victim(new);
            if c == NIL || c == new {
                let v = if v == NIL { self.victim(new) } else { v };
                if v == NIL {
                    return;
                }
                self.evict_at(v, out, trash, count);
                continue;
            }
            if v == NIL {
                self.evict_at(c, out, trash, count);
                continue;
            }
            let ch = Key::hash64(&self.node(c).key);
            let vh = Key::hash64(&self.node(v).key);
            let admit = match &mut self.tiny {
                Some(t) => {
                    let cf = t.sketch.frequency(ch);
                    let vf = t.sketch.frequency(vh);
                    if cf > vf {
                        true
                    } else if cf <= 5 {
                        false
                    } else {
                        t.rng ^= t.rng << 13;
                        t.rng ^= t.rng >> 7;
                        t.rng ^= t.rng << 17;
                        t.rng & 127 == 0
                    }
                }
                None => false,
            };
            if admit {
                self.evict_at(v, out, trash, count);
                self.move_to(c, Seg::Probation);
            } else {
                self.evict_at(c, out, trash, count);
            }
        }
    }

    /// Remove slot `i` (hash `h`) entirely; returns its value.
    fn remove_at(&mut self, i: u32, h: u64) -> V {
        self.unlink(i);
        if let Ok(e) = self.table.find_entry(h, |&j| j == i) {
            e.remove();
        }
        let node = match self.slab[i as usize].take() {
            Some(n) => n,
            None => unreachable!("removing free slot {i}"),
        };
        self.free.push(i);
        self.len -= 1;
        self.weight -= node.weight;
        if node.expires != NEVER {
            self.expiring -= 1;
        }
        node.value
    }

    fn alloc(&mut self, node: Node<K, V>) -> u32 {
        if let Some(i) = self.free.pop() {
            self.slab[i as usize] = Some(node);
            return i;
        }
        if self.slab.len() == self.slab.capacity() {
            // Grow by doubling, but never past the shard's capacity (plus the one slot
            // W-TinyLFU holds while the new entry and the victims compete).
            let want = self.slab.len().max(8).min(self.cap + 1 - self.slab.len());
            self.slab.reserve_exact(want.max(1));
        }
        // `cap <= u32::MAX - 1` is checked at construction, so the index fits.
        let i = self.slab.len() as u32;
        self.slab.push(Some(node));
        i
    }

    /// Whether heap item `(e, i)` is current: slot `i` holds an entry expiring at `e`.
    #[inline]
    fn current(&self, e: Nanos, i: u32) -> bool {
        matches!(&self.slab[i as usize], Some(n) if n.expires == e)
    }

    /// Slot `i` now expires at `e` (finite): keep the expiry order in step, if it is kept.
    /// `fifo`: `e` is now plus the default TTL, never earlier than the queue's last item.
    #[inline]
    fn track(&mut self, e: Nanos, i: u32, fifo: bool) {
        if self.tracking {
            if fifo {
                self.fifo.push_back((e, i));
            } else {
                self.by_expiry.push(Reverse((e, i)));
            }
            if self.fifo.len() + self.by_expiry.len() > 2 * self.expiring + HEAP_SLACK {
                self.compact();
            }
        }
    }

    /// The expiry the default TTL gives an entry set now: `e`, or the last queued expiry if
    /// that is later (clocks read on other threads before they took the lock, or on other
    /// cores, may lag a little), so the queue stays sorted.
    #[inline]
    fn queued_expiry(&self, e: Nanos) -> Nanos {
        match self.fifo.back() {
            Some(&(last, _)) if self.tracking && last > e => last,
            _ => e,
        }
    }

    /// Keep only the current items, each once.
    fn compact(&mut self) {
        let expiring = self.expiring;
        let mut q: Vec<(Nanos, u32)> = std::mem::take(&mut self.fifo).into();
        q.retain(|&(e, i)| self.current(e, i));
        let mut h: Vec<(Nanos, u32)> = std::mem::take(&mut self.by_expiry)
            .into_vec()
            .into_iter()
            .map(|Reverse(x)| x)
            .filter(|&(e, i)| self.current(e, i))
            .collect();
        if q.len() + h.len() > expiring {
            // The same slot with the same expiry queued twice (set twice within a clock
            // tick): sorting keeps the queue's order and makes the heap a sorted vector.
            q.sort_unstable();
            q.dedup();
            h.sort_unstable();
            h.dedup();
        }
        self.fifo = q.into();
        self.by_expiry = h.into_iter().map(Reverse).collect();
    }

    /// Start keeping the expiry order: one scan of the slab, into the heap.
    fn start_tracking(&mut self) {
        self.by_expiry = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                // `i < slab.len() <= u32::MAX - 1`.
                Some(n) if n.expires != NEVER => Some(Reverse((n.expires, i as u32))),
                _ => None,
            })
            .collect();
        self.fifo.clear();
        self.tracking = true;
    }

    /// The earliest current item, stale ones dropped on the way; `true` if from the queue.
    #[inline]
    fn earliest(&mut self) -> Option<(Nanos, u32, bool)> {
        while let Some(&(e, i)) = self.fifo.front() {
            if self.current(e, i) {
                break;
            }
            self.fifo.pop_front();
        }
        while let Some(&Reverse((e, i))) = self.by_expiry.peek() {
            if self.current(e, i) {
                break;
            }
            self.by_expiry.pop();
        }
        match (self.fifo.front(), self.by_expiry.peek()) {
            (Some(&(a, i)), Some(&Reverse((b, _)))) if a <= b => Some((a, i, true)),
            (_, Some(&Reverse((b, j)))) => Some((b, j, false)),
            (Some(&(a, i)), None) => Some((a, i, true)),
            (None, None) => None,
        }
    }

    /// Drop up to [`EXPIRE_ON_INSERT`] entries expired at `now`, earliest first: the first
    /// is returned with how many were dropped, the others go to `trash`.
    fn drop_expired(&mut self, now: Nanos, trash: &mut Vec<V>) -> (Option<V>, usize) {
        if self.expiring == 0 {
            self.by_expiry.clear();
            self.fifo.clear();
            return (None, 0);
        }
        if !self.tracking {
            self.start_tracking();
        }
        let mut first = None;
        let mut n = 0;
        while n < EXPIRE_ON_INSERT {
            let Some((e, i, from_fifo)) = self.earliest() else {
                break;
            };
            if e > now {
                break;
            }
            if from_fifo {
                self.fifo.pop_front();
            } else {
                self.by_expiry.pop();
            }
            let h = Key::hash64(&self.node(i).key);
            let v = self.remove_at(i, h);
            if first.is_none() {
                first = Some(v);
            } else {
                trash.push(v);
            }
            n += 1;
        }
        (first, n)
    }
}

fn shard_count(max_size: usize) -> usize {
    let per = max_size / SHARD_MIN;
    if per < 2 {
        return 1;
    }
    // Largest power of two <= per, capped.
    let p = 1usize << (usize::BITS - 1 - per.leading_zeros());
    p.min(MAX_SHARDS)
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `max_size` is 0.
    ZeroSize,
    /// `max_size` does not fit the u32 slot indexes.
    TooLarge,
    /// `max_weight` is 0.
    ZeroWeight,
}

/// The sharded TTL/LRU store. `V` is the value type; `C` the clock.
pub struct Cache<K, V, C = MonotonicClock> {
    shards: Box<[Shard<K, V>]>,
    mask: u64,
    clock: C,
    default_ttl: Option<Nanos>,
    max_size: usize,
    max_weight: u64,
    policy: Policy,
    count: bool,
    noted_hits: AtomicU64,
    noted_misses: AtomicU64,
}

impl<K: Key, V, C: Clock> Cache<K, V, C> {
    /// A store of at most `max_size` entries, living `default_ttl` (None: forever).
    /// `count` false skips the hit/miss/eviction/expiration counters.
    pub fn new(
        max_size: usize,
        default_ttl: Option<Duration>,
        count: bool,
        clock: C,
    ) -> Result<Self, ConfigError> {
        Self::with_policy(max_size, default_ttl, count, clock, Policy::Lru, None)
    }

    /// [`Cache::new`] with an eviction `policy` and, if `max_weight` is given, a bound on the
    /// sum of the entries' weights ([`Cache::set_weighted`]). A weighted store has one shard,
    /// so the weight bound and "heavier than `max_weight` is not stored" are exact.
    pub fn with_policy(
        max_size: usize,
        default_ttl: Option<Duration>,
        count: bool,
        clock: C,
        policy: Policy,
        max_weight: Option<u64>,
    ) -> Result<Self, ConfigError> {
        if max_size == 0 {
            return Err(ConfigError::ZeroSize);
        }
        if max_weight == Some(0) {
            return Err(ConfigError::ZeroWeight);
        }
        let n = if max_weight.is_some() {
            1
        } else {
            shard_count(max_size)
        };
        let per = max_size / n;
        if per + 1 >= NIL as usize {
            return Err(ConfigError::TooLarge);
        }
        let rem = max_size % n;
        let mw = max_weight.unwrap_or(u64::MAX);
        let shards = (0..n)
            .map(|i| {
                Shard(
                    Mutex::new(Inner::new(per + usize::from(i < rem), policy, mw)),
                    Published::default(),
                )
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(Cache {
            shards,
            mask: (n - 1) as u64,
            clock,
            default_ttl: default_ttl.map(crate::clock::to_nanos),
            max_size,
            max_weight: mw,
            policy,
            count,
            noted_hits: AtomicU64::new(0),
            noted_misses: AtomicU64::new(0),
        })
    }

    /// The bound on the sum of weights, if any.
    pub fn max_weight(&self) -> Option<u64> {
        (self.max_weight != u64::MAX).then_some(self.max_weight)
    }

    /// The eviction policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The bound on live entries.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The shard index for a hash.
    #[inline]
    pub fn shard_of(&self, h: u64) -> usize {
        ((h >> 32) & self.mask) as usize
    }

    #[inline]
    fn shard(&self, h: u64) -> &Shard<K, V> {
        &self.shards[self.shard_of(h)]
    }

    /// Look `q` up. On a live entry: mark it most recently used and return `f(&value)`
    /// (called under the shard lock: it must not run user code). An expired entry is removed
    /// (its value pushed to `trash`). `count_miss` false leaves a miss uncounted (the caller
    /// decides later, e.g. single-flight).
    #[inline]
    pub fn get<Q, R>(
        &self,
        q: &Q,
        f: impl FnOnce(&V) -> R,
        trash: &mut Vec<V>,
        count_miss: bool,
    ) -> Option<R>
    where
        Q: Query<K> + ?Sized,
    {
        let h = q.hash64();
        let sh = self.shard(h);
        let mut g = sh.0.lock();
        let Some(i) = g.find(h, q) else {
            if self.count && count_miss {
                g.misses += 1;
                sh.1.misses.store(g.misses, Relaxed);
            }
            return None;
        };
        let expires = g.node(i).expires;
        if expires != NEVER && expires <= self.clock.now() {
            let v = g.remove_at(i, h);
            if self.count {
                g.expirations += 1;
                if count_miss {
                    g.misses += 1;
                }
            }
            sh.1.publish(&g);
            trash.push(v);
            return None;
        }
        g.touch(i, h, true);
        if self.count {
            g.hits += 1;
            sh.1.hits.store(g.hits, Relaxed);
        }
        Some(f(&g.node(i).value))
    }

    /// Whether `q` has a live entry; counts nothing and does not touch the LRU order.
    pub fn contains<Q: Query<K> + ?Sized>(&self, q: &Q) -> bool {
        let h = q.hash64();
        let g = self.shard(h).0.lock();
        match g.find(h, q) {
            Some(i) => {
                let e = g.node(i).expires;
                e == NEVER || e > self.clock.now()
            }
            None => false,
        }
    }

    /// Insert or replace `key`, as most recently used. Returns the value that left: the one
    /// replaced, or, when the shard is full, an expired entry dropped to make room (the
    /// other expired ones dropped with it go to `trash`; see the module docs) or else the
    /// least recently used entry evicted. Drop them after the call.
    #[must_use = "drop the returned value outside any lock"]
    pub fn set(&self, key: K, value: V, ttl: Ttl, trash: &mut Vec<V>) -> Option<V> {
        self.set_weighted(key, value, ttl, 1, trash)
    }

    /// [`Cache::set`] of an entry weighing `weight` (see [`Cache::with_policy`]). An entry
    /// heavier than the bound is not stored: it is handed back (and an older entry of that
    /// key removed, to `trash`). When the weight bound is passed, expired entries go first,
    /// then the policy's victims (never the entry just set).
    #[must_use = "drop the returned value outside any lock"]
    pub fn set_weighted(
        &self,
        key: K,
        value: V,
        ttl: Ttl,
        weight: u64,
        trash: &mut Vec<V>,
    ) -> Option<V> {
        let life = match ttl {
            Ttl::Default => self.default_ttl,
            Ttl::Never => None,
            Ttl::For(d) => Some(crate::clock::to_nanos(d)),
        };
        let now = if life.is_some() || self.max_weight != u64::MAX {
            self.clock.now()
        } else {
            0
        };
        let expires = life.map_or(NEVER, |l| now.saturating_add(l).min(NEVER - 1));
        let h = Key::hash64(&key);
        let mut g = self.shard(h).locked();
        if weight > g.max_weight {
            if let Some(i) = g.find(h, &key) {
                trash.push(g.remove_at(i, h));
            }
            return Some(value);
        }
        let fifo = matches!(ttl, Ttl::Default);
        let expires = if fifo && expires != NEVER {
            g.queued_expiry(expires)
        } else {
            expires
        };
        if let Some(i) = g.find(h, &key) {
            let was_expiring = g.node(i).expires != NEVER;
            let n = g.node_mut(i);
            let old = std::mem::replace(&mut n.value, value);
            let was = std::mem::replace(&mut n.weight, weight);
            n.expires = expires;
            g.weight = g.weight - was + weight;
            match (was_expiring, expires != NEVER) {
                (false, true) => g.expiring += 1,
                (true, false) => g.expiring -= 1,
                _ => {}
            }
            if expires != NEVER {
                g.track(expires, i, fifo);
            }
            g.touch(i, h, false);
            let mut out = Some(old);
            self.shed_weight(&mut g, i, now, &mut out, trash);
            return out;
        }
        let mut out = None;
        if g.len >= g.cap {
            let now = if g.expiring > 0 { self.clock.now() } else { 0 };
            let (first, n) = g.drop_expired(now, trash);
            out = first;
            if n > 0 {
                if self.count {
                    g.expirations += n as u64;
                }
            } else if g.tiny.is_none() {
                // Nothing has expired, so the least recently used entry is live.
                let t = g.tails[Seg::Window as usize];
                let th = Key::hash64(&g.node(t).key);
                out = Some(g.remove_at(t, th));
                if self.count {
                    g.evictions += 1;
                }
            }
        }
        let i = g.alloc(Node {
            key,
            value,
            expires,
            weight,
            prev: NIL,
            next: NIL,
            seg: Seg::Window,
        });
        let Inner { table, slab, .. } = &mut *g;
        table.insert_unique(h, i, |&j| match &slab[j as usize] {
            Some(n) => Key::hash64(&n.key),
            None => 0,
        });
        g.len += 1;
        g.weight += weight;
        if expires != NEVER {
            g.expiring += 1;
            g.track(expires, i, fifo);
        }
        g.push_front(i, Seg::Window);
        if let Some(t) = &mut g.tiny {
            t.sketch.increment(h);
            let adj = t.climber.record(false);
            if adj != 0 {
                g.adjust_window(adj);
            }
            g.tiny_rebalance(i, &mut out, trash, self.count);
        }
        self.shed_weight(&mut g, i, now, &mut out, trash);
        out
    }

    /// While shard `g` weighs more than its bound: drop expired entries (at `now`), then
    /// evict the policy's victims, never slot `keep`.
    fn shed_weight(
        &self,
        g: &mut Inner<K, V>,
        keep: u32,
        now: Nanos,
        out: &mut Option<V>,
        trash: &mut Vec<V>,
    ) {
        if g.weight <= g.max_weight {
            return;
        }
        if g.expiring > 0 {
            let (first, n) = g.drop_expired(now, trash);
            if let Some(v) = first {
                if out.is_none() {
                    *out = Some(v);
                } else {
                    trash.push(v);
                }
            }
            if self.count {
                g.expirations += n as u64;
            }
        }
        while g.weight > g.max_weight {
            let v = g.victim(keep);
            if v == NIL {
                break;
            }
            g.evict_at(v, out, trash, self.count);
        }
    }

    /// Remove `q`; true if an entry (live or expired) was there. Its value goes to `trash`.
    pub fn remove<Q: Query<K> + ?Sized>(&self, q: &Q, trash: &mut Vec<V>) -> bool {
        let h = q.hash64();
        let mut g = self.shard(h).locked();
        match g.find(h, q) {
            Some(i) => {
                let e = g.node(i).expires;
                let live = e == NEVER || e > self.clock.now();
                trash.push(g.remove_at(i, h));
                if !live && self.count {
                    g.expirations += 1;
                }
                live
            }
            None => false,
        }
    }

    /// Remove every entry; the values go to `trash`. Counters are kept.
    pub fn clear(&self, trash: &mut Vec<V>) {
        for s in self.shards.iter() {
            let mut g = s.locked();
            let slab = std::mem::take(&mut g.slab);
            g.table = HashTable::new();
            g.free = Vec::new();
            g.heads = [NIL; 3];
            g.tails = [NIL; 3];
            g.lens = [0; 3];
            g.len = 0;
            g.weight = 0;
            g.expiring = 0;
            g.fifo = VecDeque::new();
            g.by_expiry = BinaryHeap::new();
            g.tracking = false;
            drop(g);
            trash.extend(slab.into_iter().flatten().map(|n| n.value));
        }
    }

    /// Entries held (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.1.len.load(Relaxed)).sum()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the counters are kept (`enable_stats`).
    pub fn counting(&self) -> bool {
        self.count
    }

    /// Count a hit decided outside the store (e.g. a caller served by an in-flight call).
    pub fn note_hit(&self) {
        if self.count {
            self.noted_hits.fetch_add(1, Relaxed);
        }
    }

    /// Count a miss decided outside the store.
    pub fn note_miss(&self) {
        if self.count {
            self.noted_misses.fetch_add(1, Relaxed);
        }
    }

    /// Take back one miss noted with [`Cache::note_miss`] (a miss that turned out to be a hit
    /// of another tier). Never goes below zero.
    pub fn unnote_miss(&self) {
        if self.count {
            let _ = self
                .noted_misses
                .fetch_update(Relaxed, Relaxed, |m| m.checked_sub(1));
        }
    }

    /// The counters and the size. Reads atomics only (no shard lock): each figure is exact
    /// as of the last operation on its shard; shards are read one after the other.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            hits: self.noted_hits.load(Relaxed),
            misses: self.noted_misses.load(Relaxed),
            ..Stats::default()
        };
        for sh in self.shards.iter() {
            let p = &sh.1;
            s.hits += p.hits.load(Relaxed);
            s.misses += p.misses.load(Relaxed);
            s.evictions += p.evictions.load(Relaxed);
            s.expirations += p.expirations.load(Relaxed);
            s.size += p.len.load(Relaxed);
            s.weight += p.weight.load(Relaxed);
        }
        s
    }

    /// Remove every expired entry. The lock is taken per chunk of slots, and `sink` receives
    /// each chunk's values after the lock is released. Returns how many were removed.
    pub fn sweep(&self, mut sink: impl FnMut(Vec<V>)) -> usize {
        let now = self.clock.now();
        let mut total = 0;
        for s in self.shards.iter() {
            let mut start = 0usize;
            loop {
                let mut g = s.locked();
                if g.expiring == 0 || start >= g.slab.len() {
                    break;
                }
                let end = (start + SWEEP_CHUNK).min(g.slab.len());
                let mut out = Vec::new();
                for i in start..end {
                    let due = match &g.slab[i] {
                        Some(n) if n.expires <= now => Some(Key::hash64(&n.key)),
                        _ => None,
                    };
                    if let Some(h) = due {
                        // `i < slab.len() <= u32::MAX - 1`.
                        out.push(g.remove_at(i as u32, h));
                    }
                }
                if self.count {
                    g.expirations += out.len() as u64;
                }
                drop(g);
                total += out.len();
                if !out.is_empty() {
                    sink(out);
                }
                start = end;
            }
        }
        total
    }

    /// Keys from least to most recently used in shard `s` (for tests).
    pub fn lru_order(&self, s: usize) -> Vec<K>
    where
        K: Clone,
    {
        let g = self.shards[s].0.lock();
        let mut out = Vec::with_capacity(g.len);
        let mut i = g.tails[Seg::Window as usize];
        while i != NIL {
            let n = g.node(i);
            out.push(n.key.clone());
            i = n.prev;
        }
        out
    }

    /// Keys of each list of shard `s` ([`Seg`] order), least recently used first, with the
    /// window's bound under W-TinyLFU (for tests).
    pub fn segments(&self, s: usize) -> ([Vec<K>; 3], Option<usize>)
    where
        K: Clone,
    {
        let g = self.shards[s].0.lock();
        let lists = [0usize, 1, 2].map(|l| {
            let mut out = Vec::new();
            let mut i = g.tails[l];
            while i != NIL {
                let n = g.node(i);
                out.push(n.key.clone());
                i = n.prev;
            }
            out
        });
        (lists, g.tiny.as_ref().map(|t| t.window_max))
    }

    /// Bytes of memory the store holds (slabs, tables, queues and sketches; not the keys'
    /// heap parts or what the values point to).
    pub fn memory_bytes(&self) -> usize {
        let mut b = std::mem::size_of_val(&*self.shards);
        for sh in self.shards.iter() {
            let g = sh.0.lock();
            b += g.slab.capacity() * std::mem::size_of::<Option<Node<K, V>>>();
            // hashbrown: one u32 and one control byte per bucket.
            b += g.table.capacity() * 8 / 7 * 5;
            b += g.free.capacity() * 4;
            b += g.fifo.capacity() * 16 + g.by_expiry.capacity() * 16;
            if let Some(t) = &g.tiny {
                b += t.sketch.words() * 8;
            }
        }
        b
    }

    /// Entries held in each shard (for tests and diagnostics).
    pub fn shard_lens(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.1.len.load(Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    type C = Cache<ByteKey, u64, Arc<ManualClock>>;

    fn k(s: &str) -> ByteKey {
        ByteKey::new(0, s.as_bytes())
    }
    fn q(s: &str) -> ByteKeyRef<'_> {
        ByteKeyRef {
            tag: 0,
            bytes: s.as_bytes(),
        }
    }
    fn new(max: usize, ttl: Option<Duration>) -> (C, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000));
        (Cache::new(max, ttl, true, clock.clone()).unwrap(), clock)
    }
    fn get(c: &C, key: &str) -> Option<u64> {
        let mut t = Vec::new();
        c.get(&q(key), |v| *v, &mut t, true)
    }
    fn set(c: &C, key: &str, v: u64) -> Vec<u64> {
        let mut t = Vec::new();
        let o = c.set(k(key), v, Ttl::Default, &mut t);
        t.extend(o);
        t
    }

    #[test]
    fn unnote_miss_takes_back_a_noted_miss_never_below_zero() {
        let (c, _) = new(4, None);
        c.note_miss();
        c.note_miss();
        c.unnote_miss();
        c.note_hit();
        assert_eq!((c.stats().hits, c.stats().misses), (1, 1));
        c.unnote_miss();
        c.unnote_miss();
        assert_eq!(c.stats().misses, 0);
    }

    #[test]
    fn byte_key_is_compact_and_round_trips() {
        assert!(std::mem::size_of::<ByteKey>() <= 24);
        for n in [0usize, 1, 20, 21, 22, 100] {
            let b = vec![7u8; n];
            let key = ByteKey::new(1, &b);
            assert_eq!(key.bytes(), &b[..]);
            assert_eq!(key.tag(), 1);
            let r = ByteKeyRef { tag: 1, bytes: &b };
            assert!(r.matches(&key));
            assert_eq!(Query::hash64(&r), Key::hash64(&key));
            assert!(
                !ByteKeyRef { tag: 2, bytes: &b }.matches(&key),
                "tags tell str from bytes"
            );
        }
    }

    #[test]
    fn lru_order_and_eviction() {
        let (c, _) = new(3, None);
        assert_eq!(c.shards(), 1);
        set(&c, "a", 1);
        set(&c, "b", 2);
        set(&c, "c", 3);
        assert_eq!(get(&c, "a"), Some(1)); // a becomes most recent
        assert_eq!(c.lru_order(0), vec![k("b"), k("c"), k("a")]);
        let evicted = set(&c, "d", 4);
        assert_eq!(evicted, vec![2], "b was least recently used");
        assert_eq!(get(&c, "b"), None);
        assert_eq!(c.lru_order(0), vec![k("c"), k("a"), k("d")]);
        // Replacing refreshes recency and hands back the old value.
        assert_eq!(set(&c, "c", 33), vec![3]);
        assert_eq!(c.lru_order(0), vec![k("a"), k("d"), k("c")]);
        // contains() does not touch.
        assert!(c.contains(&q("a")));
        assert_eq!(c.lru_order(0)[0], k("a"));
        let s = c.stats();
        assert_eq!(
            (s.hits, s.misses, s.evictions, s.expirations, s.size),
            (1, 1, 1, 0, 3)
        );
    }

    #[test]
    fn ttl_with_manual_clock() {
        let (c, clock) = new(10, Some(Duration::from_secs(10)));
        set(&c, "a", 1);
        clock.advance(Duration::from_secs(9));
        assert_eq!(get(&c, "a"), Some(1));
        clock.advance(Duration::from_secs(1));
        assert!(!c.contains(&q("a")), "expired exactly at the deadline");
        assert_eq!(get(&c, "a"), None);
        assert_eq!(c.len(), 0, "lazy expiry removed it");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.expirations), (1, 1, 1));
    }

    #[test]
    fn per_entry_ttl_overrides_the_default() {
        let (c, clock) = new(10, Some(Duration::from_secs(10)));
        let mut t = Vec::new();
        let o = c.set(k("short"), 1, Ttl::For(Duration::from_secs(1)), &mut t);
        t.extend(o);
        let o = c.set(k("never"), 2, Ttl::Never, &mut t);
        t.extend(o);
        let o = c.set(k("default"), 3, Ttl::Default, &mut t);
        t.extend(o);
        clock.advance(Duration::from_secs(2));
        assert_eq!(get(&c, "short"), None);
        assert_eq!(get(&c, "default"), Some(3));
        clock.advance(Duration::from_secs(1_000_000));
        assert_eq!(get(&c, "default"), None);
        assert_eq!(get(&c, "never"), Some(2));
        // Re-setting with a finite ttl makes a never-expiring entry expire.
        let o = c.set(k("never"), 4, Ttl::For(Duration::from_secs(1)), &mut t);
        t.extend(o);
        clock.advance(Duration::from_secs(1));
        assert_eq!(get(&c, "never"), None);
    }

    #[test]
    fn sweep_removes_only_expired() {
        let (c, clock) = new(20_000, Some(Duration::from_secs(5)));
        let mut t = Vec::new();
        for i in 0..10_000u64 {
            let ttl = if i % 2 == 0 { Ttl::Default } else { Ttl::Never };
            let o = c.set(k(&i.to_string()), i, ttl, &mut t);
            t.extend(o);
        }
        assert_eq!(c.sweep(|_| {}), 0);
        clock.advance(Duration::from_secs(5));
        let mut got = Vec::new();
        assert_eq!(c.sweep(|v| got.extend(v)), 5_000);
        assert_eq!(got.len(), 5_000);
        assert!(got.iter().all(|v| v % 2 == 0));
        assert_eq!(c.len(), 5_000);
        assert_eq!(c.stats().expirations, 5_000);
        assert_eq!(get(&c, "1"), Some(1));
    }

    #[test]
    fn expired_tail_counts_as_expiration_not_eviction() {
        let (c, clock) = new(2, None);
        let mut t = Vec::new();
        let o = c.set(k("a"), 1, Ttl::For(Duration::from_secs(1)), &mut t);
        t.extend(o);
        set(&c, "b", 2);
        clock.advance(Duration::from_secs(2));
        set(&c, "c", 3);
        let s = c.stats();
        assert_eq!((s.evictions, s.expirations, s.size), (0, 1, 2));
    }

    #[test]
    fn a_full_insert_drops_an_expired_entry_before_a_live_one() {
        // The case: the LRU tail `a` is live, `b` (not the tail) has expired.
        let (c, clock) = new(2, None);
        let mut t = Vec::new();
        set(&c, "a", 1);
        let o = c.set(k("b"), 2, Ttl::For(Duration::from_millis(50)), &mut t);
        t.extend(o);
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            set(&c, "c", 3),
            vec![2],
            "the expired b leaves, not the live a"
        );
        assert_eq!(get(&c, "a"), Some(1));
        assert_eq!(c.lru_order(0), vec![k("c"), k("a")]);
        let s = c.stats();
        assert_eq!((s.evictions, s.expirations), (0, 1));
        // Nothing expired now: the least recently used live entry goes.
        assert_eq!(set(&c, "d", 4), vec![3]);
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn a_full_insert_drops_every_expired_entry_up_to_the_bound() {
        let n = 3 * EXPIRE_ON_INSERT;
        let (c, clock) = new(n, Some(Duration::from_secs(10)));
        let mut t = Vec::new();
        for i in 0..n {
            let ttl = if i % 3 == 0 { Ttl::Never } else { Ttl::Default };
            let o = c.set(k(&i.to_string()), i as u64, ttl, &mut t);
            t.extend(o);
        }
        // Touch the never-expiring ones so expired entries sit in the middle of the order.
        for i in (0..n).step_by(3) {
            assert_eq!(get(&c, &i.to_string()), Some(i as u64));
        }
        clock.advance(Duration::from_secs(10));
        let out = set(&c, "new", 0);
        assert_eq!(out.len(), EXPIRE_ON_INSERT);
        assert!(out.iter().all(|v| v % 3 != 0), "only expired entries left");
        assert_eq!(c.stats().evictions, 0);
        // The next inserts find room, then drop the rest of the expired ones.
        let mut dropped = 0;
        for i in 0..n {
            let out = set(&c, &format!("x{i}"), 0);
            dropped += out.len();
            if c.stats().expirations as usize == 2 * n / 3 {
                break;
            }
        }
        assert!(dropped > 0);
        assert_eq!(c.stats().expirations as usize, 2 * n / 3);
        assert_eq!(c.stats().evictions, 0);
        for i in (0..n).step_by(3) {
            assert_eq!(
                get(&c, &i.to_string()),
                Some(i as u64),
                "live entry {i} kept"
            );
        }
    }

    #[test]
    fn stats_and_len_take_no_shard_lock_and_match_a_locked_count() {
        let (c, clock) = new(4, Some(Duration::from_secs(10)));
        for i in 0..6 {
            set(&c, &i.to_string(), i);
        }
        let mut t = Vec::new();
        assert!(c.get(&q("5"), |v| *v, &mut t, true).is_some());
        assert!(c.get(&q("0"), |v| *v, &mut t, true).is_none());
        clock.advance(Duration::from_secs(11));
        assert!(c.get(&q("4"), |v| *v, &mut t, true).is_none()); // expired on read
        let c = Arc::new(c);
        let locked = {
            let g = c.shards[0].0.lock();
            (
                g.hits,
                g.misses,
                g.evictions,
                g.expirations,
                g.len,
                g.weight,
            )
        };
        // Read from another thread while this one holds the only shard's lock: a reader that
        // locked would never answer.
        let guard = c.shards[0].0.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = Arc::clone(&c);
        std::thread::spawn(move || {
            let _ = tx.send((c2.stats(), c2.len()));
        });
        let (s, len) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stats() waited for the shard lock");
        drop(guard);
        assert_eq!(
            (
                s.hits,
                s.misses,
                s.evictions,
                s.expirations,
                s.size,
                s.weight
            ),
            locked
        );
        assert_eq!((s.hits, s.misses, s.evictions, s.expirations), (1, 2, 2, 1));
        assert_eq!((len, s.size), (3, 3));
    }

    #[test]
    fn the_expiry_heap_survives_replaces_removes_and_compaction() {
        let (c, clock) = new(8, Some(Duration::from_secs(100)));
        for i in 0..8 {
            set(&c, &i.to_string(), i);
        }
        // Fill-up insert: builds the heap; nothing expired, so the LRU entry goes.
        assert_eq!(set(&c, "8", 8), vec![0]);
        // Many replaces: stale heap items pile up and get compacted.
        for round in 0..200u64 {
            clock.advance(Duration::from_millis(10));
            set(&c, &(1 + round % 8).to_string(), round);
        }
        {
            let g = c.shards[0].0.lock();
            assert!(g.tracking);
            assert!(g.fifo.len() + g.by_expiry.len() <= 2 * g.expiring + HEAP_SLACK);
        }
        // One entry made never-expiring, one removed, one expiring much later.
        let mut t = Vec::new();
        let o = c.set(k("3"), 33, Ttl::Never, &mut t);
        t.extend(o);
        assert!(c.remove(&q("4"), &mut t));
        let o = c.set(k("5"), 55, Ttl::For(Duration::from_secs(1000)), &mut t);
        t.extend(o);
        clock.advance(Duration::from_secs(100));
        // Everything with the default TTL has expired now; 3 and 5 are live.
        assert_eq!(
            set(&c, "a", 0),
            Vec::<u64>::new(),
            "room left by the removal"
        );
        let out = set(&c, "b", 0);
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(get(&c, "a"), Some(0));
        assert_eq!(get(&c, "3"), Some(33));
        assert_eq!(get(&c, "5"), Some(55));
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn bound_holds_under_many_inserts() {
        for max in [1usize, 7, 8191, 8192, 50_000, 100_000] {
            let (c, _) = new(max, None);
            let mut t = Vec::new();
            for i in 0..(3 * max as u64 + 100) {
                let o = c.set(k(&format!("key-{i}")), i, Ttl::Default, &mut t);
                t.extend(o);
                t.clear();
            }
            assert!(c.len() <= max, "max={max} len={}", c.len());
            let s = c.stats();
            assert_eq!(s.size as u64 + s.evictions, 3 * max as u64 + 100);
            // Recent keys survive.
            let last = 3 * max as u64 + 99;
            assert_eq!(get(&c, &format!("key-{last}")), Some(last));
        }
    }

    #[test]
    fn shard_selection_and_distribution() {
        assert_eq!(shard_count(1), 1);
        assert_eq!(shard_count(2 * SHARD_MIN - 1), 1);
        assert_eq!(shard_count(2 * SHARD_MIN), 2);
        assert_eq!(shard_count(5 * SHARD_MIN), 4);
        assert_eq!(shard_count(usize::MAX / 2), MAX_SHARDS);
        let (c, _) = new(1_000_000, None);
        assert_eq!(c.shards(), MAX_SHARDS);
        let mut t = Vec::new();
        for i in 0..160_000u64 {
            let o = c.set(k(&format!("k{i}")), i, Ttl::Default, &mut t);
            t.extend(o);
        }
        for n in c.shard_lens() {
            assert!((9_000..11_000).contains(&n), "uneven shard: {n}");
        }
        // Capacities add up to max_size exactly.
        let d = Cache::<[u8; 32], u8, Arc<ManualClock>>::new(
            100_003,
            None,
            true,
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        let caps: usize = d.shards.iter().map(|s| s.0.lock().cap).sum();
        assert_eq!(caps, 100_003);
        // Digest keys: the shard comes from the digest's bits.
        let mut dig = [0u8; 32];
        dig[4] = 5; // bits 32..40 of the little-endian first word
        assert_eq!(d.shard_of(Key::hash64(&dig)), 5 & (d.shards() - 1));
    }

    #[test]
    fn remove_clear_and_reuse_slots() {
        let (c, _) = new(4, None);
        set(&c, "a", 1);
        set(&c, "b", 2);
        let mut t = Vec::new();
        assert!(c.remove(&q("a"), &mut t));
        assert!(!c.remove(&q("a"), &mut t));
        assert_eq!(t, vec![1]);
        set(&c, "c", 3);
        set(&c, "d", 4);
        set(&c, "e", 5);
        assert_eq!(c.len(), 4);
        assert_eq!(c.lru_order(0), vec![k("b"), k("c"), k("d"), k("e")]);
        let mut t = Vec::new();
        c.clear(&mut t);
        t.sort_unstable();
        assert_eq!(t, vec![2, 3, 4, 5]);
        assert!(c.is_empty());
        set(&c, "f", 6);
        assert_eq!(get(&c, "f"), Some(6));
    }

    #[test]
    fn counters_off() {
        let clock = Arc::new(ManualClock::new(0));
        let c: C = Cache::new(1, None, false, clock).unwrap();
        set(&c, "a", 1);
        set(&c, "b", 2);
        get(&c, "b");
        get(&c, "zz");
        c.note_hit();
        assert_eq!(
            c.stats(),
            Stats {
                size: 1,
                weight: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn config_errors() {
        let clock = Arc::new(ManualClock::new(0));
        assert_eq!(
            C::new(0, None, true, clock.clone()).err(),
            Some(ConfigError::ZeroSize)
        );
        assert_eq!(
            C::new(usize::MAX, None, true, clock).err(),
            Some(ConfigError::TooLarge)
        );
    }

    fn tiny(max: usize, mw: Option<u64>, ttl: Option<Duration>) -> (C, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000));
        let c = Cache::with_policy(max, ttl, true, clock.clone(), Policy::TinyLfu, mw).unwrap();
        (c, clock)
    }

    #[test]
    fn tinylfu_keeps_a_hot_set_through_a_scan() {
        let (c, _) = tiny(100, None, None);
        for _ in 0..20 {
            for i in 0..50 {
                if get(&c, &format!("hot{i}")).is_none() {
                    set(&c, &format!("hot{i}"), i);
                }
            }
        }
        for i in 0..2_000 {
            set(&c, &format!("scan{i}"), i);
        }
        let kept = (0..50)
            .filter(|i| c.contains(&q(&format!("hot{i}"))))
            .count();
        assert!(kept >= 45, "kept {kept} of 50");
        assert!(c.len() <= 100);
        // LRU keeps none of them.
        let (l, _) = new(100, None);
        for i in 0..50 {
            set(&l, &format!("hot{i}"), i);
        }
        for i in 0..2_000 {
            set(&l, &format!("scan{i}"), i);
        }
        assert_eq!(
            (0..50)
                .filter(|i| l.contains(&q(&format!("hot{i}"))))
                .count(),
            0
        );
    }

    #[test]
    fn tinylfu_drops_an_expired_entry_before_a_live_one() {
        let (c, clock) = tiny(3, None, None);
        let mut t = Vec::new();
        set(&c, "a", 1);
        let o = c.set(k("b"), 2, Ttl::For(Duration::from_millis(50)), &mut t);
        t.extend(o);
        set(&c, "c", 3);
        for _ in 0..5 {
            get(&c, "a");
            get(&c, "c");
        }
        clock.advance(Duration::from_millis(100));
        assert_eq!(set(&c, "d", 4), vec![2], "the expired b leaves");
        let s = c.stats();
        assert_eq!((s.evictions, s.expirations, s.size), (0, 1, 3));
        assert_eq!(get(&c, "a"), Some(1));
    }

    #[test]
    fn weight_bound_and_an_entry_too_heavy_to_store() {
        for policy in [Policy::Lru, Policy::TinyLfu] {
            let clock = Arc::new(ManualClock::new(1_000));
            let c: C = Cache::with_policy(100, None, true, clock, policy, Some(10)).unwrap();
            let mut t = Vec::new();
            for i in 0..5u64 {
                let o = c.set_weighted(k(&i.to_string()), i, Ttl::Default, 3, &mut t);
                t.extend(o);
                assert!(c.stats().weight <= 10, "{policy:?}");
            }
            assert_eq!(c.stats().weight, 9);
            assert_eq!(c.len(), 3);
            // Heavier than the bound: handed back, not stored, and the older value gone.
            let o = c.set_weighted(k("4"), 99, Ttl::Default, 11, &mut t);
            assert_eq!(o, Some(99));
            assert_eq!(get(&c, "4"), None, "{policy:?}");
            assert_eq!(c.stats().weight, 6);
            // A replace that grows the weight evicts others, never itself.
            let o = c.set_weighted(k("3"), 33, Ttl::Default, 10, &mut t);
            t.extend(o);
            assert_eq!(get(&c, "3"), Some(33));
            assert_eq!((c.len(), c.stats().weight), (1, 10));
            assert_eq!(c.max_weight(), Some(10));
        }
        let clock = Arc::new(ManualClock::new(0));
        assert_eq!(
            C::with_policy(1, None, true, clock, Policy::Lru, Some(0)).err(),
            Some(ConfigError::ZeroWeight)
        );
    }

    #[test]
    fn concurrent_tinylfu_keeps_both_bounds() {
        for mw in [None, Some(5_000)] {
            let (c, _) = tiny(20_000, mw, None);
            assert!(c.shards() > 1 || mw.is_some());
            let c = Arc::new(c);
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let mut tr = Vec::new();
                        for i in 0..20_000u64 {
                            let key = k(&format!("{}", (i * 7 + t) % 30_000));
                            let o = c.set_weighted(key, i, Ttl::Default, i % 4, &mut tr);
                            tr.extend(o);
                            let _ = c.get(&q(&format!("{}", i % 3_000)), |v| *v, &mut tr, true);
                            tr.clear();
                            if i % 1000 == 0 {
                                let s = c.stats();
                                assert!(s.size <= 20_000);
                                assert!(mw.is_none_or(|m| s.weight <= m));
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let s = c.stats();
            assert!(s.size <= 20_000);
            assert!(mw.is_none_or(|m| s.weight <= m), "{} > {mw:?}", s.weight);
        }
    }

    #[test]
    fn concurrent_use_keeps_the_bound() {
        let (c, _) = new(10_000, None);
        let c = Arc::new(c);
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut tr = Vec::new();
                    for i in 0..20_000u64 {
                        let o = c.set(k(&format!("{t}-{i}")), i, Ttl::Default, &mut tr);
                        tr.extend(o);
                        let _ = c.get(&q(&format!("{t}-{}", i / 2)), |v| *v, &mut tr, true);
                        tr.clear();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(c.len() <= 10_000);
    }
}
