"""Items as they finish: :class:`BatchStream` (async) and the blocking generator over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .results import BatchItem, BatchStats
from .run import Run
from .stop import Stop

if TYPE_CHECKING:
    from .executor import BatchExecutor

__all__ = ["BatchStream", "drive"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class BatchStream(AsyncIterator[BatchItem[I, O]], Generic[I, O]):
    """The async iterator :meth:`BatchExecutor.astream` returns; items in completion order.

    Leaving the ``async for`` early cancels the rest (at once when the iterator is dropped;
    ``await stream.aclose()`` or ``async with`` also waits until every worker has ended).
    ``stats`` holds the batch's :class:`BatchStats` once it has ended.
    """

    def __init__(
        self,
        ex: BatchExecutor[I, O],
        inputs: Iterable[Any] | AsyncIterable[Any],
        progress: bool,
        on_progress: Callable[[int, int | None], Any] | None,
    ) -> None:
        self._ex = ex
        self._inputs: Iterable[Any] | AsyncIterable[Any] | None = inputs
        self._progress = progress
        self._on_progress = on_progress
        self._run: Run | None = None
        self._closed = False

    @property
    def stats(self) -> BatchStats | None:
        """The batch's figures once it has ended (``None`` before)."""
        return self._run.stats if self._run is not None else None

    def __aiter__(self) -> BatchStream[I, O]:
        return self

    async def __anext__(self) -> BatchItem[I, O]:
        if self._closed:
            raise StopAsyncIteration
        run = self._run
        if run is None:
            if self._inputs is None:
                raise StopAsyncIteration
            self._ex._check_open()
            run = Run(
                self._ex,
                self._inputs,
                streaming=True,
                progress=self._progress,
                on_progress=self._on_progress,
            )
            self._run = run.start()
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

    async def __aenter__(self) -> BatchStream[I, O]:
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
            run.cancel(Stop.CLOSED)
        else:
            run.loop.call_soon_threadsafe(run.cancel, Stop.CLOSED)


def drive(s: BatchStream[I, O]) -> Iterator[BatchItem[I, O]]:
    """A blocking generator over ``s``, on a private loop run between the items it yields."""
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
