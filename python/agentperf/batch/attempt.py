"""One item's way to its agent: the layers an attempt passes through, outermost first.

::

    retry (RetryingAgent: sleeps between attempts, holding no slot)
      rate limits (RateLimitedAgent: waits for every limiter, pauses them on a 429 hint)
        slots (the shared Semaphore and the AdaptiveConcurrency limit: calls in flight)
          item_timeout (bounds the agent call alone, not the waits above it)
            the agent (awaited on the loop, or in the executor's threads)

A layer that is not configured is not there: an executor with none of them calls the agent
directly, and the run's lean worker keeps its per-item cost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..adaptive import AdaptiveConcurrency
    from ..limiter import RateLimiter
    from ..retry import RetryPolicy
    from ..semaphore import Semaphore

__all__ = ["Call", "layered"]

Call = Callable[[Any], Awaitable[Any]]


def _timeout(fn: Call, seconds: float) -> Call:
    if sys.version_info >= (3, 11):

        async def timed(x: Any) -> Any:
            cm = asyncio.timeout(seconds)
            try:
                async with cm:
                    return await fn(x)
            except TimeoutError:
                if cm.expired():
                    raise TimeoutError(f"an agent call exceeded item_timeout={seconds} s") from None
                raise

        return timed

    async def timed_310(x: Any) -> Any:  # pragma: no cover - Python 3.10
        try:
            return await asyncio.wait_for(fn(x), seconds)
        except asyncio.TimeoutError:
            raise TimeoutError(f"an agent call exceeded item_timeout={seconds} s") from None

    return timed_310


def _semaphore(fn: Call, sem: Semaphore) -> Call:
    async def limited(x: Any) -> Any:
        if not sem.try_acquire():
            await sem.aacquire()
        try:
            return await fn(x)
        finally:
            sem.release()

    return limited


def _adaptive(fn: Call, ctl: AdaptiveConcurrency) -> Call:
    pc = time.perf_counter

    async def adaptive(x: Any) -> Any:
        await ctl.acquire()
        t0 = pc()
        err: BaseException | None = None
        try:
            return await fn(x)
        except BaseException as e:
            err = e
            raise
        finally:
            ctl.release(pc() - t0, err)

    return adaptive


def layered(
    fn: Call,
    *,
    item_timeout: float | None,
    semaphore: Semaphore | None,
    adaptive: AdaptiveConcurrency | None,
    limits: Sequence[RateLimiter | tuple[RateLimiter, Callable[[Any], float]]],
    retry: RetryPolicy | None,
) -> Call:
    """``fn`` inside the layers that are configured (see the module docstring)."""
    if item_timeout is not None:
        fn = _timeout(fn, item_timeout)
    if adaptive is not None:
        fn = _adaptive(fn, adaptive)
    if semaphore is not None:
        fn = _semaphore(fn, semaphore)
    if limits:
        from ..limiter import RateLimitedAgent

        fn = RateLimitedAgent(fn, *limits).aexecute
    if retry is not None:
        from ..retry import RetryingAgent

        fn = RetryingAgent(fn, retry).aexecute
    return fn
