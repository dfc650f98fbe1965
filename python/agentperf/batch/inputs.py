"""A batch's input, taken lazily one item at a time from a sync or an async iterable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

__all__ = ["Inputs"]


class Inputs:
    """The items of a batch with their indexes, taken only when a worker is free.

    ``total`` is ``len(inputs)`` when the input has a length (and what is taken stops there,
    so an object whose ``len()`` lies is cut at it), else ``None``. ``taken`` counts the items
    taken so far. A sync iterable is read through :attr:`pairs` (no coroutine per item); an
    async one through :meth:`pull`, one puller at a time (async generators insist on it).
    """

    __slots__ = ("_aiter", "_exhausted", "_lock", "hi", "pairs", "total")

    def __init__(self, inputs: Iterable[Any] | AsyncIterable[Any]) -> None:
        self.hi = -1  # highest index taken
        self.total: int | None = None
        self.pairs: Iterator[tuple[int, Any]] | None = None
        self._aiter: AsyncIterator[Any] | None = None
        self._exhausted = False
        if isinstance(inputs, AsyncIterable) and not isinstance(inputs, Iterable):
            self._aiter = aiter(inputs)
            self._lock = asyncio.Lock()
            from .prefetch import Prefetch

            if isinstance(inputs, Prefetch):  # a store read-ahead keeps its input's len()
                self.total = inputs.total
            return
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
        self.pairs = (
            zip(range(self.total), it, strict=False) if self.total is not None else enumerate(it)
        )

    @property
    def taken(self) -> int:
        """Items taken from the input so far."""
        return self.hi + 1

    def took(self, i: int) -> None:
        """A worker took item ``i`` from :attr:`pairs`."""
        if i > self.hi:
            self.hi = i

    async def pull(self) -> tuple[int, Any] | None:
        """The next ``(index, item)`` of an async iterable, or ``None`` once it has ended."""
        assert self._aiter is not None
        async with self._lock:
            if self._exhausted:
                return None
            try:
                x = await anext(self._aiter)
            except StopAsyncIteration:
                self._exhausted = True
                return None
            i = self.hi = self.hi + 1
            return i, x

    def stop(self) -> None:
        """Take nothing more (the run stopped early)."""
        self._exhausted = True
