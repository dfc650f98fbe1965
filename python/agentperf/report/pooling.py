"""The pooling block: a pool's call overhead, the construction it saves, concurrent access.

Baseline: agents in a ``queue.Queue``. No peer: no general object pool is in wide use
(psycopg_pool pools connections only).
"""

from __future__ import annotations

import queue
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from .measure import median_ns_per_call, sleep_agent
from .registry import Block
from .row import Row

__all__ = ["BLOCK", "CONCURRENT", "FRESH_VS_POOLED", "rows"]

FRESH_VS_POOLED = "Overhead reduction vs a fresh agent per call"
"""The metric of the seed's "Pool Performance" block."""
CONCURRENT = "Concurrent access: 10 threads vs 1 (throughput ratio)"
"""The metric of the seed's "Concurrent Pool Access" block."""


class _QueuePool:
    """The plain-Python baseline: agents in a ``queue.Queue``."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        for _ in range(size):
            self.q.put(factory())

    def execute(self, x: Any) -> Any:
        agent = self.q.get()
        try:
            return agent(x)
        finally:
            self.q.put(agent)


class _CostlyAgent:
    """An agent whose construction costs ~0.1 ms and 4 KiB, like a client with a buffer."""

    def __init__(self) -> None:
        end = time.perf_counter() + 0.0001
        while time.perf_counter() < end:
            pass
        self.buffer = bytearray(4096)

    def __call__(self, x: Any) -> Any:
        return x


def rows(quick: bool) -> Iterator[Row]:
    """Overhead, construction cost avoided, and concurrent access."""
    import agentperf as ap

    loops, repeat = (2_000, 5) if quick else (20_000, 11)
    with ap.AgentPool(_CostlyAgent, max_size=4, initial_size=1) as pool:
        pool.execute(1)
        pooled = median_ns_per_call(lambda: pool.execute(1), loops=loops, repeat=repeat)
        agent = _CostlyAgent()
        direct = median_ns_per_call(lambda: agent(1), loops=loops, repeat=repeat)
    qpool = _QueuePool(_CostlyAgent, 4)
    qns = median_ns_per_call(lambda: qpool.execute(1), loops=loops, repeat=repeat)
    yield Row(
        "pooling",
        "execute overhead over a direct call",
        pooled - direct,
        "ns",
        qns - direct,
        "queue.Queue pool",
        None,
        "no general object pool peer (psycopg_pool pools connections only)",
        "-",
        higher_is_better=False,
    )

    # The seed's row: an agent call of ~0.8 ms, a factory of ~0.1 ms, fresh agent vs pooled.
    n = 100 if quick else 500

    def fresh_call() -> None:
        _CostlyAgent()(1)
        time.sleep(0.0008)

    def pooled_call() -> None:
        pool.execute(1)
        time.sleep(0.0008)

    qpool2 = _QueuePool(_CostlyAgent, 4)

    def queue_call() -> None:
        qpool2.execute(1)
        time.sleep(0.0008)

    fresh = median_ns_per_call(fresh_call, loops=n, repeat=5)
    with ap.AgentPool(_CostlyAgent, max_size=4, initial_size=1) as pool:
        pooled = median_ns_per_call(pooled_call, loops=n, repeat=5)
    queued = median_ns_per_call(queue_call, loops=n, repeat=5)
    yield Row(
        "pooling",
        FRESH_VS_POOLED,
        100.0 * (1 - pooled / fresh),
        "%",
        100.0 * (1 - queued / fresh),
        "queue.Queue pool",
        None,
        "",
        "~10%",
        note=f"agent call ~0.8 ms, factory ~0.1 ms: fresh {fresh / 1e3:.0f} µs, pooled "
        f"{pooled / 1e3:.0f} µs per call; the reduction is the factory's share of a call",
        details={"fresh_ns": fresh, "pooled_ns": pooled},
    )

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = _CostlyAgent()
    footprint = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del keep
    calls = 1_000
    with ap.AgentPool(_CostlyAgent, max_size=4, initial_size=1) as pool:
        for _ in range(calls):
            pool.execute(1)
        created = pool.stats().created
    per_call_pooled = footprint * created / calls
    yield Row(
        "pooling",
        "Allocation reduction (agent construction bytes per call)",
        100.0 * (1 - per_call_pooled / footprint),
        "%",
        None,
        "",
        None,
        "",
        "~31% fewer bytes",
        note=f"fresh: {footprint} B/call; pooled: {per_call_pooled:.1f} B/call "
        f"({created} agents for {calls} calls)",
    )

    work = 0.001
    per_thread = 30 if quick else 150

    def throughput(threads: int) -> float:
        with ap.AgentPool(
            lambda: sleep_agent(work), max_size=threads, initial_size=threads
        ) as pool:
            barrier = threading.Barrier(threads + 1)

            def worker() -> None:
                barrier.wait()
                for _ in range(per_thread):
                    pool.execute(None)

            ts = [threading.Thread(target=worker) for _ in range(threads)]
            for t in ts:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in ts:
                t.join()
            return threads * per_thread / (time.perf_counter() - t0)

    one, ten = throughput(1), throughput(10)
    yield Row(
        "pooling",
        CONCURRENT,
        ten / one,
        "x",
        10.0,
        "ideal",
        None,
        "",
        "50x",
        note=f"1 ms blocking agent; {one:.0f} vs {ten:.0f} calls/s. 10 threads cannot "
        "exceed 10x: the seed's 50x compares unlike runs",
        details={"one_thread_ns_per_op": 1e9 / one, "ten_threads_ns_per_op": 1e9 / ten},
    )


BLOCK = Block("pooling", "Pooling", rows)
