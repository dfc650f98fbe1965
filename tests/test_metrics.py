"""Metrics: ``name=`` on every object, the weak registry and the Prometheus collector.

A real ``prometheus_client.CollectorRegistry`` per test, and one scrape over HTTP of
``prometheus_client.start_http_server`` on 127.0.0.1. Values are compared with each
object's own ``stats()``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import agentperf as ap
from agentperf.metrics import METRICS, _registry

pytestmark = pytest.mark.timeout(60)

# The list of API.md's "Metrics" section, in OpenTelemetry form.
DOCUMENTED = {
    "agentperf.pool.agents": ("gauge", "{agent}", ("idle", "used")),
    "agentperf.pool.max": ("gauge", "{agent}", ()),
    "agentperf.pool.pending_requests": ("gauge", "{request}", ()),
    "agentperf.pool.created": ("counter", "{agent}", ()),
    "agentperf.pool.destroyed": ("counter", "{agent}", ()),
    "agentperf.pool.timeouts": ("counter", "{request}", ()),
    "agentperf.pool.wait_time": ("histogram", "s", ()),
    "agentperf.cache.hits": ("counter", "{lookup}", ()),
    "agentperf.cache.misses": ("counter", "{lookup}", ()),
    "agentperf.cache.coalesced": ("counter", "{lookup}", ()),
    "agentperf.cache.evictions": ("counter", "{entry}", ()),
    "agentperf.cache.expirations": ("counter", "{entry}", ()),
    "agentperf.cache.size": ("gauge", "{entry}", ()),
    "agentperf.cache.store_hits": ("counter", "{lookup}", ()),
    "agentperf.cache.store_misses": ("counter", "{lookup}", ()),
    "agentperf.cache.store_errors": ("counter", "{error}", ()),
    "agentperf.batch.items": ("counter", "{item}", ("success", "failure", "cancelled")),
    "agentperf.batch.attempts": ("counter", "{call}", ()),
    "agentperf.batch.throttled_time": ("counter", "s", ()),
    "agentperf.batch.concurrency": ("gauge", "{call}", ()),
    "agentperf.batch.item_duration": ("histogram", "s", ()),
    "agentperf.limiter.granted": ("counter", "{unit}", ()),
    "agentperf.limiter.wait_time": ("counter", "s", ()),
    "agentperf.limiter.paused_time": ("counter", "s", ()),
    "agentperf.semaphore.permits": ("gauge", "{permit}", ()),
    "agentperf.semaphore.available": ("gauge", "{permit}", ()),
    "agentperf.semaphore.waiting": ("gauge", "{request}", ()),
}


def prom_name(otel: str, kind: str, unit: str) -> str:
    n = otel.replace(".", "_") + ("_seconds" if unit == "s" else "")
    return n + "_total" if kind == "counter" else n


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    gc.collect()  # objects of earlier tests (same names) are gone, not added to these
    reg = prometheus_client.CollectorRegistry()
    ap.metrics.register_prometheus(reg)
    return reg


def value(reg: prometheus_client.CollectorRegistry, metric: str, **labels: str) -> float | None:
    return reg.get_sample_value(metric, labels)


def samples(reg: prometheus_client.CollectorRegistry, name: str) -> list[Any]:
    out = []
    for fam in reg.collect():
        out += [s for s in fam.samples if s.labels.get("name") == name]
    return out


@pytest.fixture
def objects() -> Iterator[dict[str, Any]]:
    """One named object of every kind, used a little."""
    gc.collect()
    pool = ap.AgentPool(lambda: str.upper, max_size=3, initial_size=1, name="t.pool")
    for x in "abc":
        pool.execute(x)
    cached = ap.CachedAgent(str.lower, ap.CacheConfig(max_size=2, name="t.cached"))
    for x in ["A", "A", "B", "C", "D"]:
        cached.execute(x)
    cache = ap.Cache(max_size=10, name="t.cache")
    cache.set("k", 1)
    cache.get("k")
    cache.get("nope")
    sem = ap.Semaphore(3, name="t.sem")
    assert sem.try_acquire()
    lim = ap.RateLimiter(100.0, per=1.0, burst=5.0, name="t.lim")
    assert lim.try_acquire(2.5)

    def agent(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4, name="t.batch")
    ex.execute(range(600))
    yield {"pool": pool, "cached": cached, "cache": cache, "sem": sem, "lim": lim, "ex": ex}
    sem.release()
    for c in (pool, cached, cache, ex):
        c.close()


# --- names ---------------------------------------------------------------------------------


def test_the_spec_is_api_md_s_list() -> None:
    assert {m.name: (m.kind, m.unit, m.states) for m in METRICS} == DOCUMENTED
    for m in METRICS:
        kind, unit, _ = DOCUMENTED[m.name]
        assert m.prometheus_name == prom_name(m.name, kind, unit)


@pytest.mark.parametrize(
    "build",
    [
        lambda n: ap.AgentPool(lambda: str.upper, max_size=1, name=n),
        lambda n: ap.AgentPool(lambda: str.upper, ap.PoolConfig(max_size=1, name=n)),
        lambda n: ap.CachedAgent(str.upper, name=n),
        lambda n: ap.CachedAgent(str.upper, ap.CacheConfig(name=n)),
        lambda n: ap.Cache(name=n),
        lambda n: ap.BatchExecutor(str.upper, name=n),
        lambda n: ap.BatchExecutor(str.upper, ap.BatchConfig(name=n)),
        lambda n: ap.Semaphore(1, name=n),
        lambda n: ap.RateLimiter(1.0, name=n),
        lambda n: ap.cached(name=n)(str.upper).cache_agent,
    ],
    ids=[
        "pool-kw",
        "pool-config",
        "cached-kw",
        "cached-config",
        "cache",
        "batch-kw",
        "batch-config",
        "semaphore",
        "limiter",
        "decorator",
    ],
)
def test_name_is_validated_and_exposed(build: Any) -> None:
    ok = "svc-1.eu:pool/primary_" + "x" * 106
    assert len(ok) == 128
    obj = build(ok)
    assert obj.name == ok
    assert build(None).name is None
    for bad in ["", "x" * 129, "has space", 'quo"te', "new\nline", "é", "a{b}", "a,b=c"]:
        with pytest.raises(ValueError, match=r"name=") as e:
            build(bad)
        assert repr(bad)[:20] in str(e.value)
    for wrong in [1, b"bytes", ["x"]]:
        with pytest.raises(TypeError, match=r"name="):
            build(wrong)


def test_unnamed_objects_are_not_exported(registry: prometheus_client.CollectorRegistry) -> None:
    before = {
        (s.name, tuple(sorted(s.labels.items()))) for f in registry.collect() for s in f.samples
    }
    pool = ap.AgentPool(lambda: str.upper, max_size=2)
    pool.execute("x")
    cache = ap.Cache()
    cache.set("a", 1)
    after = {
        (s.name, tuple(sorted(s.labels.items()))) for f in registry.collect() for s in f.samples
    }
    assert after == before
    pool.close()
    cache.close()


# --- values --------------------------------------------------------------------------------


def test_prometheus_values_equal_stats(
    registry: prometheus_client.CollectorRegistry, objects: dict[str, Any]
) -> None:
    def v(metric: str, **labels: str) -> float | None:
        return value(registry, metric, **labels)

    ps = objects["pool"].stats()
    assert v("agentperf_pool_agents", name="t.pool", state="idle") == ps.idle_count
    assert v("agentperf_pool_agents", name="t.pool", state="used") == ps.active_count
    assert v("agentperf_pool_max", name="t.pool") == 3
    assert v("agentperf_pool_pending_requests", name="t.pool") == ps.waiting
    assert v("agentperf_pool_created_total", name="t.pool") == ps.created == 1
    assert v("agentperf_pool_destroyed_total", name="t.pool") == ps.destroyed
    assert v("agentperf_pool_timeouts_total", name="t.pool") == ps.timeouts
    # One observation per acquire; none waited, so all are in the first bucket, summing 0.
    assert v("agentperf_pool_wait_time_seconds_count", name="t.pool") == ps.acquired == 3
    assert v("agentperf_pool_wait_time_seconds_bucket", name="t.pool", le="0.0001") == 3
    assert v("agentperf_pool_wait_time_seconds_sum", name="t.pool") == 0.0

    for key, name in (("cached", "t.cached"), ("cache", "t.cache")):
        cs = objects[key].stats()
        assert v("agentperf_cache_hits_total", name=name) == cs.hits
        assert v("agentperf_cache_misses_total", name=name) == cs.misses
        assert v("agentperf_cache_coalesced_total", name=name) == cs.coalesced
        assert v("agentperf_cache_evictions_total", name=name) == cs.evictions
        assert v("agentperf_cache_expirations_total", name=name) == cs.expirations
        assert v("agentperf_cache_size", name=name) == cs.size
        for f in ("store_hits", "store_misses", "store_errors"):
            assert v(f"agentperf_cache_{f}_total", name=name) == getattr(cs, f, 0)
    assert objects["cached"].stats().evictions == 2  # the values above are not all zeros
    assert v("agentperf_cache_hits_total", name="t.cache") == 1

    es = objects["ex"].stats()
    assert (es.success_tasks, es.failed_tasks) == (599, 1)
    assert v("agentperf_batch_items_total", name="t.batch", state="success") == 599
    assert v("agentperf_batch_items_total", name="t.batch", state="failure") == 1
    assert v("agentperf_batch_items_total", name="t.batch", state="cancelled") == 0
    assert v("agentperf_batch_attempts_total", name="t.batch") == es.attempts == 600
    assert v("agentperf_batch_throttled_time_seconds_total", name="t.batch") == es.throttled_s
    assert v("agentperf_batch_concurrency", name="t.batch") == es.concurrency == 4
    # Every finished item observed (600 > one block of 256: the blocks and the rest).
    assert v("agentperf_batch_item_duration_seconds_count", name="t.batch") == 600
    assert v("agentperf_batch_item_duration_seconds_bucket", name="t.batch", le="+Inf") == 600
    assert v("agentperf_batch_item_duration_seconds_sum", name="t.batch") > 0

    ls = objects["lim"].stats()
    assert v("agentperf_limiter_granted_total", name="t.lim") == ls.granted == 2.5
    assert v("agentperf_limiter_wait_time_seconds_total", name="t.lim") == ls.wait_s
    assert v("agentperf_limiter_paused_time_seconds_total", name="t.lim") == ls.paused_s

    sem = objects["sem"]
    assert v("agentperf_semaphore_permits", name="t.sem") == 3
    assert v("agentperf_semaphore_available", name="t.sem") == sem.available == 2
    assert v("agentperf_semaphore_waiting", name="t.sem") == sem.waiting == 0


def test_labels_are_name_and_state_only(
    registry: prometheus_client.CollectorRegistry, objects: dict[str, Any]
) -> None:
    seen = set()
    for fam in registry.collect():
        for s in fam.samples:
            # Only this test's objects (others may linger until the next collection).
            if not s.name.startswith("agentperf_") or not s.labels["name"].startswith("t."):
                continue
            seen.add(fam.name)
            allowed = {"name", "state"} | ({"le"} if s.name.endswith("_bucket") else set())
            assert set(s.labels) <= allowed, s
            assert s.labels["name"].startswith("t.")
            if "state" in s.labels:
                assert s.labels["state"] in {"idle", "used", "success", "failure", "cancelled"}
    families = {prom_name(n, k, u).removesuffix("_total") for n, (k, u, _) in DOCUMENTED.items()}
    assert seen == families


def test_histogram_buckets_are_cumulative_and_every_wait_is_observed(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    pool = ap.AgentPool(lambda: str.upper, max_size=1, initial_size=1, name="t.waits")
    agent = pool.acquire()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10.0)))
    waiter.start()
    while pool.stats().waiting == 0:  # wait for the state, not for a time
        threading.Event().wait(0.001)
    assert value(registry, "agentperf_pool_pending_requests", name="t.waits") == 1
    threading.Event().wait(0.02)  # the waiter's wait is at least this long
    pool.release(agent)
    waiter.join(10)
    pool.release(got[0])
    with pytest.raises(ap.PoolTimeoutError):
        with pool.agent():
            pool.acquire(timeout=0.01)
    s = pool.stats()
    assert (s.acquired, s.waits, s.timeouts) == (3, 2, 1)
    buckets = [
        x
        for x in samples(registry, "t.waits")
        if x.name == "agentperf_pool_wait_time_seconds_bucket"
    ]
    counts = [b.value for b in buckets]
    assert counts == sorted(counts), "cumulative"
    assert buckets[-1].labels["le"] == "+Inf"
    # Two fast acquires (0 s), one wait of >= 20 ms, one timed-out wait of >= 10 ms.
    assert value(registry, "agentperf_pool_wait_time_seconds_count", name="t.waits") == 4
    assert (
        value(registry, "agentperf_pool_wait_time_seconds_bucket", name="t.waits", le="0.0001") == 2
    )
    assert (
        value(registry, "agentperf_pool_wait_time_seconds_bucket", name="t.waits", le="0.005") == 2
    )
    wait_sum = value(registry, "agentperf_pool_wait_time_seconds_sum", name="t.waits")
    assert wait_sum is not None and wait_sum >= 0.03
    assert value(registry, "agentperf_pool_timeouts_total", name="t.waits") == 1
    pool.close()


def test_same_name_objects_are_summed_and_collected_ones_disappear(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    a = ap.Cache(name="t.twins")
    b = ap.Cache(name="t.twins")
    a.set("x", 1)
    b.set("x", 1)
    b.set("y", 1)
    a.get("x")
    assert value(registry, "agentperf_cache_size", name="t.twins") == 3
    assert value(registry, "agentperf_cache_hits_total", name="t.twins") == 1
    del b
    gc.collect()
    assert value(registry, "agentperf_cache_size", name="t.twins") == 1
    del a
    gc.collect()
    assert samples(registry, "t.twins") == []
    assert _registry.live("cache").get("t.twins") is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: ap.AgentPool(lambda: str.upper, max_size=1, name="t.gone"),
        lambda: ap.CachedAgent(str.upper, name="t.gone"),
        lambda: ap.BatchExecutor(str.upper, name="t.gone"),
        lambda: ap.Semaphore(2, name="t.gone"),
        lambda: ap.RateLimiter(2.0, name="t.gone"),
    ],
    ids=["pool", "cached", "batch", "semaphore", "limiter"],
)
def test_a_collected_object_is_gone(
    registry: prometheus_client.CollectorRegistry, build: Any
) -> None:
    obj = build()
    assert samples(registry, "t.gone")
    close = getattr(obj, "close", None)
    if close is not None:
        close()
    del obj, close
    gc.collect()
    assert samples(registry, "t.gone") == []


def test_register_twice_returns_the_same_collector_and_checks_its_argument() -> None:
    reg = prometheus_client.CollectorRegistry()
    c = ap.metrics.register_prometheus(reg)
    assert ap.metrics.register_prometheus(reg) is c
    with pytest.raises(TypeError, match="registry="):
        ap.metrics.register_prometheus(object())


def test_async_waits_and_cancellations_keep_the_gauges_exact(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    sem = ap.Semaphore(1, name="t.asem")
    pool = ap.AgentPool(lambda: str.upper, max_size=1, initial_size=1, name="t.apool")

    async def main() -> None:
        await sem.aacquire()
        lease = await pool.aacquire()
        tasks = [asyncio.ensure_future(sem.aacquire()) for _ in range(5)]
        tasks += [asyncio.ensure_future(pool.aacquire()) for _ in range(5)]
        for _ in range(10_000):  # bounded: the tasks queue within a few loop turns
            if sem.waiting == 5 and pool.stats().waiting == 5:
                break
            await asyncio.sleep(0)
        assert value(registry, "agentperf_semaphore_waiting", name="t.asem") == 5
        assert value(registry, "agentperf_pool_pending_requests", name="t.apool") == 5
        for t in tasks[1:5] + tasks[6:]:
            t.cancel()
        sem.release()
        pool.release(lease)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert tasks[0].result() is True
        pool.release(tasks[5].result())
        sem.release()
        assert await sem.aacquire(timeout=0.01) is True
        sem.release()

    asyncio.run(main())
    assert (sem.waiting, sem.available) == (0, 1)
    assert value(registry, "agentperf_semaphore_waiting", name="t.asem") == 0
    assert value(registry, "agentperf_semaphore_available", name="t.asem") == 1
    assert value(registry, "agentperf_pool_pending_requests", name="t.apool") == 0
    assert value(registry, "agentperf_pool_agents", name="t.apool", state="idle") == 1
    pool.close()


# --- over HTTP -----------------------------------------------------------------------------


def test_scrape_over_http(objects: dict[str, Any]) -> None:
    reg = prometheus_client.CollectorRegistry()
    ap.metrics.register_prometheus(reg)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("name", "").startswith("t."):
                got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    hits = objects["cached"].stats().hits
    assert got[("agentperf_cache_hits_total", (("name", "t.cached"),))] == hits
    assert got[("agentperf_pool_max", (("name", "t.pool"),))] == 3
    assert got[("agentperf_batch_items_total", (("name", "t.batch"), ("state", "success")))] == 599
    assert "# TYPE agentperf_pool_wait_time_seconds histogram" in text
    assert "# TYPE agentperf_cache_hits_total counter" in text
    assert "# TYPE agentperf_limiter_paused_time_seconds_total counter" in text


# --- costs nothing when not used -------------------------------------------------------------


def test_import_agentperf_imports_no_exporter_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agentperf as ap; ap.metrics.METRICS; "
        "assert not [m for m in sys.modules "
        "if m.startswith(('prometheus_client', 'opentelemetry'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_store_backed_cached_agent_exports_its_store_counters(
    registry: prometheus_client.CollectorRegistry, tmp_path: Any
) -> None:
    """The second tier's counters reach the metrics: a store hit, store misses and an error."""
    calls: list[str] = []

    def agent(x: str) -> str:
        calls.append(x)
        return x.upper()

    store = ap.SqliteStore(str(tmp_path / "m.db"), namespace="metrics")
    writer = ap.CachedAgent(agent, max_size=8, store=store)
    reader = ap.CachedAgent(agent, max_size=8, store=store, name="t.tier")
    try:
        assert writer.execute("a") == "A"
        assert reader.execute("a") == "A"  # an L1 miss, an L2 hit
        assert reader.execute("b") == "B"  # a miss in both
        s = reader.stats()
        assert (s.store_hits, s.store_misses, calls) == (1, 1, ["a", "b"])
        for f in ("hits", "misses", "store_hits", "store_misses", "store_errors"):
            assert value(registry, f"agentperf_cache_{f}_total", name="t.tier") == getattr(s, f)
    finally:
        writer.close()
        reader.close()
        store.close()
