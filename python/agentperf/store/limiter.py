"""A cluster-wide rate limit: GCRA kept in Redis, one quota for every process that shares it.

>>> import agentperf as ap                                                  # doctest: +SKIP
>>> store = ap.RedisStore("redis://127.0.0.1:6379/0", namespace="myapp")   # doctest: +SKIP
>>> rpm = ap.RateLimiter(500, per=60.0, store=store, name="openai-rpm")   # doctest: +SKIP

``RateLimiter(rate, per, burst, store=RedisStore(...), name=...)`` returns a
:class:`ClusterRateLimiter`: the same methods as a local :class:`~agentperf.RateLimiter`, with
the limit's state (its theoretical arrival time, GCRA) in Redis under
``{store.prefix}limiter:{name}:tat``, changed only by one atomic Lua script that reads the
server's clock (``TIME``), so processes on hosts with skewed clocks share one quota.

Leases: each round trip reserves ``max(1, floor(min(rate / 100, burst)))`` units at once and
hands them out locally, so most grants cost no round trip. When the script answers "wait", the
reservation is already booked for the instant it names and the caller sleeps until then: a
waiter's place is kept, it is never overtaken by later callers of any process. Units reserved
and not used within a short time (``max(0.25 s, 2 x lease / rate x per)``) are dropped, never
saved up, so a process cannot hoard a burst.

``pause(seconds)`` is written to Redis (``...:pause``) and announced on the store's pub/sub
channel: every process's next grant waits until the pause ends.

Redis down or slow (a :class:`~agentperf.store.StoreError`, including an open breaker): the
call goes on against a local :class:`~agentperf.RateLimiter` at ``rate / members``, where
``members`` is the number of processes that heartbeat into ``...:members`` (the last count
seen; 1 if never seen). One ``RuntimeWarning`` is issued per limiter and every failed round
trip is counted in ``stats().store_errors``. A call never fails because of the store.

The limiter pickles as its settings and its store's (a store made from a URL), so it travels to
``multiprocessing`` children and Ray actors, where it joins the same quota.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import math
import os
import socket
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._agentperf import RateLimiter as _RustRateLimiter
from .._config import name as _valid_name
from .._config import show as _show
from .._config import wait as _wait
from ..limiter import RateLimiter
from ..metrics import _registry
from ._base import StoreError

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["ClusterRateLimiter", "ClusterRateLimiterStats"]

_MEMBER_TTL_US = 10_000_000  # a process counts as a member for 10 s after its last heartbeat
_BEAT_EVERY = 1.0  # seconds between heartbeats (piggybacked on a round trip)
_EPS = 1e-9
_INF = math.inf

# KEYS: tat, pause, members. ARGV: cost x interval (µs), tau = burst x interval (µs),
# max wait (µs, -1: any), member id ('' : no heartbeat), member ttl (µs).
# Returns {granted 0/1, wait µs, members (-1: not counted), pause left µs}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ct = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local members = -1
if ARGV[4] ~= '' then
  local ttl = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], now, ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl / 1000) * 2)
  members = redis.call('ZCARD', KEYS[3])
end
local n = now
local p = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if p > n then n = p end
local tat = (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) * 1000000
if tat < n then tat = n end
local allow = tat - tau + math.min(ct, tau)
if allow < n then allow = n end
local wait = allow - now
if max_wait >= 0 and wait > max_wait then
  return {0, wait, members, p - now}
end
local new_tat = tat + ct
redis.call('SET', KEYS[1], string.format('%.6f', new_tat / 1000000),
           'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, wait, members, p - now}
"""

# KEYS: tat. ARGV: cost x interval (µs). Gives back units booked and never used (a cancelled
# waiter's): the bookings after it keep their instants, the freed time goes to the next caller.
_REFUND = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nt = tonumber(raw) * 1000000 - tonumber(ARGV[1])
if nt <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.6f', nt / 1000000),
             'PX', math.ceil((nt - now) / 1000) + 1000)
end
return 1
"""

# KEYS: pause. ARGV: seconds (µs), channel, message. Returns the pause left (µs).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local u = now + tonumber(ARGV[1])
local p = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if u > p then
  local px = math.ceil(tonumber(ARGV[1]) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', u), 'PX', px)
  p = u
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return p - now
"""

_PAUSE_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local p = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
return p - now
"""


@dataclass(frozen=True, slots=True)
class ClusterRateLimiterStats:
    """A cluster-wide limiter's counters in this process (the quota itself is shared).

    ``granted`` units, ``acquired`` grants, ``waited`` (grants that waited), ``wait_s`` (their
    waits summed), ``paused_s`` (seconds this process knew the quota to be paused),
    ``waiting`` (callers waiting now), as :class:`~agentperf.RateLimiterStats`; and
    ``round_trips`` (script calls to Redis), ``store_errors`` (store calls that failed,
    including ones the breaker skipped), ``fallback`` (the last round trip failed: grants come
    from the local fallback now), ``fallback_granted`` (units the fallback granted),
    ``leased`` (units reserved and not handed out yet), ``lease`` (units reserved per round
    trip) and ``members`` (processes seen sharing the quota; 0 if never seen).
    """

    granted: float
    acquired: int
    waited: int
    wait_s: float
    paused_s: float
    waiting: int
    round_trips: int
    store_errors: int
    fallback: bool
    fallback_granted: float
    leased: float
    lease: float
    members: int


def _check_cost(cost: Any) -> float:
    if type(cost) is float and 0.0 < cost < _INF:  # the usual case, in one test
        return cost
    if isinstance(cost, bool) or not isinstance(cost, (int, float)):
        raise TypeError(f"cost={_show(cost)}: expected a number, got {type(cost).__name__}")
    c = float(cost)
    if not (math.isfinite(c) and c > 0.0):
        raise ValueError(f"cost={_show(cost)}: must be a positive, finite number")
    return c


def _check_store(store: Any) -> RedisStore:
    from .redis import RedisStore

    if not isinstance(store, RedisStore):
        raise TypeError(
            f"store={_show(store)}: expected an agentperf.RedisStore (a cluster-wide limiter "
            "keeps its state in Redis; a SqliteStore or another store cannot hold it)"
        )
    return store


_LIMITERS: weakref.WeakSet[ClusterRateLimiter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lim in list(_LIMITERS):
        lim._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_event(ref: weakref.ReferenceType[ClusterRateLimiter]) -> Callable[[], None]:
    def wake() -> None:
        lim = ref()
        if lim is not None:
            lim._paused_elsewhere()

    return wake


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ClusterRateLimiter(RateLimiter):
    """A :class:`~agentperf.RateLimiter` whose quota is kept in Redis and shared by every
    process using the same store namespace and ``name`` (see the module docs).

    Made by ``RateLimiter(rate, per, burst, store=RedisStore(...), name=...)`` (or this class
    with the same arguments). ``acquire``, ``aacquire``, ``try_acquire``, ``pause``,
    ``stats``, ``rate``, ``per``, ``burst``, ``waiting`` and ``paused_for`` behave as the
    local limiter's; ``acquire``/``aacquire`` with a ``timeout`` return ``False`` at once when
    the quota's wait is longer (no grant can come sooner), booking nothing. A waiter that is
    cancelled (or interrupted) while it sleeps towards its booked instant gives the booking
    back to Redis; a pause announced while it sleeps makes it give its booking back and book
    again after the pause. ``close()`` (or ``with``) drops the local lease and leaves the
    members set; a closed limiter raises ``RuntimeError``.
    """

    __slots__ = (
        "_acquired",
        "_afuts",
        "_beat_at",
        "_bg",
        "_burst_arg",
        "_closed",
        "_cond",
        "_cur",
        "_down",
        "_epoch",
        "_event_key",
        "_fallback",
        "_fallback_granted",
        "_fallback_members",
        "_granted",
        "_keys",
        "_lease",
        "_lease_ttl",
        "_leases",
        "_lock",
        "_member",
        "_members",
        "_pause_start",
        "_pause_until",
        "_paused_done",
        "_pid",
        "_round_trips",
        "_script",
        "_store",
        "_store_errors",
        "_subscribed",
        "_tau_us",
        "_unit_us",
        "_wait_s",
        "_waited",
        "_waiting",
        "_wake",
        "_warned",
    )
    _acquired: int
    _afuts: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
    _beat_at: float
    _bg: set[asyncio.Task[None]]
    _burst_arg: float | None
    _closed: bool
    _cond: threading.Condition
    _cur: float
    _down: bool
    _epoch: int
    _event_key: str
    _fallback: RateLimiter | None
    _fallback_granted: float
    _fallback_members: int
    _granted: float
    _keys: list[str]
    _lease: float
    _lease_ttl: float
    _leases: collections.deque[list[float]]
    _lock: threading.Lock
    _member: str
    _members: int
    _pause_start: float
    _pause_until: float
    _paused_done: float
    _pid: int
    _round_trips: int
    _script: Any
    _store: RedisStore
    _store_errors: int
    _subscribed: bool
    _tau_us: float
    _unit_us: float
    _wait_s: float
    _waited: int
    _waiting: int
    _wake: Callable[[], None] | None
    _warned: bool

    def __new__(
        cls,
        rate: float,
        per: float | datetime.timedelta = 1.0,
        burst: float | None = None,
        *,
        name: str | None = None,
        store: Any = None,
    ) -> ClusterRateLimiter:
        st = _check_store(store)
        if name is None:
            raise ValueError(
                "name=None: a RateLimiter with store= needs a name (1 to 128 characters of "
                "A-Za-z0-9_.:/-): every process using the same name shares one quota"
            )
        valid = _valid_name(name)
        assert valid is not None
        self = _RustRateLimiter.__new__(cls, rate, per, burst)
        self._name = valid
        self._store = st
        self._burst_arg = burst
        unit = self.per / self.rate  # seconds per unit
        self._unit_us = unit * 1e6
        self._tau_us = self.burst * unit * 1e6
        self._lease = float(max(1, math.floor(min(self.rate / 100.0, self.burst))))
        # Units reserved at a slot are spent within 1 % of `per` of it, or dropped: any window
        # of `per` seconds then sees at most rate x 1.01 + burst, whatever the member count.
        self._lease_ttl = 0.01 * self.per
        base = f"{st.prefix}limiter:{valid}:"
        self._keys = [base + "tat", base + "pause", base + "members"]
        self._event_key = f"limiter:{valid}"
        self._closed = False
        self._warned = False
        self._wake = None
        self._reset_process()
        _LIMITERS.add(self)
        _registry.register("limiter", self)
        return self

    def _reset_process(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._epoch = 0  # bumped by every pause heard of: sleeping waiters book again
        self._afuts = set()
        self._bg = set()  # refunds of bookings whose waiter was cancelled mid round trip
        # Local leases: [ready (monotonic), expires (monotonic), units left].
        self._leases = collections.deque()
        self._cur = self._lease  # the lease asked for now (halves when units expire unused)
        self._waiting = 0
        self._pid = os.getpid()
        self._member = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
        self._beat_at = -math.inf
        self._subscribed = False
        self._script = None
        self._down = False
        self._fallback: RateLimiter | None = None
        self._fallback_members = 0
        self._members = 0
        self._pause_start = 0.0
        self._pause_until = 0.0
        self._paused_done = 0.0
        self._granted = 0.0
        self._acquired = 0
        self._waited = 0
        self._wait_s = 0.0
        self._round_trips = 0
        self._store_errors = 0
        self._fallback_granted = 0.0

    def _after_fork(self) -> None:
        # The parent's leases, waiters and counters are the parent's: a child shares only the
        # Redis quota (and joins the members set as itself).
        self._reset_process()

    # -- settings ---------------------------------------------------------------------------

    @property
    def store(self) -> RedisStore:
        """The store keeping the quota."""
        return self._store

    @property
    def lease(self) -> float:
        """Units reserved per round trip and handed out locally."""
        return self._lease

    @property
    def keys(self) -> tuple[str, str, str]:
        """The Redis keys: ``(tat, pause, members)``."""
        return (self._keys[0], self._keys[1], self._keys[2])

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.rate:g}, per={self.per:g}, burst={self.burst:g}, "
            f"store={self._store!r}, name={self._name!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.rate, self.per, self._burst_arg, self._name, self._store))

    # -- local leases -----------------------------------------------------------------------

    def _take(self, cost: float, now: float, max_wait: float) -> float | None:
        """Take ``cost`` units from the local leases if they are ready within ``max_wait``;
        the instant they are ready, or ``None`` (nothing taken). Units ready now are counted
        as granted here (one lock for the whole fast path)."""
        with self._lock:
            leases = self._leases
            while leases and leases[0][1] <= now:
                if leases.popleft()[2] > _EPS:
                    # Units left to expire: this process asks for less at a time.
                    self._cur = max(1.0, math.floor(self._cur / 2.0))
            have, ready = 0.0, now
            for lease in leases:
                if lease[1] <= now:
                    continue
                have += lease[2]
                ready = max(ready, lease[0])
                if have >= cost - _EPS:
                    break
            if have < cost - _EPS or ready - now > max_wait:
                return None
            left = cost
            for lease in leases:
                if lease[1] <= now:
                    continue
                used = min(left, lease[2])
                lease[2] -= used
                left -= used
                if left <= _EPS:
                    break
            while leases and leases[0][2] <= _EPS:
                leases.popleft()
                # A lease used up in time: this process may ask for more at a time.
                self._cur = min(self._lease, self._cur * 2.0)
            if ready <= now:
                self._granted += cost
                self._acquired += 1
            return ready

    def _leased(self) -> float:
        now = time.monotonic()
        with self._lock:
            return sum((x[2] for x in self._leases if x[1] > now), 0.0)

    def _drop_leases(self) -> None:
        with self._lock:
            self._leases.clear()

    def _saw_pause(self, until: float) -> None:
        """Note a pause until ``until`` (monotonic) for ``paused_s``/``paused_for``."""
        now = time.monotonic()
        with self._lock:
            if until <= self._pause_until:
                return
            if self._pause_until <= now:
                self._paused_done += self._pause_until - self._pause_start
                self._pause_start = now
            self._pause_until = until

    def _paused_elsewhere(self) -> None:
        """A pause was announced (by any process): drop the lease, wake the sleepers so that
        they book again behind the pause."""
        self._drop_leases()
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()
        with self._lock:
            futs = list(self._afuts)
        for loop, fut in futs:
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # its loop is closed
                pass

    def _book(self, reply: Any, units: float, cost: float, sent: float) -> float | None:
        """The instant ``cost`` of the ``units`` just asked for is ready (the rest goes to the
        local lease), or ``None`` when the quota's wait exceeded the limit (nothing booked)."""
        granted, wait_us, members, pause_us = (int(x) for x in reply)
        now = time.monotonic()
        wait = max(wait_us, 0) / 1e6
        self._down = False
        if members > 0:
            self._members = members
        if pause_us > 0:
            self._saw_pause(now + pause_us / 1e6)
        if not granted:
            return None
        # The slot is somewhere between sending and the answer: ready at the latest, expiring
        # counted from the earliest.
        ready = now + wait
        rest = units - cost
        if rest > _EPS:
            expires = sent + wait + self._lease_ttl
            if expires > ready:
                with self._lock:
                    self._leases.append([ready, expires, rest])
        return ready

    def _args(self, units: float, max_wait: float) -> list[Any]:
        now = time.monotonic()
        beat = ""
        if now - self._beat_at >= _BEAT_EVERY:
            self._beat_at = now
            beat = self._member
        mw = -1 if math.isinf(max_wait) else max(int(max_wait * 1e6), 0)
        return [repr(units * self._unit_us), repr(self._tau_us), mw, beat, _MEMBER_TTL_US]

    def _subscribe(self) -> None:
        if self._subscribed:
            return
        self._subscribed = True
        listener = self._store._listener
        if listener is not None:
            self._wake = _on_event(weakref.ref(self))
            listener.add(self._event_key, self._wake)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._pid != os.getpid():
            self._after_fork()

    # -- round trips ------------------------------------------------------------------------

    def _reserve(self, cost: float, max_wait: float) -> tuple[float | None] | None:
        """One round trip booking ``cost`` and a lease: ``(ready,)`` (``(None,)``: the wait
        exceeds ``max_wait``, nothing booked), or ``None`` when the store failed."""
        self._subscribe()
        store = self._store
        units = max(self._cur, cost)
        args = self._args(units, max_wait)
        sent = time.monotonic()

        def run() -> Any:
            c = store._sync_client()
            if self._script is None:
                self._script = c.register_script(_RESERVE)
            return self._script(keys=self._keys, args=args, client=c)

        self._bump("_round_trips", 1)
        try:
            reply = store._guard.call("limiter", run)
        except StoreError as e:
            self._failed(e)
            return None
        return (self._book(reply, units, cost, sent),)

    async def _areserve(self, cost: float, max_wait: float) -> tuple[float | None] | None:
        self._subscribe()
        store = self._store
        units = max(self._cur, cost)
        args = self._args(units, max_wait)
        sent = time.monotonic()

        async def run() -> Any:
            return await store._ascript(store._async_client(), _RESERVE, self._keys, args)

        self._bump("_round_trips", 1)
        try:
            reply = await store._guard.acall("limiter", run)
        except StoreError as e:
            self._failed(e)
            return None
        return (self._book(reply, units, cost, sent),)

    def _refund(self, units: float) -> None:
        store = self._store
        arg = repr(units * self._unit_us)
        try:
            store._guard.call(
                "limiter.refund",
                lambda: store._sync_client().eval(_REFUND, 1, self._keys[0], arg),
            )
        except StoreError:
            self._bump("_store_errors", 1)

    async def _arefund(self, units: float) -> None:
        store = self._store
        arg = repr(units * self._unit_us)

        async def run() -> Any:
            return await store._ascript(store._async_client(), _REFUND, self._keys[:1], [arg])

        try:
            await store._guard.acall("limiter.refund", run)
        except StoreError:
            self._bump("_store_errors", 1)

    def _refund_when_booked(self, cost: float) -> Callable[[asyncio.Future[Any]], None]:
        def done(trip: asyncio.Future[Any]) -> None:
            if trip.cancelled() or trip.exception() is not None:
                return
            got = trip.result()
            if got is None or got[0] is None:
                return
            task = asyncio.get_running_loop().create_task(self._arefund(cost))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

        return done

    def _failed(self, e: StoreError) -> None:
        self._bump("_store_errors", 1)
        self._down = True
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"{self!r}: the store failed ({e}); grants go on against a local limit of "
                f"rate / {max(self._members, 1)} processes until it is back "
                "(counted in stats().store_errors)",
                RuntimeWarning,
                stacklevel=4,
            )

    def _local(self) -> RateLimiter:
        members = max(self._members, 1)
        fb = self._fallback
        if fb is None or self._fallback_members != members:
            fb = RateLimiter(self.rate / members, self.per, max(1.0, self.burst / members))
            left = self._pause_until - time.monotonic()
            if left > 0:
                fb.pause(left)
            self._fallback = fb
            self._fallback_members = members
        return fb

    def _bump(self, counter: str, n: float) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)

    def _granted_now(self, cost: float, waited: float) -> bool:
        with self._lock:  # threads of any loop count here: no update lost
            self._granted += cost
            self._acquired += 1
            if waited > 0:
                self._waited += 1
                self._wait_s += waited
        return True

    def _sleep_until(self, ready: float, epoch: int) -> bool:
        """Sleep (the GIL released) until ``ready``; ``False`` if a pause came first."""
        with self._cond:
            while self._epoch == epoch:
                left = ready - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
            return False

    async def _asleep_until(self, ready: float, epoch: int) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            self._afuts.add(entry)
        timer = loop.call_later(max(ready - time.monotonic(), 0.0), _wake, fut)
        try:
            if self._epoch == epoch:
                await fut
        finally:
            timer.cancel()
            with self._lock:
                self._afuts.discard(entry)
        return self._epoch == epoch

    # -- the public surface -----------------------------------------------------------------

    def try_acquire(self, cost: float = 1.0) -> bool:
        """Take ``cost`` units now if the shared quota allows it (a round trip only when the
        local lease is short)."""
        c = _check_cost(cost)
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._take(c, time.monotonic(), 0.0) is not None:
            return True
        self._check_open()
        got = self._reserve(c, 0.0)
        if got is None:
            if self._local().try_acquire(c):
                self._bump("_fallback_granted", c)
                return self._granted_now(c, 0.0)
            return False
        if got[0] is None:
            return False
        return self._granted_now(c, 0.0)

    def acquire(self, cost: float = 1.0, timeout: float | datetime.timedelta | None = None) -> bool:
        """Take ``cost`` units, blocking this thread (the GIL released) up to ``timeout``
        seconds (``None``: forever); whether they were granted."""
        c = _check_cost(cost)
        limit = _wait("timeout", timeout)
        if limit == 0:
            return self.try_acquire(c)
        if asyncio._get_running_loop() is not None:
            if self.try_acquire(c):
                return True
            raise RuntimeError(
                f"{self!r} is at its limit and waiting would block the running event loop: "
                "use `await limiter.aacquire()`"
            )
        self._check_open()
        start = time.monotonic()
        deadline = math.inf if limit is None else start + limit
        with self._lock:
            self._waiting += 1
        try:
            while True:
                epoch = self._epoch
                now = time.monotonic()
                left = deadline - now
                ready = self._take(c, now, left)
                if ready is not None and ready <= now:
                    return True  # counted by _take
                if ready is None:
                    if left <= 0:
                        return False
                    got = self._reserve(c, left)
                    if got is None:
                        fb = self._local()
                        rest = None if math.isinf(deadline) else max(deadline - time.monotonic(), 0)
                        if fb.acquire(c, timeout=rest):
                            self._bump("_fallback_granted", c)
                            return self._granted_now(c, time.monotonic() - start)
                        return False
                    if got[0] is None:
                        return False  # the quota's wait is longer than the timeout
                    ready = got[0]
                if ready <= time.monotonic() and self._epoch == epoch:
                    return self._granted_now(c, 0.0)
                try:
                    woke = self._sleep_until(ready, epoch)
                except BaseException:
                    self._refund(c)
                    raise
                if woke:
                    return self._granted_now(c, time.monotonic() - start)
                self._refund(c)  # paused meanwhile: book again behind the pause
        finally:
            with self._lock:
                self._waiting -= 1

    async def aacquire(
        self, cost: float = 1.0, timeout: float | datetime.timedelta | None = None
    ) -> bool:
        """Take ``cost`` units, waiting without blocking the loop up to ``timeout`` seconds;
        whether they were granted."""
        c = _check_cost(cost)
        limit = _wait("timeout", timeout)
        if limit == 0:
            return self.try_acquire(c)
        self._check_open()
        start = time.monotonic()
        deadline = math.inf if limit is None else start + limit
        with self._lock:
            self._waiting += 1
        try:
            while True:
                epoch = self._epoch
                now = time.monotonic()
                left = deadline - now
                ready = self._take(c, now, left)
                if ready is not None and ready <= now:
                    return True  # counted by _take
                if ready is None:
                    if left <= 0:
                        return False
                    # Shielded: a waiter cancelled during the round trip gives back what the
                    # script booked for it once the answer is in.
                    trip = asyncio.ensure_future(self._areserve(c, left))
                    try:
                        got = await asyncio.shield(trip)
                    except BaseException:
                        trip.add_done_callback(self._refund_when_booked(c))
                        raise
                    if got is None:
                        fb = self._local()
                        rest = None if math.isinf(deadline) else max(deadline - time.monotonic(), 0)
                        if await fb.aacquire(c, timeout=rest):
                            self._bump("_fallback_granted", c)
                            return self._granted_now(c, time.monotonic() - start)
                        return False
                    if got[0] is None:
                        return False
                    ready = got[0]
                if ready <= time.monotonic() and self._epoch == epoch:
                    return self._granted_now(c, 0.0)
                try:
                    woke = await self._asleep_until(ready, epoch)
                except BaseException:
                    await self._arefund(c)
                    raise
                if woke:
                    return self._granted_now(c, time.monotonic() - start)
                await self._arefund(c)  # paused meanwhile: book again behind the pause
        finally:
            with self._lock:
                self._waiting -= 1

    def pause(self, seconds: float | datetime.timedelta) -> None:
        """Grant nothing, in any process sharing the quota, for ``seconds`` from now (a longer
        pause already in force stands); announced to every process. The store down: this
        process's fallback pauses."""
        s = _wait("seconds", seconds)
        if s is None or math.isinf(s):
            raise ValueError(f"seconds={_show(seconds)}: must be a finite number of seconds")
        self._check_open()
        self._saw_pause(time.monotonic() + s)
        if self._fallback is not None:
            self._fallback.pause(s)
        store = self._store

        def run() -> Any:
            c = store._sync_client()
            return c.eval(_PAUSE, 1, self._keys[1], int(s * 1e6), store._channel, self._event_key)

        try:
            store._guard.call("limiter.pause", run)
        except StoreError as e:
            self._failed(e)
            self._local().pause(s)
        self._paused_elsewhere()

    @property
    def paused_for(self) -> float:
        """Seconds until the shared pause ends (``0.0`` when none is); a round trip (the store
        down: what this process last knew)."""
        store = self._store

        def run() -> Any:
            return store._sync_client().eval(_PAUSE_LEFT, 1, self._keys[1])

        try:
            left_us = int(store._guard.call("limiter.paused_for", run))
        except StoreError:
            self._bump("_store_errors", 1)
            return max(self._pause_until - time.monotonic(), 0.0)
        if left_us > 0:
            self._saw_pause(time.monotonic() + left_us / 1e6)
        return max(left_us / 1e6, 0.0)

    @property
    def waiting(self) -> int:
        """Callers of this process waiting now."""
        return self._waiting

    def stats(self) -> ClusterRateLimiterStats:  # type: ignore[override]
        """This process's counters (see :class:`ClusterRateLimiterStats`)."""
        now = time.monotonic()
        with self._lock:
            paused = self._paused_done + max(0.0, min(now, self._pause_until) - self._pause_start)
        return ClusterRateLimiterStats(
            granted=self._granted,
            acquired=self._acquired,
            waited=self._waited,
            wait_s=self._wait_s,
            paused_s=paused,
            waiting=self._waiting,
            round_trips=self._round_trips,
            store_errors=self._store_errors,
            fallback=self._down,
            fallback_granted=self._fallback_granted,
            leased=self._leased(),
            lease=self._lease,
            members=self._members,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the local lease, leave the members set and stop listening for pauses
        (closing twice is harmless)."""
        if self._closed:
            return
        self._closed = True
        self._drop_leases()
        store = self._store
        listener = store._listener
        if listener is not None and self._wake is not None:
            listener.remove(self._event_key, self._wake)
        if not store._closed:
            try:
                store._guard.call(
                    "limiter.close",
                    lambda: store._sync_client().zrem(self._keys[2], self._member),
                )
            except StoreError:
                pass

    def __enter__(self) -> ClusterRateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ClusterRateLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _rebuild(
    rate: float, per: float, burst: float | None, name: str, store: RedisStore
) -> ClusterRateLimiter:
    return ClusterRateLimiter(rate, per, burst, name=name, store=store)
