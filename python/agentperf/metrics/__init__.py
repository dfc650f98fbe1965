"""Metrics: every named pool, cache, cached agent, executor, semaphore and rate limiter in
Prometheus and OpenTelemetry.

>>> import agentperf as ap
>>> pool = ap.AgentPool(lambda: str.upper, max_size=4, name="upper")
>>> pool.name
'upper'
>>> pool.close()

Give an object ``name=`` (a config field or keyword: 1 to 128 characters of
``A-Za-z0-9_.:/-``) and it is exported while it lives; unnamed objects are not exported. Then
either :func:`register_prometheus` (a ``prometheus_client`` collector, extra
``agentperf-rs[prometheus]``) or :func:`instrument_otel` (OpenTelemetry observable
instruments, extra ``agentperf-rs[otel]``); each imports its library only when called.

Every metric, its unit, labels and meaning: ``docs/metrics.md`` (and :data:`METRICS`).
Labels are the object's ``name`` and, for two metrics, a ``state``: never an input. Two live
objects of a kind with one name are reported as one, their values added. Reading the metrics
takes no lock that a hot path holds (the figures are atomics in Rust).
"""

from __future__ import annotations

from typing import Any

# These modules import prometheus_client / opentelemetry only when an exporter is made.
from ._otel import OtelInstruments
from ._prometheus import AgentperfCollector
from ._registry import BOUNDS, METRICS, Metric

__all__ = [
    "BOUNDS",
    "METRICS",
    "AgentperfCollector",
    "Metric",
    "OtelInstruments",
    "instrument_otel",
    "register_prometheus",
]


def register_prometheus(registry: Any = None) -> AgentperfCollector:
    """Register agentperf's collector with a ``prometheus_client`` registry (default: the
    global ``prometheus_client.REGISTRY``) and return it; registering again with the same
    registry returns the same collector. Prometheus names: dots as underscores, seconds
    ending ``_seconds``, counters ending ``_total`` (``agentperf_cache_hits_total``).

    >>> import prometheus_client
    >>> reg = prometheus_client.CollectorRegistry()
    >>> c = register_prometheus(reg)
    >>> register_prometheus(reg) is c
    True
    """
    from ._prometheus import register

    return register(registry)


def instrument_otel(meter_provider: Any = None) -> OtelInstruments:
    """Create agentperf's OpenTelemetry instruments on ``meter_provider`` (default: the
    global one) and return them. Counters and gauges are observable instruments read at
    each collection (a collected object is gone from the next one); the two histograms are
    recorded at collection time from the Rust histograms (see ``docs/metrics.md``). Calling
    again with the same provider returns the same instruments."""
    from ._otel import instrument

    return instrument(meter_provider)
