"""Adaptive concurrency: a limit on agent calls in flight that follows what the backend sustains.

:class:`AdaptiveConcurrency` is an AIMD controller (additive increase, multiplicative
decrease, as TCP's congestion window) with an asyncio permit interface: a worker takes a
slot for each agent call and gives it back with the call's latency and outcome.

>>> import asyncio, agentperf as ap
>>> ctl = ap.AdaptiveConcurrency(initial=4, min=1, max=64)
>>> async def call(x):
...     async with ctl.slot():        # waits, first come first served, for a free slot
...         return x * 2              # the agent call; its latency and error are recorded
>>> asyncio.run(call(21)), ctl.limit
(42, 4)
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

from . import _config as v

__all__ = ["AdaptiveConcurrency", "AdaptiveStats"]


@dataclasses.dataclass(frozen=True)
class AdaptiveStats:
    """A snapshot of an :class:`AdaptiveConcurrency`.

    ``limit`` is the limit in force, ``in_flight`` the slots held now (it may exceed ``limit``
    right after a decrease: calls in flight are never cancelled), ``waiting`` the callers
    waiting for a slot. ``increases`` and ``decreases`` count the changes of the limit;
    ``rtt_s`` is the smoothed latency of successful calls (0 before the first).
    """

    limit: int
    in_flight: int
    waiting: int
    increases: int
    decreases: int
    rtt_s: float


def _bounds(initial: object, minimum: object, maximum: object) -> tuple[int, int, int]:
    lo = v.integer("min", minimum, minimum=1)
    hi = v.integer("max", maximum, minimum=1)
    start = v.integer("initial", initial, minimum=1)
    if lo > hi:
        raise ValueError(f"min={lo}: must be <= max ({hi})")
    if not lo <= start <= hi:
        raise ValueError(f"initial={start}: must be between min ({lo}) and max ({hi})")
    return start, lo, hi


class AdaptiveConcurrency:
    """A concurrency limit that finds what the backend sustains, by AIMD.

    ``AdaptiveConcurrency(initial=16, min=1, max=256)`` (ints, ``1 <= min <= initial <=
    max``) is given to ``BatchExecutor(max_concurrency=...)`` in place of an int. The limit
    counts agent calls in flight and always stays within ``[min, max]``:

    * **Increase.** Each successful call adds ``1 / limit`` to the limit, so the limit grows
      by one per limit's worth of successes (one per round trip when the limit is in use).
      Only calls that finished while at least half the limit was in use count: a batch that
      does not fill its limit gives no evidence the backend could take more.
    * **Decrease.** An overload signal (an error with HTTP status 429 or 503, or a
      ``TimeoutError``: :func:`agentperf._http.is_overload`) halves the limit, at most once
      per round-trip time: not before ``rtt_s`` (the smoothed latency of successful calls)
      has passed since the last halving, and only for a call sent after it (a call sent
      under the old, higher limit says nothing about the new one). An overload within that
      round trip does not halve the limit again but withdraws the refused call's slot when
      it would otherwise be handed on (the limit drops by one, to no less than the calls in
      flight), so a backend that refuses at once is not flooded with calls that fail as
      fast as the slot comes back.
    * Other errors and cancellations change nothing.

    The permit interface, for an executor's workers. Take one slot per agent *call*, inside
    the retry loop (an item sleeping before a retry holds none): for instance a
    :class:`~agentperf.RetryingAgent` over an agent whose ``aexecute`` is

    .. code-block:: python

        async def aexecute(x):
            async with ctl.slot():         # or, by hand:
                return await agent(x)      # await ctl.acquire()
                                           # t0 = time.monotonic()
                                           # try: out = await agent(x)
                                           # except BaseException as e:
                                           #     ctl.release(time.monotonic() - t0, e); raise
                                           # ctl.release(time.monotonic() - t0)

    with up to ``max`` workers taking items; :attr:`limit` is what the executor reports as
    its concurrency.

    Waiters are served first come, first served. A raised limit wakes waiters at once; a
    lowered one lets the calls in flight finish (none is cancelled) and grants nothing until
    they drop below it. A cancelled waiter takes no slot. Waiters are asyncio tasks, usually
    on one loop; tasks of several loops in several threads may share a controller (a slot
    freed on one loop reaches a waiter of another through ``call_soon_threadsafe``). The
    state is guarded by a lock, so :meth:`release`, :meth:`try_acquire` and :meth:`stats`
    may be called from any thread; a thread cannot wait for a slot (there is no blocking
    acquire).
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_decreases",
        "_in_flight",
        "_increases",
        "_last_decrease",
        "_limit",
        "_lock",
        "_srtt",
        "_waiters",
        "_window",
        "initial",
        "max",
        "min",
    )

    DECREASE_FACTOR = 0.5
    """The limit is multiplied by this on an overload signal."""
    RTT_GAIN = 0.125
    """Weight of a new latency sample in the smoothed round-trip time (TCP's 1/8)."""

    initial: int
    """The limit at the start."""
    min: int
    """The limit never goes below this."""
    max: int
    """The limit never goes above this."""

    def __init__(
        self,
        initial: int = 16,
        min: int = 1,
        max: int = 256,
        *,
        _clock: Callable[[], float] | None = None,
    ) -> None:
        self.initial, self.min, self.max = _bounds(initial, min, max)
        self._clock: Callable[[], float] = time.monotonic if _clock is None else _clock
        self._lock = threading.Lock()
        self._window = float(self.initial)
        self._limit = self.initial
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._srtt = 0.0
        self._last_decrease = -math.inf
        self._increases = 0
        self._decreases = 0

    @property
    def limit(self) -> int:
        """The limit in force: how many agent calls may be in flight."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits; never waits."""
        with self._lock:
            if self._in_flight < self._limit and not self._waiters:
                self._in_flight += 1
                return True
            return False

    async def acquire(self) -> None:
        """Wait for a slot, first come first served, without blocking the loop.

        Every acquire is followed by exactly one :meth:`release`. A caller cancelled while
        waiting takes nothing.
        """
        with self._lock:
            if self._in_flight < self._limit and not self._waiters:
                self._in_flight += 1
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            # Done now either way: a grant still on its way (another thread's release) then
            # finds it done and gives the slot back itself.
            fut.cancel()
            with self._lock:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass  # already granted (or being granted)
            if fut.done() and not fut.cancelled():
                self._give_back()  # granted, but the caller is gone
            raise

    def release(self, latency_s: float = 0.0, exc: BaseException | None = None) -> None:
        """Give a slot back, with the call's latency in seconds and its error (``None`` when
        it succeeded). The outcome drives the limit (see the class docstring).

        ``latency_s`` is a non-negative float (or a ``timedelta``); a bad one raises
        ``ValueError``/``TypeError`` and leaves the slot held.
        """
        if latency_s is None:
            raise TypeError("latency_s=None: expected a non-negative number of seconds")
        latency = v.wait("latency_s", latency_s)
        assert latency is not None
        # Read the error (user attributes) before taking the lock.
        overload = exc is not None and _is_overload(exc)
        now = self._clock()
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("AdaptiveConcurrency.release() without a matching acquire")
            busy = self._in_flight
            self._in_flight -= 1
            if exc is None:
                self._on_success(latency, busy)
            elif overload:
                self._on_overload(now, latency)
            grants = self._grantable()
        _hand_over(grants, self._give_back)

    def slot(self) -> _Slot:
        """``async with ctl.slot():`` around one agent call: acquires, then releases with the
        measured latency and the exception that left the block (which still propagates)."""
        return _Slot(self)

    def stats(self) -> AdaptiveStats:
        """A consistent snapshot (see :class:`AdaptiveStats`)."""
        with self._lock:
            return AdaptiveStats(
                self._limit,
                self._in_flight,
                len(self._waiters),
                self._increases,
                self._decreases,
                self._srtt,
            )

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrency(initial={self.initial}, min={self.min}, max={self.max}, "
            f"limit={self._limit}, in_flight={self._in_flight})"
        )

    # -- under self._lock ---------------------------------------------------------------

    def _set_window(self, window: float) -> None:
        self._window = window if window < self.max else float(self.max)
        if self._window < self.min:
            self._window = float(self.min)
        # The epsilon keeps sums of 1/limit that should reach an integer from falling short.
        self._limit = int(self._window + 1e-9)

    def _on_success(self, latency_s: float, busy: int) -> None:
        if math.isfinite(latency_s):
            if self._srtt == 0.0:
                self._srtt = latency_s
            else:
                self._srtt += self.RTT_GAIN * (latency_s - self._srtt)
        if busy * 2 < self._limit or self._limit >= self.max:
            return
        before = self._limit
        self._set_window(self._window + 1.0 / self._limit)
        if self._limit > before:
            self._increases += 1

    def _on_overload(self, now: float, latency_s: float) -> None:
        last = self._last_decrease
        sent = now - latency_s
        if sent < last:
            return  # sent under the old, higher limit: says nothing about this one
        before = self._limit
        if now - last < self._srtt:
            # Within a round trip of the last cut: no second cut, but the refused call's slot
            # is not handed on either, or a backend that refuses at once would be flooded
            # with calls that fail as fast as the slot is re-granted.
            if self._in_flight >= before:
                return
            self._set_window(before - 1.0)
        else:
            self._last_decrease = now
            self._set_window(self._window * self.DECREASE_FACTOR)
        if self._limit < before:
            self._decreases += 1

    def _grantable(self) -> list[asyncio.Future[None]]:
        """Pops the waiters that now get a slot, counting their slots as taken."""
        out: list[asyncio.Future[None]] = []
        waiters = self._waiters
        while waiters and self._in_flight < self._limit:
            fut = waiters.popleft()
            if fut.done():
                continue  # cancelled; its acquire is on the way out
            self._in_flight += 1
            out.append(fut)
        return out

    def _give_back(self) -> None:
        """Return a slot that was granted but never used (no signal)."""
        with self._lock:
            self._in_flight -= 1
            grants = self._grantable()
        _hand_over(grants, self._give_back)


def _is_overload(exc: BaseException) -> bool:
    from . import _http  # on failures only: keeps email.utils out of `import agentperf`

    return _http.is_overload(exc)


def _grant(fut: asyncio.Future[None], give_back: Callable[[], None]) -> None:
    if fut.done():
        give_back()
    else:
        fut.set_result(None)


def _hand_over(grants: list[asyncio.Future[None]], give_back: Callable[[], None]) -> None:
    """Wake granted waiters: directly on their own loop, else through call_soon_threadsafe."""
    if not grants:
        return
    here = asyncio._get_running_loop()
    for fut in grants:
        loop = fut.get_loop()
        if loop is here:
            _grant(fut, give_back)
            continue
        try:
            loop.call_soon_threadsafe(_grant, fut, give_back)
        except RuntimeError:  # that loop is closed: nobody will take the slot
            give_back()


class _Slot:
    """One slot of an :class:`AdaptiveConcurrency` for the duration of an ``async with``."""

    __slots__ = ("_ctl", "_t0")

    def __init__(self, ctl: AdaptiveConcurrency) -> None:
        self._ctl = ctl
        self._t0 = 0.0

    async def __aenter__(self) -> _Slot:
        await self._ctl.acquire()
        self._t0 = self._ctl._clock()
        return self

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ctl = self._ctl
        ctl.release(ctl._clock() - self._t0, exc)
