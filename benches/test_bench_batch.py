"""pytest-benchmark: BatchExecutor and Semaphore against their peers, in one process.

    .venv/bin/python -m pytest benches/test_bench_batch.py --benchmark-only \
        --benchmark-columns=median,ops,rounds --benchmark-sort=name

Groups: ``batch-sleep`` (1000 x asyncio.sleep(0.001) at concurrency 100), ``batch-trivial``
(10k trivial calls at concurrency 100), ``semaphore-threads`` (uncontended acquire+release from
a thread), ``semaphore-async`` (10k ``async with`` on one loop, uncontended and contended).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import agentperf as ap
from batch_compare import PEERS, sleepy, trivial

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _run(peer: str, fn: Any, n: int, c: int) -> Callable[[], None]:
    run = PEERS[peer]

    def go() -> None:
        out = asyncio.run(run(fn, range(n), c))
        assert len(out) == n

    return go


@pytest.mark.benchmark(group="batch-sleep")
@pytest.mark.parametrize("peer", [p for p in PEERS if p != "serial"])
def test_sleep_1000_c100(benchmark: Any, peer: str) -> None:
    benchmark.pedantic(_run(peer, sleepy, 1000, 100), rounds=7, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="batch-trivial")
@pytest.mark.parametrize("peer", list(PEERS))
def test_trivial_10k_c100(benchmark: Any, peer: str) -> None:
    benchmark.pedantic(_run(peer, trivial, 10_000, 100), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="semaphore-threads")
@pytest.mark.parametrize("kind", ["agentperf", "threading.Semaphore", "threading.BoundedSemaphore"])
def test_sync_acquire_release(benchmark: Any, kind: str) -> None:
    sem: Any = {
        "agentperf": lambda: ap.Semaphore(4),
        "threading.Semaphore": lambda: threading.Semaphore(4),
        "threading.BoundedSemaphore": lambda: threading.BoundedSemaphore(4),
    }[kind]()
    acquire, release = sem.acquire, sem.release

    def go() -> None:
        for _ in range(1000):
            acquire()
            release()

    benchmark(go)


@pytest.mark.benchmark(group="semaphore-async")
@pytest.mark.parametrize("kind", ["agentperf", "asyncio.Semaphore"])
@pytest.mark.parametrize("contended", [False, True], ids=["uncontended", "10-tasks-2-permits"])
def test_async_with(benchmark: Any, kind: str, contended: bool) -> None:
    async def main() -> None:
        sem: Any = ap.Semaphore(2) if kind == "agentperf" else asyncio.Semaphore(2)

        async def worker(k: int) -> None:
            for _ in range(k):
                async with sem:
                    await asyncio.sleep(0)

        if contended:
            await asyncio.gather(*(worker(1000) for _ in range(10)))
        else:
            await worker(10_000)

    benchmark.pedantic(lambda: asyncio.run(main()), rounds=5, iterations=1, warmup_rounds=1)
