"""All three together: a pool of cached agents under a batch executor, sync and async.

Each wrapper is itself an agent (it has execute/aexecute), so no adapter class is needed.
Run: python examples/combined.py
"""

from __future__ import annotations

import asyncio
import time

import agentperf as ap


class TranslateAgent:
    """A stand-in for an LLM client: 20 ms to build, 5 ms a call."""

    def __init__(self) -> None:
        time.sleep(0.02)

    def execute(self, text: str) -> str:
        time.sleep(0.005)
        return text[::-1]


def cached_agent() -> ap.CachedAgent[str, str]:
    # Every pooled agent has its own cache here; share one CachedAgent around the pool
    # instead (see below) when all agents should see the same entries.
    return ap.CachedAgent(TranslateAgent(), ap.CacheConfig())


def main() -> None:
    inputs = [f"sentence {i % 20}" for i in range(200)]  # many repeats

    # 1. A pool of cached agents, 2. a batch executor using the pool, 3. run.
    with ap.AgentPool(cached_agent, initial_size=2, max_size=8) as pool:
        result = ap.BatchExecutor(pool, max_concurrency=8).execute(inputs)
        print(
            "pool of cached agents:",
            result.stats.success_count,
            "ok,",
            f"{result.stats.duration_s:.3f} s",
        )
        assert result.outputs[3] == "3 ecnetnes"

    # The other order: one shared cache in front of the pool, then the batch executor.
    with (
        ap.AgentPool(TranslateAgent, initial_size=2, max_size=8) as translators,
        ap.CachedAgent(translators, ttl=600.0) as cached,
    ):

        async def run() -> ap.BatchResult[str]:
            return await ap.BatchExecutor(cached, max_concurrency=8).aexecute(inputs)

        result = asyncio.run(run())
        s = cached.stats()
        print(
            f"cache over pool: hit rate {s.hit_rate:.1f}%, agents created "
            f"{translators.stats().created}, {result.stats.duration_s:.3f} s"
        )
        assert s.misses == 20 and result.stats.success_count == 200


if __name__ == "__main__":
    main()
