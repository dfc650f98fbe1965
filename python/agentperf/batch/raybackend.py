"""Run a batch's items on a Ray cluster: :class:`RayBackend`.

The agent (with its wrappers) goes once to each of ``actors`` async Ray actors; each actor runs
the items it is sent through an executor of its own (``max_concurrency / actors`` calls at
once, the same ``item_timeout``, ``retry`` and error policy), so one process's semantics hold
on every actor. The driver takes inputs lazily and sends them in chunks, two chunks in flight
per actor, so a trivial item costs a few microseconds rather than a Ray call. Results come back
a chunk at a time and are recorded as in one process; an agent's exception arrives as an equal
copy (same type, same args).

Stopping: leaving a stream early or a fail-fast stop cancels the actors' running chunks
(``ray.cancel``, which cancels the actor's asyncio task); the batch ``timeout`` is handed to
every chunk as its deadline, so calls still running then fail with ``BatchTimeoutError`` on
the actor, as they would here. An actor that dies has the items of its unfinished chunks run
again on the others (``BatchStats.rerun``); when every actor is gone, the items left fail with
the actor's error.

``ray`` is imported only when a :class:`RayBackend` is made (extra ``agentperf-rs[ray]``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from .._config import integer, show
from .results import BatchError, BatchItem
from .stop import Stop

if TYPE_CHECKING:
    from .run import Run

__all__ = ["RayBackend"]

_IN_FLIGHT_PER_ACTOR = 2
_CHUNK_MAX = 1024
_TIMEOUT_GRACE_S = 2.0  # how long the driver waits for chunks to report their own timeout


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "RayBackend needs Ray: install the extra with pip install 'agentperf-rs[ray]'"
        ) from None
    return ray


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives Ray's pickling, else a ``RuntimeError`` that says what it was."""
    cloudpickle = _ray().cloudpickle
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


class _ChunkRunner:
    """The actor's body: an executor of its own, shared by every chunk it is sent."""

    def __init__(self, agent: Any, concurrency: int, options: dict[str, Any]) -> None:
        from ..semaphore import Semaphore
        from .executor import BatchExecutor

        # One permit pool for every chunk running here at once.
        self.ex: Any = BatchExecutor(
            agent, max_concurrency=concurrency, semaphore=Semaphore(concurrency), **options
        )

    async def run(self, items: list[Any], timeout: float | None) -> AsyncIterator[tuple[Any, ...]]:
        """Run one chunk, yielding what has finished as it finishes (a Ray streaming call).

        Each message: ``(successes, errors, seconds, min_s, max_s, attempts, throttled_s)``;
        successes and errors by position in the chunk, the figures since the last message.
        """
        async for msg in self.ex._stream_chunk(items, timeout):
            ok, errors, *figures = msg
            yield (ok, [(pos, _portable(e)) for pos, e in errors], *figures)

    def ping(self) -> bool:
        return True


class RayBackend:
    """Where a :class:`~agentperf.BatchExecutor` runs its items: Ray actors.

    >>> backend = RayBackend(actors=2, chunk_size=64)  # doctest: +SKIP
    >>> ex = ap.BatchExecutor(agent, max_concurrency=256, backend=backend)  # doctest: +SKIP

    ``actors`` defaults to the cluster's CPUs; ``chunk_size`` (items per Ray call) to twice an
    actor's share of ``max_concurrency``, at most 1,024; ``actor_options`` go to
    ``ActorClass.options()`` (``num_cpus``, ``resources``, ...). If Ray is not initialised,
    ``ray.init()`` is called with its defaults. The backend owns its actors: closing the
    executor (or :meth:`close`) ends them.
    """

    def __init__(
        self,
        actors: int | None = None,
        *,
        chunk_size: int | None = None,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        self.actors = None if actors is None else integer("actors", actors, minimum=1)
        self.chunk_size = (
            None if chunk_size is None else integer("chunk_size", chunk_size, minimum=1)
        )
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options={show(actor_options)}: expected a dict or None")
        self.actor_options = dict(actor_options or {})
        self._ray = _ray()
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._owner: Any = None  # the executor whose agent the actors hold
        self._closed = False

    def __repr__(self) -> str:
        return f"RayBackend(actors={self.actors}, chunk_size={self.chunk_size})"

    # --- actors --------------------------------------------------------------------------

    def _count(self) -> int:
        if self.actors is not None:
            return self.actors
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def start(self, ex: Any) -> list[Any]:
        """The actors for executor ``ex`` (made on first use: the agent goes once to each)."""
        ray = self._ray
        with self._lock:
            if self._closed:
                raise RuntimeError("this RayBackend is closed")
            if self._owner is not None and self._owner is not ex:
                raise ValueError("backend=: a RayBackend serves one BatchExecutor")
            if self._handles:
                return list(self._handles)
            if not ray.is_initialized():
                ray.init()
            n = self._count()
            per = max(1, math.ceil(ex._ceiling / n))
            cfg = ex.config
            options = {
                "item_timeout": cfg.item_timeout,
                "error_policy": cfg.error_policy,
                "retry": ex.retry,
                # Cluster-wide limiters only (the executor refuses others): each actor
                # rebuilds them from their store's URL and joins the same budget.
                "rate_limit": list(ex.rate_limit) or None,
                "timeout": None,
                "enable_stats": False,
            }
            cls = ray.remote(_ChunkRunner)
            opts = {"max_concurrency": max(8, 4 * _IN_FLIGHT_PER_ACTOR), "num_cpus": 0}
            opts.update(self.actor_options)
            try:
                handles = [cls.options(**opts).remote(ex.agent, per, options) for _ in range(n)]
                ray.get([h.ping.remote() for h in handles])
            except Exception as e:
                if "serializ" in str(e).lower() or "pickl" in str(e).lower():
                    raise TypeError(
                        f"agent={show(ex.agent)}: Ray cannot serialise it ({e}); build it "
                        "inside the actors instead, e.g. with an AgentPool whose factory "
                        "creates it"
                    ) from e
                raise
            self._handles = handles
            self._owner = ex
            return list(handles)

    def chunk_for(self, ex: Any, n_actors: int) -> int:
        """Items per Ray call for ``ex``."""
        if self.chunk_size is not None:
            return self.chunk_size
        per: int = max(1, math.ceil(ex._ceiling / max(1, n_actors)))
        return min(_CHUNK_MAX, max(16, 2 * per))

    def close(self) -> None:
        """End the actors. Idempotent."""
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for h in handles:
            try:
                self._ray.kill(h)
            except Exception:  # already gone
                pass

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the driver side of a run ---------------------------------------------------------------


class RayDispatch:
    """One run's dispatchers: ``2 x actors`` tasks, each sending chunks to its actor."""

    def __init__(self, run: Run, backend: RayBackend) -> None:
        self.run = run
        self.backend = backend
        self.handles = backend.start(run.ex)
        self.alive = set(range(len(self.handles)))
        self.size = backend.chunk_for(run.ex, len(self.handles))
        self.requeued: deque[list[tuple[int, Any]]] = deque()
        self.refs: set[Any] = set()
        self.changed = asyncio.Event()  # a chunk finished or was requeued
        self.rerun = 0
        self.deadline = None if run.timeout is None else time.monotonic() + run.timeout

    def coroutines(self) -> list[Coroutine[Any, Any, None]]:
        """The dispatchers to run as tasks: two for each actor."""
        n = len(self.handles)
        return [self._dispatcher(k % n) for k in range(n * _IN_FLIGHT_PER_ACTOR)]

    async def _take(self) -> list[tuple[int, Any]]:
        if self.requeued:
            return self.requeued.popleft()
        run = self.run
        inputs = run.inputs
        if inputs.pairs is not None:
            chunk = list(itertools.islice(inputs.pairs, self.size))
            if chunk:
                inputs.took(chunk[-1][0])
        else:
            chunk = []
            while len(chunk) < self.size:
                nxt = await inputs.pull()
                if nxt is None:
                    break
                chunk.append(nxt)
        if run.grow:
            run.outputs.extend([None] * len(chunk))
        return chunk

    async def _dispatcher(self, k: int) -> None:
        ray = self.backend._ray
        run = self.run
        try:
            while run.stop is None and k in self.alive:
                chunk = await self._take()
                if not chunk:
                    if not self.refs:
                        return
                    # Chunks still out may come back to be run again: wait for one.
                    self.changed.clear()
                    await self.changed.wait()
                    continue
                left = None if self.deadline is None else self.deadline - time.monotonic()
                call = self.handles[k].run.options(num_returns="streaming")
                gen = call.remote([x for _, x in chunk], left)
                self.refs.add(gen)
                reported: set[int] = set()
                try:
                    async for ref in gen:
                        self._record(chunk, await ref, reported)
                except ray.exceptions.RayActorError as e:
                    self.alive.discard(k)
                    self._lost([p for n, p in enumerate(chunk) if n not in reported], e)
                    return
                except asyncio.CancelledError:
                    ray.cancel(gen)
                    raise
                finally:
                    self.refs.discard(gen)
                    self.changed.set()
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # the input iterable or on_progress raised
            run._fatal(e)

    def _lost(self, chunk: list[tuple[int, Any]], err: BaseException) -> None:
        """A dead actor's unreported items: run again elsewhere, or failed if none is left."""
        if not chunk:
            return
        if self.alive:
            self.requeued.append(chunk)
            self.rerun += len(chunk)
            self.changed.set()
            return
        run = self.run
        lost = [chunk, *self.requeued]
        self.requeued.clear()
        for c in lost:
            for i, x in c:
                run.tally.failed += 1
                run.errors.append(BatchError(i, x, err))
                if run.chan is not None:
                    run.chan.push_nowait(BatchItem(i, x, None, err))

    def _record(
        self, chunk: list[tuple[int, Any]], msg: tuple[Any, ...], reported: set[int]
    ) -> None:
        run = self.run
        successes, errors, seconds, lo, hi, attempts, throttled = msg
        t = run.tally
        t.add(len(successes), seconds, lo, hi)
        t.failed += len(errors)
        run.calls += attempts
        run.meter.add_throttled(throttled)
        chan = run.chan
        for pos, out in successes:
            reported.add(pos)
            i, x = chunk[pos]
            if chan is not None:
                chan.push_nowait(BatchItem(i, x, out, None))
            else:
                run.outputs[i] = out
        for pos, e in errors:
            reported.add(pos)
            i, x = chunk[pos]
            run.errors.append(BatchError(i, x, e))
            if chan is not None:
                chan.push_nowait(BatchItem(i, x, None, e))
        if run.progress:
            for _ in range(len(successes) + len(errors)):
                run._progressed()
        if errors and run.fail_fast:
            run.cancel(Stop.FAIL_FAST)

    def cancel_remote(self) -> None:
        """Cancel every chunk still running on the actors."""
        ray = self.backend._ray
        for ref in list(self.refs):
            try:
                ray.cancel(ref)
            except Exception:  # already finished
                pass
