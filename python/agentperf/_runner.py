"""Where agentperf runs what the caller's thread cannot: blocking agents from async code, and
async agents from blocking code.

:class:`Runner` runs blocking calls for async callers in threads of agentperf's own, never the
event loop's small default executor. Each wrapper owns one, sized to its limit (a pool's
``max_size``; a cached agent's at least :data:`UNBOUNDED_MIN`, widened to a ``BatchExecutor``'s
``max_concurrency``). Threads are created on demand up to the limit, exit after
:attr:`Runner.idle_timeout` seconds without work (at once after :meth:`Runner.close`, and at
interpreter exit), and are started afresh in a forked child (threads do not survive
``fork()``; a call that was running in the parent is lost, queued ones run in the child). The
caller's ``contextvars`` context is copied into the thread, as ``asyncio.to_thread`` does.
A cancelled caller does not stop its call: the thread finishes it and the result is dropped
(:meth:`Job.abandon` lets the caller hand over what it still has to do).

:func:`run` runs a coroutine for blocking code on one long-lived event loop in a daemon thread
(one per process, started on first use, started again in a forked child, stopped at exit), so
loop-bound clients (``httpx.AsyncClient``, ``openai.AsyncOpenAI``) made, used and closed by
blocking calls all see the same loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from . import _lifecycle

__all__ = ["UNBOUNDED_MIN", "InThread", "Job", "Runner", "run", "shared_loop", "widen"]

UNBOUNDED_MIN = 64
"""Threads of a wrapper that has no limit of its own (a bare ``CachedAgent``)."""

_T = TypeVar("_T")
_log = logging.getLogger("agentperf")
_RUNNERS: weakref.WeakSet[Runner] = weakref.WeakSet()
_exiting = False


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled: the result is dropped
        return
    if ok:
        fut.set_result(value)
        return
    try:
        fut.set_exception(value)
    except TypeError:  # StopIteration cannot travel through a future
        fut.set_exception(RuntimeError(f"the agent raised {value!r}"))


class Job:
    """One blocking call submitted to a :class:`Runner`; await it for the result."""

    __slots__ = ("_after", "_done", "_fut", "_runner", "ctx", "fn", "x")

    def __init__(
        self,
        runner: Runner,
        fn: Callable[[Any], Any],
        x: Any,
        fut: asyncio.Future[Any],
    ) -> None:
        self._runner = runner
        self.fn = fn
        self.x = x
        self.ctx = contextvars.copy_context()
        self._fut = fut
        self._after: Callable[[], Any] | None = None
        self._done = False

    def __await__(self) -> Any:
        return self._fut.__await__()

    def abandon(self, after: Callable[[], Any]) -> bool:
        """The caller gives up waiting. ``True``: the call has not finished, and its thread
        runs ``after()`` once it has (instead of delivering the result). ``False``: it had
        finished already; the caller runs ``after`` itself."""
        with self._runner._lock:
            if self._done:
                return False
            self._after = after
            return True

    def _run(self) -> None:
        fut = self._fut
        ok = True
        value: Any = None
        # A caller cancelled before its call started (the threads were all busy): skip it.
        if self._after is None and not fut.cancelled():
            try:
                value = self.ctx.run(self.fn, self.x)
            except BaseException as e:
                ok, value = False, e
        self.fn = self.x = self.ctx = None  # type: ignore[assignment]
        with self._runner._lock:
            self._done = True
            after = self._after
        if after is not None:
            try:
                after()
            except Exception:
                _log.warning("finishing an abandoned call failed", exc_info=True)
            return
        try:
            fut.get_loop().call_soon_threadsafe(_settle, fut, ok, value)
        except RuntimeError:  # the caller's loop is closed: nobody waits for the result
            pass


class Runner:
    """Threads of agentperf's own for blocking calls from async code, at most ``limit`` at
    once; calls past that wait in submission order."""

    __slots__ = (
        "__weakref__",
        "_cv",
        "_idle",
        "_jobs",
        "_lock",
        "_threads",
        "closed",
        "limit",
        "name",
    )

    idle_timeout: float = 10.0
    """Seconds a thread waits for work before it exits (class-wide; tests lower it)."""

    def __init__(self, limit: int, name: str = "agentperf-runner") -> None:
        self.limit = max(1, int(limit))
        self.name = name
        self.closed = False
        self._reset()
        _RUNNERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._jobs: deque[Job] = getattr(self, "_jobs", None) or deque()
        self._threads = 0  # alive
        self._idle = 0  # waiting for work

    def __repr__(self) -> str:
        return f"<Runner {self.name} {self._threads}/{self.limit} threads>"

    @property
    def threads(self) -> int:
        """Threads alive now."""
        return self._threads

    def widen(self, limit: int) -> None:
        """Allow at least ``limit`` calls at once from now on."""
        with self._lock:
            self.limit = max(self.limit, int(limit))

    def submit(self, fn: Callable[[Any], Any], x: Any) -> Job:
        """Run ``fn(x)`` in one of the threads; must be called on a running event loop."""
        job = Job(self, fn, x, asyncio.get_running_loop().create_future())
        with self._lock:
            self._jobs.append(job)
            if self._idle:
                self._cv.notify()
            start = len(self._jobs) > self._idle and self._threads < self.limit
            if start:
                self._threads += 1
        if start:
            self._start(job)
        return job

    def _start(self, job: Job | None) -> None:
        try:
            threading.Thread(target=self._work, name=self.name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._threads -= 1
                orphan = self._threads == 0 and job is not None and job in self._jobs
                if orphan:
                    self._jobs.remove(job)  # type: ignore[arg-type]
            if orphan:
                raise
            _log.warning("could not start another %s thread", self.name, exc_info=True)

    def _work(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._jobs:
                    if self.closed or _exiting:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woke = cv.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woke and not self._jobs:
                        self._threads -= 1
                        return
                job = self._jobs.popleft()
            job._run()
            del job

    def close(self) -> None:
        """Idle threads exit now, busy ones after their call. Calls submitted later still run
        (a thread is started for them and exits after them)."""
        with self._lock:
            self.closed = True
            self._cv.notify_all()

    def _after_fork_child(self) -> None:
        self._reset()  # the parent's threads (and a lock one of them held) are gone
        n = min(len(self._jobs), self.limit)
        self._threads = n
        for _ in range(n):
            self._start(None)


class InThread:
    """The async twin of a blocking agent call: ``await InThread(fn, runner)(x)`` runs
    ``fn(x)`` in ``runner``'s threads."""

    __slots__ = ("fn", "runner")

    def __init__(self, fn: Callable[[Any], Any], runner: Runner) -> None:
        self.fn = fn
        self.runner = runner

    async def __call__(self, x: Any) -> Any:
        return await self.runner.submit(self.fn, x)

    def submit(self, x: Any) -> Job:
        """Start the call now (on the running loop); await the :class:`Job` for its result."""
        return self.runner.submit(self.fn, x)

    def __repr__(self) -> str:
        return f"InThread({self.fn!r})"


def widen(agent: Any, limit: int) -> None:
    """Let ``agent`` (a wrapper of agentperf's) run at least ``limit`` blocking calls at once,
    when a ``BatchExecutor`` of that ``max_concurrency`` runs it."""
    w = getattr(agent, "_widen_runner", None)
    if callable(w):
        w(limit)


# -- the shared event loop -------------------------------------------------------------------


class _Loop:
    lock = threading.Lock()
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def shared_loop() -> asyncio.AbstractEventLoop | None:
    """The process's agentperf loop, started on first use; ``None`` at interpreter exit."""
    loop = _Loop.loop
    if loop is not None and not _exiting and not loop.is_closed():
        return loop
    with _Loop.lock:
        if _exiting:
            return None
        if _Loop.loop is None or _Loop.loop.is_closed():  # an agent may have stopped it
            loop = asyncio.new_event_loop()
            started = threading.Event()
            t = threading.Thread(
                target=_serve, args=(loop, started), name="agentperf-loop", daemon=True
            )
            t.start()
            started.wait()
            _Loop.loop, _Loop.thread = loop, t
        return _Loop.loop


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to its end on the shared loop and return its result (blocking, in a
    thread that runs no event loop). The caller's ``contextvars`` context is the task's. An
    interrupt (``KeyboardInterrupt``) while waiting cancels the coroutine."""
    loop = shared_loop()
    if loop is None:  # interpreter exit: the shared loop is gone
        return asyncio.run(coro)
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise
    finally:
        del fut


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def _stop_if_idle(
    loop: asyncio.AbstractEventLoop, decided: threading.Event, stopping: list[bool]
) -> None:
    if not any(not t.done() for t in asyncio.all_tasks(loop)):
        loop.stop()
        stopping.append(True)
    decided.set()


def _stop_loop() -> None:
    global _exiting
    _exiting = True
    for r in list(_RUNNERS):
        r.close()
    with _Loop.lock:
        loop, t = _Loop.loop, _Loop.thread
    if loop is None or t is None:
        return
    # Stopped if idle. A call still running there belongs to a daemon thread that waits for
    # it: like that thread, the loop is left to the interpreter's exit (cancelling the call
    # would only print that thread's traceback during shutdown).
    decided, stopping = threading.Event(), list[bool]()
    try:
        loop.call_soon_threadsafe(_stop_if_idle, loop, decided, stopping)
    except RuntimeError:
        return
    if decided.wait(1.0) and stopping:
        t.join(1.0)


def _after_fork_child() -> None:
    # The loop's thread did not survive: the next use starts a new loop. The old loop object
    # (and its selector's descriptors) is left alone: it still counts as running.
    _Loop.lock = threading.Lock()
    _Loop.loop = _Loop.thread = None
    for r in list(_RUNNERS):
        r._after_fork_child()


atexit.register(_stop_loop)
_lifecycle.at_fork(after_in_child=_after_fork_child)
