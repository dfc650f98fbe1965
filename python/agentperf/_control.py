"""``cache_control``: per-context switches for every cached agent called inside the block.

The switches live in a :class:`contextvars.ContextVar`, so they follow the calling thread or
task into nested pools, batches and tasks started inside the block. The Rust hit path reads
them only while at least one block is open somewhere (one atomic load otherwise).
"""

from __future__ import annotations

import contextvars
from typing import Any

from . import _agentperf
from ._config import boolean

__all__ = ["CONTROL", "cache_control", "current"]

CONTROL: contextvars.ContextVar[tuple[bool, bool] | None] = contextvars.ContextVar(
    "agentperf_cache_control", default=None
)
"""``(refresh, no_store)`` of the innermost open ``cache_control``, or ``None``."""

_NONE = (False, False)


def current() -> tuple[bool, bool]:
    """``(refresh, no_store)`` in force for the caller."""
    return CONTROL.get() or _NONE


class cache_control:
    """Change how cached agents treat the calls made inside a ``with`` block.

    ``refresh=True``: skip the lookups (in-process and store), run the agent and store its
    fresh output in both tiers. ``no_store=True``: read as usual, but write neither tier (an
    entry found in the store is returned without filling the in-process cache; a miss runs
    the agent and keeps nothing). Both hold for agents without a store too (``refresh`` then
    skips the in-process lookup and replaces the entry).

    It follows :mod:`contextvars`, so a cached agent nested in a pool or called by a batch
    inside the block sees it. An inner block replaces the outer one's switches for its
    duration. A task started inside the block and still running after it ends keeps a copy
    of the context, but the switches are read only while some block is open.

    >>> import agentperf as ap
    >>> calls = []
    >>> c = ap.CachedAgent(lambda x: calls.append(x) or x, ttl=60.0)
    >>> c.execute(1), c.execute(1), len(calls)
    (1, 1, 1)
    >>> with ap.cache_control(refresh=True):
    ...     c.execute(1)
    1
    >>> len(calls)
    2
    """

    __slots__ = ("_tokens", "no_store", "refresh")

    def __init__(self, refresh: bool = False, no_store: bool = False) -> None:
        self.refresh = boolean("refresh", refresh)
        self.no_store = boolean("no_store", no_store)
        self._tokens: list[contextvars.Token[tuple[bool, bool] | None]] = []

    def __enter__(self) -> cache_control:
        self._tokens.append(CONTROL.set((self.refresh, self.no_store)))
        _agentperf._cache_controls(1)
        return self

    def __exit__(self, *exc: object) -> None:
        _agentperf._cache_controls(-1)
        CONTROL.reset(self._tokens.pop())

    def __repr__(self) -> str:
        return f"cache_control(refresh={self.refresh}, no_store={self.no_store})"

    def __reduce__(self) -> Any:
        return (cache_control, (self.refresh, self.no_store))
