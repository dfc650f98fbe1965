//! Calls from Rust into user code that survive interpreter exit.
//!
//! CPython <= 3.13 ends a daemon thread that takes the GIL back during finalization (after a
//! `time.sleep`, a socket read, ...) with `pthread_exit`. Its forced unwind runs up through
//! the interpreter's C frames and, where it meets a Rust frame that cannot unwind (every PyO3
//! method's `extern "C"` trampoline), aborts the process. Calls made through here are declared
//! `"C-unwind"` and hold a [`HangOnExit`] guard: the unwind stops in the guard's destructor,
//! which parks the thread for good instead, as CPython 3.14 does and as PyO3 does when one of
//! its own re-attaches meets finalization. The process then exits normally.
//!
//! The factory, `check`, an agent's `close()`, `key_generator`, `model_dump()` and
//! `loop.call_soon_threadsafe` (which writes to a socket) are called through here, and a
//! destroyed agent's last reference is dropped through here (its `__del__`).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ptr;

type CallFn = unsafe extern "C-unwind" fn(
    *mut ffi::PyObject,
    *mut ffi::PyObject,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// `PyObject_Call` as a function that may unwind. pyo3-ffi declares the symbol `extern "C"`
/// (cannot unwind) and PyO3 calls it too; a second, `"C-unwind"` declaration of the same
/// symbol is merged with that one, the call is taken to be unable to unwind and the guard's
/// landing pad is optimized away (it was, in one build). Called through an opaque pointer,
/// the callee is unknown to the optimizer and the landing pad stays.
#[inline(always)]
fn py_object_call() -> CallFn {
    let f = std::hint::black_box(ffi::PyObject_Call as *const ());
    // SAFETY: the same function; "C" and "C-unwind" share the calling convention and differ
    // only in whether an unwind may leave the callee.
    unsafe { std::mem::transmute::<*const (), CallFn>(f) }
}

type DecRefFn = unsafe extern "C-unwind" fn(*mut ffi::PyObject);

/// `Py_DecRef`, which may run a `__del__`, as a function that may unwind (see above).
#[inline(always)]
fn py_decref() -> DecRefFn {
    let f = std::hint::black_box(ffi::Py_DecRef as *const ());
    // SAFETY: as in `py_object_call`.
    unsafe { std::mem::transmute::<*const (), DecRefFn>(f) }
}

/// Parks the thread forever if dropped: only ever dropped by a forced unwind (the guard is
/// forgotten when the call returns).
struct HangOnExit;

impl Drop for HangOnExit {
    fn drop(&mut self) {
        loop {
            std::thread::park();
        }
    }
}

/// `f(*args)`.
pub fn call<'py>(f: &Bound<'py, PyAny>, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    call_raw(f, args, ptr::null_mut())
}

/// `f(*args, **kwargs)`.
pub fn call_kw<'py>(
    f: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    call_raw(f, args, kwargs.as_ptr())
}

fn call_raw<'py>(
    f: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let py = f.py();
    let guard = HangOnExit;
    // SAFETY: attached (a `Bound` proves it); `f`, `args` and `kwargs` (a dict or NULL) are
    // valid for the call; the result is a new reference or NULL with an exception set.
    let out = unsafe { py_object_call()(f.as_ptr(), args.as_ptr(), kwargs) };
    std::mem::forget(guard);
    // SAFETY: `out` is the owned result of the call above (NULL: the error is fetched).
    unsafe { Bound::from_owned_ptr_or_err(py, out) }
}

/// Drop a reference under the guard: where it is an agent's last one, its `__del__` (user
/// code, which may sleep or do I/O) runs as safely as a call.
pub fn drop_ref(_attached: Python<'_>, obj: Py<PyAny>) {
    let p = obj.into_ptr();
    let guard = HangOnExit;
    // SAFETY: attached; `p` is the owned reference `obj` gave up.
    unsafe { py_decref()(p) };
    std::mem::forget(guard);
}

/// `f()`.
pub fn call0<'py>(f: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    call(f, &PyTuple::empty(f.py()))
}

/// `f(arg)`.
pub fn call1<'py>(f: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    call(f, &PyTuple::new(f.py(), [arg])?)
}
