"""What a batch returns: one finished item, one failed item, a batch's figures, the totals."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

__all__ = ["BatchError", "BatchExecutorStats", "BatchItem", "BatchResult", "BatchStats"]

I = TypeVar("I")  # noqa: E741 - an item's input type
O = TypeVar("O")  # noqa: E741 - an item's output type


class BatchError(NamedTuple):
    """One failed item: its position, its input and the exception its agent call raised."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as API.md names it
    input: Any
    error: BaseException


if TYPE_CHECKING or sys.version_info >= (3, 11):

    class BatchItem(NamedTuple, Generic[I, O]):
        """One finished item, as :meth:`BatchExecutor.astream` yields it (in completion order).

        ``output`` is ``None`` and ``error`` the exception when the item failed.
        ``BatchItem[I, O]`` on Python >= 3.11 (a generic named tuple); plain on 3.10.
        """

        index: int  # type: ignore[assignment]
        input: I
        output: O | None
        error: BaseException | None

        @property
        def ok(self) -> bool:
            """Whether the agent call succeeded."""
            return self.error is None

else:  # pragma: no cover - Python 3.10: no generic named tuples

    class BatchItem(NamedTuple):
        """One finished item (see the Python >= 3.11 definition above)."""

        index: int
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
    ``throttled_s`` the seconds items spent waiting for rate limits, summed over items;
    ``rerun`` the items run again because the Ray actor running them died.
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
    rerun: int = 0


@dataclasses.dataclass(frozen=True)
class BatchResult(Generic[O]):
    """What :meth:`BatchExecutor.aexecute` returns.

    ``outputs`` is in input order with ``None`` where the item failed or did not run;
    ``errors`` holds one :class:`BatchError` per failed item, in completion order
    (``len(errors) == stats.failure_count``).
    """

    outputs: list[O | None]
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
    attempts: int = 0
    """Agent calls made, retries included, summed over the batches."""
    throttled_s: float = 0.0
    """Seconds items spent waiting for rate limits, summed over the batches."""
    concurrency: int = dataclasses.field(default=0, compare=False)
    """The concurrency limit in force now (``max_concurrency``, or an adaptive limit's): a
    gauge, not a total, so it takes no part in comparisons."""
