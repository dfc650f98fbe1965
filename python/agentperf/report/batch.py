"""The batch block: speedup over serial at 10 and 20 workers, and maximum throughput.

Baseline: ``asyncio.gather`` under an ``asyncio.Semaphore``. Peer: aiometer's ``run_all``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

from .measure import have, run_seconds
from .registry import Block
from .row import Row

__all__ = ["BLOCK", "rows", "speedup_metric"]


def speedup_metric(workers: int) -> str:
    """The metric of the seed's "Batch Performance" block at ``workers`` workers."""
    return f"Speedup ({workers} workers)"


async def _gather_semaphore(fn: Callable[[Any], Any], items: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(x: Any) -> Any:
        async with sem:
            return await fn(x)

    return await asyncio.gather(*(one(x) for x in items))


async def _aiometer(fn: Callable[[Any], Any], items: list[Any], limit: int) -> list[Any]:
    import aiometer

    return list(
        await aiometer.run_all([functools.partial(fn, x) for x in items], max_at_once=limit)
    )


def rows(quick: bool) -> Iterator[Row]:
    """Speedup at 10 and 20 workers over serial, and maximum throughput."""
    import agentperf as ap

    async def sleepy(x: Any) -> Any:
        await asyncio.sleep(0.001)
        return x

    async def trivial(x: Any) -> Any:
        return x

    n = 200 if quick else 1000
    items = list(range(n))

    async def serial() -> None:
        for x in items:
            await sleepy(x)

    serial_s = run_seconds(serial())
    peer_ok = have("aiometer")
    for workers, claim in ((10, "12x"), (20, "23x")):
        with ap.BatchExecutor(sleepy, max_concurrency=workers) as ex:
            ours = run_seconds(ex.aexecute(items))
            if ex.stats().success_tasks != n:
                raise RuntimeError(f"the measured batch did not complete: {ex.stats()}")
        base = run_seconds(_gather_semaphore(sleepy, items, workers))
        peer = serial_s / run_seconds(_aiometer(sleepy, items, workers)) if peer_ok else None
        yield Row(
            "batch",
            speedup_metric(workers),
            serial_s / ours,
            "x",
            serial_s / base,
            "asyncio.gather + Semaphore",
            peer,
            "aiometer.run_all" if peer_ok else "aiometer not installed (pip install aiometer)",
            claim,
            note=f"{n} tasks x 1 ms; ideal {workers}x"
            + (" (the seed's 12x beats this ideal)" if workers == 10 else ""),
            details={"tasks": float(n), "serial_ms": serial_s * 1e3, "batch_ms": ours * 1e3},
        )

    m = 20_000 if quick else 100_000
    many = range(m)
    with ap.BatchExecutor(trivial, max_concurrency=1000) as ex:
        ours = m / run_seconds(ex.aexecute(many))
    base = m / run_seconds(_gather_semaphore(trivial, list(many), 1000))
    peer = m / run_seconds(_aiometer(trivial, list(many), 1000)) if peer_ok else None
    yield Row(
        "batch",
        "Max throughput",
        ours,
        "tasks/s",
        base,
        "asyncio.gather + Semaphore",
        peer,
        "aiometer.run_all" if peer_ok else "aiometer not installed (pip install aiometer)",
        ">11,000 tasks/s",
        note=f"{m} trivial async tasks at concurrency 1000",
    )


BLOCK = Block("batch", "Batch", rows)
