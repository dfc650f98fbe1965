"""BatchExecutor against the usual ways to run many coroutines with a concurrency limit.

Run on a release build:  .venv/bin/python benches/batch_compare.py [--quick] [--memory]

Peers, in one process and one event loop each: serial awaits, ``asyncio.gather`` + ``asyncio
.Semaphore``, ``asyncio.TaskGroup`` + ``Semaphore``, ``aiometer.run_all`` and LangChain
``RunnableLambda.abatch`` (``max_concurrency`` config). Workloads: 1000 calls of
``asyncio.sleep(0.001)`` at concurrency 10/20/100/1000, and trivial calls at 100 and 1000.
Prints medians; ratios are against gather+Semaphore. ``--memory`` streams a 1M-item generator
through ``astream`` and reports peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import agentperf as ap

Fn = Callable[[Any], Awaitable[Any]]


async def sleepy(x: int) -> int:
    await asyncio.sleep(0.001)
    return x


async def trivial(x: int) -> int:
    return x


async def serial(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    return [await fn(x) for x in xs]


async def gather_sem(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    sem = asyncio.Semaphore(c)

    async def one(x: int) -> Any:
        async with sem:
            return await fn(x)

    return await asyncio.gather(*(one(x) for x in xs))


async def taskgroup_sem(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    sem = asyncio.Semaphore(c)

    async def one(x: int) -> Any:
        async with sem:
            return await fn(x)

    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
        tasks = [tg.create_task(one(x)) for x in xs]
    return [t.result() for t in tasks]


async def aiometer_run_all(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    import aiometer

    return await aiometer.run_all([functools.partial(fn, x) for x in xs], max_at_once=c)


async def langchain_abatch(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    from langchain_core.runnables import RunnableLambda

    return await RunnableLambda(fn).abatch(list(xs), config={"max_concurrency": c})


async def agentperf_batch(fn: Fn, xs: Iterable[int], c: int) -> list[Any]:
    ex = ap.BatchExecutor(fn, max_concurrency=c)
    r = await ex.aexecute(xs)
    return r.outputs


PEERS: dict[str, Callable[[Fn, Iterable[int], int], Awaitable[list[Any]]]] = {
    "agentperf BatchExecutor": agentperf_batch,
    "asyncio.gather + Semaphore": gather_sem,
    "asyncio.TaskGroup + Semaphore": taskgroup_sem,
    "aiometer.run_all": aiometer_run_all,
    "langchain RunnableLambda.abatch": langchain_abatch,
    "serial": serial,
}
if sys.version_info < (3, 11):
    del PEERS["asyncio.TaskGroup + Semaphore"]


def _once(peer: str, fn: Fn, n: int, c: int) -> float:
    """Seconds of one run on a fresh event loop."""
    out: list[float] = []
    run = PEERS[peer]

    async def main() -> None:
        t0 = time.perf_counter()
        res = await run(fn, range(n), c)
        out.append(time.perf_counter() - t0)
        assert len(res) == n and res[-1] == n - 1

    gc.collect()
    asyncio.run(main())
    return out[0]


def measure_all(peers: dict[str, int], fn: Fn, c: int, rounds: int) -> dict[str, float]:
    """Median seconds per peer (peer -> item count). Rounds are interleaved across peers, so
    a burst of load on the machine hits every peer alike."""
    times: dict[str, list[float]] = {p: [] for p in peers}
    for _ in range(rounds):
        for peer, n in peers.items():
            times[peer].append(_once(peer, fn, n, c))
    return {p: statistics.median(ts) for p, ts in times.items()}


def sleep_table(rounds: int) -> None:
    print("\n1000 tasks x asyncio.sleep(0.001): median ms (ratio to gather+Semaphore)")
    concs = [10, 20, 100, 1000]
    print(f"{'':34}" + "".join(f"{'c=' + str(c):>18}" for c in concs))
    peers = {p: 1000 for p in PEERS if p != "serial"}
    cols = [measure_all(peers, sleepy, c, rounds) for c in concs]
    serial_t = _once("serial", sleepy, 1000, 1)
    for peer in PEERS:
        ts = [serial_t] * len(concs) if peer == "serial" else [col[peer] for col in cols]
        cells = "".join(
            f"{t * 1e3:>9.1f} ({t / col['asyncio.gather + Semaphore']:4.2f}x)"
            for t, col in zip(ts, cols, strict=True)
        )
        print(f"{peer:34}{cells}")


def trivial_table(rounds: int, n: int) -> None:
    print("\ntrivial tasks (async def f(x): return x): items/s, median (vs gather+Semaphore)")
    concs = [100, 1000]
    print(f"{'':34}" + "".join(f"{'c=' + str(c):>22}" for c in concs))
    # The slow peers run fewer items (their rate does not depend on the count).
    slow = ("langchain RunnableLambda.abatch", "aiometer.run_all")
    peers = {p: n // 10 if p in slow else n for p in PEERS}
    cols = [measure_all(peers, trivial, c, rounds) for c in concs]
    rates = {p: [peers[p] / col[p] for col in cols] for p in PEERS}
    base = rates["asyncio.gather + Semaphore"]
    for peer, rs in rates.items():
        cells = "".join(f"{r:>13,.0f} ({r / b:5.2f}x)" for r, b in zip(rs, base, strict=True))
        print(f"{peer:34}{cells}")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(n: int) -> None:
    import psutil

    proc = psutil.Process()

    async def main() -> tuple[int, float]:
        ex = ap.BatchExecutor(trivial, max_concurrency=100, timeout=None)
        count = 0
        samples = []
        t0 = time.perf_counter()
        async for _item in ex.astream(x for x in range(n)):
            count += 1
            if count % (n // 10) == 0:
                samples.append(proc.memory_info().rss / 2**20)
        dt = time.perf_counter() - t0
        print(f"  RSS every {n // 10:,} items (MiB): " + " ".join(f"{s:.1f}" for s in samples))
        return count, dt

    before = peak_rss_mb()
    count, dt = asyncio.run(main())
    print(
        f"astream over a {n:,}-item generator: {count:,} items in {dt:.2f} s "
        f"({count / dt:,.0f}/s); peak RSS {before:.1f} MiB before, {peak_rss_mb():.1f} MiB after"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and items")
    p.add_argument("--memory", action="store_true", help="only the 1M-item astream memory run")
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args()
    if a.memory:
        memory(100_000 if a.quick else 1_000_000)
        return
    rounds = a.rounds or (3 if a.quick else 7)
    print(f"Python {sys.version.split()[0]}, agentperf {ap.__version__}, median of {rounds}")
    sleep_table(rounds)
    trivial_table(rounds, 20_000 if a.quick else 100_000)


if __name__ == "__main__":
    main()
