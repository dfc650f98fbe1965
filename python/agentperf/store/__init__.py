"""Second-tier stores for cached results, shared by processes (and hosts, with Redis).

* :class:`RedisStore` — entries in Redis (redis-py imported only when one is made).
* :class:`SqliteStore` — entries in one SQLite file (WAL), for one host, kept across restarts.
* :class:`Store` — the protocol both follow: sync methods and ``a...`` async twins, values as
  ``bytes``, leases for single flight across processes, :meth:`Store.wait_value` for followers.
* :class:`StoreError` — every failure of a store (down, slow, locked); :class:`BreakerOpenError`
  when the store was skipped by its :class:`Breaker`.

Every key a store writes for a namespace starts with
``agentperf:{KEY_FORMAT_VERSION}:{namespace}:`` (entries: ``...:{digest}``, leases:
``...:{digest}:lease``).
"""

from __future__ import annotations

from ._base import KEY_FORMAT_VERSION, BreakerOpenError, Store, StoreError, new_owner
from .breaker import Breaker
from .redis import RedisStore
from .sqlite import SqliteStore

__all__ = [
    "KEY_FORMAT_VERSION",
    "Breaker",
    "BreakerOpenError",
    "RedisStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "new_owner",
]
