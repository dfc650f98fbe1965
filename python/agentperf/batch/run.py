"""One batch on one event loop: its workers, its timer, its outputs and how it stops.

A fixed set of ``min(max_concurrency, len(inputs))`` worker tasks pulls inputs one at a time,
so inputs are consumed lazily and the per-item cost is a function call, not an asyncio task.
What happens around each agent call (retries, rate limits, slots, the item timeout) is the
call's own business (``attempt``); the run only takes items, records them and stops. Two
worker loops share the work: a lean one when nothing per item is asked for (no progress, no
stream), and the general one. Both record a failure through :meth:`Run.fail` and report their
counts into :attr:`Run.tally`.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._meter import METER, Meter
from ..config import ErrorPolicy
from ..errors import BatchTimeoutError
from .attempt import Call
from .channel import Channel
from .inputs import Inputs
from .prefetch import prefetching
from .results import BatchError, BatchItem, BatchStats
from .stop import Stop
from .tally import BLOCK, Tally

if TYPE_CHECKING:
    from .executor import BatchExecutor

__all__ = ["Run"]

_INF = float("inf")


def _progress_bar(total: int | None) -> Any:
    tqdm: Any = importlib.import_module("tqdm.auto").tqdm  # checked by the executor
    return tqdm(total=total, unit="item", desc="batch")


class Run:
    """The state of one batch. Nothing is scheduled until :meth:`start`.

    ``streaming`` runs deliver items through :attr:`chan` (outputs are not kept);
    other runs fill :attr:`outputs` in input order. :attr:`done` is set once every worker
    has ended and :attr:`stats` is known.
    """

    def __init__(
        self,
        ex: BatchExecutor[Any, Any],
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        streaming: bool,
        progress: bool,
        on_progress: Callable[[int, int | None], Any] | None,
        timeout: float | bool | None = True,
    ) -> None:
        cfg = ex.config
        # The batch timeout: the config's unless given (a chunk run on a Ray actor gets the
        # time its batch has left).
        self.timeout = cfg.timeout if timeout is True else timeout
        self.ex = ex
        self.loop = asyncio.get_running_loop()
        if ex.backend is None:  # a store-backed cached agent reads its store in bulk
            inputs = prefetching(ex.agent, inputs)
        self.inputs = Inputs(inputs)
        self.fail_fast = cfg.error_policy is ErrorPolicy.FAIL_FAST
        self.stop: Stop | None = None
        self.fatal: BaseException | None = None
        self.errors: list[BatchError] = []
        self.tally = Tally(ex._item_hist)
        self.meter = Meter()  # what the call's wrappers report: retries, throttled seconds
        self.calls = 0  # calls of the (layered) agent started by the general worker
        self.streaming = streaming
        self.chan: Channel | None = Channel(max(ex._ceiling, 16)) if streaming else None
        self.stats: BatchStats | None = None
        total = self.inputs.total
        self.grow = total is None and not streaming
        self.outputs: list[Any] = [None] * total if total is not None and not streaming else []
        self.bar = _progress_bar(total) if progress else None
        self.on_progress = on_progress
        self.progress = self.bar is not None or on_progress is not None
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tasks: list[asyncio.Task[None]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.alive = 0
        self.t0 = 0.0
        self.dispatch: Any = None  # the Ray dispatchers, when the executor has a backend

    def start(self) -> Run:
        """Schedule the workers and the batch timer; returns ``self``."""
        total = self.inputs.total
        self.t0 = time.perf_counter()
        backend = self.ex.backend
        if backend is not None:
            from .raybackend import RayDispatch

            self.ex._begin()  # counts as running until _finish
            try:
                self.dispatch = RayDispatch(self, backend)
            except BaseException:
                self.ex._run_ended()
                raise
            coros = self.dispatch.coroutines()
        else:
            ceiling = self.ex._ceiling
            n = ceiling if total is None else min(ceiling, total)
            fn = self.ex._async_call(self.loop)  # counts as running until _finish
            lean = not (self.streaming or self.progress) and self.inputs.pairs is not None
            coros = [self._lean_worker(fn) if lean else self._worker(fn) for _ in range(n)]
        if total == 0:
            for c in coros:
                c.close()
            coros = []
        self.alive = len(coros)
        for coro in coros:
            t = self.loop.create_task(coro)
            t.add_done_callback(self._worker_done)
            self.tasks.append(t)
        if self.timeout is not None:
            self.timer = self.loop.call_later(self.timeout, self._timed_out_batch)
        if not coros:
            self._finish()
        return self

    def _timed_out_batch(self) -> None:
        if self.dispatch is None:
            self.cancel(Stop.TIMEOUT)
            return
        # Ray chunks carry the deadline and report their running calls as timed out
        # themselves; take nothing more, and cancel what has not reported after a grace.
        if self.stop is None:
            self.stop = Stop.TIMEOUT
        self.inputs.stop()
        from .raybackend import _TIMEOUT_GRACE_S

        self.timer = self.loop.call_later(_TIMEOUT_GRACE_S, self.cancel, Stop.TIMEOUT)

    # --- stopping ------------------------------------------------------------------------

    def cancel(self, why: Stop) -> None:
        """Stop every worker (idempotent; the first reason wins)."""
        if self.stop is None:
            self.stop = why
        self.inputs.stop()
        cur = asyncio.current_task(self.loop) if self.loop.is_running() else None
        for t in self.tasks:
            if t is not cur:
                t.cancel()

    def _fatal(self, e: BaseException) -> None:
        if self.fatal is None:
            self.fatal = e
        self.cancel(Stop.FATAL)

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
        taken = self.inputs.taken
        total = self.inputs.total
        if self.dispatch is not None:
            self.dispatch.cancel_remote()
        if total is not None and self.stop is None and taken < total:
            # The iterable ran out before its len(): count what it gave.
            total = taken
            del self.outputs[taken:]
        m = self.meter
        self.tally.flush()
        self.stats = self.tally.to_stats(
            total if total is not None else taken,
            duration,
            attempts=self.calls + m.calls,
            throttled_s=m.throttled_s,
            rerun=0 if self.dispatch is None else self.dispatch.rerun,
        )
        self.ex._record(self.stats)
        self.ex._run_ended()
        if self.chan is not None:
            self.chan.close()
        if not self.done.done():
            self.done.set_result(None)

    async def wait_closed(self) -> None:
        """Cancel what still runs and wait until every worker has ended."""
        self.cancel(Stop.CLOSED)
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending)

    # --- recording -----------------------------------------------------------------------

    def _progressed(self) -> None:
        if self.progress:
            if self.bar is not None:
                self.bar.update(1)
            if self.on_progress is not None:
                self.on_progress(self.tally.finished, self.inputs.total)

    def fail(self, i: int, x: Any, err: BaseException, dt: float) -> None:
        """Item ``i`` failed after ``dt`` s: the one place a failure is recorded."""
        self.tally.record(dt, False)
        self.errors.append(BatchError(i, x, err))
        self._progressed()
        if self.chan is not None:
            self.chan.push_nowait(BatchItem(i, x, None, err))
        if self.fail_fast:
            self.cancel(Stop.FAIL_FAST)

    def _timed_out(self, i: int) -> BatchTimeoutError:
        return BatchTimeoutError(
            f"the batch timeout ({self.ex.config.timeout} s) passed while item {i} was running"
        )

    # --- workers -------------------------------------------------------------------------

    async def _lean_worker(self, fn: Call) -> None:
        """The lean loop: no semaphore, no item timeout, no progress, no stream."""
        pc = time.perf_counter
        pairs = self.inputs.pairs
        assert pairs is not None
        outputs = self.outputs
        grow = self.grow
        # Successes are counted in locals (the hot path); failures go through fail().
        ok, calls, t_sum, t_min, t_max = 0, 0, 0.0, _INF, 0.0
        i, x, hi = -1, None, -1
        t0 = 0.0
        # A named executor's durations, observed a block at a time (see Tally.observe).
        durations: list[float] | None = None if self.tally.hist is None else []
        METER.set(self.meter)
        try:
            for i, x in pairs:
                hi = i
                if grow:
                    outputs.append(None)
                calls += 1
                t0 = pc()
                try:
                    outputs[i] = await fn(x)
                except Exception as e:
                    self.fail(i, x, e, pc() - t0)
                    if self.stop is not None:
                        return
                    continue
                dt = pc() - t0
                ok += 1
                t_sum += dt
                if dt < t_min:
                    t_min = dt
                if dt > t_max:
                    t_max = dt
                if durations is not None:
                    durations.append(dt)
                    if len(durations) >= BLOCK:
                        self.tally.observe(durations)
                        durations.clear()
        except asyncio.CancelledError:
            # Only `await fn(x)` suspends, so item i was running.
            if self.stop is Stop.TIMEOUT:
                self.fail(i, x, self._timed_out(i), pc() - t0)
        except BaseException as e:  # the input iterable raised
            self._fatal(e)
        finally:
            if durations:
                self.tally.observe(durations)
            self.tally.add(ok, t_sum, t_min, t_max)
            self.calls += calls
            self.inputs.took(hi)

    async def _next(self) -> tuple[int, Any] | None:
        pairs = self.inputs.pairs
        if pairs is not None:  # a sync iterable: no coroutine per pull
            nxt = next(pairs, None)
            if nxt is not None:
                self.inputs.took(nxt[0])
        else:
            nxt = await self.inputs.pull()
        if nxt is not None and self.grow:
            self.outputs.append(None)
        return nxt

    async def _worker(self, fn: Call) -> None:
        """The general loop: progress and streaming."""
        pc = time.perf_counter
        chan = self.chan
        METER.set(self.meter)
        try:
            while self.stop is None:
                nxt = await self._next()
                if nxt is None:
                    break
                i, x = nxt
                self.calls += 1
                t0 = pc()
                try:
                    out = await fn(x)
                except Exception as e:
                    self.fail(i, x, e, pc() - t0)
                    if self.stop is not None:
                        return
                    continue
                except asyncio.CancelledError:
                    if self.stop is Stop.TIMEOUT:
                        self.fail(i, x, self._timed_out(i), pc() - t0)
                    raise
                dt = pc() - t0
                if not self.streaming:
                    self.outputs[i] = out
                self.tally.record(dt, True)
                self._progressed()
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
            self._fatal(e)
