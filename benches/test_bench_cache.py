"""The cache's Python surface against its peers, in one process (release build first).

    make install
    .venv/bin/python -m pytest benches/test_bench_cache.py --benchmark-only \
        --benchmark-columns=median,ops,rounds --benchmark-sort=name

`execute-hit`: one ``CachedAgent.execute`` hit per round, against a plain-Python cached agent
(cachetools.TTLCache keyed by sha256(json.dumps(x, sort_keys=True))).
`get-hit` / `set`: 1000 operations per round over 1000 distinct str keys of a 10_000-entry
cache (divide the median by 1000 for one operation).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import cachebox
import cachetools
import moka_py
import pytest

import agentperf as ap

INPUT = {"task": "summarize", "instruction": "be brief", "context": {"user": "u1", "n": 3}}
OUTPUT = {"summary": "short"}
KEYS = [f"user:{i}:profile" for i in range(1000)]
SIZE = 10_000
TTL = 600.0


def agent(x: Any) -> Any:
    return OUTPUT


@pytest.mark.benchmark(group="execute-hit")
def test_execute_hit_agentperf(benchmark: Any) -> None:
    c = ap.CachedAgent(agent, max_size=1000, ttl=TTL)
    c.execute(INPUT)
    assert benchmark(c.execute, INPUT) is OUTPUT
    c.close()


@pytest.mark.benchmark(group="execute-hit")
def test_execute_hit_python_cachetools_sha256_json(benchmark: Any) -> None:
    cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=1000, ttl=TTL)

    def execute(x: Any) -> Any:
        k = hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()
        try:
            return cache[k]
        except KeyError:
            pass
        v = agent(x)
        cache[k] = v
        return v

    execute(INPUT)
    assert benchmark(execute, INPUT) is OUTPUT


@pytest.mark.benchmark(group="execute-hit")
def test_execute_hit_agentperf_cached_decorator(benchmark: Any) -> None:
    @ap.cached(max_size=1000, ttl=TTL)
    def f(x: Any) -> Any:
        return OUTPUT

    f(INPUT)
    assert benchmark(f, INPUT) is OUTPUT


def _peers() -> dict[str, tuple[Any, Callable[[Any], Any], Callable[[Any, Any], Any]]]:
    ap_ttl = ap.Cache(max_size=SIZE, ttl=TTL)
    ap_lru = ap.Cache(max_size=SIZE, ttl=None)
    cb_ttl = cachebox.TTLCache(SIZE, TTL)
    cb_lru = cachebox.LRUCache(SIZE)
    moka = moka_py.Moka(SIZE, ttl=TTL)
    ct_ttl: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=SIZE, ttl=TTL)
    d: dict[str, Any] = {}
    return {
        "agentperf.Cache(ttl)": (ap_ttl, ap_ttl.get, ap_ttl.set),
        "agentperf.Cache(no ttl)": (ap_lru, ap_lru.get, ap_lru.set),
        "cachebox.TTLCache": (cb_ttl, cb_ttl.get, cb_ttl.insert),
        "cachebox.LRUCache": (cb_lru, cb_lru.get, cb_lru.insert),
        "moka_py.Moka(ttl)": (moka, moka.get, moka.set),
        "cachetools.TTLCache": (ct_ttl, ct_ttl.get, ct_ttl.__setitem__),
        "dict": (d, d.get, d.__setitem__),
    }


PEERS = list(_peers())


@pytest.mark.benchmark(group="get-hit x1000")
@pytest.mark.parametrize("peer", PEERS)
def test_get_hit(benchmark: Any, peer: str) -> None:
    _, get, set_ = _peers()[peer]
    for k in KEYS:
        set_(k, k)

    def run() -> None:
        for k in KEYS:
            get(k)

    benchmark(run)
    assert get(KEYS[5]) == KEYS[5]


@pytest.mark.benchmark(group="set x1000")
@pytest.mark.parametrize("peer", PEERS)
def test_set(benchmark: Any, peer: str) -> None:
    _, get, set_ = _peers()[peer]

    def run() -> None:
        for k in KEYS:
            set_(k, k)

    benchmark(run)
    assert get(KEYS[5]) == KEYS[5]


@pytest.mark.benchmark(group="loop overhead x1000")
def test_loop_overhead(benchmark: Any) -> None:
    """The bare loop, to subtract from the x1000 groups."""

    def nothing(k: Any) -> None:
        return None

    def run() -> None:
        for k in KEYS:
            nothing(k)

    benchmark(run)


# -- single-flight: 100 concurrent misses of one key, one call, 99 followers ---------------


async def aslow(x: Any) -> Any:
    await asyncio.sleep(0)
    return OUTPUT


def _drive_coalesced(
    benchmark: Any, aexecute: Callable[[Any], Any], clear: Callable[[], Any]
) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def batch() -> None:
            clear()
            await asyncio.gather(*(aexecute(INPUT) for _ in range(100)))

        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()


@pytest.mark.benchmark(group="aexecute-coalesced-x100")
def test_aexecute_coalesced_agentperf(benchmark: Any) -> None:
    c = ap.CachedAgent(aslow, max_size=1000, ttl=TTL)
    _drive_coalesced(benchmark, c.aexecute, c.invalidate_all)
    c.close()


@pytest.mark.benchmark(group="aexecute-coalesced-x100")
def test_aexecute_coalesced_python_futures(benchmark: Any) -> None:
    """A plain-Python single-flight: a dict of in-flight futures beside a dict cache."""
    cache: dict[str, Any] = {}
    flights: dict[str, asyncio.Future[Any]] = {}

    async def aexecute(x: Any) -> Any:
        k = hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()
        if k in cache:
            return cache[k]
        f = flights.get(k)
        if f is not None:
            return await f
        f = flights[k] = asyncio.get_running_loop().create_future()
        try:
            v = await aslow(x)
        except BaseException as e:
            f.set_exception(e)
            raise
        finally:
            del flights[k]
        cache[k] = v
        f.set_result(v)
        return v

    _drive_coalesced(benchmark, aexecute, cache.clear)
