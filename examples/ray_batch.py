"""Scale-out: the same BatchExecutor, its items run on Ray actors.

Starts a local Ray cluster of 2 CPUs (on a real cluster, ``ray.init(address=...)`` instead),
runs a batch of simulated LLM calls on two actors, streams another, and shows that errors,
statistics and early exit behave as they do in one process.

Needs the extra: pip install 'agentperf-rs[ray]'

Run: python examples/ray_batch.py
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

import agentperf as ap


async def summarize(doc: str) -> str:
    """A stand-in for an LLM call: 20 ms of waiting on the network, sometimes a failure."""
    await asyncio.sleep(0.02)
    if doc.endswith("7"):
        raise ValueError(f"cannot summarize {doc!r}")
    return doc.upper()


async def main() -> None:
    docs = [f"doc {i}" for i in range(400)]
    with ap.BatchExecutor(
        summarize, max_concurrency=64, backend=ap.RayBackend(actors=2)
    ) as executor:
        result = await executor.aexecute(docs)
        s = result.stats
        print(
            f"on Ray: {s.success_count} ok, {s.failure_count} failed of {s.total_count} "
            f"in {s.duration_s:.2f} s ({s.throughput:.0f} items/s, {s.attempts} calls)"
        )
        assert s.success_count == 360 and s.failure_count == 40
        assert result.outputs[1] == "DOC 1" and result.outputs[7] is None
        assert all(isinstance(e.error, ValueError) for e in result.errors)

        seen = 0
        async for item in executor.astream(docs):  # completion order
            seen += 1
            assert item.ok == (item.error is None)
            if seen == 10:
                break  # the rest is cancelled on the actors
        print(f"streamed {seen} items, then left: the actors' remaining work was cancelled")

    local = await ap.BatchExecutor(summarize, max_concurrency=64).aexecute(docs)
    print(f"locally: {local.stats.success_count} ok in {local.stats.duration_s:.2f} s")
    assert local.outputs == result.outputs


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        asyncio.run(main())
    finally:
        ray.shutdown()
