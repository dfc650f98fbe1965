"""Agent pooling: build agents once, reuse them across calls and threads.

Run: python examples/pool_basic.py
"""

from __future__ import annotations

import threading
import time

import agentperf as ap


class SummaryAgent:
    """A stand-in for an LLM client whose construction is expensive."""

    def __init__(self) -> None:
        time.sleep(0.01)  # connecting, loading prompts, ...
        self.calls = 0

    def execute(self, text: str) -> str:
        self.calls += 1
        return text[:20]

    def close(self) -> None:
        """Called by the pool when it destroys the agent."""


def main() -> None:
    config = ap.PoolConfig(initial_size=2, max_size=4, idle_timeout=300.0, acquire_timeout=5.0)
    with ap.AgentPool(SummaryAgent, config) as pool:
        # Acquire, call and release in one step.
        print(pool.execute("The quick brown fox jumps over the lazy dog"))

        # Or hold an agent for several calls.
        with pool.agent() as agent:
            agent.execute("first")
            agent.execute("second")

        # Many threads share the pool; never more than max_size agents exist.
        threads = [
            threading.Thread(target=lambda: [pool.execute(f"doc {i}") for i in range(50)])
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        s = pool.stats()
        print(
            f"Active: {s.active_count}/{s.max_size} ({s.utilization_pct:.2f}% utilization), "
            f"created {s.created}, acquired {s.acquired}, waits {s.waits}"
        )
        assert s.created <= 4 and s.acquired == s.released == 402


if __name__ == "__main__":
    main()
