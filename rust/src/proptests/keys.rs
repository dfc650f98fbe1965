//! The key writer ([`crate::keys::encode::Writer`]) against a reference built from the text of
//! `docs/keys.md`.
//!
//! Arbitrary trees of the values the walker feeds (None, bools, ints of any size, floats with
//! any bits, str, bytes, list, tuple, dict, set, dataclass, enum, model, datetime, date, time,
//! timedelta, UUID, Decimal, and a model rewritten from its JSON dump after a partial Python
//! dump) are written the way
//! `walk.rs` writes them. Properties: no panic; the digest is SHA-256 of the version tag and
//! the reference encoding (a plain recursive encoder, sorting dict entries and set members by
//! their bytes); the reference encoding decodes back to the tree's canonical value, so it is
//! injective (different values, different bytes); the digest ignores dict/set order and the
//! writer's previous use.

use crate::keys::encode::{tag, DecimalExp, Delta, TimeFields, Writer, CANONICAL_NAN, VERSION};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// A value as the walker sees it.
#[derive(Debug, Clone)]
enum V {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<V>),
    Tuple(Vec<V>),
    /// Keys are distinct (by canonical value), as in a Python dict.
    Dict(Vec<(V, V)>),
    /// Members are distinct, as in a Python set.
    Set(Vec<V>),
    Dataclass(String, Vec<(String, V)>),
    Enum(String, String),
    Model(String, Box<V>),
    /// A model whose Python dump (the first value) is written in part, then rewound, and
    /// written again from its JSON dump (the second).
    Rewound(String, Box<V>, Box<V>),
    Date(u16, u8, u8),
    Time(TimeFields, Option<Delta>),
    DateTime((u16, u8, u8), TimeFields, Option<Delta>),
    Delta(Delta),
    Uuid([u8; 16]),
    Decimal(bool, Vec<u8>, DecimalExp),
}

type CTime = (u8, u8, u8, u32, u8, Option<(i32, u32, u32)>);

/// The value a tree means: what must decide equality of keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum C {
    None,
    Bool(bool),
    Int(i128),
    /// Bits; every NaN is the canonical NaN.
    Float(u64),
    Str(Vec<u8>),
    Bytes(Vec<u8>),
    List(Vec<C>),
    Tuple(Vec<C>),
    Dict(BTreeMap<C, C>),
    Set(BTreeSet<C>),
    Dataclass(Vec<u8>, Vec<(Vec<u8>, C)>),
    Enum(Vec<u8>, Vec<u8>),
    Model(Vec<u8>, Box<C>),
    ModelJson(Vec<u8>, Box<C>),
    Date(u16, u8, u8),
    Time(CTime),
    DateTime((u16, u8, u8), CTime),
    Delta((i32, u32, u32)),
    Uuid([u8; 16]),
    /// Sign, digits, exponent kind (0 finite, b'F', b'n', b'N'), finite exponent.
    Decimal(bool, Vec<u8>, u8, i64),
}

fn cdelta(d: &Delta) -> (i32, u32, u32) {
    (d.days, d.seconds, d.microseconds)
}

fn ctime(t: &TimeFields, off: &Option<Delta>) -> CTime {
    (
        t.hour,
        t.minute,
        t.second,
        t.microsecond,
        t.fold,
        off.as_ref().map(cdelta),
    )
}

fn float_bits(f: f64) -> u64 {
    if f.is_nan() {
        CANONICAL_NAN
    } else {
        f.to_bits()
    }
}

fn canon(v: &V) -> C {
    match v {
        V::None => C::None,
        V::Bool(b) => C::Bool(*b),
        V::Int(i) => C::Int(*i),
        V::Float(f) => C::Float(float_bits(*f)),
        V::Str(s) => C::Str(s.as_bytes().to_vec()),
        V::Bytes(b) => C::Bytes(b.clone()),
        V::List(xs) => C::List(xs.iter().map(canon).collect()),
        V::Tuple(xs) => C::Tuple(xs.iter().map(canon).collect()),
        V::Dict(kv) => C::Dict(kv.iter().map(|(k, v)| (canon(k), canon(v))).collect()),
        V::Set(xs) => C::Set(xs.iter().map(canon).collect()),
        V::Dataclass(cls, fs) => C::Dataclass(
            cls.as_bytes().to_vec(),
            fs.iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), canon(v)))
                .collect(),
        ),
        V::Enum(cls, m) => C::Enum(cls.as_bytes().to_vec(), m.as_bytes().to_vec()),
        V::Model(cls, v) => C::Model(cls.as_bytes().to_vec(), Box::new(canon(v))),
        V::Rewound(cls, _, json) => C::ModelJson(cls.as_bytes().to_vec(), Box::new(canon(json))),
        V::Date(y, m, d) => C::Date(*y, *m, *d),
        V::Time(t, off) => C::Time(ctime(t, off)),
        V::DateTime(d, t, off) => C::DateTime(*d, ctime(t, off)),
        V::Delta(d) => C::Delta(cdelta(d)),
        V::Uuid(b) => C::Uuid(*b),
        V::Decimal(neg, digits, exp) => {
            let (kind, e) = match exp {
                DecimalExp::Finite(e) => (0, *e),
                DecimalExp::Infinity => (b'F', 0),
                DecimalExp::NaN => (b'n', 0),
                DecimalExp::SNaN => (b'N', 0),
            };
            C::Decimal(*neg, digits.clone(), kind, e)
        }
    }
}

/// Minimal two's-complement little-endian bytes (docs/keys.md).
fn int_bytes(n: i128) -> Vec<u8> {
    let m = if n < 0 { !n } else { n };
    let k = (128 - m.leading_zeros() as usize + 8) / 8;
    n.to_le_bytes()[..k].to_vec()
}

/// Feed `v` to the writer the way `walk.rs` does.
fn write(w: &mut Writer, v: &V) {
    match v {
        V::None => w.none(),
        V::Bool(b) => w.bool(*b),
        V::Int(i) => match i64::try_from(*i) {
            Ok(small) => w.int(small),
            Err(_) => w.int_le(&int_bytes(*i)),
        },
        V::Float(f) => w.float(*f),
        V::Str(s) => w.str(s.as_bytes()),
        V::Bytes(b) => w.bytes(b),
        V::List(xs) | V::Tuple(xs) => {
            w.tag(if matches!(v, V::List(_)) {
                tag::LIST
            } else {
                tag::TUPLE
            });
            w.count(xs.len());
            for x in xs {
                write(w, x);
            }
        }
        V::Dict(kv) => {
            let g = w.begin_unordered(tag::DICT, kv.len());
            for (k, v) in kv {
                let s = w.item_start();
                write(w, k);
                write(w, v);
                w.item_end(s);
            }
            w.end_unordered(g);
        }
        V::Set(xs) => {
            let g = w.begin_unordered(tag::SET, xs.len());
            for x in xs {
                let s = w.item_start();
                write(w, x);
                w.item_end(s);
            }
            w.end_unordered(g);
        }
        V::Dataclass(cls, fs) => {
            w.tag(tag::DATACLASS);
            w.name(cls.as_bytes());
            w.count(fs.len());
            for (n, v) in fs {
                w.name(n.as_bytes());
                write(w, v);
            }
        }
        V::Enum(cls, m) => {
            w.tag(tag::ENUM);
            w.name(cls.as_bytes());
            w.name(m.as_bytes());
        }
        V::Model(cls, v) => {
            w.tag(tag::MODEL);
            w.name(cls.as_bytes());
            write(w, v);
        }
        V::Rewound(cls, partial, json) => {
            // As the walker does when the Python dump holds an unsupported value: what was
            // written of it (here: `partial`, then `partial` again inside a dict left open) is
            // rewound and the JSON dump written instead.
            let m = w.mark();
            w.tag(tag::MODEL);
            w.name(cls.as_bytes());
            write(w, partial);
            let g = w.begin_unordered(tag::DICT, 2);
            let s = w.item_start();
            write(w, partial);
            w.item_end(s);
            let _unclosed = g;
            w.rewind(m);
            w.tag(tag::MODEL_JSON);
            w.name(cls.as_bytes());
            write(w, json);
            w.release(m);
        }
        V::Date(y, m, d) => w.date(*y, *m, *d),
        V::Time(t, off) => w.time(*t, *off),
        V::DateTime((y, m, d), t, off) => w.datetime(*y, *m, *d, *t, *off),
        V::Delta(d) => w.timedelta(*d),
        V::Uuid(b) => w.uuid(*b),
        V::Decimal(neg, digits, exp) => w.decimal(*neg, digits, *exp),
    }
}

fn digest(v: &V) -> [u8; 32] {
    let mut w = Writer::new();
    write(&mut w, v);
    w.finish()
}

// ---- the reference: docs/keys.md, written plainly ----

fn leb(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn blob(out: &mut Vec<u8>, b: &[u8]) {
    leb(out, b.len());
    out.extend_from_slice(b);
}

fn reference(c: &C) -> Vec<u8> {
    let mut out = Vec::new();
    ref_into(&mut out, c);
    out
}

fn ref_into(out: &mut Vec<u8>, c: &C) {
    match c {
        C::None => out.push(b'N'),
        C::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
        C::Int(i) => {
            out.push(b'I');
            blob(out, &int_bytes(*i));
        }
        C::Float(bits) => {
            out.push(b'D');
            out.extend_from_slice(&bits.to_le_bytes());
        }
        C::Str(s) => {
            out.push(b'S');
            blob(out, s);
        }
        C::Bytes(b) => {
            out.push(b'B');
            blob(out, b);
        }
        C::List(xs) | C::Tuple(xs) => {
            out.push(if matches!(c, C::List(_)) { b'L' } else { b'U' });
            leb(out, xs.len());
            for x in xs {
                ref_into(out, x);
            }
        }
        C::Dict(kv) => {
            out.push(b'M');
            leb(out, kv.len());
            let mut items: Vec<Vec<u8>> = kv
                .iter()
                .map(|(k, v)| {
                    let mut e = reference(k);
                    e.extend(reference(v));
                    e
                })
                .collect();
            items.sort();
            items.iter().for_each(|e| out.extend_from_slice(e));
        }
        C::Set(xs) => {
            out.push(b'E');
            leb(out, xs.len());
            let mut items: Vec<Vec<u8>> = xs.iter().map(reference).collect();
            items.sort();
            items.iter().for_each(|e| out.extend_from_slice(e));
        }
        C::Dataclass(cls, fs) => {
            out.push(b'C');
            blob(out, cls);
            leb(out, fs.len());
            for (n, v) in fs {
                blob(out, n);
                ref_into(out, v);
            }
        }
        C::Enum(cls, m) => {
            out.push(b'K');
            blob(out, cls);
            blob(out, m);
        }
        C::Model(cls, v) | C::ModelJson(cls, v) => {
            out.push(if matches!(c, C::Model(..)) {
                b'P'
            } else {
                b'J'
            });
            blob(out, cls);
            ref_into(out, v);
        }
        C::Date(y, m, d) => {
            out.push(b'Y');
            ref_date(out, *y, *m, *d);
        }
        C::Time(t) => {
            out.push(b'H');
            ref_time(out, t);
        }
        C::DateTime((y, m, d), t) => {
            out.push(b'W');
            ref_date(out, *y, *m, *d);
            ref_time(out, t);
        }
        C::Delta(d) => ref_delta(out, *d),
        C::Uuid(b) => {
            out.push(b'G');
            out.extend_from_slice(b);
        }
        C::Decimal(neg, digits, kind, e) => {
            out.push(b'X');
            out.push(u8::from(*neg));
            blob(out, digits);
            if *kind == 0 {
                out.push(b'I');
                blob(out, &int_bytes(i128::from(*e)));
            } else {
                out.push(*kind);
            }
        }
    }
}

fn ref_date(out: &mut Vec<u8>, y: u16, m: u8, d: u8) {
    out.extend_from_slice(&y.to_le_bytes());
    out.extend_from_slice(&[m, d]);
}

fn ref_time(out: &mut Vec<u8>, t: &CTime) {
    out.extend_from_slice(&[t.0, t.1, t.2]);
    out.extend_from_slice(&t.3.to_le_bytes());
    out.push(t.4);
    match t.5 {
        None => out.push(b'N'),
        Some(d) => ref_delta(out, d),
    }
}

fn ref_delta(out: &mut Vec<u8>, d: (i32, u32, u32)) {
    out.push(b'V');
    out.extend_from_slice(&d.0.to_le_bytes());
    out.extend_from_slice(&d.1.to_le_bytes());
    out.extend_from_slice(&d.2.to_le_bytes());
}

fn ref_digest(c: &C) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(VERSION);
    h.update(reference(c));
    h.finalize().into()
}

// ---- a decoder of the reference: its existence proves the encoding injective ----

struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.0.len() < n {
            return None;
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(a.to_vec())
    }
    fn len(&mut self) -> Option<usize> {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
            shift += 7;
        }
    }
    fn blob(&mut self) -> Option<Vec<u8>> {
        let n = self.len()?;
        self.take(n)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn date(&mut self) -> Option<(u16, u8, u8)> {
        let y = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        Some((y, self.byte()?, self.byte()?))
    }
    fn delta(&mut self) -> Option<(i32, u32, u32)> {
        let days = i32::from_le_bytes(self.take(4)?.try_into().ok()?);
        Some((days, self.u32()?, self.u32()?))
    }
    fn time(&mut self) -> Option<CTime> {
        let (h, m, s) = (self.byte()?, self.byte()?, self.byte()?);
        let us = self.u32()?;
        let fold = self.byte()?;
        let off = match self.byte()? {
            b'N' => None,
            b'V' => Some(self.delta()?),
            _ => return None,
        };
        Some((h, m, s, us, fold, off))
    }
    fn value(&mut self) -> Option<C> {
        Some(match self.byte()? {
            b'N' => C::None,
            b'T' => C::Bool(true),
            b'F' => C::Bool(false),
            b'I' => {
                let b = self.blob()?;
                let mut le = [if b.last()? & 0x80 != 0 { 0xff } else { 0 }; 16];
                le[..b.len()].copy_from_slice(&b);
                C::Int(i128::from_le_bytes(le))
            }
            b'D' => C::Float(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            b'S' => C::Str(self.blob()?),
            b'B' => C::Bytes(self.blob()?),
            t @ (b'L' | b'U') => {
                let n = self.len()?;
                let xs = (0..n).map(|_| self.value()).collect::<Option<Vec<_>>>()?;
                if t == b'L' {
                    C::List(xs)
                } else {
                    C::Tuple(xs)
                }
            }
            b'M' => {
                let n = self.len()?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = self.value()?;
                    let v = self.value()?;
                    m.insert(k, v);
                }
                C::Dict(m)
            }
            b'E' => {
                let n = self.len()?;
                C::Set((0..n).map(|_| self.value()).collect::<Option<_>>()?)
            }
            b'C' => {
                let cls = self.blob()?;
                let n = self.len()?;
                let mut fs = Vec::new();
                for _ in 0..n {
                    let name = self.blob()?;
                    fs.push((name, self.value()?));
                }
                C::Dataclass(cls, fs)
            }
            b'K' => C::Enum(self.blob()?, self.blob()?),
            b'P' => C::Model(self.blob()?, Box::new(self.value()?)),
            b'J' => C::ModelJson(self.blob()?, Box::new(self.value()?)),
            b'Y' => {
                let (y, m, d) = self.date()?;
                C::Date(y, m, d)
            }
            b'H' => C::Time(self.time()?),
            b'W' => C::DateTime(self.date()?, self.time()?),
            b'V' => C::Delta(self.delta()?),
            b'G' => C::Uuid(self.take(16)?.try_into().ok()?),
            b'X' => {
                let neg = match self.byte()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let digits = self.blob()?;
                match self.byte()? {
                    b'I' => match self.value_after_int()? {
                        C::Int(e) => C::Decimal(neg, digits, 0, i64::try_from(e).ok()?),
                        _ => return None,
                    },
                    k @ (b'F' | b'n' | b'N') => C::Decimal(neg, digits, k, 0),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }
}

impl Dec<'_> {
    /// An int whose tag was just read.
    fn value_after_int(&mut self) -> Option<C> {
        let b = self.blob()?;
        let mut le = [if b.last()? & 0x80 != 0 { 0xff } else { 0 }; 16];
        le.get_mut(..b.len())?.copy_from_slice(&b);
        Some(C::Int(i128::from_le_bytes(le)))
    }
}

fn decode(b: &[u8]) -> Option<C> {
    let mut d = Dec(b);
    let c = d.value()?;
    d.0.is_empty().then_some(c)
}

// ---- strategies ----

fn payload() -> impl Strategy<Value = Vec<u8>> {
    // Mostly short; sometimes past the writer's 512-byte streaming threshold.
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => proptest::collection::vec(any::<u8>(), 120..140),
        1 => proptest::collection::vec(any::<u8>(), 500..700),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-c]{0,3}",
        2 => any::<String>(),
        1 => payload().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn int() -> impl Strategy<Value = i128> {
    prop_oneof![
        -300i128..300,
        any::<i64>().prop_map(i128::from),
        Just(i128::from(i64::MIN)),
        Just(i128::from(i64::MAX)),
        Just(i128::from(i64::MIN) - 1),
        Just(i128::from(i64::MAX) + 1),
        any::<i128>(),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        -3.0f64..3.0,
    ]
}

fn delta() -> impl Strategy<Value = Delta> {
    (any::<i32>(), any::<u32>(), any::<u32>()).prop_map(|(days, seconds, microseconds)| Delta {
        days,
        seconds,
        microseconds,
    })
}

fn offset() -> impl Strategy<Value = Option<Delta>> {
    proptest::option::of(delta())
}

fn time() -> impl Strategy<Value = TimeFields> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(hour, minute, second, microsecond, fold)| TimeFields {
            hour,
            minute,
            second,
            microsecond,
            fold,
        })
}

fn dedup_by_canon<T>(xs: Vec<T>, key: impl Fn(&T) -> C) -> Vec<T> {
    let mut seen = BTreeSet::new();
    xs.into_iter().filter(|x| seen.insert(key(x))).collect()
}

fn tree() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        Just(V::None),
        any::<bool>().prop_map(V::Bool),
        int().prop_map(V::Int),
        float().prop_map(V::Float),
        text().prop_map(V::Str),
        payload().prop_map(V::Bytes),
        (text(), text()).prop_map(|(c, m)| V::Enum(c, m)),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(y, m, d)| V::Date(y, m, d)),
        (time(), offset()).prop_map(|(t, o)| V::Time(t, o)),
        ((any::<u16>(), any::<u8>(), any::<u8>()), time(), offset())
            .prop_map(|(d, t, o)| V::DateTime(d, t, o)),
        delta().prop_map(V::Delta),
        any::<[u8; 16]>().prop_map(V::Uuid),
        (
            any::<bool>(),
            "[0-9]{0,6}",
            prop_oneof![
                4 => any::<i64>().prop_map(DecimalExp::Finite),
                4 => (-30i64..30).prop_map(DecimalExp::Finite),
                1 => Just(DecimalExp::Infinity),
                1 => Just(DecimalExp::NaN),
                1 => Just(DecimalExp::SNaN),
            ]
        )
            .prop_map(|(n, d, e)| V::Decimal(n, d.into_bytes(), e)),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        let items = proptest::collection::vec(inner.clone(), 0..5);
        prop_oneof![
            items.clone().prop_map(V::List),
            items.clone().prop_map(V::Tuple),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..5)
                .prop_map(|kv| V::Dict(dedup_by_canon(kv, |(k, _)| canon(k)))),
            items.prop_map(|xs| V::Set(dedup_by_canon(xs, canon))),
            (
                text(),
                proptest::collection::vec((text(), inner.clone()), 0..4)
            )
                .prop_map(|(c, fs)| V::Dataclass(c, fs)),
            (text(), inner.clone()).prop_map(|(c, v)| V::Model(c, Box::new(v))),
            (text(), inner.clone(), inner).prop_map(|(c, p, j)| V::Rewound(
                c,
                Box::new(p),
                Box::new(j)
            )),
        ]
    })
}

/// The same tree with every dict and set in another order, chosen by `seed`.
fn shuffled(v: &V, seed: &mut u64) -> V {
    fn rotate<T: Clone>(xs: &[T], seed: &mut u64) -> Vec<T> {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut out = xs.to_vec();
        if out.len() > 1 {
            let k = (*seed >> 33) as usize % out.len();
            out.rotate_left(k);
            if *seed & 1 == 1 {
                out.reverse();
            }
        }
        out
    }
    match v {
        V::List(xs) => V::List(xs.iter().map(|x| shuffled(x, seed)).collect()),
        V::Tuple(xs) => V::Tuple(xs.iter().map(|x| shuffled(x, seed)).collect()),
        V::Dict(kv) => {
            let kv: Vec<_> = kv
                .iter()
                .map(|(k, v)| (shuffled(k, seed), shuffled(v, seed)))
                .collect();
            V::Dict(rotate(&kv, seed))
        }
        V::Set(xs) => {
            let xs: Vec<_> = xs.iter().map(|x| shuffled(x, seed)).collect();
            V::Set(rotate(&xs, seed))
        }
        V::Dataclass(c, fs) => V::Dataclass(
            c.clone(),
            fs.iter()
                .map(|(n, v)| (n.clone(), shuffled(v, seed)))
                .collect(),
        ),
        V::Model(c, v) => V::Model(c.clone(), Box::new(shuffled(v, seed))),
        V::Rewound(c, p, j) => V::Rewound(
            c.clone(),
            Box::new(shuffled(p, seed)),
            Box::new(shuffled(j, seed)),
        ),
        other => other.clone(),
    }
}

fn check(cond: bool, what: &str) -> Result<(), TestCaseError> {
    if cond {
        Ok(())
    } else {
        Err(TestCaseError::fail(what.to_string()))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::cases(128)))]

    /// The writer's digest is the reference encoding's, and that encoding parses back to the
    /// tree's value (so distinct values never share bytes).
    #[test]
    fn writer_matches_the_reference_and_is_injective(v in tree()) {
        let c = canon(&v);
        let bytes = reference(&c);
        check(digest(&v) == ref_digest(&c), "writer differs from the reference")?;
        check(decode(&bytes) == Some(c), "reference encoding does not decode back")?;
    }

    /// Deterministic, order-invariant for dicts and sets, and independent of what the writer
    /// did before (a finished key, or a partial one abandoned with `reset`).
    #[test]
    fn deterministic_and_order_invariant(v in tree(), other in tree(), seed in any::<u64>()) {
        let d = digest(&v);
        check(digest(&v) == d, "two encodings differ")?;
        let mut s = seed;
        check(digest(&shuffled(&v, &mut s)) == d, "dict/set order changed the key")?;
        let mut w = Writer::new();
        write(&mut w, &other);
        w.finish();
        write(&mut w, &other);
        w.reset();
        write(&mut w, &v);
        check(w.finish() == d, "a reused writer gave another key")?;
    }

    /// Two trees have the same key exactly when they mean the same value.
    #[test]
    fn distinct_values_distinct_keys(a in tree(), b in tree()) {
        let same = canon(&a) == canon(&b);
        check((digest(&a) == digest(&b)) == same, "key equality differs from value equality")?;
    }
}
