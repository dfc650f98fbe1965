"""The batch executor on Ray beside the local executor and a plain Ray ``ActorPool``.

    python benches/ray_compare.py            # a local cluster of 2 CPUs (ray.init(num_cpus=2))

Prints trivial items/s through ``RayBackend`` and through ``ray.util.ActorPool`` (one Ray call
per item, the usual way), and 1,000 items of 10 ms I/O at concurrency 100 on Ray against the
local executor. Medians of several runs, in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray.util import ActorPool

import agentperf as ap


async def trivial(x: int) -> int:
    return x


async def io_10ms(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


@ray.remote
class Plain:
    async def call(self, x: int) -> int:
        return x


def median_rate(times: list[float], n: int) -> float:
    return n / statistics.median(times)


async def through_ray(agent: object, n: int, c: int, runs: int, actors: int) -> list[float]:
    out = []
    with ap.BatchExecutor(agent, max_concurrency=c, backend=ap.RayBackend(actors=actors)) as ex:
        await ex.aexecute(range(min(n, 1000)))  # the actors start and get the agent
        for _ in range(runs):
            t0 = time.perf_counter()
            r = await ex.aexecute(range(n))
            out.append(time.perf_counter() - t0)
            assert r.stats.success_count == n
    return out


async def local(agent: object, n: int, c: int, runs: int) -> list[float]:
    out = []
    with ap.BatchExecutor(agent, max_concurrency=c) as ex:
        for _ in range(runs):
            t0 = time.perf_counter()
            r = await ex.aexecute(range(n))
            out.append(time.perf_counter() - t0)
            assert r.stats.success_count == n
    return out


def actor_pool(n: int, runs: int, actors: int) -> list[float]:
    pool = ActorPool([Plain.remote() for _ in range(actors)])
    list(pool.map(lambda a, x: a.call.remote(x), range(100)))
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        got = list(pool.map(lambda a, x: a.call.remote(x), range(n)))
        out.append(time.perf_counter() - t0)
        assert len(got) == n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--actors", type=int, default=2)
    a = p.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    n = 200_000
    rb = asyncio.run(through_ray(trivial, n, 256, a.runs, a.actors))
    ap_n = 5_000
    pool = actor_pool(ap_n, a.runs, a.actors)
    io_ray = asyncio.run(through_ray(io_10ms, 1000, 100, a.runs, a.actors))
    io_local = asyncio.run(local(io_10ms, 1000, 100, a.runs))
    print("| what | agentperf | compared with | ratio |")
    print("|---|---|---|---|")
    r1, r2 = median_rate(rb, n), median_rate(pool, ap_n)
    print(
        f"| trivial items/s, {a.actors} actors | RayBackend {r1:,.0f}/s | "
        f"ray.util.ActorPool {r2:,.0f}/s | {r1 / r2:.0f}x |"
    )
    t1, t2 = statistics.median(io_ray), statistics.median(io_local)
    print(
        f"| 1,000 x 10 ms I/O at c=100 | RayBackend {t1 * 1000:.0f} ms | "
        f"local executor {t2 * 1000:.0f} ms | {t1 / t2:.2f}x the local time |"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
