"""Batch execution: many inputs, bounded concurrency, every error collected.

Run: python examples/batch_executor.py
"""

from __future__ import annotations

import asyncio

import agentperf as ap


async def classify(text: str) -> str:
    """A stand-in for an LLM call that takes 10 ms and sometimes fails."""
    await asyncio.sleep(0.01)
    if "error" in text:
        raise ValueError(f"cannot classify {text!r}")
    return "long" if len(text) > 10 else "short"


async def main() -> None:
    inputs = [f"document {i}" if i % 25 else f"error {i}" for i in range(100)]
    config = ap.BatchConfig(max_concurrency=10, timeout=60.0, error_policy=ap.ErrorPolicy.CONTINUE)
    executor = ap.BatchExecutor(classify, config)
    result = await executor.aexecute(inputs)
    s = result.stats
    print(
        f"Success: {s.success_count}/{s.total_count} in {s.duration_s:.3f} s "
        f"({s.throughput:.0f} items/s)"
    )
    for err in result.errors:
        print(f"  item {err.index} ({err.input!r}) failed: {err.error}")
    assert s.success_count == 96 and s.failure_count == 4
    assert result.outputs[1] == "short"

    fail_fast = ap.BatchExecutor(
        classify, max_concurrency=10, error_policy=ap.ErrorPolicy.FAIL_FAST
    )
    stopped = await fail_fast.aexecute(inputs)
    print(
        f"fail-fast: {stopped.stats.failure_count} error(s), "
        f"{stopped.stats.cancelled_count} cancelled"
    )
    assert stopped.stats.failure_count >= 1 and stopped.stats.cancelled_count > 0


if __name__ == "__main__":
    asyncio.run(main())
