"""The executor users hold: configuration, the thread pool for blocking agents, totals."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .._agentperf import _Histogram
from .._closeable import Closeable
from .._config import show
from .._runner import run, widen
from ..agent import adapt
from ..config import BatchConfig, build
from ..metrics import _registry
from ..semaphore import Semaphore
from .attempt import Call, layered
from .checks import check_inputs, check_progress, cluster_unsafe, limits, refuse_in_loop
from .results import BatchExecutorStats, BatchItem, BatchResult, BatchStats
from .run import Run
from .stream import BatchStream, drive

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._types import (
        ExecutorOptions,
        SupportsAexecute,
        SupportsAinvoke,
        SupportsExecute,
        SupportsInvoke,
    )
    from ..adaptive import AdaptiveConcurrency
    from ..retry import RetryPolicy
    from .raybackend import RayBackend

I = TypeVar("I")  # noqa: E741 - the input type, as API.md writes BatchExecutor[I, O]
O = TypeVar("O")  # noqa: E741 - the output type

__all__ = ["BatchExecutor"]


class BatchExecutor(Closeable, Generic[I, O]):
    """Run ``agent`` over many inputs with at most ``max_concurrency`` calls in flight.

    ``BatchExecutor(agent, config)`` or ``BatchExecutor(agent, max_concurrency=..., ...)``
    (any :class:`~agentperf.BatchConfig` field). ``semaphore=ap.Semaphore(n)`` adds one limit
    shared with other executors, threads and loops (a permit per agent call).
    ``rate_limit=`` (a :class:`~agentperf.RateLimiter`, a ``(RateLimiter, cost)`` pair or a
    list of them) and ``retry=`` (a :class:`~agentperf.RetryPolicy`) are the same as wrapping
    the agent in :class:`~agentperf.RateLimitedAgent` and then
    :class:`~agentperf.RetryingAgent`: every attempt is rate-limited, ``item_timeout`` bounds
    each attempt's agent call (not its wait for a limiter), and an item sleeping before a retry
    holds no slot. ``max_concurrency`` may be an :class:`~agentperf.AdaptiveConcurrency`, which
    then finds the concurrency the backend sustains.
    ``progress=True`` draws a tqdm bar (extra ``agentperf-rs[progress]``); ``on_progress(done,
    total)`` is called after each finished item (``total`` is ``None`` for inputs without a
    length). Both can also be given per call.

    Holds a thread pool for blocking agents: close it with :meth:`close` or use it as a
    context manager (``with`` / ``async with``).
    """

    @overload
    def __init__(
        self: BatchExecutor[I, O],
        agent: Callable[[I], Awaitable[O]],
        config: BatchConfig | None = None,
        /,
        **options: Unpack[ExecutorOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: BatchExecutor[I, O],
        agent: SupportsAexecute[I, O] | SupportsAinvoke[I, O],
        config: BatchConfig | None = None,
        /,
        **options: Unpack[ExecutorOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: BatchExecutor[I, O],
        agent: SupportsExecute[I, O] | SupportsInvoke[I, O],
        config: BatchConfig | None = None,
        /,
        **options: Unpack[ExecutorOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: BatchExecutor[I, O],
        agent: Callable[[I], O],
        config: BatchConfig | None = None,
        /,
        **options: Unpack[ExecutorOptions],
    ) -> None: ...
    def __init__(
        self,
        agent: Any,
        config: BatchConfig | None = None,
        /,
        *,
        semaphore: Semaphore | None = None,
        rate_limit: Any = None,
        retry: RetryPolicy | None = None,
        backend: RayBackend | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int | None], Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.config: BatchConfig = build(BatchConfig, config, overrides)
        self.agent = agent
        self._adapter = adapt(agent)
        if semaphore is not None and not isinstance(semaphore, Semaphore):
            raise TypeError(f"semaphore={show(semaphore)}: expected an agentperf.Semaphore or None")
        self.semaphore = semaphore
        self.rate_limit = limits(rate_limit)
        if retry is not None:
            from ..retry import RetryPolicy

            if not isinstance(retry, RetryPolicy):
                raise TypeError(f"retry={show(retry)}: expected an agentperf.RetryPolicy or None")
        self.retry = retry
        if backend is not None:
            from .raybackend import RayBackend

            if not isinstance(backend, RayBackend):
                raise TypeError(
                    f"backend={show(backend)}: expected an agentperf.RayBackend or None"
                )
            if semaphore is not None:
                raise ValueError(
                    "backend=RayBackend(...): semaphore= holds in one process only, so each "
                    "actor would let the whole limit through; max_concurrency is already the "
                    "total over the actors"
                )
            local = cluster_unsafe(self.rate_limit)
            if local:
                raise ValueError(
                    f"backend=RayBackend(...): rate_limit={show(local[0])} holds in one process "
                    "only, so each actor would let the whole limit through; make it "
                    "cluster-wide with ap.RateLimiter(rate, per, store=ap.RedisStore(url), "
                    "name='...') (store= and name=)"
                )
        self.backend = backend
        mc = self.config.max_concurrency
        self._adaptive: AdaptiveConcurrency | None = None if isinstance(mc, int) else mc
        widen(agent, self._ceiling)  # a pool's/cached agent's blocking calls
        self.progress = check_progress(progress, on_progress)
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
        self._attempts = 0
        self._throttled_s = 0.0
        # Item durations (metrics): kept only for a named executor, so an unnamed one's
        # items pay nothing for it.
        self._item_hist: _Histogram | None = None
        if self.config.name is not None:
            self._item_hist = _Histogram()
            _registry.register("batch", self)

    @property
    def name(self) -> str | None:
        """The executor's name in the metrics (``config.name``); ``None``: not exported."""
        return self.config.name

    def _item_histogram(self) -> tuple[list[int], float]:
        """Durations of the finished items (metrics): ``(counts per bucket, sum_s)``."""
        h = self._item_hist
        if h is None:
            return [0] * (len(_Histogram.bounds()) + 1), 0.0
        return h.snapshot()

    @property
    def _ceiling(self) -> int:
        """The most agent calls in flight this executor may ever have (its worker count)."""
        a = self._adaptive
        if a is not None:
            return a.max
        mc = self.config.max_concurrency
        assert isinstance(mc, int)
        return mc

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

    def _async_call(self, loop: asyncio.AbstractEventLoop) -> Call:
        """The call for a new run, which counts as running until :meth:`_run_ended`."""
        fn = self._base_call(loop)
        plain = self.config.item_timeout is None and self.semaphore is None
        if plain and not self.rate_limit and self.retry is None and self._adaptive is None:
            return fn
        return layered(
            fn,
            item_timeout=self.config.item_timeout,
            semaphore=self.semaphore,
            adaptive=self._adaptive,
            limits=self.rate_limit,
            retry=self.retry,
        )

    def _begin(self) -> None:
        """A run starts: it keeps the executor's resources until :meth:`_run_ended`."""
        with self._lock:
            self._check_open()
            self._runs += 1

    def _base_call(self, loop: asyncio.AbstractEventLoop) -> Call:
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
                    max_workers=self._ceiling,
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
        p = self.progress if progress is None else check_progress(progress, on_progress)
        return p, on_progress if on_progress is not None else self.on_progress

    async def aexecute(
        self,
        inputs: Iterable[I] | AsyncIterable[I],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchResult[O]:
        """Run the agent on every input; returns a :class:`BatchResult` (also on timeout)."""
        check_inputs(inputs, "aexecute")
        self._check_open()
        p, cb = self._options(progress, on_progress)
        run = Run(self, inputs, streaming=False, progress=p, on_progress=cb).start()
        try:
            await asyncio.shield(run.done)
        except BaseException:
            await run.wait_closed()
            raise
        if run.fatal is not None:
            raise run.fatal
        assert run.stats is not None
        return BatchResult(run.outputs, run.errors, run.stats)

    async def _stream_chunk(
        self, items: list[Any], timeout: float | None
    ) -> AsyncIterator[tuple[Any, ...]]:
        """One chunk of a distributed batch (on a Ray actor), as it finishes: messages of
        ``(successes, errors, seconds, min_s, max_s, attempts, throttled_s)`` — outcomes by
        position in the chunk, figures since the last message. ``timeout`` is what the batch
        has left."""
        run = Run(self, items, streaming=True, progress=False, on_progress=None, timeout=timeout)
        run.start()
        chan = run.chan
        assert chan is not None
        sent_s, sent_calls, sent_throttled = 0.0, 0, 0.0

        def message(first: BatchItem[Any, Any] | None) -> tuple[Any, ...]:
            nonlocal sent_s, sent_calls, sent_throttled
            ok: list[tuple[int, Any]] = []
            errors: list[tuple[int, BaseException]] = []
            for item in chan.drain(first):
                if item.error is None:
                    ok.append((item.index, item.output))
                else:
                    errors.append((item.index, item.error))
            t, m = run.tally, run.meter
            calls = run.calls + m.calls
            msg = (ok, errors, t.sum_s - sent_s, t.min_s, t.max_s, calls - sent_calls)
            sent_s, sent_calls = t.sum_s, calls
            throttled, sent_throttled = m.throttled_s - sent_throttled, m.throttled_s
            return (*msg, throttled)

        try:
            while True:
                item = await chan.pop()
                if item is None:
                    break
                await asyncio.sleep(0)  # let the calls finishing now join this message
                yield message(item)
            await asyncio.shield(run.done)
            yield message(None)  # the last figures (calls still running when it stopped)
        except BaseException:
            await run.wait_closed()
            raise
        if run.fatal is not None:
            raise run.fatal

    def execute(
        self,
        inputs: Iterable[I] | AsyncIterable[I],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchResult[O]:
        """The blocking twin of :meth:`aexecute` (runs on agentperf's shared event loop, so
        loop-bound clients of a pool or cached agent keep working across calls).

        Raises ``RuntimeError`` when called from a running event loop: use ``aexecute``.
        """
        check_inputs(inputs, "execute")
        refuse_in_loop("execute", "`await ex.aexecute(...)`")
        self._check_open()
        return run(self.aexecute(inputs, progress=progress, on_progress=on_progress))

    def astream(
        self,
        inputs: Iterable[I] | AsyncIterable[I],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> BatchStream[I, O]:
        """``async for item in ex.astream(inputs)``: :class:`BatchItem` s as they finish.

        Memory stays flat whatever the input length; leaving the loop cancels the rest.
        """
        check_inputs(inputs, "astream")
        self._check_open()
        p, cb = self._options(progress, on_progress)
        return BatchStream(self, inputs, p, cb)

    def stream(
        self,
        inputs: Iterable[I] | AsyncIterable[I],
        *,
        progress: bool | None = None,
        on_progress: Callable[[int, int | None], Any] | None = None,
    ) -> Iterator[BatchItem[I, O]]:
        """The blocking twin of :meth:`astream`: a generator of :class:`BatchItem` s.

        The batch runs on a private event loop driven from the consuming thread, between the
        items it yields. ``RuntimeError`` when called from a running event loop.
        """
        check_inputs(inputs, "stream")
        refuse_in_loop("stream", "`async for item in ex.astream(...)`")
        s = self.astream(inputs, progress=progress, on_progress=on_progress)
        return drive(s)

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
            self._attempts += st.attempts
            self._throttled_s += st.throttled_s

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
                attempts=self._attempts,
                throttled_s=self._throttled_s,
                success_rate=100.0 * self._success / total if total else 0.0,
                concurrency=self._ceiling if self._adaptive is None else self._adaptive.limit,
            )

    def _run_ended(self) -> None:
        with self._lock:
            self._runs -= 1
            pool = None
            last = self._closed and self._runs == 0
            if last:
                pool, self._threads = self._threads, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if last and self.backend is not None:
            self.backend.close()

    def close(self) -> None:
        """Release the thread pool; later batches raise ``RuntimeError``. Idempotent.

        Batches already running go on to their end (the thread pool is released when the
        last one ends). Blocking calls still running (stopped by a timeout) finish in the
        background. A :class:`~agentperf.RayBackend`'s actors end with the last batch.
        """
        with self._lock:
            self._closed = True
            pool = None
            idle = self._runs == 0
            if idle:
                pool, self._threads = self._threads, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if idle and self.backend is not None:
            self.backend.close()
