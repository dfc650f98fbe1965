"""The counts and timings of finished items, kept per worker and merged into the run's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .results import BatchStats

if TYPE_CHECKING:
    from .._agentperf import _Histogram

__all__ = ["BLOCK", "Tally"]

_INF = float("inf")

BLOCK = 256
"""Item durations are buffered and observed into the executor's histogram this many at a
time (one Rust call per block), so per item it costs a list append."""


class Tally:
    """Successes, failures and the sum, min and max of their durations (seconds); with a
    histogram (a named executor's), every duration observed into it too."""

    __slots__ = ("buf", "failed", "hist", "max_s", "min_s", "succeeded", "sum_s")

    def __init__(self, hist: _Histogram | None = None) -> None:
        self.succeeded = 0
        self.failed = 0
        self.sum_s = 0.0
        self.min_s = _INF
        self.max_s = 0.0
        self.hist = hist
        self.buf: list[float] | None = None if hist is None else []

    def observe(self, durations: list[float]) -> None:
        """Observe ``durations`` (a worker's block) into the histogram, if any."""
        if self.hist is not None and durations:
            self.hist.observe_many(durations)

    def flush(self) -> None:
        """Observe what :meth:`record` buffered."""
        buf = self.buf
        if buf:
            self.observe(buf)
            buf.clear()

    @property
    def finished(self) -> int:
        """Items that succeeded or failed."""
        return self.succeeded + self.failed

    def record(self, dt: float, ok: bool) -> None:
        """One finished item that took ``dt`` seconds."""
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self.sum_s += dt
        if dt < self.min_s:
            self.min_s = dt
        if dt > self.max_s:
            self.max_s = dt
        buf = self.buf
        if buf is not None:
            buf.append(dt)
            if len(buf) >= BLOCK:
                self.flush()

    def add(self, succeeded: int, sum_s: float, min_s: float, max_s: float) -> None:
        """Successes counted elsewhere (the fast worker keeps them in locals)."""
        self.succeeded += succeeded
        self.sum_s += sum_s
        self.min_s = min(self.min_s, min_s)
        self.max_s = max(self.max_s, max_s)

    def merge(self, other: Tally) -> None:
        """Add another tally's items to this one."""
        self.failed += other.failed
        self.add(other.succeeded, other.sum_s, other.min_s, other.max_s)

    def to_stats(
        self,
        total: int,
        duration: float,
        *,
        attempts: int = 0,
        throttled_s: float = 0.0,
        rerun: int = 0,
    ) -> BatchStats:
        """The :class:`BatchStats` of a batch of ``total`` items that ran ``duration`` s."""
        finished = self.finished
        return BatchStats(
            total_count=total,
            success_count=self.succeeded,
            failure_count=self.failed,
            cancelled_count=total - finished,
            duration_s=duration,
            throughput=finished / duration if duration > 0 else 0.0,
            avg_item_s=self.sum_s / finished if finished else 0.0,
            min_item_s=self.min_s if finished else 0.0,
            max_item_s=self.max_s,
            attempts=attempts,
            throttled_s=throttled_s,
            rerun=rerun,
        )
