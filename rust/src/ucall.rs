//! Calls from Rust into user code that survive interpreter exit.
//!
//! CPython <= 3.13 ends a daemon thread that takes the GIL back during finalization (after a
//! `time.sleep`, a socket read, or just the eval loop's periodic GIL switch inside any Python
//! code) with `pthread_exit`. On glibc that is a forced unwind: it runs up through the
//! interpreter's C frames and, where it meets a Rust frame that cannot unwind (every PyO3
//! method's `extern "C"` trampoline), aborts the process. Calls made through here are declared
//! `"C-unwind"` and hold a [`HangOnExit`] guard: the unwind stops in the guard's destructor,
//! which parks the thread for good instead, as CPython 3.14 does and as PyO3 does when one of
//! its own re-attaches meets finalization. The process then exits normally.
//!
//! **Where the guard acts.** Linux with glibc, CPython 3.10 to 3.13: there it is needed and it
//! works (`tests/test_lifecycle.py::test_exit_with_daemon_threads_inside_user_code`). It is
//! inert, and not needed, where no unwind happens: musl (`pthread_exit` does not unwind through
//! foreign frames), macOS (libpthread's `pthread_exit` runs cleanup handlers without unwinding
//! Rust frames), Windows (CPython ends threads with `_endthreadex`), and CPython >= 3.14 (which
//! hangs such a thread itself, `PyThread_hang_thread`, instead of exiting it).
//!
//! **Why the call is opaque.** pyo3-ffi declares `PyObject_Call` (and `Py_DecRef`,
//! `PyObject_GetAttr`) `extern "C"`: cannot unwind. A second, `"C-unwind"` declaration of the
//! same symbol is merged with that one, the call is taken to be unable to unwind and the
//! guard's landing pad is optimized away (it was, in one build). So the function is called
//! through a pointer read with [`std::ptr::read_volatile`] from a static: a volatile read is
//! never folded, so the optimizer cannot know the callee, must assume it may unwind (the
//! pointer's type says `"C-unwind"`), and keeps the landing pad. (`std::hint::black_box`, used
//! before, is documented as best-effort only.) To check a build: every function here calls
//! [`hang_forever`] from its landing pad, and nothing else calls it, so
//! `objdump -d -C _agentperf.abi3.so | grep 'call.*ucall::hang_forever'` lists one call per
//! guarded call site (none would mean the pads are gone).
//!
//! **`panic = "abort"` is refused.** With it, an unwind reaching a `"C-unwind"` frame aborts,
//! so the guard could not act; the crate does not build that way.
//!
//! The factory, `check`, an agent's `close()`, `key_generator`, `model_dump()`, a `tzinfo`'s
//! `utcoffset`, `dataclasses.fields`, the key walk's attribute reads of dataclasses, enums,
//! class names and objects that may have `model_dump` (properties, `__getattr__`), and
//! `loop.call_soon_threadsafe` (which writes to a socket) are called through here, and a
//! destroyed agent's last reference is dropped through here (its `__del__`). What is not:
//! RELIABILITY.md, "Known, not fixed here".

#[cfg(panic = "abort")]
compile_error!(
    "agentperf needs panic = \"unwind\": its exit guard (rust/src/ucall.rs) catches the forced \
     unwind of pthread_exit, which panic = \"abort\" turns into an abort of the process"
);

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::ptr;

type CallFn = unsafe extern "C-unwind" fn(
    *mut ffi::PyObject,
    *mut ffi::PyObject,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;
type DecRefFn = unsafe extern "C-unwind" fn(*mut ffi::PyObject);
type GetAttrFn =
    unsafe extern "C-unwind" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;

// SAFETY (all three): the same functions; "C" and "C-unwind" share the calling convention and
// differ only in whether an unwind may leave the callee.
static PY_OBJECT_CALL: CallFn = unsafe {
    std::mem::transmute::<
        unsafe extern "C" fn(
            *mut ffi::PyObject,
            *mut ffi::PyObject,
            *mut ffi::PyObject,
        ) -> *mut ffi::PyObject,
        CallFn,
    >(ffi::PyObject_Call)
};
static PY_DECREF: DecRefFn = unsafe {
    std::mem::transmute::<unsafe extern "C" fn(*mut ffi::PyObject), DecRefFn>(ffi::Py_DecRef)
};
static PY_GETATTR: GetAttrFn = unsafe {
    std::mem::transmute::<
        unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject,
        GetAttrFn,
    >(ffi::PyObject_GetAttr)
};

/// Reads a function pointer so that the optimizer cannot see which function it is.
#[inline(always)]
fn opaque<F: Copy>(f: &'static F) -> F {
    // SAFETY: `f` is a valid, aligned, initialized static.
    unsafe { ptr::read_volatile(f) }
}

/// Parks the thread forever if dropped: only ever dropped by a forced unwind (the guard is
/// forgotten when the call returns).
struct HangOnExit;

impl Drop for HangOnExit {
    fn drop(&mut self) {
        hang_forever()
    }
}

/// The end of a thread that the interpreter's exit tried to unwind (see the module docs).
#[cold]
#[inline(never)]
fn hang_forever() -> ! {
    loop {
        std::thread::park();
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
    let out = unsafe { opaque(&PY_OBJECT_CALL)(f.as_ptr(), args.as_ptr(), kwargs) };
    std::mem::forget(guard);
    // SAFETY: `out` is the owned result of the call above (NULL: the error is fetched).
    unsafe { Bound::from_owned_ptr_or_err(py, out) }
}

/// `getattr(obj, name)`: a property, `__getattr__` or `__getattribute__` is user code.
pub fn getattr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let guard = HangOnExit;
    // SAFETY: attached; `obj` and `name` are valid; the result is a new reference or NULL with
    // an exception set.
    let out = unsafe { opaque(&PY_GETATTR)(obj.as_ptr(), name.as_ptr()) };
    std::mem::forget(guard);
    // SAFETY: as in `call_raw`.
    unsafe { Bound::from_owned_ptr_or_err(py, out) }
}

/// `getattr(obj, name, None)`, as [`getattr`], `None` on `AttributeError`.
pub fn getattr_opt<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match getattr(obj, name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Drop a reference under the guard: where it is an agent's last one, its `__del__` (user
/// code, which may sleep or do I/O) runs as safely as a call.
pub fn drop_ref(_attached: Python<'_>, obj: Py<PyAny>) {
    let p = obj.into_ptr();
    let guard = HangOnExit;
    // SAFETY: attached; `p` is the owned reference `obj` gave up.
    unsafe { opaque(&PY_DECREF)(p) };
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
