"""Typing helpers: the agent shapes as generic protocols, and the wrappers' keyword options.

Nothing here exists at run time beyond the protocols; ``Unpack`` of the option dicts is read
by type checkers only (``from __future__ import annotations`` keeps it out of evaluation).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

if TYPE_CHECKING:
    from .adaptive import AdaptiveConcurrency
    from .batch.raybackend import RayBackend
    from .config import ErrorPolicy
    from .limiter import RateLimiter
    from .retry import RetryPolicy
    from .semaphore import Semaphore

__all__ = [
    "BatchOptions",
    "ExecutorOptions",
    "SupportsAexecute",
    "SupportsAinvoke",
    "SupportsExecute",
]
__all__ += ["SupportsInvoke"]

I_contra = TypeVar("I_contra", contravariant=True)
O_co = TypeVar("O_co", covariant=True)

Seconds = float | datetime.timedelta


class SupportsExecute(Protocol[I_contra, O_co]):
    """An object with a blocking ``execute(input)`` (every agentperf wrapper has one)."""

    def execute(self, input: I_contra, /) -> O_co: ...


class SupportsAexecute(Protocol[I_contra, O_co]):
    """An object with ``async def aexecute(input)``."""

    async def aexecute(self, input: I_contra, /) -> O_co: ...


class SupportsInvoke(Protocol[I_contra, O_co]):
    """A LangChain ``Runnable``-style object with ``invoke(input)``."""

    def invoke(self, input: I_contra, /) -> O_co: ...


class SupportsAinvoke(Protocol[I_contra, O_co]):
    """A LangChain ``Runnable``-style object with ``async def ainvoke(input)``."""

    async def ainvoke(self, input: I_contra, /) -> O_co: ...


class BatchOptions(TypedDict, total=False):
    """The :class:`~agentperf.BatchConfig` fields, as keyword overrides of ``BatchExecutor``."""

    max_concurrency: int | AdaptiveConcurrency
    timeout: Seconds | None
    item_timeout: Seconds | None
    error_policy: ErrorPolicy | str
    enable_stats: bool
    name: str | None


class ExecutorOptions(BatchOptions, total=False):
    """Every keyword of ``BatchExecutor``: the config fields and the executor's own."""

    semaphore: Semaphore | None
    rate_limit: RateLimiter | tuple[RateLimiter, Callable[[Any], float]] | list[Any] | None
    retry: RetryPolicy | None
    backend: RayBackend | None
    progress: bool
    on_progress: Callable[[int, int | None], Any] | None
