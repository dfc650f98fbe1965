"""Soak: long runs stay flat in memory, and created-then-closed objects leave nothing behind.

Reduced counts unless ``AGENTPERF_STRESS=full`` (``make stress``): 5,000,000 cache inserts
through ``max_size=10_000`` with short TTLs, and 10,000 rounds of pools, caches and executors
created and closed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from typing import Any

import psutil
import pytest

import agentperf as ap
from agentperf._agentperf import _cleanup_thread_state

pytestmark = pytest.mark.stress

FULL = os.environ.get("AGENTPERF_STRESS") == "full"
INSERTS = 5_000_000 if FULL else 400_000
ROUNDS = 10_000 if FULL else 600
MAX_GROWTH = 0.10


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def wait_for(cond: Any, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def report(line: str) -> None:
    print(f"\n[soak] {line}", file=sys.stderr)


@pytest.mark.timeout(1200 if FULL else 120)
def test_cache_inserts_stay_flat() -> None:
    """Millions of inserts with short TTLs: bounded size, and RSS flat after the warm-up."""
    ttls = [0.001, 0.005, 0.02, 0.05, None]
    with ap.Cache(max_size=10_000, ttl=0.01, cleanup_interval=0.005) as c:
        warm = INSERTS // 10
        base = 0
        peak = 0
        for i in range(INSERTS):
            c.set(f"key-{i}", ("value", i), ttl=ttls[i % 5])
            if i % 7 == 0:
                c.get(f"key-{i - 3}")
            if i == warm:
                base = rss()
            elif i > warm and i % (INSERTS // 20) == 0:
                peak = max(peak, rss())
                assert len(c) <= 10_000
        end = rss()
        peak = max(peak, end)
        s = c.stats()
        assert s.size <= 10_000 and s.max_size == 10_000
        assert s.evictions + s.expirations + s.size >= INSERTS - 1  # everything went somewhere
    growth = (peak - base) / base
    report(
        f"cache inserts={INSERTS} rss warm={base >> 20} MiB peak={peak >> 20} MiB "
        f"growth={growth:.2%} evictions={s.evictions} expirations={s.expirations}"
    )
    assert growth < MAX_GROWTH, f"RSS grew {growth:.1%} after the warm-up ({base} -> {peak})"


@pytest.mark.timeout(1200 if FULL else 120)
def test_cached_agent_misses_stay_flat() -> None:
    """A cached agent over a stream of mostly new inputs (single-flight bookkeeping included)."""
    n = INSERTS // 5
    with ap.CachedAgent(lambda x: [x], max_size=10_000, ttl=0.01, cleanup_interval=0.005) as c:
        warm = n // 10
        base = peak = 0
        for i in range(n):
            c.execute(i if i % 3 else i % 100)
            if i == warm:
                base = rss()
            elif i > warm and i % (n // 10) == 0:
                peak = max(peak, rss())
        peak = max(peak, rss())
        s = c.stats()
        assert s.hits + s.misses == n
    growth = (peak - base) / base
    report(f"cached agent calls={n} growth={growth:.2%}")
    assert growth < MAX_GROWTH, f"RSS grew {growth:.1%} ({base} -> {peak})"


class Agent:
    def __init__(self) -> None:
        self.open = True

    def execute(self, x: Any) -> Any:
        return x

    def close(self) -> None:
        self.open = False


def one_round(i: int, made: list[Agent]) -> None:
    def factory() -> Agent:
        a = Agent()
        made.append(a)
        return a

    pool = ap.AgentPool(
        factory, max_size=4, initial_size=2, idle_timeout=0.01, cleanup_interval=0.01
    )
    with pool:
        assert pool.execute(i) == i
    cache = ap.Cache(max_size=16, ttl=0.01, cleanup_interval=0.01)
    cache.set("k", i)
    cache.close()
    cached = ap.CachedAgent(pool, max_size=8, ttl=1.0, cleanup_interval=0.01)
    cached.close()
    # A blocking agent: the executor starts its own thread pool.
    with ap.BatchExecutor(lambda x: x + 1, max_concurrency=2) as ex:
        assert ex.execute([i, i]).outputs == [i + 1, i + 1]
    if i % 10 == 0:

        async def main() -> None:
            async with ap.AgentPool(factory, max_size=2) as p2:
                assert await p2.aexecute(i) == i
            async with ap.BatchExecutor(Agent(), max_concurrency=4) as ex2:
                assert (await ex2.aexecute(range(4))).outputs == [0, 1, 2, 3]
            sem = ap.Semaphore(1)
            async with sem:
                pass

        asyncio.run(main())


@pytest.mark.timeout(1200 if FULL else 120)
def test_create_and_close_leaks_no_thread_and_no_memory() -> None:
    gc.collect()
    threads0 = threading.active_count()
    state0 = _cleanup_thread_state()
    made: list[Agent] = []
    warm = max(ROUNDS // 10, 50)
    base = peak = 0
    for i in range(ROUNDS):
        one_round(i, made)
        if i == warm:
            base = rss()
        elif i > warm and i % max(ROUNDS // 10, 1) == 0:
            peak = max(peak, rss())
            made.clear()
    gc.collect()
    peak = max(peak, rss())
    assert all(not a.open for a in made), "an agent of a closed pool was never closed"
    assert wait_for(lambda: threading.active_count() <= threads0), (
        f"threads: {threads0} before, {threading.active_count()} after: "
        f"{[t.name for t in threading.enumerate()]}"
    )
    assert wait_for(lambda: _cleanup_thread_state() == state0), (
        f"cleanup thread state {state0} before, {_cleanup_thread_state()} after"
    )
    growth = (peak - base) / base
    report(
        f"rounds={ROUNDS} threads {threads0}->{threading.active_count()} "
        f"cleanup {state0}->{_cleanup_thread_state()} rss growth={growth:.2%}"
    )
    assert growth < MAX_GROWTH, f"RSS grew {growth:.1%} over {ROUNDS} rounds ({base} -> {peak})"
