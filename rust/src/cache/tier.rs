//! What a second tier (`agentperf.tiers`, in Python) asks of the in-process cache:
//!
//! - [`Fill`]: a leader's outcome that says how the in-process tier keeps the value (for the
//!   store entry's remaining TTL, or not at all) and whether it was a hit of the store (the
//!   caller's miss becomes a hit);
//! - `cache_control`'s switch: the count of open controls. While it is zero (always, unless a
//!   user opens `ap.cache_control(...)`), the hit path reads one atomic and nothing else.

use super::core::Ttl;
use crate::errors::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `cache_control` blocks open now, in any thread or task.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// `agentperf._control.CONTROL`, the context variable holding `(refresh, no_store)`.
static CONTROL_VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The `cache_control` in force for the calling context.
#[derive(Clone, Copy, Debug, Default)]
pub struct Control {
    /// Skip the lookups; run the agent and store its fresh output.
    pub refresh: bool,
    /// Store nothing new.
    pub no_store: bool,
}

/// The caller's control: the default (one atomic load) unless a control is open somewhere.
#[inline]
pub fn control(py: Python<'_>) -> PyResult<Control> {
    if OPEN.load(Ordering::Relaxed) == 0 {
        return Ok(Control::default());
    }
    read_control(py)
}

#[cold]
fn read_control(py: Python<'_>) -> PyResult<Control> {
    let var = CONTROL_VAR.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("agentperf._control")?
                .getattr("CONTROL")?
                .unbind(),
        )
    })?;
    let v = var.bind(py).call_method0("get")?;
    if v.is_none() {
        return Ok(Control::default());
    }
    let (refresh, no_store): (bool, bool) = v.extract()?;
    Ok(Control { refresh, no_store })
}

/// Count a `cache_control` block opened (`delta=1`) or closed (`delta=-1`); returns the count
/// open now. Called by `agentperf.cache_control` only.
#[pyfunction]
pub fn _cache_controls(delta: i64) -> usize {
    if delta >= 0 {
        OPEN.fetch_add(delta as usize, Ordering::Relaxed) + delta as usize
    } else {
        let d = delta.unsigned_abs() as usize;
        let before = OPEN
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(d))
            })
            .unwrap_or(0);
        before.saturating_sub(d)
    }
}

/// A TTL from Python: `None` the default, `inf` forever, else positive seconds.
pub fn ttl_of(ttl: Option<f64>) -> PyResult<Ttl> {
    match ttl {
        None => Ok(Ttl::Default),
        Some(s) => match crate::clock::seconds("ttl", s) {
            Ok(None) => Ok(Ttl::Never),
            Ok(Some(d)) => Ok(Ttl::For(d)),
            Err(_) => Err(Error::Config {
                field: "ttl",
                value: s.to_string(),
                why: "must be a positive number of seconds",
            }
            .into()),
        },
    }
}

/// How the in-process tier keeps a leader's value.
#[derive(Clone, Copy, Debug)]
pub struct Keep {
    /// For how long.
    pub ttl: Ttl,
    /// Whether to keep it at all.
    pub store: bool,
    /// A hit of the store: the leader's miss is counted as a hit instead.
    pub hit: bool,
}

impl Keep {
    /// What a leader under `ctl` keeps by default: the value, for the default TTL.
    #[inline]
    pub fn under(ctl: Control) -> Self {
        Keep {
            ttl: Ttl::Default,
            store: !ctl.no_store,
            hit: false,
        }
    }

    /// `v` itself and this keep, or, when `v` is a [`Fill`], its value and its keep (never
    /// storing what the control forbids).
    #[inline]
    pub fn of<'py>(self, v: &Bound<'py, PyAny>) -> (Bound<'py, PyAny>, Keep) {
        match v.cast::<Fill>() {
            Ok(f) => {
                let f = f.get();
                (
                    f.value.bind(v.py()).clone(),
                    Keep {
                        ttl: f.ttl,
                        store: self.store && f.keep,
                        hit: f.hit,
                    },
                )
            }
            Err(_) => (v.clone(), self),
        }
    }
}

/// A leader's output with how the in-process tier keeps it (the second tier returns it from
/// the call it runs for a cached agent): ``_Fill(value, ttl=None, keep=True, hit=False)``.
/// ``ttl`` seconds (``None``: the cache's default, ``inf``: forever); ``keep=False`` keeps
/// nothing; ``hit=True`` counts the call as a hit (the store had it). Callers receive
/// ``value``.
#[pyclass(frozen, module = "agentperf", name = "_Fill")]
pub struct Fill {
    value: Py<PyAny>,
    ttl: Ttl,
    keep: bool,
    hit: bool,
}

#[pymethods]
impl Fill {
    #[new]
    #[pyo3(signature = (value, ttl=None, keep=true, hit=false))]
    fn new(value: Py<PyAny>, ttl: Option<f64>, keep: bool, hit: bool) -> PyResult<Self> {
        let ttl = ttl_of(ttl)?;
        Ok(Fill {
            value,
            ttl,
            keep,
            hit,
        })
    }

    /// The output the callers receive.
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.value)
    }
}
