"""Result caching: identical inputs are answered from the cache.

Run: python examples/cached_agent.py
"""

from __future__ import annotations

import asyncio
import time

import agentperf as ap


def slow_agent(request: dict[str, object]) -> str:
    """A stand-in for an LLM call that takes 50 ms."""
    time.sleep(0.05)
    return f"answer to {request['task']}"


async def slow_async_agent(question: str) -> str:
    await asyncio.sleep(0.05)
    return question.upper()


def main() -> None:
    config = ap.CacheConfig(max_size=1000, ttl=600.0, cleanup_interval=60.0)
    with ap.CachedAgent(slow_agent, config) as cached:
        request: dict[str, object] = {
            "task": "summarize",
            "instruction": "be brief",
            "context": {"user": "u1"},
        }
        t0 = time.perf_counter()
        first = cached.execute(request)
        miss = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(1000):
            again = cached.execute(dict(reversed(list(request.items()))))  # key order is irrelevant
        hit = (time.perf_counter() - t0) / 1000
        assert again == first
        s = cached.stats()
        print(f"miss {miss * 1e3:.1f} ms, hit {hit * 1e6:.2f} µs")
        print(f"Hit rate: {s.hit_rate:.2f}% (Hits: {s.hits}, Misses: {s.misses})")
        assert cached.invalidate(request) is True
        cached.invalidate_all()

    # The decorator form, for async functions too.
    @ap.cached(max_size=100, ttl=60.0)
    async def ask(question: str) -> str:
        return await slow_async_agent(question)

    async def run() -> None:
        answers = await asyncio.gather(*(ask("what is a pool?") for _ in range(10)))
        assert len(set(answers)) == 1
        print("decorated:", answers[0], ask.cache_stats())

    asyncio.run(run())


if __name__ == "__main__":
    main()
