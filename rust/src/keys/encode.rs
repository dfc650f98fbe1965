//! The PyO3-free half of the key encoder: a writer of the canonical byte encoding described in
//! `docs/keys.md`, hashed with SHA-256. It knows tags, length prefixes and the ordering rule for
//! unordered containers; the Python walker (`super::walk`) decides what to write.
//!
//! Everything is written into one reusable buffer (no per-node allocation). Unordered containers
//! (dict, set) write their items into the buffer, then sort the item byte ranges and rewrite the
//! region in place. Large payloads outside any unordered container are streamed straight into
//! the hasher instead of being copied.

use sha2::{Digest, Sha256};

/// The version tag, hashed before the encoding: a change of encoding changes every key.
pub const VERSION: &[u8; 16] = b"agentperf-key-v1";

/// One-byte type tags (ASCII letters, for readable dumps).
pub mod tag {
    /// `None`.
    pub const NONE: u8 = b'N';
    /// `False`.
    pub const FALSE: u8 = b'F';
    /// `True`.
    pub const TRUE: u8 = b'T';
    /// `int`: length + minimal two's-complement little-endian bytes.
    pub const INT: u8 = b'I';
    /// `float`: 8 bytes, IEEE-754 binary64 bits, little-endian.
    pub const FLOAT: u8 = b'D';
    /// `str`: length + UTF-8 (surrogates as by `'surrogatepass'`).
    pub const STR: u8 = b'S';
    /// `bytes` / `bytearray`: length + the bytes.
    pub const BYTES: u8 = b'B';
    /// `list`: count + items in order.
    pub const LIST: u8 = b'L';
    /// `tuple`: count + items in order.
    pub const TUPLE: u8 = b'U';
    /// `dict`: count + entries (key then value), sorted by their encodings.
    pub const DICT: u8 = b'M';
    /// `set` / `frozenset`: count + members, sorted by their encodings.
    pub const SET: u8 = b'E';
    /// Dataclass instance: class name + field count + (field name, value) in declaration order.
    pub const DATACLASS: u8 = b'C';
    /// Enum member: class name + member name.
    pub const ENUM: u8 = b'K';
    /// Enum member without a name (a Python 3.10 composite `Flag`): class name + value.
    pub const ENUM_VALUE: u8 = b'Q';
    /// Object with `model_dump()`: class name + the dumped value.
    pub const MODEL: u8 = b'P';
    /// Object with `model_dump()` whose Python-mode dump holds a value of no supported type:
    /// class name + `model_dump(mode="json")`.
    pub const MODEL_JSON: u8 = b'J';
    /// `datetime.date`: year (2 bytes), month, day.
    pub const DATE: u8 = b'Y';
    /// `datetime.time`: hour, minute, second, microsecond (4 bytes), fold, then `utcoffset()`
    /// (`N` or a timedelta).
    pub const TIME: u8 = b'H';
    /// `datetime.datetime`: the date's 4 bytes and the time's 8, then `utcoffset()`.
    pub const DATETIME: u8 = b'W';
    /// `datetime.timedelta`: days (4 bytes, signed), seconds (4), microseconds (4).
    pub const TIMEDELTA: u8 = b'V';
    /// `uuid.UUID`: its 16 bytes (`uuid.bytes`, big-endian).
    pub const UUID: u8 = b'G';
    /// `decimal.Decimal`: sign byte, length + ASCII digits, then the exponent: an int, or one
    /// byte `F` (infinity), `n` (NaN), `N` (signalling NaN), as `as_tuple()` gives it.
    pub const DECIMAL: u8 = b'X';
}

/// A `datetime.time`'s fields (also the time part of a `datetime.datetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeFields {
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0..=999_999.
    pub microsecond: u32,
    /// 0 or 1 (PEP 495).
    pub fold: u8,
}

/// A `datetime.timedelta`'s normalised fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    /// -999_999_999..=999_999_999.
    pub days: i32,
    /// 0..=86_399.
    pub seconds: u32,
    /// 0..=999_999.
    pub microseconds: u32,
}

/// A `decimal.Decimal`'s exponent as `as_tuple()` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalExp {
    /// A finite number's exponent.
    Finite(i64),
    /// `'F'`: infinity.
    Infinity,
    /// `'n'`: a quiet NaN.
    NaN,
    /// `'N'`: a signalling NaN.
    SNaN,
}

/// The canonical bit pattern every NaN encodes as.
pub const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Payloads at least this long are hashed in place rather than copied, when order allows.
const STREAM_THRESHOLD: usize = 512;
/// A buffer grown past this is shrunk back after use, so one huge key holds no memory.
const KEEP_CAPACITY: usize = 1 << 20;

/// A point the writer can go back to (see [`Writer::mark`]).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Mark {
    len: usize,
    ranges: usize,
    open: usize,
}

/// An open unordered container (see [`Writer::begin_unordered`]).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Group {
    start: usize,
    ranges_base: usize,
}

/// Writes one key encoding and hashes it. Reusable: [`Writer::reset`] starts a new key.
#[derive(Clone)]
pub struct Writer {
    buf: Vec<u8>,
    hasher: Sha256,
    /// Number of open unordered groups; while > 0 every byte must stay in `buf`.
    open: usize,
    /// Items of the open groups: (first 8 bytes as a big-endian number, start, end).
    ranges: Vec<(u64, usize, usize)>,
    scratch: Vec<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// A writer ready for a new key.
    pub fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(256),
            hasher: Sha256::new_with_prefix(VERSION),
            open: 0,
            ranges: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Forgets any partial key (e.g. after an error) and starts a new one.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.ranges.clear();
        self.open = 0;
        self.hasher = Sha256::new_with_prefix(VERSION);
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf.shrink_to(KEEP_CAPACITY / 16);
        }
        if self.scratch.capacity() > KEEP_CAPACITY {
            self.scratch = Vec::new();
        }
    }

    /// A one-byte tag.
    #[inline]
    pub fn tag(&mut self, t: u8) {
        self.buf.push(t);
    }

    /// A length or count: unsigned LEB128 (7 bits a byte, low groups first, the high bit set on
    /// every byte but the last; minimal, so 0..=127 is one byte).
    #[inline]
    pub fn count(&mut self, n: usize) {
        let mut n = n as u64;
        while n >= 0x80 {
            self.buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    /// A length-prefixed byte string without a tag (class, field and member names).
    #[inline]
    pub fn name(&mut self, b: &[u8]) {
        self.field(None, b);
    }

    /// An optional tag, the length of `b`, then `b`. Short fields (the common case: keys and
    /// small values) are copied without a call to `memcpy`.
    #[inline]
    fn field(&mut self, t: Option<u8>, b: &[u8]) {
        let n = b.len();
        if n < 128 {
            self.buf.reserve(2 + n);
            let len = self.buf.len();
            // SAFETY: 2 + n bytes are reserved past `len`; every byte up to the new length is
            // written before `set_len`.
            unsafe {
                let mut p = self.buf.as_mut_ptr().add(len);
                if let Some(t) = t {
                    *p = t;
                    p = p.add(1);
                }
                *p = n as u8;
                copy_short(b, p.add(1));
                self.buf.set_len(len + usize::from(t.is_some()) + 1 + n);
            }
            return;
        }
        if let Some(t) = t {
            self.tag(t);
        }
        self.count(n);
        if self.open == 0 && n >= STREAM_THRESHOLD {
            self.hasher.update(&self.buf);
            self.buf.clear();
            self.hasher.update(b);
        } else {
            self.buf.extend_from_slice(b);
        }
    }

    /// `None`.
    #[inline]
    pub fn none(&mut self) {
        self.tag(tag::NONE);
    }

    /// A bool.
    #[inline]
    pub fn bool(&mut self, v: bool) {
        self.tag(if v { tag::TRUE } else { tag::FALSE });
    }

    /// An int that fits in i64 (same encoding as [`Writer::int_le`] of its minimal bytes).
    #[inline]
    pub fn int(&mut self, v: i64) {
        let m = if v < 0 { !v } else { v } as u64;
        let bits = 64 - m.leading_zeros() as usize; // 0..=63: the sign bit is extra
        let n = bits / 8 + 1;
        self.buf.reserve(2 + 8);
        let len = self.buf.len();
        // SAFETY: 10 bytes are reserved past `len`; the first 2 + n are written and kept.
        unsafe {
            let p = self.buf.as_mut_ptr().add(len);
            *p = tag::INT;
            *p.add(1) = n as u8;
            p.add(2).cast::<[u8; 8]>().write_unaligned(v.to_le_bytes());
            self.buf.set_len(len + 2 + n);
        }
    }

    /// An int given as its minimal two's-complement little-endian bytes (the caller ensures
    /// minimality: no redundant sign-extension byte, at least one byte).
    #[inline]
    pub fn int_le(&mut self, le: &[u8]) {
        self.field(Some(tag::INT), le);
    }

    /// A float by its bits; every NaN alike. `-0.0` and `0.0` differ (their bits do).
    #[inline]
    pub fn float(&mut self, v: f64) {
        let bits = if v.is_nan() {
            CANONICAL_NAN
        } else {
            v.to_bits()
        };
        self.tag(tag::FLOAT);
        self.buf.extend_from_slice(&bits.to_le_bytes());
    }

    /// A str, given as its UTF-8 (or `'surrogatepass'`) bytes.
    #[inline]
    pub fn str(&mut self, utf8: &[u8]) {
        self.field(Some(tag::STR), utf8);
    }

    /// A bytes-like value.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.field(Some(tag::BYTES), b);
    }

    /// A `datetime.date`.
    #[inline]
    pub fn date(&mut self, year: u16, month: u8, day: u8) {
        self.tag(tag::DATE);
        self.date_fields(year, month, day);
    }

    fn date_fields(&mut self, year: u16, month: u8, day: u8) {
        self.buf.extend_from_slice(&year.to_le_bytes());
        self.buf.extend_from_slice(&[month, day]);
    }

    fn time_fields(&mut self, t: TimeFields, offset: Option<Delta>) {
        self.buf.extend_from_slice(&[t.hour, t.minute, t.second]);
        self.buf.extend_from_slice(&t.microsecond.to_le_bytes());
        self.buf.push(t.fold);
        match offset {
            None => self.none(),
            Some(d) => self.timedelta(d),
        }
    }

    /// A `datetime.time`, with its `utcoffset()` (`None` when naive).
    #[inline]
    pub fn time(&mut self, t: TimeFields, offset: Option<Delta>) {
        self.tag(tag::TIME);
        self.time_fields(t, offset);
    }

    /// A `datetime.datetime`, with its `utcoffset()` (`None` when naive).
    #[inline]
    pub fn datetime(
        &mut self,
        year: u16,
        month: u8,
        day: u8,
        t: TimeFields,
        offset: Option<Delta>,
    ) {
        self.tag(tag::DATETIME);
        self.date_fields(year, month, day);
        self.time_fields(t, offset);
    }

    /// A `datetime.timedelta`.
    #[inline]
    pub fn timedelta(&mut self, d: Delta) {
        self.tag(tag::TIMEDELTA);
        self.buf.extend_from_slice(&d.days.to_le_bytes());
        self.buf.extend_from_slice(&d.seconds.to_le_bytes());
        self.buf.extend_from_slice(&d.microseconds.to_le_bytes());
    }

    /// A `uuid.UUID`, by its 16 big-endian bytes.
    #[inline]
    pub fn uuid(&mut self, b: [u8; 16]) {
        self.tag(tag::UUID);
        self.buf.extend_from_slice(&b);
    }

    /// A `decimal.Decimal` as `as_tuple()` gives it: sign (0 or 1), the coefficient's digits
    /// as ASCII, the exponent.
    pub fn decimal(&mut self, negative: bool, digits: &[u8], exp: DecimalExp) {
        self.tag(tag::DECIMAL);
        self.buf.push(u8::from(negative));
        self.name(digits);
        match exp {
            DecimalExp::Finite(e) => self.int(e),
            DecimalExp::Infinity => self.buf.push(b'F'),
            DecimalExp::NaN => self.buf.push(b'n'),
            DecimalExp::SNaN => self.buf.push(b'N'),
        }
    }

    /// A point to go back to with [`Writer::rewind`]. Until [`Writer::release`], nothing
    /// written is streamed into the hasher (it all stays rewindable).
    #[inline]
    pub fn mark(&mut self) -> Mark {
        let m = Mark {
            len: self.buf.len(),
            ranges: self.ranges.len(),
            open: self.open,
        };
        self.open += 1;
        m
    }

    /// Forgets everything written since `m` (which stays held: write again, then release).
    pub fn rewind(&mut self, m: Mark) {
        self.buf.truncate(m.len);
        self.ranges.truncate(m.ranges);
        self.open = m.open + 1;
    }

    /// Ends the hold of `m`: what was written since stays.
    #[inline]
    pub fn release(&mut self, m: Mark) {
        self.open = m.open;
    }

    /// Opens an unordered container: writes its tag and count; then each item goes between
    /// [`Writer::item_start`] and [`Writer::item_end`]; [`Writer::end_unordered`] sorts them.
    #[inline]
    pub fn begin_unordered(&mut self, t: u8, n: usize) -> Group {
        self.tag(t);
        self.count(n);
        self.open += 1;
        Group {
            start: self.buf.len(),
            ranges_base: self.ranges.len(),
        }
    }

    /// Marks the start of one item of an open unordered container.
    #[inline]
    pub fn item_start(&self) -> usize {
        self.buf.len()
    }

    /// Marks the end of the item started at `start`.
    #[inline]
    pub fn item_end(&mut self, start: usize) {
        let end = self.buf.len();
        let item = &self.buf[start..end];
        let mut head = [0u8; 8];
        if item.len() >= 8 {
            head.copy_from_slice(&item[..8]);
        } else {
            for (d, s) in head.iter_mut().zip(item) {
                *d = *s;
            }
        }
        self.ranges.push((u64::from_be_bytes(head), start, end));
    }

    /// Closes the group: its items are reordered by their bytes (lexicographic, unsigned).
    pub fn end_unordered(&mut self, g: Group) {
        self.open = self.open.saturating_sub(1);
        let items = &mut self.ranges[g.ranges_base..];
        if items.len() > 1 {
            let buf = &self.buf;
            // The zero-padded heads order items as their bytes do whenever the heads differ.
            items.sort_unstable_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| buf[a.1..a.2].cmp(&buf[b.1..b.2]))
            });
            if items.windows(2).any(|w| w[0].1 > w[1].1) {
                self.scratch.clear();
                for &(_, a, b) in items.iter() {
                    extend_short(&mut self.scratch, &buf[a..b]);
                }
                let end = g.start + self.scratch.len();
                self.buf[g.start..end].copy_from_slice(&self.scratch);
            }
        }
        self.ranges.truncate(g.ranges_base);
    }

    /// The SHA-256 of the version tag and everything written; then resets for the next key.
    pub fn finish(&mut self) -> [u8; 32] {
        let mut h = std::mem::replace(&mut self.hasher, Sha256::new_with_prefix(VERSION));
        h.update(&self.buf);
        self.buf.clear();
        self.ranges.clear();
        self.open = 0;
        if self.buf.capacity() > KEEP_CAPACITY || self.scratch.capacity() > KEEP_CAPACITY {
            self.reset();
        }
        h.finalize().into()
    }

    /// The bytes written so far that have not been streamed into the hasher (for tests).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// `v.extend_from_slice(b)`, without a `memcpy` call for short `b`.
#[inline]
fn extend_short(v: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 128 {
        v.reserve(b.len());
        let len = v.len();
        // SAFETY: b.len() bytes are reserved past `len` and all written before `set_len`.
        unsafe {
            copy_short(b, v.as_mut_ptr().add(len));
            v.set_len(len + b.len());
        }
    } else {
        v.extend_from_slice(b);
    }
}

/// Copies `src` (shorter than 128 bytes) to `dst` with a few unaligned loads and stores.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read is within `src` and every write within `dst[..n]`.
    unsafe {
        if n >= 16 {
            std::ptr::copy_nonoverlapping(s, dst, n);
        } else if n >= 8 {
            let a = s.cast::<u64>().read_unaligned();
            let b = s.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = s.cast::<u32>().read_unaligned();
            let b = s.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else {
            for i in 0..n {
                *dst.add(i) = *s.add(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: impl FnOnce(&mut Writer)) -> [u8; 32] {
        let mut w = Writer::new();
        f(&mut w);
        w.finish()
    }

    fn leb(n: usize) -> Vec<u8> {
        let mut w = Writer::new();
        w.count(n);
        w.pending().to_vec()
    }

    #[test]
    fn counts_are_minimal_leb128() {
        assert_eq!(leb(0), [0]);
        assert_eq!(leb(127), [0x7f]);
        assert_eq!(leb(128), [0x80, 0x01]);
        assert_eq!(leb(300), [0xac, 0x02]);
        assert_eq!(leb(16_383), [0xff, 0x7f]);
        assert_eq!(leb(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            leb(usize::MAX).len(),
            if usize::BITS == 64 { 10 } else { 5 }
        );
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(VERSION);
        h.update(b);
        h.finalize().into()
    }

    #[test]
    fn ints_are_minimal_twos_complement() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0]),
            (-1, &[0xff]),
            (127, &[0x7f]),
            (128, &[0x80, 0]),
            (-128, &[0x80]),
            (-129, &[0x7f, 0xff]),
            (255, &[0xff, 0]),
            (i64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            (i64::MIN, &[0, 0, 0, 0, 0, 0, 0, 0x80]),
        ];
        for &(v, le) in cases {
            let mut w = Writer::new();
            w.int(v);
            let mut want = vec![tag::INT];
            want.extend_from_slice(&leb(le.len()));
            want.extend_from_slice(le);
            assert_eq!(w.pending(), &want[..], "{v}");
            let mut w2 = Writer::new();
            w2.int_le(le);
            assert_eq!(w2.finish(), w.finish());
        }
    }

    #[test]
    fn floats_by_bits_nan_canonical() {
        assert_eq!(key(|w| w.float(f64::NAN)), key(|w| w.float(-f64::NAN)));
        assert_eq!(
            key(|w| w.float(f64::from_bits(0x7ff0_0000_0000_0001))),
            key(|w| w.float(f64::NAN))
        );
        assert_ne!(key(|w| w.float(0.0)), key(|w| w.float(-0.0)));
        let mut w = Writer::new();
        w.float(1.0);
        assert_eq!(w.pending(), &[b'D', 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    }

    #[test]
    fn length_prefixes_separate_strings() {
        let a = key(|w| {
            w.tag(tag::LIST);
            w.count(2);
            w.str(b"ab");
            w.str(b"c");
        });
        let b = key(|w| {
            w.tag(tag::LIST);
            w.count(2);
            w.str(b"a");
            w.str(b"bc");
        });
        assert_ne!(a, b);
    }

    fn set_of(w: &mut Writer, members: &[&[u8]]) {
        let g = w.begin_unordered(tag::SET, members.len());
        for m in members {
            let s = w.item_start();
            w.str(m);
            w.item_end(s);
        }
        w.end_unordered(g);
    }

    #[test]
    fn unordered_groups_sort_items_even_when_nested() {
        let a = key(|w| set_of(w, &[b"x", b"yy", b"a"]));
        let b = key(|w| set_of(w, &[b"a", b"x", b"yy"]));
        assert_eq!(a, b);
        let mut w = Writer::new();
        set_of(&mut w, &[b"b", b"a"]);
        let mut want = vec![b'E'];
        want.extend_from_slice(&leb(2));
        for s in [b"a", b"b"] {
            want.push(b'S');
            want.extend_from_slice(&leb(1));
            want.extend_from_slice(s);
        }
        assert_eq!(w.pending(), &want[..]);
        assert_eq!(w.finish(), sha(&want));

        let nested = |order: bool| {
            key(|w| {
                let g = w.begin_unordered(tag::SET, 2);
                let firsts: [&[&[u8]]; 2] = [&[b"q", b"p"], &[b"z"]];
                let items = if order {
                    [firsts[0], firsts[1]]
                } else {
                    [firsts[1], firsts[0]]
                };
                for m in items {
                    let s = w.item_start();
                    set_of(w, m);
                    w.item_end(s);
                }
                w.end_unordered(g);
            })
        };
        assert_eq!(nested(true), nested(false));
    }

    #[test]
    fn streaming_large_payloads_does_not_change_the_digest() {
        let big = vec![7u8; 10_000];
        let mut w = Writer::new();
        w.tag(tag::LIST);
        w.count(2);
        w.bytes(&big);
        w.bytes(b"x");
        let streamed = w.finish();
        let mut want = vec![b'L'];
        want.extend_from_slice(&leb(2));
        want.push(b'B');
        want.extend_from_slice(&leb(big.len()));
        want.extend_from_slice(&big);
        want.push(b'B');
        want.extend_from_slice(&leb(1));
        want.push(b'x');
        assert_eq!(streamed, sha(&want));
        // Inside an unordered group the payload is buffered, and the result is the same.
        let in_set = key(|w| {
            let g = w.begin_unordered(tag::SET, 1);
            let s = w.item_start();
            w.bytes(&big);
            w.item_end(s);
            w.end_unordered(g);
        });
        let mut want = vec![b'E'];
        want.extend_from_slice(&leb(1));
        want.push(b'B');
        want.extend_from_slice(&leb(big.len()));
        want.extend_from_slice(&big);
        assert_eq!(in_set, sha(&want));
    }

    #[test]
    fn short_and_long_fields_are_copied_exactly() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..=200 {
            let mut w = Writer::new();
            w.str(&data[..n]);
            w.name(&data[n..]);
            let mut want = vec![b'S'];
            want.extend_from_slice(&leb(n));
            want.extend_from_slice(&data[..n]);
            want.extend_from_slice(&leb(256 - n));
            want.extend_from_slice(&data[n..]);
            assert_eq!(w.pending(), &want[..], "{n}");
        }
    }

    #[test]
    fn reset_after_a_partial_key() {
        let mut w = Writer::new();
        let _g = w.begin_unordered(tag::DICT, 3);
        w.str(b"dangling");
        w.reset();
        w.none();
        assert_eq!(w.finish(), sha(b"N"));
    }
}
