"""Composition: every wrapper is an agent, so pool, cache and batch nest in any order."""

from __future__ import annotations

import asyncio
import threading

import pytest

import agentperf as ap


class Counting:
    made = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        with Counting.lock:
            Counting.made += 1
        self.calls = 0

    def execute(self, x: int) -> int:
        self.calls += 1
        return x * 2


@pytest.mark.timeout(60)
def test_pool_of_cached_agents_under_a_batch_sync() -> None:
    with ap.AgentPool(lambda: ap.CachedAgent(Counting()), max_size=4) as pool:
        result = ap.BatchExecutor(pool, max_concurrency=4).execute([i % 10 for i in range(100)])
    assert result.outputs == [(i % 10) * 2 for i in range(100)]
    assert result.stats.success_count == 100 and not result.errors


@pytest.mark.timeout(60)
async def test_cache_over_pool_under_a_batch_async() -> None:
    with ap.AgentPool(Counting, max_size=3) as pool, ap.CachedAgent(pool) as cached:
        result = await ap.BatchExecutor(cached, max_concurrency=8).aexecute(
            [i % 7 for i in range(70)]
        )
        assert result.outputs == [(i % 7) * 2 for i in range(70)]
        s = cached.stats()
        assert s.misses == 7 and s.hits == 63
        assert pool.stats().created <= 3


@pytest.mark.timeout(60)
def test_batch_inside_cache_inside_pool_errors_pass_unchanged() -> None:
    err = RuntimeError("agent failed")

    def failing(x: int) -> int:
        if x == 3:
            raise err
        return x

    with ap.AgentPool(lambda: ap.CachedAgent(failing), max_size=2) as pool:
        result = ap.BatchExecutor(pool, max_concurrency=2).execute(range(6))
    assert [e.index for e in result.errors] == [3]
    assert result.errors[0].error is err


def test_langchain_runnable_is_an_agent_everywhere() -> None:
    from langchain_core.runnables import RunnableLambda  # a test dependency, not optional

    runnable = RunnableLambda(lambda x: x + 1)
    with ap.CachedAgent(runnable) as cached:
        assert cached.execute(1) == 2
        assert cached.execute(1) == 2
        assert cached.stats().hits == 1
    with ap.AgentPool(lambda: runnable, max_size=2) as pool:
        assert pool.execute(5) == 6
    result = ap.BatchExecutor(runnable, max_concurrency=3).execute(range(5))
    assert result.outputs == [1, 2, 3, 4, 5]

    async def run() -> list[object]:
        with ap.CachedAgent(runnable) as c:
            return [await c.aexecute(10), (await ap.BatchExecutor(runnable).aexecute([1])).outputs]

    assert asyncio.run(run()) == [11, [2]]
