//! The Python half of the key encoder: walks an object graph and writes it with
//! [`super::encode::Writer`]. Exact built-in types are recognised first by a pointer compare;
//! enums, dataclasses, `model_dump()` objects and subclasses of the built-ins follow.
//!
//! The walk is iterative (an explicit stack of open containers), so no input can overflow the
//! Rust stack, whatever the thread's stack size; nesting is limited to [`MAX_DEPTH`] levels.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyIterator, PyList, PySet, PyString,
    PyTuple, PyType,
};

use super::encode::{tag, DecimalExp, Delta, Group, Mark, TimeFields, Writer};

/// The deepest nesting of containers (list, tuple, dict, set, frozenset, dataclass, model)
/// a key may have; one more level raises `ValueError`.
pub const MAX_DEPTH: usize = 256;

static ENUM_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATACLASS_FIELDS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EVERYDAY: PyOnceLock<Everyday> = PyOnceLock::new();

/// The exact types of the standard library's everyday values, which have tags of their own.
struct Everyday {
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    timedelta: Py<PyType>,
    uuid: Py<PyType>,
    decimal: Py<PyType>,
}

impl Everyday {
    fn get(py: Python<'_>) -> PyResult<&Everyday> {
        EVERYDAY.get_or_try_init(py, || {
            let ty = |module: &str, name: &str| -> PyResult<Py<PyType>> {
                Ok(py
                    .import(module)?
                    .getattr(name)?
                    .cast_into::<PyType>()?
                    .unbind())
            };
            Ok(Everyday {
                datetime: ty("datetime", "datetime")?,
                date: ty("datetime", "date")?,
                time: ty("datetime", "time")?,
                timedelta: ty("datetime", "timedelta")?,
                uuid: ty("uuid", "UUID")?,
                decimal: ty("decimal", "Decimal")?,
            })
        })
    }
}

/// An open container: what is left to visit, and how to close it.
pub(crate) enum Frame<'py> {
    /// A list or tuple, item `i` of `n` next.
    Seq {
        obj: Bound<'py, PyAny>,
        i: usize,
        n: usize,
    },
    /// A dict: `pos` is the `PyDict_Next` cursor; `value` is pending after its key.
    Dict {
        obj: Bound<'py, PyDict>,
        pos: ffi::Py_ssize_t,
        n: usize,
        seen: usize,
        group: Group,
        item: Option<usize>,
        value: Option<Bound<'py, PyAny>>,
    },
    /// A set or frozenset.
    Set {
        iter: Bound<'py, PyIterator>,
        n: usize,
        seen: usize,
        group: Group,
        item: Option<usize>,
    },
    /// A dataclass instance: field `i` of `fields` next.
    Fields {
        obj: Bound<'py, PyAny>,
        fields: Bound<'py, PyTuple>,
        i: usize,
    },
    /// An object with `model_dump()`: its dump still to write (`value`). `mark` is where its
    /// encoding starts, so that a dump holding an unsupported value can be rewritten as the
    /// `mode="json"` dump (`json` says whether it already is).
    Model {
        obj: Bound<'py, PyAny>,
        value: Option<Bound<'py, PyAny>>,
        mark: Mark,
        depth: usize,
        json: bool,
    },
    /// A nameless enum member's value, still to write.
    One { value: Option<Bound<'py, PyAny>> },
}

/// A reusable, empty frame stack (kept per thread, so a key allocates no stack once warm).
#[derive(Default)]
pub(crate) struct FrameStore(Vec<Frame<'static>>);

impl FrameStore {
    /// The stack, empty, for one walk.
    pub(crate) fn take<'py>(&mut self) -> Vec<Frame<'py>> {
        recycle(std::mem::take(&mut self.0))
    }

    /// Gives the stack back (emptied first, which releases any frames an error left).
    pub(crate) fn put(&mut self, v: Vec<Frame<'_>>) {
        self.0 = recycle(v);
    }
}

/// An emptied vector with another lifetime, keeping its allocation.
fn recycle<'a, 'b>(mut v: Vec<Frame<'a>>) -> Vec<Frame<'b>> {
    v.clear();
    // SAFETY: the vector is empty, so no `Frame<'a>` outlives 'a; `Frame<'a>` and `Frame<'b>`
    // differ only in a lifetime, so their layouts (and the vector's) are the same.
    unsafe { std::mem::transmute::<Vec<Frame<'a>>, Vec<Frame<'b>>>(v) }
}

/// Walks one object graph into a writer, iteratively: the Rust stack does not grow with the
/// input's depth.
pub(crate) struct Walker<'w, 'py> {
    py: Python<'py>,
    w: &'w mut Writer,
    /// Addresses of the containers on the current path (cycle detection; its length is the depth).
    path: &'w mut Vec<usize>,
    /// Set with the `TypeError` for a value of no supported type, which a model around it may
    /// recover from (by its `mode="json"` dump); every other error propagates as it is.
    unsupported: bool,
}

impl<'w, 'py> Walker<'w, 'py> {
    pub(crate) fn new(py: Python<'py>, w: &'w mut Writer, path: &'w mut Vec<usize>) -> Self {
        path.clear();
        Walker {
            py,
            w,
            path,
            unsupported: false,
        }
    }

    /// Writes `root`.
    pub(crate) fn run(
        &mut self,
        root: &Bound<'py, PyAny>,
        stack: &mut Vec<Frame<'py>>,
    ) -> PyResult<()> {
        stack.clear();
        self.visit(root, stack)?;
        while let Some(top) = stack.last_mut() {
            let step = match self.next_child(top) {
                Ok(Some(child)) => self.visit(&child, stack),
                Ok(None) => match stack.pop() {
                    Some(done) => self.close(done),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                self.recover(e, stack)?;
            }
        }
        Ok(())
    }

    /// After an error: if it is an unsupported value inside a model's Python-mode dump, the
    /// innermost such model is rewritten from its `model_dump(mode="json")`; otherwise the
    /// error is returned. Costs nothing until a value is unsupported.
    #[cold]
    fn recover(&mut self, e: PyErr, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        if !std::mem::take(&mut self.unsupported) {
            return Err(e);
        }
        let Some(i) = stack
            .iter()
            .rposition(|f| matches!(f, Frame::Model { json: false, .. }))
        else {
            return Err(e);
        };
        stack.truncate(i + 1);
        let Some(Frame::Model {
            obj,
            value,
            mark,
            depth,
            json,
        }) = stack.last_mut()
        else {
            return Err(e);
        };
        let py = self.py;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "mode"), intern!(py, "json"))?;
        let dumped = crate::ucall::getattr(obj, intern!(py, "model_dump"))
            .and_then(|dump| crate::ucall::call_kw(&dump, &PyTuple::empty(py), &kwargs));
        let dumped = match dumped {
            Ok(d) => d,
            Err(json_err) => {
                // Not a pydantic model after all (or its JSON dump fails too): the value's own
                // error, which says what to do, with the JSON dump's as its cause.
                e.set_cause(py, Some(json_err));
                return Err(e);
            }
        };
        let obj = obj.clone();
        self.path.truncate(*depth);
        self.w.rewind(*mark);
        self.w.tag(tag::MODEL_JSON);
        *value = Some(dumped);
        *json = true;
        self.class_name(&obj)
    }

    /// Writes `obj` if it is of an exact scalar type (str, int, float, None, bool, bytes) and
    /// says whether it did.
    #[inline]
    fn scalar(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        if let Ok(s) = obj.cast_exact::<PyString>() {
            self.str(s)?;
        } else if obj.is_exact_instance_of::<PyInt>() {
            self.int(obj)?;
        } else if obj.is_none() {
            self.w.none();
        } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
            self.w.float(f.value());
        } else if obj.as_ptr() == unsafe { ffi::Py_True() } {
            self.w.bool(true);
        } else if obj.as_ptr() == unsafe { ffi::Py_False() } {
            self.w.bool(false);
        } else if let Ok(b) = obj.cast_exact::<PyBytes>() {
            self.w.bytes(b.as_bytes());
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Writes a scalar, or opens a container (writes its header and pushes its frame).
    #[inline]
    fn visit(&mut self, obj: &Bound<'py, PyAny>, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        if self.scalar(obj)? {
            Ok(())
        } else if let Ok(d) = obj.cast_exact::<PyDict>() {
            self.open_dict(d, stack)
        } else if obj.is_exact_instance_of::<PyList>() || obj.is_exact_instance_of::<PyTuple>() {
            self.open_seq(obj, stack)
        } else if obj.is_exact_instance_of::<PySet>() || obj.is_exact_instance_of::<PyFrozenSet>() {
            self.open_set(obj, stack)
        } else {
            self.other(obj, stack)
        }
    }

    /// The next value to visit inside `top`, or `None` when it is complete.
    fn next_child(&mut self, top: &mut Frame<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match top {
            Frame::Seq { obj, i, n } => {
                // Scalars are written here; only containers and the rare types go back to `run`.
                while *i < *n {
                    let item = if let Ok(l) = obj.cast::<PyList>() {
                        // Bound-checked: user code run meanwhile may have shrunk the list.
                        l.get_item(*i).map_err(|_| changed("list"))?
                    } else {
                        obj.cast::<PyTuple>()?.get_item(*i)?
                    };
                    *i += 1;
                    if !self.scalar(&item)? {
                        return Ok(Some(item));
                    }
                }
                Ok(None)
            }
            Frame::Dict {
                obj,
                pos,
                n,
                seen,
                item,
                value,
                ..
            } => {
                if let Some(v) = value.take() {
                    return Ok(Some(v));
                }
                loop {
                    if let Some(start) = item.take() {
                        self.w.item_end(start);
                        *seen += 1;
                    }
                    // Encoding an entry can run user code (model_dump, properties) that
                    // mutates the dict.
                    if obj.len() != *n {
                        return Err(changed("dict"));
                    }
                    let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                    let mut v: *mut ffi::PyObject = std::ptr::null_mut();
                    // SAFETY: obj is a dict; PyDict_Next returns borrowed references, which
                    // become owned at once, before any Python code can run.
                    let (k, v) = unsafe {
                        if ffi::PyDict_Next(obj.as_ptr(), pos, &mut k, &mut v) == 0 {
                            return Ok(None);
                        }
                        (
                            Bound::from_borrowed_ptr(self.py, k),
                            Bound::from_borrowed_ptr(self.py, v),
                        )
                    };
                    *item = Some(self.w.item_start());
                    if !self.scalar(&k)? {
                        *value = Some(v);
                        return Ok(Some(k));
                    }
                    if !self.scalar(&v)? {
                        return Ok(Some(v));
                    }
                }
            }
            Frame::Set {
                iter, seen, item, ..
            } => loop {
                if let Some(start) = item.take() {
                    self.w.item_end(start);
                    *seen += 1;
                }
                // The set iterator raises RuntimeError itself if the set changes size.
                let Some(m) = iter.next() else {
                    return Ok(None);
                };
                let m = m?;
                *item = Some(self.w.item_start());
                if !self.scalar(&m)? {
                    return Ok(Some(m));
                }
            },
            Frame::Fields { obj, fields, i } => {
                if *i == fields.len() {
                    return Ok(None);
                }
                let py = self.py;
                let name = fields.get_item(*i)?.getattr(intern!(py, "name"))?;
                let name = name.cast_into::<PyString>()?;
                *i += 1;
                self.name(&name)?;
                // A field may be a property: user code.
                Ok(Some(crate::ucall::getattr(obj, &name)?))
            }
            Frame::Model { value, .. } | Frame::One { value } => Ok(value.take()),
        }
    }

    fn close(&mut self, f: Frame<'py>) -> PyResult<()> {
        match f {
            Frame::Seq { obj, n, .. } => {
                if obj.cast::<PyList>().is_ok_and(|l| l.len() != n) {
                    return Err(changed("list"));
                }
            }
            Frame::Dict { n, seen, group, .. } => {
                if seen != n {
                    return Err(changed("dict"));
                }
                self.w.end_unordered(group);
            }
            Frame::Set { n, seen, group, .. } => {
                if seen != n {
                    return Err(changed("set"));
                }
                self.w.end_unordered(group);
            }
            Frame::Fields { .. } => {}
            Frame::Model { mark, .. } => self.w.release(mark),
            Frame::One { .. } => return Ok(()),
        }
        self.path.pop();
        Ok(())
    }

    fn enter(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let addr = obj.as_ptr() as usize;
        if self.path.contains(&addr) {
            return Err(PyValueError::new_err(format!(
                "hash_key: the input contains a reference cycle (a {} that contains itself)",
                type_name(obj)
            )));
        }
        if self.path.len() >= MAX_DEPTH {
            return Err(PyValueError::new_err(format!(
                "hash_key: the input nests deeper than {MAX_DEPTH} levels of containers"
            )));
        }
        self.path.push(addr);
        Ok(())
    }

    fn open_seq(&mut self, obj: &Bound<'py, PyAny>, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        self.enter(obj)?;
        // The built-in lengths, not a subclass's `__len__`.
        let (t, n) = match obj.cast::<PyList>() {
            Ok(l) => (tag::LIST, l.len()),
            Err(_) => (tag::TUPLE, obj.cast::<PyTuple>()?.len()),
        };
        self.w.tag(t);
        self.w.count(n);
        stack.push(Frame::Seq {
            obj: obj.clone(),
            i: 0,
            n,
        });
        Ok(())
    }

    fn open_dict(&mut self, d: &Bound<'py, PyDict>, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        self.enter(d.as_any())?;
        let n = d.len();
        let group = self.w.begin_unordered(tag::DICT, n);
        stack.push(Frame::Dict {
            obj: d.clone(),
            pos: 0,
            n,
            seen: 0,
            group,
            item: None,
            value: None,
        });
        Ok(())
    }

    fn open_set(&mut self, s: &Bound<'py, PyAny>, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        self.enter(s)?;
        let py = self.py;
        // SAFETY: s is a set or frozenset (or a subclass); PySet_Size runs no Python code.
        let n = unsafe { ffi::PySet_Size(s.as_ptr()) };
        let n = usize::try_from(n).map_err(|_| PyErr::fetch(py))?;
        let iter = if s.is_exact_instance_of::<PySet>() || s.is_exact_instance_of::<PyFrozenSet>() {
            s.try_iter()?
        } else {
            // The built-in iterator, not a subclass's `__iter__`.
            let base = if s.is_instance_of::<PySet>() {
                py.get_type::<PySet>()
            } else {
                py.get_type::<PyFrozenSet>()
            };
            base.call_method1(intern!(py, "__iter__"), (s,))?
                .cast_into::<PyIterator>()?
        };
        let group = self.w.begin_unordered(tag::SET, n);
        stack.push(Frame::Set {
            iter,
            n,
            seen: 0,
            group,
            item: None,
        });
        Ok(())
    }

    #[inline]
    fn str(&mut self, s: &Bound<'py, PyString>) -> PyResult<()> {
        match s.to_str() {
            Ok(t) => {
                self.w.str(t.as_bytes());
                Ok(())
            }
            Err(_) => self.str_surrogates(s),
        }
    }

    /// A str with lone surrogates has no UTF-8; `'surrogatepass'` is lossless and cannot collide
    /// with any valid UTF-8 (it yields the byte sequences UTF-8 forbids).
    #[inline(never)]
    fn str_surrogates(&mut self, s: &Bound<'py, PyString>) -> PyResult<()> {
        let b = surrogatepass(s)?;
        self.w.str(b.as_bytes());
        Ok(())
    }

    #[inline]
    fn int(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let mut overflow: std::os::raw::c_int = 0;
        // SAFETY: obj is an int (exact or subclass); the call reads its value, runs no Python.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow != 0 {
            return self.big_int(obj, overflow < 0);
        }
        if v == -1 {
            if let Some(e) = PyErr::take(self.py) {
                return Err(e);
            }
        }
        self.w.int(v);
        Ok(())
    }

    /// Ints beyond i64, through `int`'s own (unbound) methods so subclasses cannot interfere.
    #[inline(never)]
    fn big_int(&mut self, obj: &Bound<'py, PyAny>, negative: bool) -> PyResult<()> {
        let py = self.py;
        let int_t = py.get_type::<PyInt>();
        let magnitude = if negative {
            int_t.call_method1(intern!(py, "__invert__"), (obj,))?
        } else {
            obj.clone()
        };
        let bits: usize = int_t
            .call_method1(intern!(py, "bit_length"), (magnitude,))?
            .extract()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "signed"), true)?;
        let le = int_t.call_method(
            intern!(py, "to_bytes"),
            (obj, bits / 8 + 1, intern!(py, "little")),
            Some(&kwargs),
        )?;
        self.w.int_le(le.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }

    /// Everything but the exact built-ins: enums first (so an IntEnum is an enum, not an int),
    /// then dataclasses, `model_dump()` objects, and subclasses of the built-ins.
    #[inline(never)]
    fn other(&mut self, obj: &Bound<'py, PyAny>, stack: &mut Vec<Frame<'py>>) -> PyResult<()> {
        let py = self.py;
        if self.everyday(obj)? {
            return Ok(());
        }
        if obj.is_instance_of::<PyType>() {
            return Err(self.unsupported(obj));
        }
        if obj.is_instance(ENUM_TYPE.import(py, "enum", "Enum")?)? {
            return self.enum_member(obj, stack);
        }
        // Attribute reads of user classes (a metaclass's or the object's `__getattr__`) go
        // through `ucall`, as calls do.
        let ty = obj.get_type();
        if crate::ucall::getattr_opt(ty.as_any(), intern!(py, "__dataclass_fields__"))?.is_some() {
            return self.open_dataclass(obj, stack);
        }
        if let Some(dump) = crate::ucall::getattr_opt(obj, intern!(py, "model_dump"))? {
            if dump.is_callable() {
                self.enter(obj)?;
                let depth = self.path.len();
                let mark = self.w.mark();
                let opened = self.class_name_after(tag::MODEL, obj).and_then(|()| {
                    let dumped = crate::ucall::call0(&dump)?;
                    stack.push(Frame::Model {
                        obj: obj.clone(),
                        value: Some(dumped),
                        mark,
                        depth,
                        json: false,
                    });
                    Ok(())
                });
                if opened.is_err() {
                    // No frame holds the mark: give it back here.
                    self.w.release(mark);
                }
                return opened;
            }
        }
        if let Ok(s) = obj.cast::<PyString>() {
            self.str(s)
        } else if obj.is_instance_of::<PyInt>() {
            self.int(obj)
        } else if let Ok(f) = obj.cast::<PyFloat>() {
            self.w.float(f.value());
            Ok(())
        } else if let Ok(b) = obj.cast::<PyBytes>() {
            self.w.bytes(b.as_bytes());
            Ok(())
        } else if let Ok(b) = obj.cast::<PyByteArray>() {
            // SAFETY: the bytes are copied into the writer at once; no Python code runs
            // in between that could resize the bytearray.
            self.w.bytes(unsafe { b.as_bytes() });
            Ok(())
        } else if let Ok(d) = obj.cast::<PyDict>() {
            self.open_dict(d, stack)
        } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            self.open_seq(obj, stack)
        } else if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            self.open_set(obj, stack)
        } else {
            Err(self.unsupported(obj))
        }
    }

    /// The `TypeError` for `obj`, noted as recoverable by a model around it.
    #[cold]
    fn unsupported(&mut self, obj: &Bound<'py, PyAny>) -> PyErr {
        self.unsupported = true;
        unsupported(obj)
    }

    /// Writes `obj` if its type is exactly `datetime`, `date`, `time`, `timedelta`, `UUID` or
    /// `Decimal`, and says whether it did. (Subclasses such as `pandas.Timestamp` carry more than
    /// these fields and are not read as their base.)
    fn everyday(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let py = self.py;
        let t = Everyday::get(py)?;
        let ty = obj.get_type();
        let ty = ty.as_ptr();
        if ty == t.datetime.as_ptr() {
            let (y, m, d) = date_fields(obj)?;
            let (time, offset) = time_fields(obj)?;
            self.w.datetime(y, m, d, time, offset);
        } else if ty == t.date.as_ptr() {
            let (y, m, d) = date_fields(obj)?;
            self.w.date(y, m, d);
        } else if ty == t.time.as_ptr() {
            let (time, offset) = time_fields(obj)?;
            self.w.time(time, offset);
        } else if ty == t.timedelta.as_ptr() {
            self.w.timedelta(delta(obj)?);
        } else if ty == t.uuid.as_ptr() {
            let v: u128 = obj.getattr(intern!(py, "int"))?.extract()?;
            self.w.uuid(v.to_be_bytes());
        } else if ty == t.decimal.as_ptr() {
            self.decimal(obj)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn decimal(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let parts = obj.call_method0(intern!(py, "as_tuple"))?;
        let (sign, digits, exp): (u8, Bound<'py, PyTuple>, Bound<'py, PyAny>) = parts.extract()?;
        let mut ascii = Vec::with_capacity(digits.len());
        for d in digits.iter() {
            let d: u8 = d.extract()?;
            if d > 9 {
                return Err(PyValueError::new_err(format!(
                    "hash_key: a Decimal digit out of range ({d})"
                )));
            }
            ascii.push(b'0' + d);
        }
        let exp = if let Ok(s) = exp.cast::<PyString>() {
            match s.to_str()? {
                "F" => DecimalExp::Infinity,
                "n" => DecimalExp::NaN,
                "N" => DecimalExp::SNaN,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "hash_key: unknown Decimal exponent {other:?}"
                    )))
                }
            }
        } else {
            DecimalExp::Finite(exp.extract()?)
        };
        self.w.decimal(sign != 0, &ascii, exp);
        Ok(())
    }

    /// A tag, then the class name (see [`Walker::class_name`]).
    fn class_name_after(&mut self, t: u8, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        self.w.tag(t);
        self.class_name(obj)
    }

    /// `f"{cls.__module__}.{cls.__qualname__}"` as a length-prefixed name.
    fn class_name(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let ty = obj.get_type();
        // A metaclass (pydantic's has `__getattr__`) may run Python code here.
        let module = crate::ucall::getattr(ty.as_any(), intern!(py, "__module__"))?.str()?;
        let qualname = crate::ucall::getattr(ty.as_any(), intern!(py, "__qualname__"))?.str()?;
        let name = PyString::new(py, &format!("{}.{}", module.to_cow()?, qualname.to_cow()?));
        self.name(&name)
    }

    /// A length-prefixed str without a tag.
    fn name(&mut self, s: &Bound<'py, PyString>) -> PyResult<()> {
        match s.to_str() {
            Ok(t) => self.w.name(t.as_bytes()),
            Err(_) => self.w.name(surrogatepass(s)?.as_bytes()),
        }
        Ok(())
    }

    fn enum_member(
        &mut self,
        obj: &Bound<'py, PyAny>,
        stack: &mut Vec<Frame<'py>>,
    ) -> PyResult<()> {
        let py = self.py;
        let name = crate::ucall::getattr(obj, intern!(py, "_name_"))?;
        if let Ok(name) = name.cast::<PyString>() {
            self.w.tag(tag::ENUM);
            self.class_name(obj)?;
            self.name(name)
        } else {
            self.w.tag(tag::ENUM_VALUE);
            self.class_name(obj)?;
            let value = crate::ucall::getattr(obj, intern!(py, "_value_"))?;
            stack.push(Frame::One { value: Some(value) });
            Ok(())
        }
    }

    fn open_dataclass(
        &mut self,
        obj: &Bound<'py, PyAny>,
        stack: &mut Vec<Frame<'py>>,
    ) -> PyResult<()> {
        let py = self.py;
        let fields_fn = DATACLASS_FIELDS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("dataclasses")?.getattr("fields")?.unbind())
        })?;
        let fields = crate::ucall::call1(fields_fn.bind(py), obj)?.cast_into::<PyTuple>()?;
        self.enter(obj)?;
        self.w.tag(tag::DATACLASS);
        self.class_name(obj)?;
        self.w.count(fields.len());
        stack.push(Frame::Fields {
            obj: obj.clone(),
            fields,
            i: 0,
        });
        Ok(())
    }
}

fn surrogatepass<'py>(s: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: s is a str; the C strings are NUL-terminated literals; the result is owned.
    let b = unsafe {
        let p = ffi::PyUnicode_AsEncodedString(
            s.as_ptr(),
            c"utf-8".as_ptr(),
            c"surrogatepass".as_ptr(),
        );
        Bound::from_owned_ptr_or_err(s.py(), p)?
    };
    Ok(b.cast_into::<PyBytes>()?)
}

/// A date's (or datetime's) year, month and day.
fn date_fields(obj: &Bound<'_, PyAny>) -> PyResult<(u16, u8, u8)> {
    let py = obj.py();
    Ok((
        obj.getattr(intern!(py, "year"))?.extract()?,
        obj.getattr(intern!(py, "month"))?.extract()?,
        obj.getattr(intern!(py, "day"))?.extract()?,
    ))
}

/// A time's (or datetime's) fields and `utcoffset()` (not called when `tzinfo` is None).
fn time_fields(obj: &Bound<'_, PyAny>) -> PyResult<(TimeFields, Option<Delta>)> {
    let py = obj.py();
    let t = TimeFields {
        hour: obj.getattr(intern!(py, "hour"))?.extract()?,
        minute: obj.getattr(intern!(py, "minute"))?.extract()?,
        second: obj.getattr(intern!(py, "second"))?.extract()?,
        microsecond: obj.getattr(intern!(py, "microsecond"))?.extract()?,
        fold: obj.getattr(intern!(py, "fold"))?.extract()?,
    };
    if obj.getattr(intern!(py, "tzinfo"))?.is_none() {
        return Ok((t, None));
    }
    // A tzinfo's utcoffset is user code; datetime checks that it returns a timedelta or None.
    let offset = crate::ucall::call0(&obj.getattr(intern!(py, "utcoffset"))?)?;
    if offset.is_none() {
        Ok((t, None))
    } else {
        Ok((t, Some(delta(&offset)?)))
    }
}

fn delta(obj: &Bound<'_, PyAny>) -> PyResult<Delta> {
    let py = obj.py();
    Ok(Delta {
        days: obj.getattr(intern!(py, "days"))?.extract()?,
        seconds: obj.getattr(intern!(py, "seconds"))?.extract()?,
        microseconds: obj.getattr(intern!(py, "microseconds"))?.extract()?,
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    match obj.get_type().fully_qualified_name() {
        Ok(n) => n.to_string(),
        Err(_) => "<unnamed type>".to_owned(),
    }
}

fn unsupported(obj: &Bound<'_, PyAny>) -> PyErr {
    let what = if obj.is_instance_of::<PyType>() {
        format!(
            "the class {} itself",
            obj.str().map(|s| s.to_string()).unwrap_or_default()
        )
    } else {
        format!("an object of type '{}'", type_name(obj))
    };
    PyTypeError::new_err(format!(
        "hash_key cannot encode {what}: supported are None, bool, int, float, str, bytes, \
         bytearray, list, tuple, dict, set, frozenset, datetime, date, time, timedelta, UUID, \
         Decimal, dataclass instances, enums and objects with model_dump(); pass a key_generator (e.g. CacheConfig(key_generator=...)) to key \
         other inputs"
    ))
}

fn changed(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "hash_key: a {what} changed size while it was being hashed"
    ))
}
