"""Read-ahead for a batch over a store-backed :class:`~agentperf.CachedAgent`: the inputs are
looked up in the store in bulk (one pipelined ``MGET`` round trip per window), so that 10,000
entries in the store cost about 10,000 / ``WINDOW`` round trips instead of 10,000.

The inputs are still taken lazily: at most two windows are held at once (the one being handed
to the workers and the next, whose lookup is in flight meanwhile). What the store holds fills
the in-process tier for the entries' remaining TTL; the workers' calls then hit it. A store
that fails is counted and skipped: the calls go their usual way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

__all__ = ["WINDOW", "Prefetch", "prefetching"]

WINDOW = 500
"""Inputs looked up per round trip."""


def prefetching(agent: Any, inputs: Iterable[Any] | AsyncIterable[Any]) -> Any:
    """``inputs`` read ahead in the store of ``agent`` when it is a store-backed cached
    agent, else ``inputs`` unchanged."""
    tier = getattr(agent, "_tier", None)
    if tier is None or not hasattr(agent, "_put"):
        return inputs
    return Prefetch(agent, inputs)


class Prefetch:
    """An async iterable over ``inputs`` that looks each window up in the store first.

    ``len()`` is the input's when it has one (the items past it are not taken)."""

    __slots__ = ("_agent", "_inputs", "_total")

    def __init__(self, agent: Any, inputs: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._agent = agent
        self._inputs = inputs
        self._total: int | None = None
        if isinstance(inputs, Iterable):
            try:
                self._total = len(inputs)  # type: ignore[arg-type]
            except TypeError:
                self._total = None

    def __len__(self) -> int:
        if self._total is None:
            raise TypeError("this input has no len()")
        return self._total

    @property
    def total(self) -> int | None:
        """The input's ``len()``, or ``None``."""
        return self._total

    async def __aiter__(self) -> AsyncIterator[Any]:
        agent, tier = self._agent, self._agent._tier
        take = _taker(self._inputs, self._total)
        loop = asyncio.get_running_loop()
        # Two windows are filled ahead of the calls: keep them well inside the in-process tier.
        size = max(1, min(WINDOW, agent.config.max_size // 4))
        window = await take(size)
        fetch = loop.create_task(tier.aprefetch(agent, window)) if window else None
        nxt_fetch: list[asyncio.Task[None] | None] = [None]
        try:
            while window:
                after = await take(size)
                nxt_fetch[0] = loop.create_task(tier.aprefetch(agent, after)) if after else None
                assert fetch is not None
                await fetch
                for x in window:
                    yield x
                window, fetch, nxt_fetch[0] = after, nxt_fetch[0], None
        finally:
            # Not awaited: the run stopped early; the lookups in flight end on their own.
            if fetch is not None:
                fetch.cancel()
            if nxt_fetch[0] is not None:
                nxt_fetch[0].cancel()


def _taker(inputs: Iterable[Any] | AsyncIterable[Any], total: int | None) -> Any:
    """``await take(n)``: the next ``n`` items at most (fewer at the end)."""
    if isinstance(inputs, AsyncIterable) and not isinstance(inputs, Iterable):
        ait = aiter(inputs)

        async def atake(n: int) -> list[Any]:
            out: list[Any] = []
            for _ in range(n):
                try:
                    out.append(await anext(ait))
                except StopAsyncIteration:
                    break
            return out

        return atake
    it: Iterator[Any] = iter(inputs)
    left = [total]

    async def take(n: int) -> list[Any]:
        if left[0] is not None:
            n = min(n, left[0])
            left[0] -= n
        out: list[Any] = []
        if n <= 0:
            return out
        for x in it:
            out.append(x)
            if len(out) >= n:
                break
        return out

    return take
