"""AgentPool against plain-Python peers, in one process (run on a release build).

make bench, or:
.venv/bin/python -m pytest benches/test_bench_pool.py --benchmark-only \
    --benchmark-columns=median,ops,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import agentperf as ap


def echo(x: Any) -> Any:
    return x


class QueuePool:
    """The usual hand-rolled pool: a queue.Queue of agents."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        for _ in range(size):
            self.q.put(factory())

    def execute(self, x: Any) -> Any:
        a = self.q.get(timeout=10)
        try:
            return a(x)
        finally:
            self.q.put(a)


class AsyncQueuePool:
    """The asyncio equivalent: an asyncio.Queue of agents."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(size):
            self.q.put_nowait(factory())

    async def aexecute(self, x: Any) -> Any:
        a = await self.q.get()
        try:
            return await a(x)
        finally:
            self.q.put_nowait(a)


# -- sync hit path ------------------------------------------------------------------------

N = 1000


@pytest.mark.benchmark(group="pool-execute-x1000")
def test_direct_call(benchmark: Any) -> None:
    def run() -> None:
        for i in range(N):
            echo(i)

    benchmark(run)


@pytest.mark.benchmark(group="pool-execute-x1000")
def test_agentpool_execute(benchmark: Any) -> None:
    with ap.AgentPool(lambda: echo, max_size=8) as pool:
        ex = pool.execute

        def run() -> None:
            for i in range(N):
                ex(i)

        benchmark(run)


@pytest.mark.benchmark(group="pool-execute-x1000")
def test_queue_queue_pool_execute(benchmark: Any) -> None:
    pool = QueuePool(lambda: echo, 8)
    ex = pool.execute

    def run() -> None:
        for i in range(N):
            ex(i)

    benchmark(run)


# -- async hit path -----------------------------------------------------------------------


async def aecho(x: Any) -> Any:
    return x


def _drive(benchmark: Any, make: Callable[[], Callable[[Any], Any]]) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def setup() -> Callable[[Any], Any]:
            return make()

        call = loop.run_until_complete(setup())

        async def batch() -> None:
            for i in range(N):
                await call(i)

        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()


@pytest.mark.benchmark(group="pool-aexecute-x1000")
def test_direct_await(benchmark: Any) -> None:
    _drive(benchmark, lambda: aecho)


@pytest.mark.benchmark(group="pool-aexecute-x1000")
def test_agentpool_aexecute(benchmark: Any) -> None:
    _drive(benchmark, lambda: ap.AgentPool(lambda: aecho, max_size=8).aexecute)


@pytest.mark.benchmark(group="pool-aexecute-x1000")
def test_asyncio_queue_pool_aexecute(benchmark: Any) -> None:
    _drive(benchmark, lambda: AsyncQueuePool(lambda: aecho, 8).aexecute)


# -- async wait path: every acquire but the first two parks a waiter ---------------------


async def ayield(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


def _drive_contended(benchmark: Any, make: Callable[[], Callable[[Any], Any]]) -> None:
    """100 tasks at once on a pool of 2 agents: the waiter (park, grant, wake) path."""
    loop = asyncio.new_event_loop()
    try:

        async def setup() -> Callable[[Any], Any]:
            return make()

        call = loop.run_until_complete(setup())

        async def batch() -> None:
            await asyncio.gather(*(call(i) for i in range(100)))

        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()


@pytest.mark.benchmark(group="pool-aexecute-contended-x100")
def test_agentpool_aexecute_contended(benchmark: Any) -> None:
    _drive_contended(benchmark, lambda: ap.AgentPool(lambda: ayield, max_size=2).aexecute)


@pytest.mark.benchmark(group="pool-aexecute-contended-x100")
def test_asyncio_queue_pool_aexecute_contended(benchmark: Any) -> None:
    _drive_contended(benchmark, lambda: AsyncQueuePool(lambda: ayield, 2).aexecute)


# -- pooled vs a fresh agent per call -----------------------------------------------------


def costly_factory() -> Callable[[Any], Any]:
    end = time.perf_counter() + 0.0001  # ~0.1 ms of set-up work
    while time.perf_counter() < end:
        pass
    return echo


@pytest.mark.benchmark(group="pool-vs-fresh-x100")
def test_fresh_agent_per_call(benchmark: Any) -> None:
    def run() -> None:
        for i in range(100):
            costly_factory()(i)

    benchmark(run)


@pytest.mark.benchmark(group="pool-vs-fresh-x100")
def test_pooled_agent(benchmark: Any) -> None:
    with ap.AgentPool(costly_factory, max_size=4) as pool:

        def run() -> None:
            for i in range(100):
                pool.execute(i)

        benchmark(run)


# -- blocking agents under threads --------------------------------------------------------


def sleeper(seconds: float) -> Callable[[], Callable[[Any], Any]]:
    def factory() -> Callable[[Any], Any]:
        def agent(x: Any) -> Any:
            time.sleep(seconds)
            return x

        return agent

    return factory


def _threads(pool: ap.AgentPool, threads: int, calls: int) -> None:
    def work() -> None:
        for i in range(calls):
            pool.execute(i)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


@pytest.mark.benchmark(group="pool-1ms-agent-200-calls")
@pytest.mark.parametrize("threads", [1, 10])
def test_threads_on_1ms_agent(benchmark: Any, threads: int) -> None:
    with ap.AgentPool(sleeper(0.001), max_size=10) as pool:
        benchmark.pedantic(_threads, args=(pool, threads, 200 // threads), rounds=5)


@pytest.mark.benchmark(group="pool-2ms-agent-8-threads")
def test_eight_threads_on_2ms_agent(benchmark: Any) -> None:
    calls = 50
    with ap.AgentPool(sleeper(0.002), max_size=8) as pool:
        benchmark.pedantic(_threads, args=(pool, 8, calls), rounds=5)
        ideal = calls * 0.002
        benchmark.extra_info["ideal_s"] = ideal
        benchmark.extra_info["efficiency_pct"] = ideal / benchmark.stats.stats.median * 100


@pytest.mark.benchmark(group="pool-2ms-agent-8-threads")
def test_eight_threads_on_2ms_sleep_without_pool(benchmark: Any) -> None:
    """The floor: the same sleeps with no pool (time.sleep overshoots 2 ms by itself)."""
    agent = sleeper(0.002)()

    def run() -> None:
        def work() -> None:
            for i in range(50):
                agent(i)

        ts = [threading.Thread(target=work) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    benchmark.pedantic(run, rounds=5)
