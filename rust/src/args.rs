//! Durations from Python arguments, shared by every binding: one set of rules and messages.

use crate::errors::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt};
use std::time::Duration;

static TIMEDELTA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `repr(v)` for an error message: shortened, and never failing itself (as the Python
/// package's `_config.show`).
pub fn shown(v: &Bound<'_, PyAny>) -> String {
    const LIMIT: usize = 200;
    match v.repr() {
        Ok(r) => {
            let r = r.to_string();
            let n = r.chars().count();
            if n <= LIMIT {
                return r;
            }
            let head: String = r.chars().take(LIMIT - 5).collect();
            let tail: String = r.chars().skip(n - 2).collect();
            format!("{head}...{tail}")
        }
        Err(_) => format!("<{} object (repr failed)>", type_name(v)),
    }
}

/// The name of `v`'s type (empty if even that fails).
pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A `TypeError` naming the field and the value's repr.
pub fn type_error(field: &'static str, v: &Bound<'_, PyAny>, expected: &'static str) -> PyErr {
    Error::ConfigType {
        field,
        value: shown(v),
        expected,
    }
    .into()
}

/// Seconds from an `int`, a `float` or a `datetime.timedelta`; a `bool` is refused.
pub fn seconds_of(field: &'static str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    const EXPECTED: &str = "a number of seconds or a timedelta";
    if v.is_instance_of::<PyBool>() {
        return Err(type_error(field, v, EXPECTED));
    }
    if v.is_instance_of::<PyFloat>() {
        return v.extract();
    }
    if v.is_instance_of::<PyInt>() {
        // An int past the float range is a bad value, not an `OverflowError`.
        return v.extract().map_err(|_| {
            Error::Config {
                field,
                value: shown(v),
                why: "is too large",
            }
            .into()
        });
    }
    let py = v.py();
    let td = TIMEDELTA.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("datetime")?.getattr("timedelta")?.unbind())
    })?;
    if v.is_instance(td.bind(py))? {
        return v.call_method0("total_seconds")?.extract();
    }
    Err(type_error(field, v, EXPECTED))
}

/// A wait limit: `None` waits forever; otherwise seconds >= 0, where `inf` also means forever.
pub fn wait_limit(field: &'static str, secs: Option<f64>) -> Result<Option<Duration>, Error> {
    match secs {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(Error::Config {
            field,
            value: format!("{t}"),
            why: "must be a non-negative number of seconds or None",
        }),
        Some(t) if t.is_infinite() => Ok(None),
        Some(t) => Duration::try_from_secs_f64(t)
            .map(Some)
            .map_err(|_| Error::Config {
                field,
                value: format!("{t}"),
                why: "is too large",
            }),
    }
}

/// The longest interval between two cleanup rounds: a century, "never" in practice. A longer
/// one (anything up to `Duration::MAX` passes validation) would overflow the `Instant`
/// arithmetic of the cleanup thread, which panics.
pub const MAX_CLEANUP_INTERVAL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The shortest interval between two cleanup rounds: a shorter one would keep the shared
/// cleanup thread spinning on a core.
pub const MIN_CLEANUP_INTERVAL: Duration = Duration::from_millis(1);

/// `interval`, clamped to [`MIN_CLEANUP_INTERVAL`]..=[`MAX_CLEANUP_INTERVAL`]: what is handed
/// to `reaper::register`.
pub fn cleanup_interval(interval: Duration) -> Duration {
    interval.clamp(MIN_CLEANUP_INTERVAL, MAX_CLEANUP_INTERVAL)
}

// ---------------------------------------------------------------- cache policy and weights

/// `policy`: `None` (LRU), `"lru"` or `"tinylfu"`.
pub fn cache_policy(v: Option<&Bound<'_, PyAny>>) -> PyResult<crate::cache::core::Policy> {
    use crate::cache::core::Policy;
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(Policy::Lru);
    };
    let Ok(s) = v.cast::<pyo3::types::PyString>() else {
        return Err(type_error("policy", v, "'lru' or 'tinylfu'"));
    };
    match s.to_str()? {
        "lru" => Ok(Policy::Lru),
        "tinylfu" => Ok(Policy::TinyLfu),
        _ => Err(Error::Config {
            field: "policy",
            value: shown(v),
            why: "must be 'lru' or 'tinylfu'",
        }
        .into()),
    }
}

/// `max_weight` (`None`: no weight bound, else an int >= 1) and `weigher` (`None` or a
/// callable; required with `max_weight`).
pub fn cache_weights(
    max_weight: Option<&Bound<'_, PyAny>>,
    weigher: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Option<u64>, Option<Py<PyAny>>)> {
    let weigher = match weigher.filter(|w| !w.is_none()) {
        None => None,
        Some(w) if w.is_callable() => Some(w.clone().unbind()),
        Some(w) => return Err(type_error("weigher", w, "a callable or None")),
    };
    let max_weight = match max_weight.filter(|m| !m.is_none()) {
        None => None,
        Some(m) => {
            if m.is_instance_of::<PyBool>() || !m.is_instance_of::<PyInt>() {
                return Err(type_error("max_weight", m, "a positive int or None"));
            }
            let n: i128 = m.extract().unwrap_or(i128::MAX);
            if n < 1 {
                return Err(Error::Config {
                    field: "max_weight",
                    value: shown(m),
                    why: "must be >= 1",
                }
                .into());
            }
            // u64::MAX stands for "no bound" in the core.
            Some(
                u64::try_from(n)
                    .ok()
                    .filter(|&n| n < u64::MAX)
                    .ok_or_else(|| {
                        PyErr::from(Error::Config {
                            field: "max_weight",
                            value: shown(m),
                            why: "is too large",
                        })
                    })?,
            )
        }
    };
    if max_weight.is_some() && weigher.is_none() {
        return Err(Error::Config {
            field: "weigher",
            value: "None".into(),
            why: "max_weight needs a weigher (value -> int)",
        }
        .into());
    }
    Ok((max_weight, weigher))
}

/// `weigher(value)`, checked: an int >= 0 (weights past `u64::MAX` saturate, heavier than any
/// bound). Runs user code: call it with no Rust lock held.
pub fn weigh(weigher: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let w = crate::ucall::call1(weigher, value).map_err(|e| {
        if !e.is_instance_of::<pyo3::exceptions::PyException>(value.py()) {
            return e;
        }
        let err = pyo3::exceptions::PyTypeError::new_err(format!(
            "weigher={} raised {}: {}",
            shown(weigher),
            type_name(e.value(value.py()).as_any()),
            e.value(value.py())
        ));
        err.set_cause(value.py(), Some(e));
        err
    })?;
    if w.is_instance_of::<PyBool>() || !w.is_instance_of::<PyInt>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "weigher={} returned {}: expected an int >= 0",
            shown(weigher),
            shown(&w)
        )));
    }
    let n: i128 = w.extract().unwrap_or(i128::MAX);
    if n < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "weigher={} returned {}: a weight must be >= 0",
            shown(weigher),
            shown(&w)
        )));
    }
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}
