//! Key encoder benchmarks: the PyO3-free writer (encoding + SHA-256) on the README's example
//! input, SHA-256 alone on the same bytes, and the full Python walk (`keys::digest`) on an
//! embedded interpreter.

use std::hint::black_box;

use _agentperf::keys::encode::{tag, Writer};
use criterion::{criterion_group, criterion_main, Criterion};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sha2::{Digest, Sha256};

/// `{"task": "summarize", "instruction": "be brief", "context": {"user": "u1", "n": 3}}`,
/// written as the walker writes it.
fn write_example(w: &mut Writer) {
    let entry = |w: &mut Writer, k: &[u8], v: &[u8]| {
        let s = w.item_start();
        w.str(k);
        w.str(v);
        w.item_end(s);
    };
    let g = w.begin_unordered(tag::DICT, 3);
    entry(w, b"task", b"summarize");
    entry(w, b"instruction", b"be brief");
    let s = w.item_start();
    w.str(b"context");
    let inner = w.begin_unordered(tag::DICT, 2);
    entry(w, b"user", b"u1");
    let s2 = w.item_start();
    w.str(b"n");
    w.int(3);
    w.item_end(s2);
    w.end_unordered(inner);
    w.item_end(s);
    w.end_unordered(g);
}

fn bench(c: &mut Criterion) {
    let mut w = Writer::new();
    c.bench_function("keys/writer_example_encode_and_sha256", |b| {
        b.iter(|| {
            write_example(&mut w);
            black_box(w.finish())
        })
    });

    write_example(&mut w);
    let bytes = w.pending().to_vec();
    w.reset();
    c.bench_function("keys/sha256_only_example_bytes", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            h.update(_agentperf::keys::VERSION);
            h.update(black_box(&bytes));
            black_box(<[u8; 32]>::from(h.finalize()))
        })
    });

    Python::initialize();
    Python::attach(|py| {
        let ctx = PyDict::new(py);
        ctx.set_item("user", "u1").unwrap();
        ctx.set_item("n", 3).unwrap();
        let x = PyDict::new(py);
        x.set_item("task", "summarize").unwrap();
        x.set_item("instruction", "be brief").unwrap();
        x.set_item("context", ctx).unwrap();
        let x = x.into_any();
        // The writer benchmark above writes exactly what the walker writes for this input.
        write_example(&mut w);
        assert_eq!(_agentperf::keys::digest(&x).unwrap(), w.finish());
        c.bench_function("keys/digest_example_python_walk", |b| {
            b.iter(|| black_box(_agentperf::keys::digest(&x).unwrap()))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
