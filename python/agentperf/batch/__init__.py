"""Run one agent over many inputs with bounded concurrency: :class:`BatchExecutor`.

>>> import agentperf as ap
>>> async def double(x: int) -> int:
...     return 2 * x
>>> with ap.BatchExecutor(double, max_concurrency=4) as ex:
...     ex.execute(range(5)).outputs
[0, 2, 4, 6, 8]

How it runs (``run``). A fixed set of ``min(max_concurrency, len(inputs))`` worker tasks pulls
inputs one at a time from the (sync or async) iterable, so inputs are consumed lazily and the
per-item cost is a function call, not an asyncio task. Async agents are awaited on the loop;
blocking agents run in this executor's own thread pool of ``max_concurrency`` threads (never
the loop's small default executor), so they really reach the limit.

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

The package, one concept a module: ``results`` (the types a batch returns), ``inputs`` (the
lazy input, with ``taken`` and ``total``), ``tally`` (counts and timings), ``stop`` (why a run
ended early), ``run`` (one batch: workers, timer, the one failure path, ``start()``),
``channel`` and ``stream`` (items as they finish), ``checks`` (what it is given),
``attempt`` (the layers around one agent call), ``raybackend`` (the items on Ray actors),
``executor`` (what users hold).
"""

from __future__ import annotations

from .executor import BatchExecutor
from .raybackend import RayBackend
from .results import BatchError, BatchExecutorStats, BatchItem, BatchResult, BatchStats
from .stop import Stop
from .stream import BatchStream

__all__ = [
    "BatchError",
    "BatchExecutor",
    "BatchExecutorStats",
    "BatchItem",
    "BatchResult",
    "BatchStats",
    "BatchStream",
    "RayBackend",
    "Stop",
]
