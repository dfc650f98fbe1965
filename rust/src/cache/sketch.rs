//! W-TinyLFU pieces of the cache core: a count-min frequency sketch with 4-bit counters and
//! periodic halving ([`Sketch`]), and the hill climber that sizes the admission window
//! ([`Climber`], as Caffeine's).
//!
//! # The sketch
//!
//! `u64` words of sixteen 4-bit counters, one word per expected entry rounded up to a power of
//! two (8 bytes per entry), in blocks of eight words (one cache line), as Caffeine's newer
//! sketch: an item's four counters lie in one block, one per pair of words, so an access
//! touches one cache line; its estimate is their minimum. Counters saturate
//! at 15. After `10 * capacity` increments every counter is halved, so the sketch follows a
//! changing popularity (the "reset" of TinyLFU).
//!
//! No doorkeeper (Caffeine has none either): with 4-bit counters and halving a one-hit key
//! costs four nibbles that age out; a Bloom filter in front would add a second table to every
//! access. It was not built, so whether it pays on these traces is not measured.

const RESET_MASK: u64 = 0x7777_7777_7777_7777;
const ONE_MASK: u64 = 0x1111_1111_1111_1111;

/// Eight words, one cache line: an item's four counters all live in one block.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

/// A count-min sketch of 4-bit counters with periodic halving.
pub struct Sketch {
    table: Vec<Block>,
    mask: u64,
    size: u64,
    sample: u64,
}

#[inline]
fn spread(h: u64) -> u64 {
    // Re-mix (keys of digests carry raw digest bits, which are uniform, but the byte keys'
    // hash may share low bits with the table index).
    let x = (h ^ (h >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    x ^ (x >> 27)
}

impl Sketch {
    /// A sketch for about `capacity` distinct hot items.
    pub fn new(capacity: usize) -> Self {
        let words = capacity.clamp(8, 1 << 26).next_power_of_two();
        let n = words / 8;
        Sketch {
            table: vec![Block::default(); n],
            mask: (n - 1) as u64,
            size: 0,
            sample: 10 * capacity.max(8) as u64,
        }
    }

    /// Words held (for the memory figure).
    pub fn words(&self) -> usize {
        self.table.len() * 8
    }

    /// The block of `x`, and for each row the word in it and the nibble's shift (as Caffeine:
    /// row `i` uses words `2i` and `2i + 1` of the block).
    #[inline]
    fn slots(&self, x: u64) -> (usize, [(usize, u32); 4]) {
        let block = (x & self.mask) as usize;
        let c = (x >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24;
        let mut out = [(0usize, 0u32); 4];
        for (i, o) in out.iter_mut().enumerate() {
            let h = c >> (i << 3);
            *o = (((h & 1) as usize) + 2 * i, (((h >> 1) & 15) as u32) << 2);
        }
        (block, out)
    }

    /// The estimated frequency of hash `h`, 0..=15.
    #[inline]
    pub fn frequency(&self, h: u64) -> u8 {
        let (b, slots) = self.slots(spread(h));
        let block = &self.table[b].0;
        let mut f = 15u64;
        for (w, off) in slots {
            f = f.min((block[w] >> off) & 0xf);
        }
        f as u8
    }

    /// Count one access of hash `h`; halves every counter once per sample period.
    #[inline]
    pub fn increment(&mut self, h: u64) {
        let (b, slots) = self.slots(spread(h));
        let block = &mut self.table[b].0;
        let mut added = false;
        for (w, off) in slots {
            let m = 0xfu64 << off;
            if block[w] & m != m {
                block[w] += 1u64 << off;
                added = true;
            }
        }
        if added {
            self.size += 1;
            if self.size >= self.sample {
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        let mut odd = 0u64;
        for b in self.table.iter_mut() {
            for w in b.0.iter_mut() {
                odd += u64::from((*w & ONE_MASK).count_ones());
                *w = (*w >> 1) & RESET_MASK;
            }
        }
        self.size = (self.size - (odd >> 2)) >> 1;
    }

    /// Forget everything (after `clear`).
    pub fn clear(&mut self) {
        self.table.iter_mut().for_each(|b| *b = Block::default());
        self.size = 0;
    }
}

/// Caffeine's hill climber: every sample of `SAMPLE * capacity` accesses, move the window size one
/// step in the direction that raised the hit ratio, with a decaying step that restarts when
/// the hit ratio jumps (the trace changed).
pub struct Climber {
    hits: u64,
    misses: u64,
    sample: u64,
    previous: f64,
    step: f64,
    cap: f64,
}

/// Accesses per sample, per entry of capacity: half of Caffeine's 10, so the window adapts
/// twice as fast (benches/cache_policy.py, 1M requests: the LRU-friendly trace 0.690 -> 0.696
/// of LRU's 0.700, Zipf s = 1 unchanged at 0.599; the scan keeps 98 % of the hot set
/// instead of 99.6 %).
const SAMPLE: u64 = 5;
/// Hit ratio change that restarts the step size.
const RESTART: f64 = 0.05;
/// Step as a fraction of the capacity.
const STEP: f64 = 0.0625;
/// Step decay per sample.
const DECAY: f64 = 0.98;

impl Climber {
    /// A climber for a shard of `cap` entries.
    pub fn new(cap: usize) -> Self {
        let c = cap as f64;
        Climber {
            hits: 0,
            misses: 0,
            sample: SAMPLE * cap.max(1) as u64,
            previous: 0.0,
            step: -STEP * c,
            cap: c,
        }
    }

    /// Note a hit (`true`) or a miss; at the end of a sample, the window change to make
    /// (entries: positive grows the window).
    #[inline]
    pub fn record(&mut self, hit: bool) -> i64 {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        let n = self.hits + self.misses;
        if n < self.sample {
            return 0;
        }
        let rate = self.hits as f64 / n as f64;
        let change = rate - self.previous;
        let amount = if change >= 0.0 { self.step } else { -self.step };
        self.step = if change.abs() >= RESTART {
            STEP * self.cap * amount.signum()
        } else {
            DECAY * amount
        };
        self.previous = rate;
        self.hits = 0;
        self.misses = 0;
        amount as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_halve() {
        let mut s = Sketch::new(64);
        for _ in 0..20 {
            s.increment(42);
        }
        assert_eq!(s.frequency(42), 15);
        assert!(s.frequency(7) <= 1);
        s.reset();
        assert_eq!(s.frequency(42), 7);
    }

    #[test]
    fn periodic_reset_ages_counts() {
        let mut s = Sketch::new(64);
        for _ in 0..15 {
            s.increment(1);
        }
        assert_eq!(s.frequency(1), 15);
        let mut i = 100u64;
        while s.size < s.sample - 1 {
            s.increment(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            i += 1;
        }
        s.increment(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1);
        assert!(s.size < s.sample / 2 + 1, "halved: {}", s.size);
        assert!(s.frequency(1) <= 8, "{}", s.frequency(1));
    }

    #[test]
    fn frequency_orders_popularity() {
        let mut s = Sketch::new(1024);
        for k in 0..500u64 {
            for _ in 0..(k % 8) {
                s.increment(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
        }
        let hot = s.frequency(7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let cold = s.frequency(8u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert!(hot >= 7 && cold <= 2, "{hot} {cold}");
    }

    #[test]
    fn climber_moves_toward_better() {
        let mut c = Climber::new(100);
        let mut total = 0;
        for i in 0..1000 {
            total += c.record(i % 2 == 0);
        }
        assert_ne!(total, 0, "one sample closed");
    }
}
