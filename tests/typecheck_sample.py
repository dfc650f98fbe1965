"""Types users can lean on, checked by ``mypy --strict`` in ``make lint`` (never executed).

Each ``assert_type`` states what a checker infers; each ``# type: ignore[...]`` marks a call
that must be an error (``warn_unused_ignores`` fails the check if it is not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import agentperf as ap

if TYPE_CHECKING:
    from typing_extensions import assert_type


async def summarize(text: str) -> int:
    return len(text)


def classify(n: int) -> float:
    return n / 2


class Model:
    def execute(self, prompt: str, /) -> bytes:
        return prompt.encode()

    async def aexecute(self, prompt: str, /) -> bytes:
        return prompt.encode()


async def batches() -> None:
    ex = ap.BatchExecutor(summarize, max_concurrency=3)
    assert_type(ex, ap.BatchExecutor[str, int])
    result = await ex.aexecute(["a", "bb"])
    assert_type(result, ap.BatchResult[int])
    assert_type(result.outputs, list[int | None])
    async for item in ex.astream(["a"]):
        assert_type(item, ap.BatchItem[str, int])
        assert_type(item.output, int | None)
    for item2 in ex.stream(["a"]):
        assert_type(item2.input, str)

    assert_type(ap.BatchExecutor(classify), ap.BatchExecutor[int, float])
    assert_type(ap.BatchExecutor(Model()), ap.BatchExecutor[str, bytes])
    assert_type(ap.BatchExecutor(summarize, ap.BatchConfig()), ap.BatchExecutor[str, int])

    ap.BatchExecutor(summarize, concurrency=3)  # type: ignore[call-overload]
    ap.BatchExecutor(summarize, max_concurrency="3")  # type: ignore[call-overload]
    await ex.aexecute([1, 2])  # type: ignore[list-item]


class Client:
    """A pooled object with no agent shape (a raw client)."""

    def close(self) -> None: ...


def upper(text: str) -> str:
    return text.upper()


def caches() -> None:
    c = ap.CachedAgent(classify, max_size=3)
    assert_type(c, ap.CachedAgent[int, float])
    assert_type(c.execute(1), float)
    assert_type(ap.CachedAgent(Model()), ap.CachedAgent[str, bytes])
    assert_type(ap.CachedAgent(summarize, ap.CacheConfig()), ap.CachedAgent[str, int])
    with ap.CachedAgent(upper) as cu:
        assert_type(cu, ap.CachedAgent[str, str])
        assert_type(cu.execute("a"), str)
    c.execute("one")  # type: ignore[arg-type]


def tiers(path: str) -> None:
    store = ap.SqliteStore(path, namespace="types")
    t = ap.CachedAgent(upper, store=store, codec=ap.JsonCodec(), lease=10.0)
    assert_type(t, ap.CachedAgent[str, str])
    with ap.cache_control(refresh=True) as ctl:
        assert_type(ctl, ap.cache_control)
        assert_type(t.execute("a"), str)
    s = t.stats()
    assert_type(s.store_hits + s.store_misses + s.store_errors, int)
    try:
        store.get("abc")
    except ap.StoreError:
        pass
    ap.CacheConfig(store=store, codec=ap.PickleCodec(secret=b"0123456789abcdef"), lease=5.0)


async def acaches() -> None:
    c = ap.CachedAgent(summarize)
    assert_type(await c.aexecute("a"), int)
    await c.aexecute(1)  # type: ignore[arg-type]


def pools() -> None:
    p = ap.AgentPool(Model, max_size=2)
    assert_type(p, ap.AgentPool[Model])
    assert_type(p.acquire(), Model)
    assert_type(p.execute("a"), bytes)
    with p.agent() as m:
        assert_type(m, Model)
    with ap.AgentPool(Client) as clients:
        assert_type(clients, ap.AgentPool[Client])
        with clients.agent() as client:
            assert_type(client, Client)
    assert_type(ap.AgentPool(lambda: upper).execute("a"), str)
    p.execute(1)  # type: ignore[arg-type]


async def make_model() -> Model:
    return Model()


async def apools() -> None:
    p = ap.AgentPool(make_model)
    assert_type(p, ap.AgentPool[Model])
    assert_type(await p.aacquire(), Model)
    assert_type(await p.aexecute("a"), bytes)
    async with p.agent() as m:
        assert_type(m, Model)


def metrics() -> None:
    """``name=`` is accepted everywhere (the keyword options' TypedDict included)."""
    assert_type(
        ap.BatchExecutor(summarize, max_concurrency=3, name="b"), ap.BatchExecutor[str, int]
    )
    assert_type(ap.BatchExecutor(summarize, name=None).name, str | None)
    assert_type(ap.AgentPool(Client, name="p").name, str | None)
    assert_type(ap.CachedAgent(upper, name="c").name, str | None)
    assert_type(ap.Cache(name="k").name, str | None)
    assert_type(ap.Semaphore(2, name="s").name, str | None)
    assert_type(ap.RateLimiter(5.0, per=1.0, name="r").name, str | None)
    assert_type(ap.CacheConfig(name="c").name, str | None)
    ap.BatchExecutor(summarize, name=3)  # type: ignore[call-overload]
    collector = ap.metrics.register_prometheus()
    assert_type(collector, ap.metrics.AgentperfCollector)
    assert_type(ap.metrics.instrument_otel().instruments, dict[str, Any])


def cluster_limiter(url: str) -> None:
    """A store-backed RateLimiter is still a RateLimiter (one quota across processes)."""
    from agentperf.store.limiter import ClusterRateLimiter, ClusterRateLimiterStats

    lim = ap.RateLimiter(500, per=60.0, store=ap.RedisStore(url), name="rpm")
    assert_type(lim, ap.RateLimiter)
    assert_type(lim.try_acquire(), bool)
    direct = ClusterRateLimiter(500, per=60.0, store=ap.RedisStore(url), name="rpm")
    assert_type(direct.stats(), ClusterRateLimiterStats)
    assert_type(direct.stats().store_errors, int)
    with direct:
        assert_type(direct.store, ap.RedisStore)
    ap.BatchExecutor(summarize, rate_limit=lim, backend=ap.RayBackend(actors=2))
