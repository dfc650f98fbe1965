"""The measuring helpers every block shares: timers, the simulated agents, peer detection."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = [
    "SAMPLE_INPUT",
    "have",
    "json_sha256",
    "median_ns_per_call",
    "run_seconds",
    "sleep_agent",
]

SAMPLE_INPUT: dict[str, Any] = {
    "task": "summarize",
    "instruction": "be brief",
    "context": {"user": "u1", "n": 3},
}
"""The seed's benchmark input."""


def median_ns_per_call(fn: Callable[[], Any], *, loops: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean time of ``loops`` calls, in nanoseconds."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter_ns() - t0) / loops)
    return statistics.median(samples)


def run_seconds(coro: Coroutine[Any, Any, Any]) -> float:
    """Wall-clock seconds of ``asyncio.run(coro)``."""
    t0 = time.perf_counter()
    asyncio.run(coro)
    return time.perf_counter() - t0


def have(module: str) -> bool:
    """Whether ``module`` (a peer) is installed, without importing it."""
    return importlib.util.find_spec(module) is not None


def sleep_agent(seconds: float) -> Callable[[Any], Any]:
    """A blocking agent that takes ``seconds`` and echoes its input (a simulated I/O call)."""

    def agent(x: Any) -> Any:
        time.sleep(seconds)
        return x

    return agent


def json_sha256(x: Any) -> str:
    """The key plain Python would use: SHA-256 of the sorted JSON dump."""
    return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()
