"""Per-batch counters that agent wrappers report into, found through ``contextvars``.

A batch run sets :data:`METER` in its workers' context and counts one agent call per item it
starts; :class:`~agentperf.RetryingAgent` reports each retry, an agent call more than its
caller counted (:func:`attempt`), and :class:`~agentperf.RateLimitedAgent` each wait for a
limit (:func:`throttled`). So ``BatchStats.attempts`` is right however retrying wrappers
nest. Outside a batch nothing is set and the calls cost one ``ContextVar.get``. A context
copied into a worker thread shares the run's meter.
"""

from __future__ import annotations

import contextvars
import threading

__all__ = ["METER", "Meter", "attempt", "throttled"]


class Meter:
    """What a run's wrappers reported: agent calls beyond the run's own (retries), seconds
    throttled."""

    __slots__ = ("_lock", "calls", "throttled_s")

    def __init__(self) -> None:
        self.calls = 0
        self.throttled_s = 0.0
        self._lock = threading.Lock()  # sync agents report from worker threads

    def add_calls(self, n: int = 1) -> None:
        """``n`` more agent calls."""
        with self._lock:
            self.calls += n

    def add_throttled(self, seconds: float) -> None:
        """``seconds`` more spent waiting for a rate limit."""
        with self._lock:
            self.throttled_s += seconds


METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar(
    "agentperf_meter", default=None
)
"""The meter of the batch run whose worker is running, if any."""


def attempt() -> None:
    """Report one retry (an agent call more than the caller counts) to the run's meter."""
    m = METER.get()
    if m is not None:
        m.add_calls()


def throttled(seconds: float) -> None:
    """Report ``seconds`` spent waiting for a rate limit to the current run's meter."""
    if seconds > 0.0:
        m = METER.get()
        if m is not None:
            m.add_throttled(seconds)
