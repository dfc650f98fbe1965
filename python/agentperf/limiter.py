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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _meter
from ._agentperf import RateLimiter as _RustRateLimiter
from ._agentperf import RateLimiterStats
from ._config import name as _valid_name
from ._config import show as _show
from ._config import wait as _wait
from ._http import retry_after, status_of
from .agent import adapt
from .metrics import _registry

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RateLimitedAgent", "RateLimiter", "RateLimiterStats"]


def _wake(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)


class RateLimiter(_RustRateLimiter):
    """``RateLimiter(rate, per=1.0, burst=None)``: ``rate`` units of cost per ``per`` seconds.

    ``acquire(cost=1.0, timeout=None) -> bool`` blocks a thread (``timeout=0``: do not wait);
    ``await aacquire(cost=1.0, timeout=None) -> bool`` waits without blocking the loop;
    ``try_acquire(cost=1.0) -> bool``; ``pause(seconds)``; ``stats()``; ``rate``, ``per``,
    ``burst``, ``waiting``, ``paused_for``. ``name=`` (1 to 128 characters of
    ``A-Za-z0-9_.:/-``) exports it in the metrics (:mod:`agentperf.metrics`) while it lives.

    ``store=ap.RedisStore(url)`` (with a ``name=``, required then) makes one budget shared by
    every process that uses the same store and name: a
    :class:`~agentperf.store.limiter.ClusterRateLimiter` (GCRA in Redis, small local leases).

    ``acquire`` on a thread whose event loop is running raises ``RuntimeError`` when it would
    have to wait: inside a coroutine use ``await limiter.aacquire()``.
    """

    __slots__ = ("_name",)
    _name: str | None

    def __new__(
        cls,
        rate: float,
        per: float | datetime.timedelta = 1.0,
        burst: float | None = None,
        *,
        name: str | None = None,
        store: RedisStore | None = None,
    ) -> RateLimiter:
        if store is not None and cls is RateLimiter:
            from .store.limiter import ClusterRateLimiter

            return ClusterRateLimiter(rate, per, burst, name=name, store=store)
        valid = _valid_name(name)
        self = super().__new__(cls, rate, per, burst)
        self._name = valid
        if valid is not None:
            _registry.register("limiter", self)
        return self

    @property
    def name(self) -> str | None:
        """The limiter's name in the metrics; ``None``: not exported."""
        return self._name

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


Cost = Callable[[Any], float]
"""``cost(input) -> float``: the units one call takes from a limit (e.g. its tokens)."""


def _limit(i: int, value: Any) -> tuple[RateLimiter, Cost | None]:
    if isinstance(value, RateLimiter):
        return value, None
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], RateLimiter)
        and callable(value[1])
    ):
        return value[0], value[1]
    raise TypeError(
        f"limits[{i}]={_show(value)}: expected an agentperf.RateLimiter or a "
        "(RateLimiter, cost) pair whose cost(input) returns the units of a call"
    )


class RateLimitedAgent:
    """``RateLimitedAgent(agent, *limits)``: an agent that waits for every limit before a call.

    Each limit is a :class:`RateLimiter` (one unit per call) or a ``(RateLimiter, cost)`` pair
    whose ``cost(input) -> float`` gives the units of that call (its tokens, say). The limits
    are acquired in the order given (``execute`` blocks, ``aexecute`` awaits), then the agent
    is called. When the call raises an error with HTTP status 429 that carries a retry hint
    (``retry-after-ms``, or ``retry-after`` in seconds or as an HTTP date), every limit is
    paused for that long, so every caller sharing them backs off, and the error is re-raised
    unchanged. Time spent waiting is reported to the running batch (``BatchStats.throttled_s``).

    >>> import agentperf as ap
    >>> rpm = ap.RateLimiter(500, per=60.0)
    >>> tpm = ap.RateLimiter(90_000, per=60.0)
    >>> agent = ap.RateLimitedAgent(str.upper, rpm, (tpm, len))
    >>> agent.execute("hello"), rpm.stats().granted, tpm.stats().granted
    ('HELLO', 1.0, 5.0)
    """

    __slots__ = ("__weakref__", "_adapter", "_limits", "agent")

    def __init__(self, agent: Any, *limits: RateLimiter | tuple[RateLimiter, Cost]) -> None:
        self._adapter = adapt(agent)
        self.agent = agent
        """The wrapped agent, as given."""
        if not limits:
            raise ValueError(
                "limits=(): expected at least one RateLimiter or (RateLimiter, cost) pair"
            )
        self._limits = tuple(_limit(i, v) for i, v in enumerate(limits))

    @property
    def limits(self) -> tuple[tuple[RateLimiter, Cost | None], ...]:
        """The limits as ``(limiter, cost)`` pairs (``cost`` is ``None`` for one unit a call)."""
        return self._limits

    def _costs(self, input: Any) -> list[float]:
        return [1.0 if cost is None else cost(input) for _, cost in self._limits]

    def _backoff(self, exc: BaseException) -> None:
        if status_of(exc) != 429:
            return
        hint = retry_after(exc)
        if hint is None or hint <= 0:
            return
        for lim, _ in self._limits:
            lim.pause(hint)

    def execute(self, input: Any, /) -> Any:
        """Wait (blocking) for every limit, then call the agent on ``input``.

        On a thread whose event loop is running, a limit that would make it wait raises
        ``RuntimeError``: use ``await agent.aexecute(input)`` there.
        """
        for (lim, _), cost in zip(self._limits, self._costs(input), strict=True):
            if not lim.try_acquire(cost):
                if asyncio._get_running_loop() is not None:
                    raise RuntimeError(
                        f"{lim!r} is at its limit and waiting would block the running event "
                        "loop: use `await agent.aexecute(input)`"
                    )
                t0 = time.monotonic()
                lim.acquire(cost)
                _meter.throttled(time.monotonic() - t0)
        try:
            return self._adapter.call(input)
        except Exception as exc:
            self._backoff(exc)
            raise

    async def aexecute(self, input: Any, /) -> Any:
        """Wait (without blocking the loop) for every limit, then call the agent on ``input``."""
        for (lim, _), cost in zip(self._limits, self._costs(input), strict=True):
            if not lim.try_acquire(cost):
                t0 = time.monotonic()
                await lim.aacquire(cost)
                _meter.throttled(time.monotonic() - t0)
        try:
            return await self._adapter.acall(input)
        except Exception as exc:
            self._backoff(exc)
            raise

    def __repr__(self) -> str:
        limits = ", ".join(
            repr(lim) if cost is None else f"({lim!r}, {cost!r})" for lim, cost in self._limits
        )
        return f"RateLimitedAgent({self.agent!r}, {limits})"
