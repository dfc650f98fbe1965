//! Structural SHA-256 keys. PLACEHOLDER until the keys work lands: hashes `repr(obj)`.
//! The real encoder replaces this file; its public surface (`digest`, `hash_key`) stays.

use pyo3::prelude::*;
use sha2::{Digest, Sha256};

/// The 32-byte key digest of `obj`.
pub fn digest(obj: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let r = obj.repr()?;
    let mut h = Sha256::new();
    h.update(r.to_str()?.as_bytes());
    Ok(h.finalize().into())
}

/// Lowercase hex of a digest.
pub fn to_hex(d: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `hash_key(obj, /) -> str`: the SHA-256 hex digest of obj's canonical encoding.
#[pyfunction]
pub fn hash_key(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(to_hex(&digest(obj)?))
}
