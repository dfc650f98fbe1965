"""The Prometheus exporter: a ``prometheus_client`` custom collector over the registry.

``prometheus_client`` is imported only here, when :func:`register` runs (extra
``agentperf-rs[prometheus]``).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ._registry import BOUNDS, METRICS, Metric, read

__all__ = ["AgentperfCollector", "register"]


def _import() -> Any:
    try:
        import prometheus_client.core
        import prometheus_client.registry
    except ImportError as e:
        raise ImportError(
            "ap.metrics.register_prometheus() needs prometheus_client: "
            "pip install 'agentperf-rs[prometheus]'"
        ) from e
    return prometheus_client


def _family(core: Any, m: Metric) -> Any:
    labels = ["name", "state"] if m.states else ["name"]
    unit = "seconds" if m.unit == "s" else ""
    name = m.prometheus_name
    if m.kind == "counter":
        return core.CounterMetricFamily(name, m.description, labels=labels, unit=unit)
    if m.kind == "histogram":
        return core.HistogramMetricFamily(name, m.description, labels=labels, unit=unit)
    return core.GaugeMetricFamily(name, m.description, labels=labels, unit=unit)


_LE = [*(repr(float(b)) for b in BOUNDS), "+Inf"]


class AgentperfCollector:
    """Reports every live named pool, cache, cached agent, executor, limiter and semaphore
    at each scrape (see ``docs/metrics.md`` for the list). Reading takes no lock a hot path
    holds."""

    def __init__(self) -> None:
        self._core = _import().core

    def describe(self) -> Iterator[Any]:
        """The metric families, without samples (lets a registry refuse a duplicate)."""
        for m in METRICS:
            yield _family(self._core, m)

    def collect(self) -> Iterator[Any]:
        """The metric families with one sample set per live named object."""
        families = {m.name: _family(self._core, m) for m in METRICS}
        for r in read():
            fam = families[r.metric.name]
            labels = [r.name] if r.state is None else [r.name, r.state]
            if r.metric.kind == "histogram":
                assert isinstance(r.value, tuple)
                counts, sum_s = r.value
                cumulative, total = [], 0
                for le, n in zip(_LE, counts, strict=True):
                    total += n
                    cumulative.append((le, float(total)))
                fam.add_metric(labels, cumulative, sum_s if math.isfinite(sum_s) else 0.0)
            else:
                assert not isinstance(r.value, tuple)
                fam.add_metric(labels, float(r.value))
        yield from families.values()


_lock = threading.Lock()
_registered: weakref.WeakKeyDictionary[Any, AgentperfCollector] = weakref.WeakKeyDictionary()


def register(registry: Any = None) -> AgentperfCollector:
    """Register the collector with ``registry`` (default: ``prometheus_client.REGISTRY``)
    once; a second call for the same registry returns the collector already there."""
    prom = _import()
    if registry is None:
        registry = prom.registry.REGISTRY
    if not isinstance(registry, prom.registry.CollectorRegistry):
        from .._config import show

        raise TypeError(
            f"registry={show(registry)}: expected a prometheus_client.CollectorRegistry or None"
        )
    with _lock:
        c = _registered.get(registry)
        if c is None:
            c = AgentperfCollector()
            registry.register(c)
            _registered[registry] = c
    return c
