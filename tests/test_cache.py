"""ap.Cache, ap.CachedAgent and @ap.cached: every point of API.md's "Caching"."""

from __future__ import annotations

import asyncio
import datetime
import gc
import math
import threading
import time
from typing import Any

import pytest

import agentperf as ap
from agentperf import _agentperf

# ------------------------------------------------------------------------------ ap.Cache


def test_cache_basics() -> None:
    c = ap.Cache(max_size=10, ttl=None)
    v = object()
    assert c.get("k") is None
    assert c.get("k", "dflt") == "dflt"
    c.set("k", v)
    assert c.get("k") is v, "the stored object is returned as-is"
    assert "k" in c and "x" not in c
    assert len(c) == 1
    c.set(b"k", 2)
    assert c.get("k") is v and c.get(b"k") == 2, "str and bytes keys are distinct"
    assert c.delete("k") is True
    assert c.delete("k") is False
    assert len(c) == 1
    c.clear()
    assert len(c) == 0 and c.get(b"k") is None
    assert c.max_size == 10
    long_key = "x" * 1000 + "é"
    c.set(long_key, 3)
    assert c.get(long_key) == 3 and c.get("x" * 1000) is None


def test_cache_defaults() -> None:
    c = ap.Cache()
    assert c.max_size == 10_000
    c.set("a", 1)
    assert c.get("a") == 1
    c.close()


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",), ["a"]])
def test_cache_rejects_other_key_types(key: Any) -> None:
    c = ap.Cache(max_size=2)
    with pytest.raises(TypeError, match=type(key).__name__):
        c.set(key, 1)
    with pytest.raises(TypeError):
        c.get(key)
    with pytest.raises(TypeError):
        _ = key in c


def test_exact_lru_eviction() -> None:
    c = ap.Cache(max_size=3)
    for k in "abc":
        c.set(k, k)
    assert c.get("a") == "a"  # a is now most recently used
    c.set("d", "d")
    assert "b" not in c, "the least recently used goes first"
    assert [k in c for k in "acd"] == [True, True, True]
    c.set("c", "c2")  # replacing refreshes recency
    c.set("e", "e")
    assert "a" not in c and c.get("c") == "c2"
    assert len(c) == 3
    s = c.stats()
    assert s.evictions == 2 and s.size == 3 and s.max_size == 3


def test_contains_does_not_refresh_recency() -> None:
    c = ap.Cache(max_size=2)
    c.set("a", 1)
    c.set("b", 2)
    assert "a" in c
    c.set("c", 3)
    assert "a" not in c


def test_bound_holds_for_large_caches() -> None:
    c = ap.Cache(max_size=20_000)
    for i in range(60_000):
        c.set(f"k{i}", i)
    assert len(c) <= 20_000
    assert c.get("k59999") == 59_999
    assert c.stats().evictions == 60_000 - len(c)


def test_ttl_default_and_per_entry() -> None:
    c = ap.Cache(max_size=10, ttl=10.0, _manual_clock=True)
    c.set("default", 1)
    c.set("short", 2, ttl=1.0)
    c.set("never", 3, ttl=math.inf)
    c.set("td", 4, ttl=datetime.timedelta(seconds=3))
    c.set("none", 5, ttl=None)  # None keeps the default
    c._advance(1.0)
    assert c.get("short") is None, "expired exactly at its ttl"
    assert c.get("td") == 4
    c._advance(2.0)
    assert c.get("td") is None
    assert c.get("default") == 1 and c.get("none") == 5
    c._advance(7.0)
    assert c.get("default") is None and c.get("none") is None
    c._advance(1e9)
    assert c.get("never") == 3


def test_expired_entries_are_never_returned_before_cleanup() -> None:
    c = ap.Cache(max_size=10, ttl=5.0, cleanup_interval=3600.0, _manual_clock=True)
    for k in "abc":
        c.set(k, k)
    c._advance(5.0)
    assert len(c) == 3, "len may include expired entries the cleanup has not reached"
    assert "a" not in c
    assert c.get("b", "gone") == "gone"
    assert c.delete("c") is False, "an expired entry is not reported as removed"
    assert len(c) == 1
    assert c._sweep() == 1
    assert len(c) == 0
    assert c.stats().expirations == 3


def test_no_ttl_means_forever() -> None:
    c = ap.Cache(max_size=2, ttl=None, _manual_clock=True)
    c.set("a", 1)
    c._advance(1e12)
    assert c.get("a") == 1


def test_stats_counters() -> None:
    c = ap.Cache(max_size=2, ttl=1.0, _manual_clock=True)
    assert c.stats().hit_rate == 0.0
    c.set("a", 1)
    c.get("a")
    c.get("a")
    c.get("zz")
    s = c.stats()
    assert (s.hits, s.misses, s.size) == (2, 1, 1)
    assert s.hit_rate == pytest.approx(200 / 3)
    c.set("b", 2)
    c.set("c", 3, ttl=math.inf)  # evicts a (live)
    c._advance(1.0)
    c.get("b")  # expired -> miss + expiration
    s = c.stats()
    assert (s.hits, s.misses, s.evictions, s.expirations) == (2, 2, 1, 1)
    assert "hit_rate" in repr(s)
    off = ap.Cache(max_size=2, enable_stats=False)
    off.set("a", 1)
    off.get("a")
    off.get("b")
    s = off.stats()
    assert (s.hits, s.misses, s.size) == (0, 0, 1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": -5}, ValueError, "max_size"),
        ({"max_size": 1.5}, TypeError, "max_size"),
        ({"max_size": True}, TypeError, "max_size"),
        ({"max_size": "10"}, TypeError, "max_size"),
        ({"max_size": 2**80}, ValueError, "max_size"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1.0}, ValueError, "ttl"),
        ({"ttl": math.nan}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"ttl": True}, TypeError, "ttl"),
        ({"cleanup_interval": 0}, ValueError, "cleanup_interval"),
        ({"cleanup_interval": "x"}, TypeError, "cleanup_interval"),
        ({"enable_stats": 1}, TypeError, "enable_stats"),
    ],
)
def test_cache_bad_configuration_names_the_field(
    kwargs: dict[str, Any], exc: type[Exception], field: str
) -> None:
    with pytest.raises(exc, match=field) as info:
        ap.Cache(**kwargs)
    value = next(iter(kwargs.values()))
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    msg = str(info.value).lower()
    assert shown.lower() in msg or shown.removesuffix(".0") in msg, msg


@pytest.mark.parametrize(("ttl", "exc"), [(0, ValueError), (-1, ValueError), ("x", TypeError)])
def test_cache_set_bad_ttl(ttl: Any, exc: type[Exception]) -> None:
    c = ap.Cache(max_size=2)
    with pytest.raises(exc, match="ttl"):
        c.set("a", 1, ttl=ttl)
    assert "a" not in c


def test_close_and_context_manager() -> None:
    with ap.Cache(max_size=2) as c:
        c.set("a", 1)
    c.close()  # twice is harmless
    assert len(c) == 0
    with pytest.raises(RuntimeError, match="closed"):
        c.get("a")
    with pytest.raises(RuntimeError, match="closed"):
        c.set("a", 1)


class _Reentrant:
    """A value whose finalizer uses the cache: it would deadlock if dropped under a lock."""

    def __init__(self, cache: ap.Cache, log: list[str]) -> None:
        self.cache = cache
        self.log = log

    def __del__(self) -> None:
        self.cache.set("from-del", 1)
        self.log.append(str(self.cache.get("from-del")))


@pytest.mark.timeout(20)
def test_values_are_dropped_outside_the_lock() -> None:
    c = ap.Cache(max_size=1, ttl=1.0, _manual_clock=True)
    log: list[str] = []
    c.set("a", _Reentrant(c, log))
    c.set("a", 2)  # replaced
    c.set("b", _Reentrant(c, log))
    c.set("c", 3)  # b evicted (from-del is set by a's finalizer too)
    c.set("d", _Reentrant(c, log))
    c.delete("d")
    c.set("e", _Reentrant(c, log))
    c.clear()
    c.set("f", _Reentrant(c, log))
    c._advance(2.0)
    c.get("f")  # expired on read
    c.set("g", _Reentrant(c, log), ttl=1.0)
    c._advance(2.0)
    c._sweep()
    gc.collect()
    assert log == ["1"] * 6


@pytest.mark.timeout(30)
def test_cleanup_thread_is_shared_and_stops_with_the_last_cache() -> None:
    gc.collect()
    running, base = _agentperf._cleanup_thread_state()
    caches = [ap.Cache(max_size=10, ttl=0.05, cleanup_interval=0.02) for _ in range(3)]
    agent = ap.CachedAgent(lambda x: x, max_size=10, ttl=1.0, cleanup_interval=0.02)
    running, n = _agentperf._cleanup_thread_state()
    assert running and n == base + 4
    names = [t.name for t in threading.enumerate()]
    for c in caches:
        for i in range(5):
            c.set(str(i), i)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(len(c) for c in caches):
        time.sleep(0.02)
    assert [len(c) for c in caches] == [0, 0, 0], "the cleanup thread swept expired entries"
    for c in caches:
        c.close()
    agent.close()
    assert _agentperf._cleanup_thread_state()[1] == base
    if base == 0:
        end = time.monotonic() + 5
        while time.monotonic() < end and _agentperf._cleanup_thread_state()[0]:
            time.sleep(0.01)
        assert _agentperf._cleanup_thread_state() == (False, 0)
    del names


def test_garbage_collected_cache_unregisters() -> None:
    gc.collect()
    base = _agentperf._cleanup_thread_state()[1]
    c = ap.Cache(max_size=2)
    assert _agentperf._cleanup_thread_state()[1] == base + 1
    del c
    gc.collect()
    assert _agentperf._cleanup_thread_state()[1] == base


# ------------------------------------------------------------------------------ CachedAgent


class Counter:
    """A sync agent counting its calls."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, x: Any) -> Any:
        self.calls.append(x)
        return {"out": x}


def test_cached_agent_execute_and_stats() -> None:
    agent = Counter()
    inp = {"task": "summarize", "context": {"user": "u1", "n": 3}}
    with ap.CachedAgent(agent, ap.CacheConfig(max_size=10, ttl=60.0)) as c:
        a = c.execute(inp)
        b = c.execute(dict(inp))
        assert a is b, "equal input, same key; the stored output is returned as-is"
        assert len(agent.calls) == 1
        c.execute("other")
        s = c.stats()
        assert (s.hits, s.misses, s.size, s.max_size) == (1, 2, 2, 10)
        assert s.hit_rate == pytest.approx(100 / 3)
        assert isinstance(c, ap.Agent)
        assert c.config.max_size == 10 and c.agent is agent


def test_cached_agent_overrides_and_config_rule() -> None:
    c = ap.CachedAgent(Counter(), max_size=5, ttl=None)
    assert c.config == ap.CacheConfig(max_size=5, ttl=None)
    c2 = ap.CachedAgent(Counter(), ap.CacheConfig(max_size=7), ttl=1.0)
    assert (c2.config.max_size, c2.config.ttl) == (7, 1.0)
    with pytest.raises(TypeError, match="config"):
        ap.CachedAgent(Counter(), {"max_size": 3})  # type: ignore[arg-type]
    c.close()
    c2.close()


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": "x"}, TypeError, "max_size"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": "1"}, TypeError, "ttl"),
        ({"cleanup_interval": 0}, ValueError, "cleanup_interval"),
        ({"cleanup_interval": None}, TypeError, "cleanup_interval"),
        ({"enable_stats": "yes"}, TypeError, "enable_stats"),
        ({"key_generator": 3}, TypeError, "key_generator"),
        ({"nonsense": 1}, TypeError, "nonsense"),
    ],
)
def test_cached_agent_bad_configuration(
    kwargs: dict[str, Any], exc: type[Exception], field: str
) -> None:
    with pytest.raises(exc, match=field):
        ap.CachedAgent(Counter(), **kwargs)


def test_cached_agent_rejects_non_agents() -> None:
    with pytest.raises(TypeError, match="agent"):
        ap.CachedAgent(42)


def test_cache_key_invalidate_and_invalidate_all() -> None:
    agent = Counter()
    c = ap.CachedAgent(agent, max_size=10)
    assert c.cache_key([1, 2]) == ap.hash_key([1, 2])
    c.execute([1, 2])
    c.execute([3])
    assert c.invalidate([1, 2]) is True
    assert c.invalidate([1, 2]) is False
    c.execute([1, 2])
    assert len(agent.calls) == 3
    c.invalidate_all()
    assert c.stats().size == 0
    c.execute([3])
    assert len(agent.calls) == 4


def test_key_generator() -> None:
    agent = Counter()
    c = ap.CachedAgent(agent, key_generator=lambda x: x["id"])
    assert c.cache_key({"id": "u1", "noise": 1}) == "u1"
    c.execute({"id": "u1", "noise": 1})
    c.execute({"id": "u1", "noise": 2})
    assert len(agent.calls) == 1
    assert c.invalidate({"id": "u1"}) is True
    b = ap.CachedAgent(agent, key_generator=lambda x: bytes(x))
    assert b.cache_key([1]) == b"\x01"
    bad = ap.CachedAgent(agent, key_generator=lambda x: 7)
    with pytest.raises(TypeError, match="key_generator returned int"):
        bad.execute("x")


def test_failures_are_not_cached_and_reach_the_caller_unchanged() -> None:
    err = ValueError("boom")
    calls = []

    def agent(x: Any) -> Any:
        calls.append(x)
        if len(calls) == 1:
            raise err
        return "ok"

    c = ap.CachedAgent(agent)
    with pytest.raises(ValueError) as info:
        c.execute("x")
    assert info.value is err
    assert c.stats().size == 0
    assert c.execute("x") == "ok"
    assert len(calls) == 2


def test_ttl_expiry_of_cached_agent() -> None:
    agent = Counter()
    c = ap.CachedAgent(agent, ttl=10.0, _manual_clock=True)
    c.execute(1)
    c._advance(9.0)
    c.execute(1)
    assert len(agent.calls) == 1
    c._advance(1.0)
    c.execute(1)
    assert len(agent.calls) == 2
    assert c.stats().expirations == 1


def test_bounded_lru_of_cached_agent() -> None:
    agent = Counter()
    c = ap.CachedAgent(agent, max_size=2)
    c.execute(1)
    c.execute(2)
    c.execute(1)
    c.execute(3)  # evicts 2
    c.execute(1)
    assert len(agent.calls) == 3
    c.execute(2)
    assert len(agent.calls) == 4
    assert c.stats().evictions == 2


async def test_aexecute_with_every_agent_shape() -> None:
    class ExecAgent:
        def __init__(self) -> None:
            self.n = 0

        def execute(self, x: Any) -> Any:
            self.n += 1
            return ("sync", x)

        async def aexecute(self, x: Any) -> Any:
            self.n += 1
            return ("async", x)

    class Runnable:
        def invoke(self, x: Any) -> Any:
            return ("invoke", x)

    async def afn(x: Any) -> Any:
        await asyncio.sleep(0)
        return ("afn", x)

    e = ExecAgent()
    async with ap.CachedAgent(e) as c:
        assert await c.aexecute(1) == ("async", 1)
        assert await c.aexecute(1) == ("async", 1)
        assert c.execute(1) == ("async", 1), "sync and async share the cache"
        assert e.n == 1
    r = ap.CachedAgent(Runnable())
    assert await r.aexecute(2) == ("invoke", 2)
    a = ap.CachedAgent(afn)
    assert await a.aexecute(3) == ("afn", 3)
    assert a.stats().misses == 1
    with pytest.raises(RuntimeError, match="closed"):
        await c.aexecute(1)


def test_sync_execute_of_async_agent() -> None:
    async def afn(x: Any) -> Any:
        return x + 1

    c = ap.CachedAgent(afn)
    assert c.execute(1) == 2
    assert c.execute(1) == 2
    assert c.stats().hits == 1


def test_cached_agents_compose() -> None:
    inner = Counter()
    outer = ap.CachedAgent(ap.CachedAgent(inner))
    outer.execute(1)
    outer.execute(1)
    assert len(inner.calls) == 1


def test_closed_cached_agent() -> None:
    c = ap.CachedAgent(Counter())
    c.execute(1)
    c.close()
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.execute(1)
    assert c.stats().size == 0


# ------------------------------------------------------------------------------ @cached


def test_cached_decorator_sync() -> None:
    calls: list[Any] = []

    @ap.cached(max_size=10, ttl=60.0)
    def add(a: int, b: int = 0, **kw: Any) -> int:
        """Adds."""
        calls.append((a, b))
        return a + b

    assert add.__name__ == "add" and add.__doc__ == "Adds." and add.__wrapped__ is not None
    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(1, b=2) == 3, "positional and keyword calls are different keys"
    assert len(calls) == 2
    assert add.cache_agent.cache_key(((1,), {"x": 1})) == ap.hash_key(((1,), {"x": 1}))
    s = add.cache_stats()
    assert (s.hits, s.misses) == (1, 2)
    assert add.cache_invalidate(1, 2) is True
    assert add.cache_invalidate(1, 2) is False
    add(1, 2)
    assert len(calls) == 3
    add.cache_clear()
    assert add.cache_stats().size == 0


def test_cached_decorator_bare_and_key() -> None:
    @ap.cached
    def f(x: int) -> int:
        return x * 2

    assert f(2) == 4 and f(2) == 4 and f.cache_stats().hits == 1

    seen: list[Any] = []

    @ap.cached(key=lambda user, *a, **k: user)
    def g(user: str, noise: int) -> str:
        seen.append(noise)
        return user.upper()

    assert g("u", 1) == "U" and g("u", 2) == "U"
    assert seen == [1]
    assert g.cache_invalidate("u", 99) is True


async def test_cached_decorator_async() -> None:
    calls: list[Any] = []

    @ap.cached(max_size=10, ttl=60.0)
    async def ask(q: str) -> str:
        calls.append(q)
        await asyncio.sleep(0.01)
        return q.upper()

    assert ask.__name__ == "ask"
    results = await asyncio.gather(*(ask("q") for _ in range(20)))
    assert results == ["Q"] * 20
    assert calls == ["q"], "concurrent misses ran the function once"
    assert ask.cache_stats().hits == 19
    assert await ask("q") == "Q"
    assert ask.cache_invalidate("q") is True


def test_cached_decorator_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_size"):
        ap.cached(max_size=0)
    with pytest.raises(TypeError, match="key"):
        ap.cached(key=3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="ttl"):
        ap.cached(ttl=-1)


# ------------------------------------------------------------------------------ corrections


def test_an_expired_entry_goes_before_a_live_one() -> None:
    # The case, in real time: `a` is the least recently used entry but live; `b`
    # has expired. cachetools and cachebox keep `a`.
    c = ap.Cache(max_size=2)
    c.set("a", 1)
    c.set("b", 2, ttl=0.05)
    time.sleep(0.1)
    c.set("c", 3)
    assert c.get("a") == 1 and c.get("c") == 3 and "b" not in c
    s = c.stats()
    assert (s.evictions, s.expirations) == (0, 1)


def test_expired_entries_go_before_live_ones_in_lru_order() -> None:
    c = ap.Cache(max_size=4, ttl=10.0, _manual_clock=True)
    c.set("keep1", 1, ttl=math.inf)
    c.set("keep2", 2, ttl=100.0)
    c.set("old1", 3)
    c.set("old2", 4)
    c._advance(10.0)  # old1 and old2 expire; keep1 is the least recently used entry
    c.set("new1", 5)  # full: both expired entries go, keep1 stays
    c.set("new2", 6)
    assert [k for k in ("keep1", "keep2", "new1", "new2") if k in c] == [
        "keep1",
        "keep2",
        "new1",
        "new2",
    ]
    c.set("new3", 7)  # full, nothing expired: the least recently used live entry goes
    assert "keep1" not in c and "keep2" in c and "new3" in c
    s = c.stats()
    assert (s.expirations, s.evictions) == (2, 1)


def test_cached_agent_keeps_a_valid_entry_over_an_expired_one() -> None:
    agent = Counter()
    c = ap.CachedAgent(agent, max_size=2, ttl=10.0, _manual_clock=True)
    c.execute("a")  # expires at 10
    c._advance(5.0)
    c.execute("b")  # expires at 15
    c._advance(1.0)
    c.execute("a")  # a hit: `a` most recent, `b` the LRU tail
    c._advance(5.0)  # t=11: `a` has expired, `b` is valid
    c.execute("c")  # full: the expired `a` goes, not `b`
    assert agent.calls == ["a", "b", "c"]
    c.execute("b")
    assert agent.calls == ["a", "b", "c"], "an input whose entry is valid is not recomputed"
    s = c.stats()
    assert (s.evictions, s.expirations) == (0, 1)


def test_caches_support_weak_references() -> None:
    import weakref

    c = ap.Cache(max_size=2)
    r = weakref.ref(c)
    assert r() is c
    del c
    gc.collect()
    assert r() is None
    ca = ap.CachedAgent(Counter(), max_size=2)
    ra = weakref.ref(ca)
    assert ra() is ca
    ca.close()
    del ca
    gc.collect()
    assert ra() is None

    @ap.cached(max_size=2)
    def f(x: int) -> int:
        return x

    rf = weakref.ref(f)
    assert rf() is f
    rc = weakref.ref(f.cache_agent)  # type: ignore[attr-defined]
    del f
    gc.collect()
    assert rf() is None and rc() is None
