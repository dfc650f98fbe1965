"""Run one agent over many inputs with bounded concurrency: :class:`BatchExecutor`.

>>> import agentperf as ap
>>> async def double(x: int) -> int:
...     return 2 * x
>>> with ap.BatchExecutor(double, max_concurrency=4) as ex:
...     ex.execute(range(5)).outputs
[0, 2, 4, 6, 8]

How it runs. A fixed set of ``min(max_concurrency, len(inputs))`` worker tasks pulls inputs one
at a time from the (sync or async) iterable, so inputs are consumed lazily and the per-item
cost is a function call, not an asyncio task. Async agents are awaited on the loop; blocking
agents run in this executor's own thread pool of ``max_concurrency`` threads (never the loop's
small default executor), so they really reach the limit.

Stopping. ``ErrorPolicy.FAIL_FAST`` and the batch ``timeout`` cancel the calls still running,
not only those pending; leaving an :meth:`~BatchExecutor.astream` loop early (``break``, an
exception, ``aclose()``) cancels the rest. A *blocking* agent's call cannot be interrupted inside
its thread: its item is recorded as stopped at once (failed with a timeout error, or cancelled)
and the thread finishes that call in the background, still counted against the thread pool, so
calls in flight never exceed ``max_concurrency`` threads (a later item may wait for that thread,
and its ``item_timeout`` runs meanwhile). Its permit of a shared ``semaphore`` is returned when
the item is recorded. Concurrent batches of one executor share its threads.

An exception raised by the *input iterable* itself (or by an ``on_progress`` callback) is not an
item error: it stops the batch and is raised from ``aexecute``/``execute``/the stream.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import importlib
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, NamedTuple

from ._closeable import Closeable
from ._config import boolean, optional_callable, show
from ._runner import run, widen
from .agent import adapt
from .config import BatchConfig, ErrorPolicy, build
from .errors import BatchTimeoutError
from .semaphore import Semaphore

__all__ = [
    "BatchError",
    "BatchExecutor",
    "BatchExecutorStats",
    "BatchItem",
    "BatchResult",
    "BatchStats",
    "BatchStream",
]

_INF = float("inf")


class BatchError(NamedTuple):
    """One failed item: its position, its input and the exception its agent call raised."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as API.md names it
    input: Any
    error: BaseException


class BatchItem(NamedTuple):
    """One finished item, as :meth:`BatchExecutor.astream` yields it (in completion order).

    ``output`` is ``None`` and ``error`` the exception when the item failed.
    """

    index: int  # type: ignore[assignment]
    input: Any
    output: Any
    error: BaseException | None

    @property
    def ok(self) -> bool:
        """Whether the agent call succeeded."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Figures of one batch. ``success_count + failure_count + cancelled_count == total_count``.

    ``throughput`` is finished (succeeded or failed) items per second; the ``*_item_s`` figures
    are over finished items (0 when none finished).
    """

    total_count: int
    success_count: int
    failure_count: int
    cancelled_count: int
    duration_s: float
    throughput: float
    avg_item_s: float
    min_item_s: float
    max_item_s: float


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What :meth:`BatchExecutor.aexecute` returns.

    ``outputs`` is in input order with ``None`` where the item failed or did not run;
    ``errors`` holds one :class:`BatchError` per failed item, in completion order
    (``len(errors) == stats.failure_count``).
    """

    outputs: list[Any]
    errors: list[BatchError]
    stats: BatchStats


@dataclasses.dataclass(frozen=True)
class BatchExecutorStats:
    """Totals across every batch an executor ran (kept when ``enable_stats``).

    ``success_rate`` is ``success_tasks / total_tasks`` in percent (0 before any task).
    """

    executions: int
    total_tasks: int
    success_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    success_rate: float


def _progress_bar(total: int | None) -> Any:
    tqdm: Any = importlib.import_module("tqdm.auto").tqdm  # checked by _check_progress
    return tqdm(total=total, unit="item", desc="batch")


class _Chan:
    """The stream's bounded buffer: workers wait while it is full, the reader while it is empty.

    ``push_nowait`` ignores the bound; it is used only for the few items recorded while their
    worker is being cancelled (at most one per worker).
    """

    __slots__ = ("buf", "cap", "closed", "getter", "putters")

    def __init__(self, cap: int) -> None:
        self.buf: deque[BatchItem] = deque()
        self.cap = cap
        self.closed = False
        self.getter: asyncio.Future[None] | None = None
        self.putters: deque[asyncio.Future[None]] = deque()

    def push_nowait(self, item: BatchItem) -> None:
        self.buf.append(item)
        g = self.getter
        if g is not None:
            self.getter = None
            if not g.done():
                g.set_result(None)

    async def push(self, item: BatchItem) -> None:
        while len(self.buf) >= self.cap and not self.closed:
            fut = asyncio.get_running_loop().create_future()
            self.putters.append(fut)
            await fut
        self.push_nowait(item)

    def close(self) -> None:
        self.closed = True
        self.push_wake()
        g = self.getter
        if g is not None:
            self.getter = None
            if not g.done():
                g.set_result(None)

    def push_wake(self) -> None:
        while self.putters:
            p = self.putters.popleft()
            if not p.done():
                p.set_result(None)
                if not self.closed:
                    return

    async def pop(self) -> BatchItem | None:
        """The next item, or ``None`` once closed and drained."""
        while not self.buf:
            if self.closed:
                return None
            fut = asyncio.get_running_loop().create_future()
            self.getter = fut
            try:
                await fut
            finally:
                if self.getter is fut:
                    self.getter = None
        item = self.buf.popleft()
        if self.putters:
            self.push_wake()
        return item


class _Run:
    """The state of one batch on one event loop."""

    def __init__(
        self,
        ex: BatchExecutor,
        inputs: Iterable[Any] | AsyncIterable[Any],
        streaming: bool,
        progress: bool,
        on_progress: Callable[[int, int | None], Any] | None,
    ) -> None:
        cfg = ex.config
        self.ex = ex
        self.loop = asyncio.get_running_loop()
        self.fail_fast = cfg.error_policy is ErrorPolicy.FAIL_FAST
        self.item_timeout = cfg.item_timeout
        self.sem = ex.semaphore
        self.reason: str | None = None  # why the batch stopped early: timeout/failfast/closed
        self.fatal: BaseException | None = None
        self.errors: list[BatchError] = []
        self.n_ok = 0
        self.n_fail = 0
        self.t_sum = 0.0
        self.t_min = _INF
        self.t_max = 0.0
        self.hi = -1  # highest index taken
        self.streaming = streaming
        self.chan: _Chan | None = _Chan(max(cfg.max_concurrency, 16)) if streaming else None
        self.stats: BatchStats | None = None

        self.aiter: AsyncIterator[Any] | None = None
        self.src: Iterator[tuple[int, Any]] | None = None
        self.total: int | None = None
        if isinstance(inputs, AsyncIterable) and not isinstance(inputs, Iterable):
            self.aiter = aiter(inputs)
            self.alock = asyncio.Lock()
            self.aexhausted = False
        else:
            try:
                it = iter(inputs)
            except TypeError:
                raise TypeError(
                    f"inputs={inputs!r}: expected an iterable or an async iterable, "
                    f"got {type(inputs).__name__}"
                ) from None
            try:
                self.total = len(inputs)  # type: ignore[arg-type]
            except TypeError:
                self.total = None
            # A known length bounds what is taken (an object whose len() lies is cut there).
            self.src = (
                zip(range(self.total), it, strict=False)
                if self.total is not None
                else enumerate(it)
            )
        self.grow = self.total is None and not streaming
        self.outputs: list[Any] = (
            [None] * self.total if self.total is not None and not streaming else []
        )

        self.bar = _progress_bar(self.total) if progress else None
        self.on_progress = on_progress
        self.progress = self.bar is not None or on_progress is not None

        n = cfg.max_concurrency if self.total is None else min(cfg.max_concurrency, self.total)
        self.alive = n
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.t0 = time.perf_counter()
        self.tasks: list[asyncio.Task[None]] = []
        fast = (
            not (
                streaming or self.item_timeout is not None or self.sem is not None or self.progress
            )
            and self.src is not None
        )
        fn = ex._async_call(self.loop)
        for _ in range(n):
            coro = self._fast_worker(fn) if fast else self._worker(fn)
            t = self.loop.create_task(coro)
            t.add_done_callback(self._worker_done)
            self.tasks.append(t)
        self.timer = (
            self.loop.call_later(cfg.timeout, self._on_timeout) if cfg.timeout is not None else None
        )
        if n == 0:
            self._finish()

    # --- stopping ------------------------------------------------------------------------

    def cancel(self, reason: str) -> None:
        """Stop every worker (idempotent; the first reason wins)."""
        if self.reason is None:
            self.reason = reason
        cur = asyncio.current_task(self.loop) if self.loop.is_running() else None
        for t in self.tasks:
            if t is not cur:
                t.cancel()

    def _on_timeout(self) -> None:
        self.cancel("timeout")

    def _fatal(self, e: BaseException) -> None:
        if self.fatal is None:
            self.fatal = e
        self.cancel("fatal")

    def _worker_done(self, _t: asyncio.Task[None]) -> None:
        self.alive -= 1
        if self.alive == 0:
            self._finish()

    def _finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.bar is not None:
            self.bar.close()
        duration = time.perf_counter() - self.t0
        taken = self.hi + 1
        if self.total is not None and self.reason is None and taken < self.total:
            # The iterable ran out before its len(): count what it gave.
            self.total = taken
            del self.outputs[taken:]
        total = self.total if self.total is not None else taken
        finished = self.n_ok + self.n_fail
        self.stats = BatchStats(
            total_count=total,
            success_count=self.n_ok,
            failure_count=self.n_fail,
            cancelled_count=total - finished,
            duration_s=duration,
            throughput=finished / duration if duration > 0 else 0.0,
            avg_item_s=self.t_sum / finished if finished else 0.0,
            min_item_s=self.t_min if finished else 0.0,
            max_item_s=self.t_max,
        )
        self.ex._record(self.stats)
        self.ex._run_ended()
        if self.chan is not None:
            self.chan.close()
        if not self.done.done():
            self.done.set_result(None)

    async def wait_closed(self) -> None:
        """Cancel what still runs and wait until every worker has ended."""
        self.cancel("closed")
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending)

    # --- workers ---------------------------------------------------------------------------

    def _timeout_error(self, i: int) -> BatchTimeoutError:
        return BatchTimeoutError(
            f"the batch timeout ({self.ex.config.timeout} s) passed while item {i} was running"
        )

    async def _fast_worker(self, fn: Callable[[Any], Awaitable[Any]]) -> None:
        """The lean loop: no semaphore, no item timeout, no progress, no stream."""
        pc = time.perf_counter
        src = self.src
        assert src is not None
        outputs = self.outputs
        grow = self.grow
        errors = self.errors
        fail_fast = self.fail_fast
        ok = fail = 0
        t_sum, t_min, t_max = 0.0, _INF, 0.0
        i, x, hi = -1, None, -1
        t0 = 0.0
        try:
            for i, x in src:
                hi = i
                if grow:
                    outputs.append(None)
                t0 = pc()
                try:
                    out = await fn(x)
                except Exception as e:
                    fail += 1
                    errors.append(BatchError(i, x, e))
                    if fail_fast:
                        dt = pc() - t0
                        t_sum += dt
                        t_min = min(t_min, dt)
                        t_max = max(t_max, dt)
                        self.cancel("failfast")
                        return
                else:
                    outputs[i] = out
                    ok += 1
                dt = pc() - t0
                t_sum += dt
                if dt < t_min:
                    t_min = dt
                if dt > t_max:
                    t_max = dt
        except asyncio.CancelledError:
            # Only `await fn(x)` suspends, so item i was running.
            if self.reason == "timeout":
                dt = pc() - t0
                t_sum += dt
                t_min = min(t_min, dt)
                t_max = max(t_max, dt)
                fail += 1
                errors.append(BatchError(i, x, self._timeout_error(i)))
        except BaseException as e:  # the input iterable raised
            self._fatal(e)
        finally:
            self.n_ok += ok
            self.n_fail += fail
            self.t_sum += t_sum
            self.t_min = min(self.t_min, t_min)
            self.t_max = max(self.t_max, t_max)
            if hi > self.hi:
                self.hi = hi

    async def _pull_async(self) -> tuple[int, Any] | None:
        """The next input of an async iterable (one puller at a time: generators insist)."""
        assert self.aiter is not None
        async with self.alock:
            if self.reason is not None or self.aexhausted:
                return None
            try:
                x = await anext(self.aiter)
            except StopAsyncIteration:
                self.aexhausted = True
                return None
            i = self.hi = self.hi + 1
            if self.grow:
                self.outputs.append(None)
            return i, x

    def _count(self, dt: float) -> None:
        self.t_sum += dt
        if dt < self.t_min:
            self.t_min = dt
        if dt > self.t_max:
            self.t_max = dt
        if self.progress:
            done = self.n_ok + self.n_fail
            if self.bar is not None:
                self.bar.update(1)
            if self.on_progress is not None:
                self.on_progress(done, self.total)

    async def _worker(self, fn: Callable[[Any], Awaitable[Any]]) -> None:
        """The general loop: semaphore, item timeout, progress, streaming."""
        pc = time.perf_counter
        sem = self.sem
        item_timeout = self.item_timeout
        chan = self.chan
        src = self.src
        i, x = -1, None
        running = False
        try:
            while self.reason is None:
                if src is not None:  # a sync iterable: no coroutine per pull
                    nxt = next(src, None)
                    if nxt is None:
                        break
                    i, x = nxt
                    self.hi = i
                    if self.grow:
                        self.outputs.append(None)
                else:
                    nxt = await self._pull_async()
                    if nxt is None:
                        break
                    i, x = nxt
                if sem is not None and not sem.try_acquire():
                    await sem.aacquire()
                running = True
                t0 = pc()
                try:
                    if item_timeout is None:
                        out = await fn(x)
                    else:
                        out = await _with_timeout(fn(x), item_timeout, i)
                except Exception as e:
                    dt = pc() - t0
                    running = False
                    self.n_fail += 1
                    self.errors.append(BatchError(i, x, e))
                    if sem is not None:
                        sem.release()
                    self._count(dt)
                    if chan is not None:
                        chan.push_nowait(BatchItem(i, x, None, e))
                    if self.fail_fast:
                        self.cancel("failfast")
                        return
                    continue
                except asyncio.CancelledError:
                    dt = pc() - t0
                    running = False
                    if sem is not None:
                        sem.release()
                    if self.reason == "timeout":
                        err = self._timeout_error(i)
                        self.n_fail += 1
                        self.errors.append(BatchError(i, x, err))
                        self._count(dt)
                        if chan is not None:
                            chan.push_nowait(BatchItem(i, x, None, err))
                    raise
                dt = pc() - t0
                running = False
                if sem is not None:
                    sem.release()
                self.n_ok += 1
                if not self.streaming:
                    self.outputs[i] = out
                self._count(dt)
                if chan is not None:
                    item = BatchItem(i, x, out, None)
                    if len(chan.buf) < chan.cap:
                        chan.push_nowait(item)
                        continue
                    try:
                        await chan.push(item)
                    except asyncio.CancelledError:
                        chan.push_nowait(item)  # finished: still delivered if anyone reads
                        raise
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # the input iterable or on_progress raised
            if running and sem is not None:
                sem.release()
            self._fatal(e)


async def _with_timeout(aw: Awaitable[Any], seconds: float, i: int) -> Any:
    if sys.version_info >= (3, 11):
        cm = asyncio.timeout(seconds)
        try:
            async with cm:
                return await aw
        except TimeoutError:
            if cm.expired():
                raise TimeoutError(f"item {i} exceeded item_timeout={seconds} s") from None
            raise
    try:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:  # pragma: no cover
        raise TimeoutError(f"item {i} exceeded item_timeout={seconds} s") from None


class BatchStream(AsyncIterator[BatchItem]):
    """The async iterator :meth:`BatchExecutor.astream` returns; items in completion order.

    Leaving the ``async for`` early cancels the rest (at once when the iterator is dropped;
    ``await stream.aclose()`` or ``async with`` also waits until every worker has ended).
    ``stats`` holds the batch's :class:`BatchStats` once it has ended.
    """

    def __init__(
        self,
        ex: BatchExecutor,
        inputs: Iterable[Any] | AsyncIterable[Any],
        progress: bool,
        on_progress: Callable[[int, int | None], Any] | None,
    ) -> None:
        self._ex = ex
        self._inputs: Iterable[Any] | AsyncIterable[Any] | None = inputs
        self._progress = progress
        self._on_progress = on_progress
        self._run: _Run | None = None
        self._closed = False

    @property
    def stats(self) -> BatchStats | None:
        """The batch's figures once it has ended (``None`` before)."""
        return self._run.stats if self._run is not None else None

    def __aiter__(self) -> BatchStream:
        return self

    async def __anext__(self) -> BatchItem:
        if self._closed:
            raise StopAsyncIteration
        run = self._run
        if run is None:
            if self._inputs is None:
                raise StopAsyncIteration
            self._ex._check_open()
            run = self._run = _Run(self._ex, self._inputs, True, self._progress, self._on_progress)
            self._inputs = None
        chan = run.chan
        assert chan is not None
        if chan.buf:
            first = chan.buf.popleft()
            if chan.putters:
                chan.push_wake()
            return first
        item = await chan.pop()
        if item is None:
            if run.fatal is not None:
                e, run.fatal = run.fatal, None
                raise e
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Cancel what is left and wait until every worker has ended."""
        self._closed = True
        self._inputs = None
        if self._run is not None:
            await self._run.wait_closed()

    async def __aenter__(self) -> BatchStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        run = self._run
        if run is None or run.done.done() or run.loop.is_closed():
            return
        if asyncio._get_running_loop() is run.loop:
            run.cancel("closed")
        else:
            run.loop.call_soon_threadsafe(run.cancel, "closed")


class BatchExecutor(Closeable):
    """Run ``agent`` over many inputs with at most ``max_concurrency`` calls in flight.

    ``BatchExecutor(agent, config)`` or ``BatchExecutor(agent, max_concurrency=..., ...)``
    (any :class:`~agentperf.BatchConfig` field). ``semaphore=ap.Semaphore(n)`` adds one limit
    shared with other executors, threads and loops (a permit per agent call).
    ``progress=True`` draws a tqdm bar (extra ``agentperf[progress]``); ``on_progress(done,
    total)`` is called after each finished item (``total`` is ``None`` for inputs without a
    length). Both can also be given per call.

    Holds a thread pool for blocking agents: close it with :meth:`close` or use it as a
    context manager (``with`` / ``async with``).
    """

    def __init__(
        self,
        agent: Any,
        config: BatchConfig | None = None,
        /,
        *,
        semaphore: Semaphore | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int | None], Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.config: BatchConfig = build(BatchConfig, config, overrides)
        self.agent = agent
        self._adapter = adapt(agent)
        widen(agent, self.config.max_concurrency)  # a pool's/cached agent's blocking calls
        if semaphore is not None and not isinstance(semaphore, Semaphore):
            raise TypeError(f"semaphore={show(semaphore)}: expected an agentperf.Semaphore or None")
        self.semaphore = semaphore
        self.progress = _check_progress(progress, on_progress)
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False
        self._runs = 0  # batches running now (they keep the thread pool past close())
        self._executions = 0
        self._total = 0
        self._success = 0
        self._failed = 0
        self._cancelled = 0

    def __repr__(self) -> str:
        c = self.config
        return (
            f"BatchExecutor({self.agent!r}, max_concurrency={c.max_concurrency}, "
            f"error_policy={c.error_policy.name})"
        )

    # --- running ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this BatchExecutor is closed")

    def _async_call(self, loop: asyncio.AbstractEventLoop) -> Callable[[Any], Awaitable[Any]]:
        """The call for a new run, which counts as running until :meth:`_run_ended`."""
        ad = self._adapter
        with self._lock:
            self._check_open()
            self._runs += 1
            if ad.native_async or not ad.native_sync:
                return ad.acall
            # A blocking agent: our own pool of max_concurrency threads, never the loop's
            # default.
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    max_workers=self.config.max_concurrency,
                    thread_name_prefix="agentperf-batch",
                )
            pool = self._threads
        call = ad.call
        run_in = loop.run_in_executor
        copy_context = contextvars.copy_context

        def in_thread(x: Any) -> Awaitable[Any]:
            return run_in(pool, functools.partial(copy_context().run, call, x))

        return in_thread

    def _options(
        self, progress: bool | None, on_progress: Callable[[int, int | None], Any] | None
    ) -> tuple[bool, Callable[[int, int | None], Any] | None]:
        p = self.progress if progress is None else _check_progress(progress, on_progress)
        return p, on_progress if on_progress is not None else self.on_progress

    async def aexecute(
        self,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchResult:
        """Run the agent on every input; returns a :class:`BatchResult` (also on timeout)."""
        self._check_open()
        p, cb = self._options(progress, on_progress)
        run = _Run(self, inputs, False, p, cb)
        try:
            await asyncio.shield(run.done)
        except BaseException:
            await run.wait_closed()
            raise
        if run.fatal is not None:
            raise run.fatal
        assert run.stats is not None
        return BatchResult(run.outputs, run.errors, run.stats)

    def execute(
        self,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchResult:
        """The blocking twin of :meth:`aexecute` (runs on agentperf's shared event loop, so
        loop-bound clients of a pool or cached agent keep working across calls).

        Raises ``RuntimeError`` when called from a running event loop: use ``aexecute``.
        """
        _refuse_in_loop("execute", "aexecute")
        self._check_open()
        return run(self.aexecute(inputs, progress=progress, on_progress=on_progress))

    def astream(
        self,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchStream:
        """``async for item in ex.astream(inputs)``: :class:`BatchItem` s as they finish.

        Memory stays flat whatever the input length; leaving the loop cancels the rest.
        """
        self._check_open()
        p, cb = self._options(progress, on_progress)
        return BatchStream(self, inputs, p, cb)

    def stream(
        self,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> Iterator[BatchItem]:
        """The blocking twin of :meth:`astream`: a generator of :class:`BatchItem` s.

        The batch runs on a private event loop driven from the consuming thread, between the
        items it yields. ``RuntimeError`` when called from a running event loop.
        """
        _refuse_in_loop("stream", "astream")
        s = self.astream(inputs, progress=progress, on_progress=on_progress)
        return _drive(s)

    # --- statistics and lifetime ---------------------------------------------------------

    def _record(self, st: BatchStats) -> None:
        if not self.config.enable_stats:
            return
        with self._lock:
            self._executions += 1
            self._total += st.total_count
            self._success += st.success_count
            self._failed += st.failure_count
            self._cancelled += st.cancelled_count

    def stats(self) -> BatchExecutorStats:
        """Totals across every batch this executor ran (zeros when ``enable_stats=False``)."""
        with self._lock:
            total = self._total
            return BatchExecutorStats(
                executions=self._executions,
                total_tasks=total,
                success_tasks=self._success,
                failed_tasks=self._failed,
                cancelled_tasks=self._cancelled,
                success_rate=100.0 * self._success / total if total else 0.0,
            )

    def _run_ended(self) -> None:
        with self._lock:
            self._runs -= 1
            pool = None
            if self._closed and self._runs == 0:
                pool, self._threads = self._threads, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Release the thread pool; later batches raise ``RuntimeError``. Idempotent.

        Batches already running go on to their end (the thread pool is released when the
        last one ends). Blocking calls still running (stopped by a timeout) finish in the
        background.
        """
        with self._lock:
            self._closed = True
            pool = None
            if self._runs == 0:
                pool, self._threads = self._threads, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _check_progress(progress: Any, on_progress: Any) -> bool:
    show_bar = boolean("progress", progress)
    optional_callable("on_progress", on_progress)
    if show_bar:
        try:
            importlib.import_module("tqdm")
        except ImportError:
            raise ImportError(
                "progress=True needs tqdm: install the extra with pip install 'agentperf[progress]'"
            ) from None
    return show_bar


def _refuse_in_loop(name: str, async_name: str) -> None:
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            f"BatchExecutor.{name}() blocks, and an event loop is running in this thread: "
            f"use `await ex.{async_name}(...)` instead"
        )


def _drive(s: BatchStream) -> Iterator[BatchItem]:
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                item = loop.run_until_complete(s.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        try:
            loop.run_until_complete(s.aclose())
        finally:
            loop.close()
