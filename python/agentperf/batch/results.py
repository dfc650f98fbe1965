"""What a batch returns: one finished item, one failed item, a batch's figures, the totals."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

__all__ = ["BatchError", "BatchExecutorStats", "BatchItem", "BatchResult", "BatchStats"]


class BatchError(NamedTuple):
    """One failed item: its position, its input and the exception its agent call raised."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as API.md names it
    input: Any
    error: BaseException


class BatchItem(NamedTuple):
    """One finished item, as :meth:`BatchExecutor.astream` yields it (in completion order).

    ``output`` is ``None`` and ``error`` the exception when the item failed.
    """

    index: int  # type: ignore[assignment]
    input: Any
    output: Any
    error: BaseException | None

    @property
    def ok(self) -> bool:
        """Whether the agent call succeeded."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Figures of one batch. ``success_count + failure_count + cancelled_count == total_count``.

    ``throughput`` is finished (succeeded or failed) items per second; the ``*_item_s`` figures
    are over finished items (0 when none finished). ``attempts`` counts the agent calls made,
    retries included (by the executor's ``retry`` or a ``RetryingAgent`` inside the agent);
    ``throttled_s`` the seconds items spent waiting for rate limits, summed over items.
    """

    total_count: int
    success_count: int
    failure_count: int
    cancelled_count: int
    duration_s: float
    throughput: float
    avg_item_s: float
    min_item_s: float
    max_item_s: float
    attempts: int = 0
    throttled_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What :meth:`BatchExecutor.aexecute` returns.

    ``outputs`` is in input order with ``None`` where the item failed or did not run;
    ``errors`` holds one :class:`BatchError` per failed item, in completion order
    (``len(errors) == stats.failure_count``).
    """

    outputs: list[Any]
    errors: list[BatchError]
    stats: BatchStats


@dataclasses.dataclass(frozen=True)
class BatchExecutorStats:
    """Totals across every batch an executor ran (kept when ``enable_stats``).

    ``success_rate`` is ``success_tasks / total_tasks`` in percent (0 before any task).
    """

    executions: int
    total_tasks: int
    success_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    success_rate: float
    concurrency: int = dataclasses.field(default=0, compare=False)
    """The concurrency limit in force now (``max_concurrency``, or an adaptive limit's): a
    gauge, not a total, so it takes no part in comparisons."""
