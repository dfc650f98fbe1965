//! `agentperf._agentperf._Histogram`: the binding of [`super::Histogram`] that the batch
//! executor observes item durations into and the metrics exporters read.

use super::{Snapshot, BOUNDS_S};
use pyo3::prelude::*;

/// A lock-free histogram of durations in seconds (fixed buckets, see ``bounds()``).
#[pyclass(frozen, module = "agentperf._agentperf", name = "_Histogram")]
#[derive(Default)]
pub struct Histogram(super::Histogram);

/// `(counts per bucket, sum in seconds)`: the form every histogram snapshot takes in Python.
pub fn snapshot_tuple(s: &Snapshot) -> (Vec<u64>, f64) {
    (s.counts.to_vec(), s.sum_s())
}

#[pymethods]
impl Histogram {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// The finite buckets' upper bounds in seconds (inclusive); a last bucket is ``+Inf``.
    #[staticmethod]
    fn bounds() -> Vec<f64> {
        BOUNDS_S.to_vec()
    }

    /// One observation of ``seconds`` (negative and NaN count as 0).
    fn observe(&self, seconds: f64) {
        self.0.observe_ns(super::nanos_of_secs(seconds));
    }

    /// Observations of each of ``seconds`` (a list of floats), one atomic add per bucket.
    fn observe_many(&self, seconds: Vec<f64>) {
        self.0.observe_many_secs(seconds);
    }

    /// ``(counts, sum_s)``: observations per bucket (``bounds()`` order, ``+Inf`` last; not
    /// cumulative) and their sum in seconds. Takes no lock.
    fn snapshot(&self) -> (Vec<u64>, f64) {
        snapshot_tuple(&self.0.snapshot())
    }
}
