"""Streaming a batch: results arrive in completion order, as soon as each finishes.

Run: python examples/streaming_batch.py
"""

from __future__ import annotations

import asyncio

import agentperf as ap


async def research(topic: int) -> str:
    await asyncio.sleep(0.002 * (topic % 5))  # uneven latencies
    return f"notes on topic {topic}"


def numbers(n: int):  # type: ignore[no-untyped-def]
    """A lazy input: the executor takes items only as workers become free."""
    yield from range(n)


async def main() -> None:
    executor = ap.BatchExecutor(research, max_concurrency=5)
    seen = []
    async for item in executor.astream(numbers(50)):
        if item.error is not None:
            print(f"item {item.index} failed: {item.error}")
        else:
            seen.append(item.index)
    print("completion order:", seen[:10], "...")
    assert sorted(seen) == list(range(50))

    # Leaving early cancels the rest; nothing keeps running.
    async for item in executor.astream(numbers(1_000_000)):
        if item.index >= 10:
            break
    print("stopped early after", item.index)


if __name__ == "__main__":
    asyncio.run(main())
