"""The bounded buffer between a streaming run's workers and its reader."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .results import BatchItem

__all__ = ["Channel"]


class Channel:
    """The stream's bounded buffer: workers wait while it is full, the reader while it is empty.

    ``push_nowait`` ignores the bound; it is used only for the few items recorded while their
    worker is being cancelled (at most one per worker).
    """

    __slots__ = ("buf", "cap", "closed", "getter", "putters")

    def __init__(self, cap: int) -> None:
        self.buf: deque[BatchItem[Any, Any]] = deque()
        self.cap = cap
        self.closed = False
        self.getter: asyncio.Future[None] | None = None
        self.putters: deque[asyncio.Future[None]] = deque()

    def push_nowait(self, item: BatchItem[Any, Any]) -> None:
        self.buf.append(item)
        g = self.getter
        if g is not None:
            self.getter = None
            if not g.done():
                g.set_result(None)

    async def push(self, item: BatchItem[Any, Any]) -> None:
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

    def drain(self, first: BatchItem[Any, Any] | None = None) -> list[BatchItem[Any, Any]]:
        """``first`` (if given) and every item buffered now, waking the workers waiting."""
        out = [] if first is None else [first]
        out.extend(self.buf)
        self.buf.clear()
        for _ in range(len(out)):  # as many workers as slots freed
            if not self.putters:
                break
            self.push_wake()
        return out

    async def pop(self) -> BatchItem[Any, Any] | None:
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
