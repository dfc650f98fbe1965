"""A semaphore whose permits live in Rust, shared by threads and any number of event loops.

>>> import agentperf as ap
>>> sem = ap.Semaphore(4)
>>> sem.try_acquire(), sem.available
(True, 3)
>>> sem.release()

Waiters of every kind (threads blocked in :meth:`~Semaphore.acquire`, tasks awaiting
:meth:`~Semaphore.aacquire` on any loop) queue in one FIFO: a release goes to the oldest, and a
newcomer's ``try_acquire`` never jumps the queue. Waiting releases the GIL and never blocks a
loop. A waiter that is cancelled or times out gives back nothing it did not get, and a permit
granted to it in that same instant goes on to the next waiter.

Releasing more often than acquiring raises ``ValueError`` (like ``threading.BoundedSemaphore``),
so a bookkeeping bug cannot silently raise the limit.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from types import TracebackType

from ._agentperf import Semaphore as _RustSemaphore
from ._config import name as _valid_name
from ._config import wait as _wait
from .metrics import _registry

__all__ = ["Semaphore"]


class Semaphore(_RustSemaphore):
    """``Semaphore(permits)``: at most ``permits`` holders at once, across threads and loops.

    ``acquire(timeout=None) -> bool`` blocks a thread (``timeout=0``: do not wait);
    ``await aacquire(timeout=None) -> bool`` waits without blocking the loop; ``release()``;
    ``try_acquire() -> bool``; ``with sem:`` and ``async with sem:``; ``available``,
    ``permits``, ``waiting``. ``name=`` (1 to 128 characters of ``A-Za-z0-9_.:/-``) exports
    it in the metrics (:mod:`agentperf.metrics`) while it lives.

    ``with sem:`` blocks the calling thread: inside a coroutine use ``async with sem:``. On a
    thread whose event loop is running, ``acquire()`` and ``with sem:`` take a free permit at
    once but raise ``RuntimeError`` instead of waiting for one (the holder may be a task of
    that very loop, which could then never run to release it).
    """

    __slots__ = ("_name",)
    _name: str | None

    def __new__(cls, permits: int, *, name: str | None = None) -> Semaphore:
        valid = _valid_name(name)
        self = super().__new__(cls, permits)
        self._name = valid
        if valid is not None:
            _registry.register("semaphore", self)
        return self

    @property
    def name(self) -> str | None:
        """The semaphore's name in the metrics; ``None``: not exported."""
        return self._name

    async def aacquire(self, timeout: float | datetime.timedelta | None = None) -> bool:
        """Take a permit, waiting (FIFO) up to ``timeout`` seconds (``None``: forever).

        Returns whether a permit was taken. Cancelling the awaiting task leaks nothing.
        """
        timeout = _wait("timeout", timeout)
        if timeout == 0:
            return self.try_acquire()
        parked = self._wait_async()
        if parked is None:
            return True
        future, wait = parked
        try:
            if timeout is None or math.isinf(timeout):
                await future
            else:
                await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            # A permit granted in the same instant as the timeout is kept.
            return wait.finish(True)
        except BaseException:
            wait.finish(False)
            raise
        return wait.finish(True)

    async def __aenter__(self) -> Semaphore:
        await self.aacquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
