"""Rate limits kept in Rust (GCRA), shared by threads and any number of event loops.

>>> import agentperf as ap
>>> rpm = ap.RateLimiter(500, per=60.0)   # 500 units a minute, about 8 at once after idleness
>>> rpm.try_acquire(), rpm.stats().granted
(True, 1.0)

``RateLimiter(rate, per=1.0, burst=None)`` grants ``rate`` units of cost per ``per`` seconds,
smoothly: in any window of ``per`` seconds at most ``rate + burst`` units go (for costs up to
``burst``). ``burst`` (default ``rate * min(per, 1) / per``, at least 1) is how much may go at
once after idleness. A cost above ``burst`` (a long prompt against a token budget) is granted once
the limiter is fully rested, and its excess is a debt that the next grants wait out.

Waiters of every kind (threads in :meth:`~RateLimiter.acquire`, tasks awaiting
:meth:`~RateLimiter.aacquire` on any loop) are served first come, first served: a later small
cost never overtakes an earlier large one, and ``try_acquire`` never jumps the queue. A waiter
that times out or is cancelled takes nothing, and those behind it move up. No thread is kept:
the head of the queue sleeps until its own grant instant, and whoever is granted wakes the next.
"""

from __future__ import annotations

import asyncio
import datetime
import math

from ._agentperf import RateLimiter as _RustRateLimiter
from ._agentperf import RateLimiterStats
from ._config import wait as _wait

__all__ = ["RateLimiter", "RateLimiterStats"]


def _wake(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)


class RateLimiter(_RustRateLimiter):
    """``RateLimiter(rate, per=1.0, burst=None)``: ``rate`` units of cost per ``per`` seconds.

    ``acquire(cost=1.0, timeout=None) -> bool`` blocks a thread (``timeout=0``: do not wait);
    ``await aacquire(cost=1.0, timeout=None) -> bool`` waits without blocking the loop;
    ``try_acquire(cost=1.0) -> bool``; ``pause(seconds)``; ``stats()``; ``rate``, ``per``,
    ``burst``, ``waiting``, ``paused_for``.

    ``acquire`` on a thread whose event loop is running raises ``RuntimeError`` when it would
    have to wait: inside a coroutine use ``await limiter.aacquire()``.
    """

    __slots__ = ()

    async def aacquire(
        self, cost: float = 1.0, timeout: float | datetime.timedelta | None = None
    ) -> bool:
        """Take ``cost`` units, waiting (FIFO) up to ``timeout`` seconds (``None``: forever).

        Returns whether they were granted. A waiter that times out or is cancelled takes
        nothing; a grant made to it in that same instant is given back.
        """
        limit = _wait("timeout", timeout)
        if limit == 0:
            return self.try_acquire(cost)
        parked = self._wait_async(cost)
        if parked is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = None if limit is None or math.isinf(limit) else loop.time() + limit
        try:
            while True:
                armed = parked.arm()
                if armed is None:
                    return True
                fut, delay = armed
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        # A grant made in the same instant as the timeout is kept.
                        return parked.finish(True)
                    delay = left if delay is None else min(delay, left)
                # Not the head: poked when it becomes the head, and a look now and then in
                # case the head's own loop is stuck.
                timer = loop.call_later(1.0 if delay is None else delay, _wake, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
        except BaseException:
            parked.finish(False)
            raise
