"""How a user's agent is called: the one place that knows the agent shapes of API.md.

An agent is used as-is, with one positional input:

* an ``async def`` function, or an object whose ``__call__`` is async: ``await agent(x)``;
* an object with ``aexecute`` / ``execute`` (every agentperf wrapper is one);
* an object with ``ainvoke`` / ``invoke`` (LangChain ``Runnable`` style);
* any other callable: ``agent(x)``; from async code it runs in a worker thread.

:func:`adapt` resolves the shape once, so the hot paths pay one attribute call. A blocking
agent's async twin runs in a :class:`~agentperf._runner.Runner` (threads of agentperf's own,
the wrapper's if it passes one); an async agent's blocking twin runs on agentperf's one
long-lived event loop (:func:`agentperf._runner.run`), so loop-bound clients keep working
across calls.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ._runner import UNBOUNDED_MIN, InThread, Runner, run

__all__ = ["Agent", "AgentAdapter", "adapt"]


@runtime_checkable
class Agent(Protocol):
    """The shape every agentperf wrapper has, so wrappers compose without adapters."""

    def execute(self, input: Any, /) -> Any:
        """Run the agent on ``input`` and return its output (blocking)."""

    async def aexecute(self, input: Any, /) -> Any:
        """Run the agent on ``input`` without blocking the event loop."""


def _is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def _run_sync(coro_fn: Callable[[Any], Awaitable[Any]], name: str) -> Callable[[Any], Any]:
    """A blocking twin of an async-only agent: runs it on agentperf's shared event loop."""

    def call(x: Any) -> Any:
        if asyncio._get_running_loop() is not None:
            raise RuntimeError(
                f"{name} is async-only; from a running event loop use the async method "
                "(aexecute) instead of the blocking one"
            )
        return run(_await(coro_fn, x))

    return call


async def _await(fn: Callable[[Any], Awaitable[Any]], x: Any) -> Any:
    return await fn(x)


_default_runner: Runner | None = None
_default_lock = threading.Lock()


def default_runner() -> Runner:
    """The runner of agents adapted without one of their own (at least 64 threads)."""
    global _default_runner
    r = _default_runner
    if r is None:
        with _default_lock:
            if _default_runner is None:
                _default_runner = Runner(UNBOUNDED_MIN, "agentperf-default")
            r = _default_runner
    return r


def _in_thread(fn: Callable[[Any], Any], runner: Runner | None) -> Callable[[Any], Awaitable[Any]]:
    """An async twin of a blocking agent: a thread of ``runner``'s, never the loop's own."""
    return InThread(fn, runner if runner is not None else default_runner())


class AgentAdapter:
    """A resolved agent: ``call(x)`` blocks, ``acall(x)`` awaits.

    ``native_async`` tells whether the agent itself is async (its sync twin then runs on the
    shared event loop); ``native_sync`` whether it is blocking (its async twin then runs
    in a thread of a :class:`~agentperf._runner.Runner`).
    """

    __slots__ = ("acall", "agent", "call", "native_async", "native_sync")

    def __init__(
        self,
        agent: Any,
        call: Callable[[Any], Any],
        acall: Callable[[Any], Awaitable[Any]],
        native_sync: bool,
        native_async: bool,
    ) -> None:
        self.agent = agent
        self.call = call
        self.acall = acall
        self.native_sync = native_sync
        self.native_async = native_async

    def __repr__(self) -> str:
        return f"AgentAdapter({self.agent!r})"


def _pair(
    agent: Any, sync_name: str, async_name: str, runner: Runner | None
) -> AgentAdapter | None:
    sync = getattr(agent, sync_name, None)
    asyn = getattr(agent, async_name, None)
    if sync is None and asyn is None:
        return None
    label = f"{type(agent).__name__}.{async_name}"
    if sync is not None and not callable(sync):
        sync = None
    if asyn is not None and not callable(asyn):
        asyn = None
    if sync is None and asyn is None:
        return None
    call = sync if sync is not None else _run_sync(asyn, label)  # type: ignore[arg-type]
    acall = asyn if asyn is not None else _in_thread(sync, runner)  # type: ignore[arg-type]
    return AgentAdapter(agent, call, acall, sync is not None, asyn is not None)


def adapt(agent: Any, runner: Runner | None = None) -> AgentAdapter:
    """Resolve how to call ``agent``; ``TypeError`` if it is not an agent.

    A blocking agent's async twin runs in ``runner``'s threads (default: a process-wide
    runner of at least 64 threads).

    >>> adapt(len).call("abc")
    3
    """
    if isinstance(agent, AgentAdapter):
        return agent
    found = _pair(agent, "execute", "aexecute", runner) or _pair(agent, "invoke", "ainvoke", runner)
    if found is not None:
        return found
    if _is_async_callable(agent):
        return AgentAdapter(agent, _run_sync(agent, repr(agent)), agent, False, True)
    if callable(agent):
        return AgentAdapter(agent, agent, _in_thread(agent, runner), True, False)
    raise TypeError(
        f"agent={agent!r}: expected a callable or an object with execute/aexecute or "
        f"invoke/ainvoke, got {type(agent).__name__}"
    )
