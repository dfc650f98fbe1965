"""The agent pool: reuse expensive agents across calls, threads and event loops.

>>> import agentperf as ap
>>> with ap.AgentPool(lambda: str.upper, max_size=4) as pool:
...     pool.execute("hi")
'HI'

The bookkeeping (idle set, FIFO waiters of every kind, bounds, ages, statistics) lives in
Rust (``rust/src/pool``); this module adds what needs Python: async factories, the lease
context manager, closing agents, fork handling.

Fork: in a forked child every pool keeps its idle agents; agents leased by the parent at the
moment of the fork are written off (counted as released and destroyed, never closed in the
child; releasing one there raises ``ValueError``), and waiters that were threads (or event
loops of other threads) of the parent are dropped. A task of the forking thread's own running
loop that was waiting starts its acquire over.

Closing agents: destroying an agent calls its ``close()``, else its ``aclose()``. An awaitable
result runs as a task when destroyed from a running loop (``async with pool`` waits for those
tasks); from another thread (the cleanup thread included) it is scheduled on the loop the
pool was first used with if that loop still runs, else run to completion with
``asyncio.run``. Errors while closing are logged (logger ``agentperf``), never raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import inspect
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from . import _lifecycle
from ._agentperf import PoolTimeoutError, _Pool, _PoolWaiter
from ._closeable import Closeable
from ._config import show
from ._config import wait as _wait
from .agent import _is_async_callable, adapt
from .config import PoolConfig, build

__all__ = ["AgentPool", "PoolStats"]

_log = logging.getLogger("agentperf")


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of an :class:`AgentPool`'s counters (``pool.stats()``)."""

    active_count: int
    """Agents leased now."""
    idle_count: int
    """Agents idle in the pool now."""
    size: int
    """Live agents (``created - destroyed``)."""
    max_size: int
    """The pool's bound."""
    utilization_pct: float
    """``active_count / max_size * 100``."""
    waiting: int
    """Callers waiting for an agent now."""
    created: int
    """Agents created."""
    destroyed: int
    """Agents destroyed, for any reason."""
    recycled: int
    """Agents destroyed for idleness or age."""
    acquired: int
    """Successful acquires (``execute`` calls included)."""
    released: int
    """Releases (``execute`` calls included)."""
    waits: int
    """Acquires that had to wait."""
    timeouts: int
    """Acquires that timed out."""
    avg_wait_ms: float
    """Mean wait of the acquires that had to wait, timed-out ones included."""


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.warning("closing an agent failed", exc_info=task.exception())


class _Destroyer:
    """Calls a destroyed agent's ``close()``/``aclose()``; never raises."""

    __slots__ = ("__weakref__", "loop", "tasks")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Future[Any]] = set()

    def __call__(self, agent: Any) -> None:
        try:
            close = getattr(agent, "close", None)
            if not callable(close):
                close = getattr(agent, "aclose", None)
                if not callable(close):
                    return
            result = close()
            if inspect.isawaitable(result):
                self._run(result)
        except Exception:
            _log.warning("closing agent %r failed", agent, exc_info=True)

    def _run(self, aw: Awaitable[Any]) -> None:
        if asyncio._get_running_loop() is not None:
            task = asyncio.ensure_future(aw)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(_log_failure)
            return
        loop = self.loop
        if loop is not None and loop.is_running() and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(_await(aw), loop)
            fut.add_done_callback(_log_failure)  # type: ignore[arg-type]
            return
        asyncio.run(_await(aw))

    async def drain(self) -> None:
        here = asyncio.get_running_loop()
        mine = [t for t in self.tasks if isinstance(t, asyncio.Task) and t.get_loop() is here]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)


def _make_sync(factory: Callable[[], Any]) -> tuple[Any, Any, Any]:
    agent = factory()
    if inspect.isawaitable(agent):
        if asyncio._get_running_loop() is not None:
            if inspect.iscoroutine(agent):
                agent.close()
            raise RuntimeError(
                "the pool's factory is async: from a running event loop use aacquire/aexecute "
                "(or `async with pool`) instead of the blocking methods"
            )
        agent = asyncio.run(_await(agent))
    ad = adapt(agent)
    return agent, ad.call, ad.acall


class _Expired(Exception):
    """Set on a parked waiter's future when its acquire timeout passes."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class AgentPool(_Pool, Closeable):
    """A bounded pool of agents made by ``factory()``; itself an agent.

    >>> import agentperf as ap
    >>> pool = ap.AgentPool(lambda: (lambda x: x * 2), max_size=2, initial_size=1)
    >>> pool.execute(21)
    42
    >>> with pool.agent() as a:
    ...     a(1)
    2
    >>> pool.stats().created
    1
    >>> pool.close()

    ``AgentPool(factory, config)`` or ``AgentPool(factory, **PoolConfig fields)``. An async
    ``factory`` is allowed: its initial agents are made on ``async with pool`` or on the
    first ``aacquire``/``aexecute``. Waiters (threads and tasks alike) are served first come,
    first served; an agent released while someone waits goes straight to the oldest waiter.
    Ages are read from a coarse monotonic clock, so an agent may be retired up to two clock
    ticks (a few ms) before ``max_lifetime``, never after it.
    """

    _factory: Callable[[], Any]
    _config: PoolConfig
    _destroyer: _Destroyer
    _async_factory: bool
    _filled: bool

    def __new__(
        cls, factory: Callable[[], Any], config: PoolConfig | None = None, /, **overrides: Any
    ) -> AgentPool:
        if not callable(factory):
            raise TypeError(f"factory={show(factory)}: expected a callable returning an agent")
        cfg: PoolConfig = build(PoolConfig, config, overrides)
        if cfg.max_size > sys.maxsize * 2 + 1:  # the core counts agents in a usize
            raise ValueError(f"max_size={show(cfg.max_size)}: is too large")
        destroyer = _Destroyer()
        destroyer.loop = asyncio._get_running_loop()
        self = super().__new__(
            cls,
            functools.partial(_make_sync, factory),
            cfg.check,
            destroyer,
            cfg.initial_size,
            cfg.max_size,
            cfg.idle_timeout,
            cfg.max_lifetime,
            cfg.acquire_timeout,
            cfg.cleanup_interval,
        )
        self._factory = factory
        self._config = cfg
        self._destroyer = destroyer
        self._async_factory = _is_async_callable(factory)
        self._filled = self._async_factory is False
        return self

    def __init__(
        self, factory: Callable[[], Any], config: PoolConfig | None = None, /, **overrides: Any
    ) -> None:
        if not self._async_factory:
            try:
                self._fill()
            except BaseException:
                self.close()
                raise
        _POOLS.add(self)

    @property
    def config(self) -> PoolConfig:
        """The pool's :class:`PoolConfig`."""
        return self._config

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if self.closed else f"{s.active_count}/{s.max_size} active"
        return f"<AgentPool {state}, {s.idle_count} idle>"

    # -- sync -------------------------------------------------------------------------------

    def acquire(self, timeout: float | datetime.timedelta | None = None) -> Any:
        """Lease an agent, waiting up to ``timeout`` seconds (``None``: ``acquire_timeout``).

        Raises ``PoolTimeoutError`` when none became free in time, ``PoolClosedError`` after
        ``close()``, and ``RuntimeError`` instead of waiting in a thread that runs an event
        loop (use :meth:`aacquire` there). Give it back with :meth:`release`.
        """
        return super().acquire(_wait("timeout", timeout))

    def agent(self, timeout: float | datetime.timedelta | None = None) -> _Lease:
        """A lease as a context manager, for ``with`` and ``async with``::

        with pool.agent() as a: ...
        async with pool.agent() as a: ...
        """
        return _Lease(self, _wait("timeout", timeout))

    def stats(self) -> PoolStats:
        """The counters now (see :class:`PoolStats`)."""
        (active, idle, size, max_size, waiting), counts, avg = self._stats()
        created, destroyed, recycled, acquired, released, waits, timeouts = counts
        return PoolStats(
            active_count=active,
            idle_count=idle,
            size=size,
            max_size=max_size,
            utilization_pct=active / max_size * 100.0,
            waiting=waiting,
            created=created,
            destroyed=destroyed,
            recycled=recycled,
            acquired=acquired,
            released=released,
            waits=waits,
            timeouts=timeouts,
            avg_wait_ms=avg,
        )

    # -- async ------------------------------------------------------------------------------

    async def __aenter__(self) -> AgentPool:
        await self._afill()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_nowait()
        if self._cleaning():
            # As close(), but a cleanup round still closing agents it took from the idle set
            # (rare, short) is waited for off the loop.
            await asyncio.to_thread(self._wait_cleaning)
        await self._destroyer.drain()

    async def _afill(self) -> None:
        if self._destroyer.loop is None:
            self._destroyer.loop = asyncio.get_running_loop()
        if self._filled:
            return
        self._filled = True
        # At most initial_size creations (see _fill: an agent past max_lifetime at once).
        for _ in range(self._config.initial_size):
            if not self._reserve_initial():
                break
            try:
                agent = await self._factory()
                ad = adapt(agent)
            except BaseException:
                self._create_failed()
                raise
            self._add_idle(agent, ad.call, ad.acall)

    async def aacquire(self, timeout: float | datetime.timedelta | None = None) -> Any:
        """Lease an agent without blocking the event loop; see :meth:`acquire`."""
        agent, _ = await self._aacquire(_wait("timeout", timeout), 9, None, None)
        return agent

    async def aexecute(self, input: Any, /) -> Any:
        """Acquire, ``await`` the agent on ``input``, release: :meth:`execute` for asyncio."""
        kind, agent, acall = self._atry()
        if kind != 0:
            agent, acall = await self._aacquire(None, kind, agent, acall)
        try:
            return await acall(input)
        finally:
            self.release(agent)

    async def _acreate(self) -> tuple[Any, Any]:
        try:
            agent = self._factory()
            if inspect.isawaitable(agent):
                agent = await agent
            ad = adapt(agent)
        except BaseException:
            self._create_failed()
            raise
        return agent, self._adopt(agent, ad.call, ad.acall)

    async def _aacquire(
        self, timeout: float | None, kind: int, value: Any, acall: Any
    ) -> tuple[Any, Any]:
        if kind == 9:
            kind, value, acall = self._atry()
        if not self._filled:
            # Undo the first step: the initial agents come first (an async factory).
            if kind == 0:
                self.release(value)
            elif kind == 1:
                self._create_failed()
            elif kind == 2:
                value.withdraw()
            await self._afill()
            kind, value, acall = self._atry()
        wait = self._config.acquire_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            if kind == 0:
                return value, acall
            if kind == 1:
                return await self._acreate()
            if kind == 2:
                waiter: _PoolWaiter = value
                fut = waiter.future
                timer = None
                if deadline is not None:
                    timer = loop.call_later(max(0.0, deadline - loop.time()), _expire, fut)
                try:
                    await fut
                except BaseException as e:
                    expired = isinstance(e, _Expired)
                    waiter.withdraw(expired)
                    if expired:
                        raise PoolTimeoutError(f"no agent became free within {wait} s") from None
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
                kind, value, acall = waiter.take()
                continue
            kind, value, acall = self._atry()


class _Lease:
    """``pool.agent()``: acquire on enter, release on exit (sync or async)."""

    __slots__ = ("_agent", "_pool", "_timeout")

    def __init__(self, pool: AgentPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._agent: Any = None

    def __enter__(self) -> Any:
        self._agent = self._pool.acquire(self._timeout)
        return self._agent

    def __exit__(self, *exc: object) -> None:
        agent, self._agent = self._agent, None
        self._pool.release(agent)

    async def __aenter__(self) -> Any:
        self._agent = await self._pool.aacquire(self._timeout)
        return self._agent

    async def __aexit__(self, *exc: object) -> None:
        agent, self._agent = self._agent, None
        self._pool.release(agent)


_POOLS: weakref.WeakSet[AgentPool] = weakref.WeakSet()


def _after_fork_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork_child()


_lifecycle.at_fork(after_in_child=_after_fork_child)
