"""Metrics through OpenTelemetry: the SDK's ``InMemoryMetricReader`` on a real
``MeterProvider``; values equal ``stats()``, names, units and labels as documented."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

import agentperf as ap
from agentperf.metrics import BOUNDS, METRICS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    gc.collect()  # objects of earlier tests (same names) are gone
    r = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[r])
    ap.metrics.instrument_otel(provider)
    yield r
    provider.shutdown()


def collect(r: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    """``{metric: {sorted attributes: data point}}`` of agentperf's meter, ``t.`` names only."""
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    data = r.get_metrics_data()
    if data is None:  # nothing at all to report
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != "agentperf":
                continue
            for m in sm.metrics:
                for p in m.data.data_points:
                    attrs = tuple(sorted(p.attributes.items()))
                    if dict(attrs).get("name", "").startswith("t."):
                        out.setdefault(m.name, {})[attrs] = (m, p)
    return out


def point(got: dict[str, Any], metric: str, **attrs: str) -> Any:
    return got[metric][tuple(sorted(attrs.items()))][1]


def test_values_names_units_and_labels(reader: InMemoryMetricReader) -> None:
    pool = ap.AgentPool(lambda: str.upper, max_size=2, initial_size=1, name="t.pool")
    for x in "abcd":
        pool.execute(x)
    cached = ap.CachedAgent(str.lower, max_size=1, name="t.cached")
    for x in "AAB":
        cached.execute(x)
    ex = ap.BatchExecutor(str.upper, max_concurrency=3, name="t.batch")
    ex.execute(["a"] * 300)
    lim = ap.RateLimiter(10.0, name="t.lim")
    lim.try_acquire(3.0)
    sem = ap.Semaphore(4, name="t.sem")
    sem.try_acquire()

    got = collect(reader)
    spec = {m.name: m for m in METRICS}
    assert set(got) == set(spec), "every documented metric, nothing else"
    for name, series in got.items():
        for attrs, (m, p) in series.items():
            assert m.unit == spec[name].unit
            keys = {k for k, _ in attrs}
            assert keys == ({"name", "state"} if spec[name].states else {"name"})
            if spec[name].kind == "histogram":
                assert isinstance(p, HistogramDataPoint)
                assert list(p.explicit_bounds) == list(BOUNDS)
            else:
                assert isinstance(p, NumberDataPoint)
                assert m.data.is_monotonic == (spec[name].kind == "counter")

    ps = pool.stats()
    assert point(got, "agentperf.pool.agents", name="t.pool", state="idle").value == ps.idle_count
    assert point(got, "agentperf.pool.agents", name="t.pool", state="used").value == 0
    assert point(got, "agentperf.pool.max", name="t.pool").value == 2
    assert point(got, "agentperf.pool.created", name="t.pool").value == ps.created == 1
    assert point(got, "agentperf.pool.timeouts", name="t.pool").value == 0
    wait = point(got, "agentperf.pool.wait_time", name="t.pool")
    assert (wait.count, wait.sum, wait.bucket_counts[0]) == (4, 0.0, 4)

    cs = cached.stats()
    assert point(got, "agentperf.cache.hits", name="t.cached").value == cs.hits == 1
    assert point(got, "agentperf.cache.misses", name="t.cached").value == cs.misses == 2
    assert point(got, "agentperf.cache.evictions", name="t.cached").value == cs.evictions == 1
    assert point(got, "agentperf.cache.size", name="t.cached").value == cs.size == 1

    es = ex.stats()
    items = point(got, "agentperf.batch.items", name="t.batch", state="success")
    assert items.value == es.success_tasks == 300
    assert point(got, "agentperf.batch.attempts", name="t.batch").value == es.attempts == 300
    assert point(got, "agentperf.batch.concurrency", name="t.batch").value == 3
    durations = point(got, "agentperf.batch.item_duration", name="t.batch")
    assert durations.count == 300 and sum(durations.bucket_counts) == 300

    assert point(got, "agentperf.limiter.granted", name="t.lim").value == lim.stats().granted
    assert point(got, "agentperf.semaphore.available", name="t.sem").value == 3
    assert point(got, "agentperf.semaphore.permits", name="t.sem").value == 4

    # The next collection sees what happened since, and the histogram's count grows by what
    # was observed meanwhile (recorded once, not again).
    for x in "ef":
        pool.execute(x)
    cached.execute("B")
    got = collect(reader)
    assert point(got, "agentperf.pool.wait_time", name="t.pool").count == 6
    assert point(got, "agentperf.cache.hits", name="t.cached").value == 2
    sem.release()
    for c in (pool, cached, ex):
        c.close()


def test_a_collected_object_disappears(reader: InMemoryMetricReader) -> None:
    cache = ap.Cache(name="t.gone")
    sem = ap.Semaphore(1, name="t.gone")
    got = collect(reader)
    assert ("name", "t.gone") in next(iter(got["agentperf.cache.size"]))
    assert got["agentperf.semaphore.permits"]
    del cache, sem
    gc.collect()
    got = collect(reader)
    assert "agentperf.cache.size" not in got
    assert "agentperf.semaphore.permits" not in got


def test_instrument_twice_returns_the_same_instruments() -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    first = ap.metrics.instrument_otel(provider)
    assert ap.metrics.instrument_otel(provider) is first
    assert set(first.instruments) == {m.name for m in METRICS}
    with pytest.raises(TypeError, match="meter_provider="):
        ap.metrics.instrument_otel(object())
    provider.shutdown()
