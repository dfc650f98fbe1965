"""Lease renewal for leaders of a store-backed cached agent: while an agent runs, its lease in
the store is renewed every third of its length, so that only a dead leader's lease runs out.

Blocking leaders share one daemon thread (:data:`RENEWER`), started on demand and ended when it
has nothing to renew, at exit, and in a forked child (whose parent's leases are not its own).
Async leaders renew from a task on their own loop (:func:`arenewing`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from . import _lifecycle
from .store import StoreError

__all__ = ["RENEWER", "Renewer", "arenewing"]


class Renewer:
    """One thread renewing every blocking leader's lease of this process."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._leases: dict[int, tuple[Any, str, str, float]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @contextlib.contextmanager
    def renewing(self, store: Any, digest: str, owner: str, lease: float) -> Iterator[None]:
        """Renew ``owner``'s lease on ``digest`` while the block runs."""
        token = self._add(store, digest, owner, lease)
        try:
            yield
        finally:
            with self._cond:
                self._leases.pop(token, None)

    def _add(self, store: Any, digest: str, owner: str, lease: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._leases[token] = (store, digest, owner, lease)
            heapq.heappush(self._heap, (time.monotonic() + lease / 3.0, token))
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="agentperf-lease-renewer", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return token

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        self._thread = None
                        return
                    while self._heap and self._heap[0][1] not in self._leases:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        if not self._cond.wait(5.0) and not self._heap:
                            self._thread = None  # idle: end; the next lease starts one
                            return
                        continue
                    due, token = self._heap[0]
                    left = due - time.monotonic()
                    if left <= 0.0:
                        heapq.heappop(self._heap)
                        store, digest, owner, lease = self._leases[token]
                        heapq.heappush(self._heap, (time.monotonic() + lease / 3.0, token))
                        break
                    self._cond.wait(left)
            try:  # outside the lock: a slow store delays only the other renewals
                store.renew(digest, owner, lease)
            except (StoreError, ValueError, TypeError):
                pass  # a failing store: the tier goes on without it

    def stop(self) -> None:
        """End the thread (at exit); leases still held simply run out."""
        with self._cond:
            self._stopping = True
            t = self._thread
            self._cond.notify_all()
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)

    def after_fork_in_child(self) -> None:
        self._reset()

    def active(self) -> int:
        """Leases being renewed now (for tests)."""
        with self._cond:
            return len(self._leases)

    def running(self) -> bool:
        """Whether the thread is alive (for tests)."""
        t = self._thread
        return t is not None and t.is_alive()


RENEWER = Renewer()
_lifecycle.at_fork(after_in_child=RENEWER.after_fork_in_child)
atexit.register(RENEWER.stop)


@contextlib.asynccontextmanager
async def arenewing(store: Any, digest: str, owner: str, lease: float) -> AsyncIterator[None]:
    """Renew ``owner``'s lease on ``digest`` from a task while the block runs (cancelled when
    it ends, however it ends)."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease / 3.0)
            try:
                await store.arenew(digest, owner, lease)
            except (StoreError, ValueError, TypeError):
                pass

    task = asyncio.get_running_loop().create_task(renew())
    try:
        yield
    finally:
        # Not awaited: awaiting here could swallow a cancellation of the leader itself.
        task.cancel()
