//! Structural SHA-256 keys: `hash_key(obj)` walks a Python object graph and hashes a canonical,
//! type-tagged, length-prefixed encoding of it (`docs/keys.md`, version `agentperf-key-v1`).
//!
//! [`encode`] is the PyO3-free writer (tags, lengths, ordering, SHA-256); `walk` is the Python
//! walker. Each thread reuses one writer, so a key costs no allocation once warm.

pub mod encode;
mod walk;

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::PyString;

pub use encode::VERSION;
pub use walk::MAX_DEPTH;

#[derive(Default)]
struct Scratch {
    writer: encode::Writer,
    path: Vec<usize>,
    frames: walk::FrameStore,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn digest_with(obj: &Bound<'_, PyAny>, s: &mut Scratch) -> PyResult<[u8; 32]> {
    // The writer is always left reset (by `finish`, or by the error path below).
    let mut stack = s.frames.take();
    let r = walk::Walker::new(obj.py(), &mut s.writer, &mut s.path).run(obj, &mut stack);
    // Dropping the frames may run user code (__del__); a re-entrant key then gets fresh scratch.
    s.frames.put(stack);
    match r {
        Ok(()) => Ok(s.writer.finish()),
        Err(e) => {
            s.writer.reset();
            Err(e)
        }
    }
}

/// The 32-byte key digest of `obj` (see `docs/keys.md`). Errors: `TypeError` for an
/// unsupported type, `ValueError` for a cycle or nesting deeper than [`MAX_DEPTH`].
pub fn digest(obj: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    // Re-entrant calls (a `model_dump()` that itself computes a key) get a fresh writer.
    SCRATCH
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => Some(digest_with(obj, &mut s)),
            Err(_) => None,
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| digest_with(obj, &mut Scratch::default()))
}

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

fn hex_bytes(d: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(d) {
        pair.copy_from_slice(&HEX_PAIRS[*b as usize]);
    }
    out
}

/// Lowercase hex of a digest.
pub fn to_hex(d: &[u8; 32]) -> String {
    hex_bytes(d).iter().map(|&c| c as char).collect()
}

/// `hash_key(obj, /) -> str`: the SHA-256 hex digest of obj's canonical, type-tagged encoding.
#[pyfunction]
#[pyo3(signature = (obj, /))]
pub fn hash_key<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let out = hex_bytes(&digest(obj)?);
    // SAFETY: every byte comes from HEX_PAIRS, which is ASCII.
    let s = unsafe { std::str::from_utf8_unchecked(&out) };
    Ok(PyString::new(obj.py(), s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_and_ordered() {
        let mut d = [0u8; 32];
        d[0] = 0x0f;
        d[1] = 0xa5;
        d[31] = 0xff;
        let h = super::to_hex(&d);
        assert_eq!(h.len(), 64);
        assert!(h.starts_with("0fa5"));
        assert!(h.ends_with("ff"));
        assert_eq!(&h[4..62], "0".repeat(58));
    }
}
