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
pool was first used with if that loop still runs, else run to completion on agentperf's
shared event loop, the one that runs an async factory and async agents for the blocking
methods (so a loop-bound agent is made, used and closed on one loop). Errors while closing
are logged (logger ``agentperf``), never raised.

Any object: the factory may return anything. ``acquire``, ``aacquire`` and ``agent()`` lease it
as it is (a pool of raw clients or connections); ``execute``/``aexecute`` need an agent shape
(see :mod:`agentperf.agent`) and raise ``TypeError`` naming the type otherwise.

Blocking agents from async code (``aexecute``) run in the pool's own threads, up to
``max_size`` at once, never in the loop's default executor. A caller cancelled during such a
call gets its cancellation at once; the agent stays leased until its thread finishes the call,
then goes back to the pool.
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
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import _lifecycle
from ._agentperf import PoolTimeoutError, _CreateSlot, _Leased, _Pool, _PoolWaiter
from ._closeable import Closeable
from ._config import fits, show
from ._config import wait as _wait
from ._runner import InThread, Runner, run
from .agent import _is_async_callable, adapt
from .config import PoolConfig, build
from .metrics import _registry

if TYPE_CHECKING:
    from ._types import SupportsAexecute, SupportsExecute

__all__ = ["AgentPool", "PoolStats"]

_log = logging.getLogger("agentperf")

# The pooled object: what the factory returns (awaited, for an async one). Covariant, so that
# an AgentPool[Model] is an AgentPool[SupportsExecute[str, bytes]] for ``execute``'s typing.
A = TypeVar("A", covariant=True)
I = TypeVar("I")  # noqa: E741 - an agent's input type
O = TypeVar("O")  # noqa: E741 - an agent's output type


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
        run(_await(aw))

    async def drain(self) -> None:
        here = asyncio.get_running_loop()
        mine = [t for t in self.tasks if isinstance(t, asyncio.Task) and t.get_loop() is here]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)


class _NotAnAgent:
    """The calls of a pooled object that is not an agent: they raise ``TypeError``."""

    __slots__ = ("kind",)

    def __init__(self, obj: Any) -> None:
        self.kind = type(obj).__qualname__

    def _error(self, name: str) -> TypeError:
        return TypeError(
            f"pool.{name}(): the pool's factory made a {self.kind} object, which is not an "
            "agent (no __call__, execute/aexecute or invoke/ainvoke); lease it with "
            "pool.acquire(), pool.aacquire() or pool.agent() and use it directly"
        )

    def call(self, _input: Any) -> Any:
        raise self._error("execute")

    async def acall(self, _input: Any) -> Any:
        raise self._error("aexecute")


def _calls(agent: Any, runner: Runner) -> tuple[Any, Any]:
    """``(call, acall)`` of a pooled object; for a non-agent, ones that raise ``TypeError``."""
    try:
        ad = adapt(agent, runner)
    except TypeError:
        na = _NotAnAgent(agent)
        return na.call, na.acall
    return ad.call, ad.acall


def _make_sync(factory: Callable[[], Any], runner: Runner) -> tuple[Any, Any, Any]:
    agent = factory()
    if inspect.isawaitable(agent):
        if asyncio._get_running_loop() is not None:
            if inspect.iscoroutine(agent):
                agent.close()
            raise RuntimeError(
                "the pool's factory is async: from a running event loop use aacquire/aexecute "
                "(or `async with pool`) instead of the blocking methods"
            )
        agent = run(_await(agent))
    call, acall = _calls(agent, runner)
    return agent, call, acall


class _Expired(Exception):
    """Set on a parked waiter's future when its acquire timeout passes."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class AgentPool(_Pool, Closeable, Generic[A]):
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
    _runner: Runner

    def __new__(
        cls, factory: Callable[[], Any], config: PoolConfig | None = None, /, **overrides: Any
    ) -> AgentPool[Any]:
        if not callable(factory):
            raise TypeError(f"factory={show(factory)}: expected a callable returning an agent")
        # Test hook: ages and idle times from a clock moved by ``pool._advance(seconds)``.
        manual_clock = bool(overrides.pop("_manual_clock", False))
        cfg: PoolConfig = build(PoolConfig, config, overrides)
        # What the core can hold; the binding checks nothing again.
        if cfg.max_size > sys.maxsize * 2 + 1:  # the core counts agents in a usize
            raise ValueError(f"max_size={show(cfg.max_size)}: is too large")
        for name in ("idle_timeout", "max_lifetime", "acquire_timeout", "cleanup_interval"):
            fits(name, getattr(cfg, name))
        destroyer = _Destroyer()
        destroyer.loop = asyncio._get_running_loop()
        runner = Runner(cfg.max_size, "agentperf-pool")
        self = super().__new__(
            cls,
            functools.partial(_make_sync, factory, runner),
            cfg.check,
            destroyer,
            cfg.initial_size,
            cfg.max_size,
            cfg.idle_timeout,
            cfg.max_lifetime,
            cfg.acquire_timeout,
            cfg.cleanup_interval,
            manual_clock,
        )
        self._factory = factory
        self._config = cfg
        self._destroyer = destroyer
        self._runner = runner
        self._async_factory = _is_async_callable(factory)
        self._filled = self._async_factory is False
        if cfg.name is not None:
            _registry.register("pool", self)
        return self

    @overload
    def __init__(
        self: AgentPool[A],
        factory: Callable[[], Coroutine[Any, Any, A]],
        config: PoolConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: AgentPool[A],
        factory: Callable[[], A],
        config: PoolConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
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

    @property
    def name(self) -> str | None:
        """The pool's name in the metrics (``config.name``); ``None``: not exported."""
        return self._config.name

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if self.closed else f"{s.active_count}/{s.max_size} active"
        return f"<AgentPool {state}, {s.idle_count} idle>"

    # -- sync -------------------------------------------------------------------------------

    if TYPE_CHECKING:  # typing only: the methods are the Rust ones

        @overload
        def execute(self: AgentPool[Callable[[I], O]], input: I, /) -> O: ...
        @overload
        def execute(self: AgentPool[SupportsExecute[I, O]], input: I, /) -> O: ...
        def execute(self, input: Any, /) -> Any:
            """Acquire an agent, call it on ``input``, release it."""

    def acquire(self, timeout: float | datetime.timedelta | None = None) -> A:
        """Lease an agent, waiting up to ``timeout`` seconds (``None``: ``acquire_timeout``).

        Raises ``PoolTimeoutError`` when none became free in time, ``PoolClosedError`` after
        ``close()``, and ``RuntimeError`` instead of waiting in a thread that runs an event
        loop (use :meth:`aacquire` there). Give it back with :meth:`release`.
        """
        agent: A = super().acquire(_wait("timeout", timeout))
        return agent

    def close(self) -> None:
        """Close the pool: waiters get ``PoolClosedError``, idle agents are destroyed (by the
        time this returns, those a running cleanup round took too), agents released later are
        destroyed, the pool's threads exit once idle. Closing twice is harmless."""
        super().close()
        self._runner.close()

    def agent(self, timeout: float | datetime.timedelta | None = None) -> _Lease[A]:
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

    async def __aenter__(self) -> AgentPool[A]:
        await self._afill()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_nowait()
        self._runner.close()
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
                call, acall = _calls(agent, self._runner)
            except BaseException:
                self._create_failed()
                raise
            self._add_idle(agent, call, acall)

    async def aacquire(self, timeout: float | datetime.timedelta | None = None) -> A:
        """Lease an agent without blocking the event loop; see :meth:`acquire`."""
        agent: A
        agent, _ = await self._aacquire(_wait("timeout", timeout), None)
        return agent

    @overload
    async def aexecute(self: AgentPool[Callable[[I], Awaitable[O]]], input: I, /) -> O: ...
    @overload
    async def aexecute(self: AgentPool[Callable[[I], O]], input: I, /) -> O: ...
    @overload
    async def aexecute(self: AgentPool[SupportsAexecute[I, O]], input: I, /) -> O: ...
    @overload
    async def aexecute(self: AgentPool[SupportsExecute[I, O]], input: I, /) -> O: ...
    async def aexecute(self, input: Any, /) -> Any:
        """Acquire, ``await`` the agent on ``input``, release: :meth:`execute` for asyncio."""
        step = self._atry()
        if type(step) is _Leased:
            agent, acall = step.agent, step.acall
        else:
            agent, acall = await self._aacquire(None, step)
        if type(acall) is not InThread:
            try:
                return await acall(input)
            finally:
                self.release(agent)
        try:
            job = acall.submit(input)
        except BaseException:
            self.release(agent)
            raise
        try:
            out = await job
        except BaseException:
            # Cancelled while a thread runs the blocking agent: that thread releases it when
            # the call is over, so the agent is never handed out while still in use.
            if not job.abandon(functools.partial(self.release, agent)):
                self.release(agent)
            raise
        self.release(agent)
        return out

    async def _acreate(self) -> tuple[Any, Any]:
        try:
            agent = self._factory()
            if inspect.isawaitable(agent):
                agent = await agent
            call, acall = _calls(agent, self._runner)
        except BaseException:
            self._create_failed()
            raise
        return agent, self._adopt(agent, call, acall)

    async def _aacquire(self, timeout: float | None, step: Any) -> tuple[Any, Any]:
        """The rest of an async acquire after its first step (``None``: not taken yet)."""
        if step is None:
            step = self._atry()
        if not self._filled:
            # Undo the first step: the initial agents come first (an async factory).
            if type(step) is _Leased:
                self.release(step.agent)
            elif type(step) is _CreateSlot:
                self._create_failed()
            elif type(step) is _PoolWaiter:
                step.withdraw()
            await self._afill()
            step = self._atry()
        wait = self._config.acquire_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            kind = type(step)
            if kind is _Leased:
                return step.agent, step.acall
            if kind is _CreateSlot:
                return await self._acreate()
            if kind is _PoolWaiter:
                waiter: _PoolWaiter = step
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
                step = waiter.take()
                continue
            step = self._atry()  # _StartOver


class _Lease(Generic[A]):
    """``pool.agent()``: acquire on enter, release on exit (sync or async)."""

    __slots__ = ("_agent", "_pool", "_timeout")

    def __init__(self, pool: AgentPool[A], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._agent: Any = None

    def __enter__(self) -> A:
        self._agent = agent = self._pool.acquire(self._timeout)
        return agent

    def __exit__(self, *exc: object) -> None:
        agent, self._agent = self._agent, None
        self._pool.release(agent)

    async def __aenter__(self) -> A:
        self._agent = agent = await self._pool.aacquire(self._timeout)
        return agent

    async def __aexit__(self, *exc: object) -> None:
        agent, self._agent = self._agent, None
        self._pool.release(agent)


_POOLS: weakref.WeakSet[AgentPool[Any]] = weakref.WeakSet()


def _after_fork_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork_child()


_lifecycle.at_fork(after_in_child=_after_fork_child)
