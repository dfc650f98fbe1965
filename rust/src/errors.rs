//! The one error tree. Exception classes are created once, at module import, and stored here;
//! `python/agentperf/errors.py` re-exports them. Messages name the field and the value.
//!
//! The cores' own errors ([`CoreError`], in `errors/core.rs`) know nothing of Python; they
//! meet the exception tree here, in `From<CoreError> for PyErr`.

pub mod core;
pub use self::core::CoreError;

use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

static AGENTPERF_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static POOL_CLOSED_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static POOL_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BATCH_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Every failure the Rust side reports to Python.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A configuration value of the right type but out of range.
    Config {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    /// A configuration value of the wrong type.
    ConfigType {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Acquire on a closed pool.
    PoolClosed,
    /// No agent became free within the timeout (seconds).
    PoolTimeout(f64),
    /// A value that cannot be hashed into a key, and why.
    Key(String),
    /// Misuse that is a `ValueError` (e.g. releasing a foreign object).
    Value(String),
    /// Misuse that is a `RuntimeError` (e.g. re-entrant single-flight).
    Runtime(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config { field, value, why } => write!(f, "{field}={value}: {why}"),
            Error::ConfigType {
                field,
                value,
                expected,
            } => {
                write!(f, "{field}={value}: expected {expected}")
            }
            Error::PoolClosed => write!(f, "the pool is closed"),
            Error::PoolTimeout(s) => write!(f, "no agent became free within {s} s"),
            Error::Key(m) | Error::Value(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::clock::BadSeconds> for Error {
    fn from(e: crate::clock::BadSeconds) -> Error {
        Error::Config {
            field: e.field,
            value: format!("{}", e.value),
            why: e.why,
        }
    }
}

impl From<crate::clock::BadSeconds> for PyErr {
    fn from(e: crate::clock::BadSeconds) -> PyErr {
        Error::from(e).into()
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::Config { .. } | Error::Value(_) => PyValueError::new_err(msg),
            Error::ConfigType { .. } => PyTypeError::new_err(msg),
            Error::Key(_) => PyValueError::new_err(msg),
            Error::Runtime(_) => PyRuntimeError::new_err(msg),
            Error::PoolClosed => Python::attach(|py| PyErr::from_type(pool_closed_error(py), msg)),
            Error::PoolTimeout(_) => {
                Python::attach(|py| PyErr::from_type(pool_timeout_error(py), msg))
            }
        }
    }
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Error {
        match e {
            CoreError::PoolClosed => Error::PoolClosed,
            CoreError::Config { field, value, why } => Error::Config { field, value, why },
            CoreError::OverReleased { .. } => Error::Value(e.to_string()),
        }
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        Error::from(e).into()
    }
}

fn get<'py>(py: Python<'py>, cell: &PyOnceLock<Py<PyType>>) -> Bound<'py, PyType> {
    match cell.get(py) {
        Some(t) => t.bind(py).clone(),
        // Only reachable if the module init failed, in which case nothing can be raised anyway.
        None => py.get_type::<PyRuntimeError>(),
    }
}

/// `agentperf.AgentPerfError`.
pub fn agentperf_error(py: Python<'_>) -> Bound<'_, PyType> {
    get(py, &AGENTPERF_ERROR)
}
/// `agentperf.PoolClosedError`.
pub fn pool_closed_error(py: Python<'_>) -> Bound<'_, PyType> {
    get(py, &POOL_CLOSED_ERROR)
}
/// `agentperf.PoolTimeoutError` (also a `TimeoutError`).
pub fn pool_timeout_error(py: Python<'_>) -> Bound<'_, PyType> {
    get(py, &POOL_TIMEOUT_ERROR)
}
/// `agentperf.BatchTimeoutError` (also a `TimeoutError`).
pub fn batch_timeout_error(py: Python<'_>) -> Bound<'_, PyType> {
    get(py, &BATCH_TIMEOUT_ERROR)
}

fn make_type<'py>(
    m: &Bound<'py, PyModule>,
    name: &str,
    doc: &str,
    bases: &[Bound<'py, PyType>],
) -> PyResult<Bound<'py, PyType>> {
    let py = m.py();
    let ns = PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "agentperf")?;
    let t = py
        .get_type::<PyType>()
        .call1((name, PyTuple::new(py, bases)?, ns))?
        .cast_into::<PyType>()?;
    m.add(name, &t)?;
    Ok(t)
}

/// Create the exception classes and add them to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let exc = py.get_type::<pyo3::exceptions::PyException>();
    let timeout = py.get_type::<PyTimeoutError>();
    let base = make_type(
        m,
        "AgentPerfError",
        "Base class of agentperf's own errors.",
        &[exc],
    )?;
    let closed = make_type(
        m,
        "PoolClosedError",
        "Raised by acquire/execute on a pool that has been closed.",
        std::slice::from_ref(&base),
    )?;
    let ptimeout = make_type(
        m,
        "PoolTimeoutError",
        "No agent became free within the acquire timeout.",
        &[base.clone(), timeout.clone()],
    )?;
    let btimeout = make_type(
        m,
        "BatchTimeoutError",
        "The batch's `timeout` passed while this item was still running.",
        &[base.clone(), timeout],
    )?;
    let _ = AGENTPERF_ERROR.set(py, base.unbind());
    let _ = POOL_CLOSED_ERROR.set(py, closed.unbind());
    let _ = POOL_TIMEOUT_ERROR.set(py, ptimeout.unbind());
    let _ = BATCH_TIMEOUT_ERROR.set(py, btimeout.unbind());
    Ok(())
}
