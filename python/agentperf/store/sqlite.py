"""``SqliteStore``: a persistent second tier in one SQLite file, for one host.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "cache.db")
>>> with SqliteStore(path, namespace="docs") as store:
...     store.set("abc123", b"value", ttl=60.0)
...     store.get("abc123")
b'value'
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .._closeable import Closeable
from ._base import (
    KEY_FORMAT_VERSION,
    Guard,
    StoreError,
    backoff,
    check_chunk,
    check_digest,
    check_lease_ttl,
    check_namespace,
    check_owner,
    check_poll,
    check_timeout,
    check_ttl,
    check_value,
    check_wait,
    make_breaker,
)
from .breaker import Breaker

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

# Tables carry the key format version: a release with another version ignores these rows.
_ENTRIES = f"agentperf_v{KEY_FORMAT_VERSION}_entries"
_LEASES = f"agentperf_v{KEY_FORMAT_VERSION}_leases"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_ENTRIES} (
    namespace TEXT NOT NULL,
    digest TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, digest)
);
CREATE INDEX IF NOT EXISTS {_ENTRIES}_expiry ON {_ENTRIES} (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {_LEASES} (
    namespace TEXT NOT NULL,
    digest TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (namespace, digest)
);
"""

_BATCH = 1000


_connection_class: Any = None


def _sqlite() -> Any:
    """sqlite3, imported on first use (``import agentperf`` stays fast), and a connection class
    that a ``WeakSet`` can hold (the base class has no weak references)."""
    global _connection_class
    import sqlite3

    if _connection_class is None:

        class _Connection(sqlite3.Connection):
            pass

        _connection_class = _Connection
    return sqlite3


class SqliteStore(Closeable):
    """Entries in one SQLite file, shared safely by the threads and processes of one host.

    ``SqliteStore(path, *, namespace="default", timeout=5.0)``. The file is in WAL mode; each
    thread has its own connection (made again after ``fork()``); writers that find the file
    locked wait up to ``timeout`` seconds (SQLite's ``busy_timeout``) and then fail with
    :class:`StoreError`. Concurrent writes of one key never conflict
    (``INSERT ... ON CONFLICT DO UPDATE``).

    Entries expire by wall-clock time (``time.time()``, shared by processes and kept across
    restarts): an expired row is never returned, and :meth:`purge` deletes them (a cached
    agent calls it at each cleanup interval). Leases are rows too, taken and renewed in single
    atomic statements. Followers learn of a value by polling (:meth:`wait_value`); SQLite has
    no notifications.

    The async twins (``aget`` ...) run the sync method in a worker thread
    (:func:`asyncio.to_thread`): SQLite calls are short and local, and the loop never blocks.

    ``breaker``: the :class:`Breaker` that skips the store after failures in a row (default:
    5 failures, 5 s); ``False`` disables it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "default",
        timeout: float | timedelta = 5.0,
        breaker: Breaker | bool | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a str or os.PathLike, got {path!r}")
        self._path = os.fspath(path)
        if self._path == "" or self._path == ":memory:":
            raise ValueError(f"path: needs a file that processes can share, got {self._path!r}")
        self._namespace = check_namespace(namespace)
        self._timeout = check_timeout("timeout", timeout)
        self._breaker = make_breaker(breaker)
        self._guard = Guard(f"SqliteStore({self._path!r}, namespace={namespace!r})", self._breaker)
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: a thread's connection closes when the thread ends and its local goes.
        self._conns: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
        self._pid = os.getpid()
        self._closed = False
        parent = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(parent):
            raise ValueError(f"path: folder {parent!r} does not exist")
        # Open (and create the schema) now, so a bad path fails here, not on the first call.
        self._guard.call("open", self._conn)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace: entries of other namespaces in the same file are never seen."""
        return self._namespace

    @property
    def path(self) -> str:
        """The SQLite file."""
        return self._path

    @property
    def breaker(self) -> Breaker:
        """The breaker guarding this store."""
        return self._breaker

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"SqliteStore({self._path!r}) is closed")
        pid = os.getpid()
        if pid != self._pid:
            # A forked child must not use its parent's connections (nor close them).
            with self._lock:
                if pid != self._pid:
                    self._pid = pid
                    self._conns = weakref.WeakSet()
                    self._local = threading.local()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        sq = _sqlite()
        conn = sq.connect(
            self._path,
            timeout=self._timeout,
            isolation_level=None,  # autocommit: every statement is its own transaction
            check_same_thread=False,  # only close() touches it from another thread
            factory=_connection_class,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            # Switching a new file to WAL and creating its tables while other processes open
            # it too can answer SQLITE_BUSY at once, without waiting on busy_timeout (SQLite
            # refuses rather than risk a deadlock): try again until the timeout.
            deadline = time.monotonic() + self._timeout
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                    if mode is None or str(mode[0]).lower() != "wal":
                        raise StoreError(
                            f"SqliteStore({self._path!r}): cannot use WAL mode ({mode!r})"
                        )
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.executescript(_SCHEMA)
                    break
                except sq.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.005)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._conns.add(conn)
        return conn

    def _run(self, op: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._guard.call(op, lambda: fn(self._conn()))

    def _row(self, digest: str) -> tuple[bytes, float | None] | None:
        now = time.time()

        def q(c: sqlite3.Connection) -> tuple[bytes, float | None] | None:
            row = c.execute(
                f"SELECT value, expires_at FROM {_ENTRIES} WHERE namespace = ? AND digest = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (self._namespace, digest, now),
            ).fetchone()
            return None if row is None else (bytes(row[0]), row[1])

        return self._run("get", q)

    # -- entries --------------------------------------------------------------------------

    def get(self, digest: str) -> bytes | None:
        """The live value of ``digest``, or ``None``."""
        row = self._row(check_digest(digest))
        return None if row is None else row[0]

    def get_with_ttl(self, digest: str) -> tuple[bytes, float] | None:
        """``(value, seconds left)`` (``math.inf`` when it never expires), or ``None``."""
        row = self._row(check_digest(digest))
        if row is None:
            return None
        value, expires = row
        return value, (float("inf") if expires is None else max(0.0, expires - time.time()))

    def ttl_left(self, digest: str) -> float | None:
        """Seconds until ``digest`` expires (``math.inf``: never), or ``None`` if missing."""
        got = self.get_with_ttl(digest)
        return None if got is None else got[1]

    def get_many(self, digests: Sequence[str], *, chunk_size: int = 500) -> list[bytes | None]:
        """The values of ``digests`` in order (``None`` for each miss), ``chunk_size`` a query."""
        keys = [check_digest(d) for d in digests]
        size = min(check_chunk(chunk_size), 900)  # under SQLite's bound on parameters
        now = time.time()

        def q(c: sqlite3.Connection) -> list[bytes | None]:
            found: dict[str, bytes] = {}
            for i in range(0, len(keys), size):
                chunk = keys[i : i + size]
                marks = ",".join("?" * len(chunk))
                for d, v in c.execute(
                    f"SELECT digest, value FROM {_ENTRIES} WHERE namespace = ?"
                    f" AND digest IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)",
                    (self._namespace, *chunk, now),
                ):
                    found[d] = bytes(v)
            return [found.get(d) for d in keys]

        return self._run("get_many", q)

    def set(self, digest: str, value: bytes, ttl: float | timedelta | None = None) -> None:
        """Write ``value`` for ``digest`` with its TTL (``None``: no expiry), in one statement."""
        digest = check_digest(digest)
        value = check_value(value)
        t = check_ttl(ttl)
        expires = None if t is None else time.time() + t
        self._run(
            "set",
            lambda c: c.execute(
                f"INSERT INTO {_ENTRIES} (namespace, digest, value, expires_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (namespace, digest) DO UPDATE"
                " SET value = excluded.value, expires_at = excluded.expires_at",
                (self._namespace, digest, value, expires),
            ),
        )

    def delete(self, digest: str) -> bool:
        """Remove ``digest``; whether a live entry was there."""
        digest = check_digest(digest)
        now = time.time()
        return self._run(
            "delete",
            lambda c: (
                c.execute(
                    f"DELETE FROM {_ENTRIES} WHERE namespace = ? AND digest = ?"
                    " RETURNING coalesce(expires_at > ?, 1)",
                    (self._namespace, digest, now),
                ).fetchall()
                == [(1,)]
            ),
        )

    def clear(self) -> int:
        """Remove every entry and lease of this namespace (others stay); entries removed."""

        def q(c: sqlite3.Connection) -> int:
            n = 0
            while True:
                cur = c.execute(
                    f"DELETE FROM {_ENTRIES} WHERE rowid IN (SELECT rowid FROM {_ENTRIES}"
                    " WHERE namespace = ? LIMIT ?)",
                    (self._namespace, _BATCH),
                )
                n += cur.rowcount
                if cur.rowcount < _BATCH:
                    break
            c.execute(f"DELETE FROM {_LEASES} WHERE namespace = ?", (self._namespace,))
            return n

        return self._run("clear", q)

    def purge(self) -> int:
        """Delete expired entries and leases of every namespace in the file; rows removed."""
        now = time.time()

        def q(c: sqlite3.Connection) -> int:
            n = 0
            while True:
                cur = c.execute(
                    f"DELETE FROM {_ENTRIES} WHERE rowid IN (SELECT rowid FROM {_ENTRIES}"
                    " WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                    (now, _BATCH),
                )
                n += cur.rowcount
                if cur.rowcount < _BATCH:
                    break
            c.execute(f"DELETE FROM {_LEASES} WHERE expires_at <= ?", (now,))
            return n

        return self._run("purge", q)

    def __len__(self) -> int:
        """Live entries of this namespace."""
        now = time.time()
        return self._run(
            "len",
            lambda c: int(
                c.execute(
                    f"SELECT count(*) FROM {_ENTRIES} WHERE namespace = ?"
                    " AND (expires_at IS NULL OR expires_at > ?)",
                    (self._namespace, now),
                ).fetchone()[0]
            ),
        )

    # -- leases ---------------------------------------------------------------------------

    def try_lease(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Take the lease on ``digest`` for ``ttl`` seconds if no one holds it (or it ran out)."""
        digest, owner, t = check_digest(digest), check_owner(owner), check_lease_ttl(ttl)
        now = time.time()
        return self._run(
            "try_lease",
            lambda c: (
                c.execute(
                    f"INSERT INTO {_LEASES} (namespace, digest, owner, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (namespace, digest) DO UPDATE"
                    " SET owner = excluded.owner, expires_at = excluded.expires_at"
                    f" WHERE {_LEASES}.expires_at <= ?",
                    (self._namespace, digest, owner, now + t, now),
                ).rowcount
                == 1
            ),
        )

    def renew(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Extend ``owner``'s live lease to ``ttl`` seconds from now; ``False`` if not held."""
        digest, owner, t = check_digest(digest), check_owner(owner), check_lease_ttl(ttl)
        now = time.time()
        return self._run(
            "renew",
            lambda c: (
                c.execute(
                    f"UPDATE {_LEASES} SET expires_at = ? WHERE namespace = ? AND digest = ?"
                    " AND owner = ? AND expires_at > ?",
                    (now + t, self._namespace, digest, owner, now),
                ).rowcount
                == 1
            ),
        )

    def release(self, digest: str, owner: str) -> bool:
        """Give up ``owner``'s lease; ``False`` if ``owner`` did not hold it (any more)."""
        digest, owner = check_digest(digest), check_owner(owner)
        now = time.time()
        return self._run(
            "release",
            lambda c: (
                c.execute(
                    f"DELETE FROM {_LEASES} WHERE namespace = ? AND digest = ? AND owner = ?"
                    " AND expires_at > ?",
                    (self._namespace, digest, owner, now),
                ).rowcount
                == 1
            ),
        )

    def lease_owner(self, digest: str) -> str | None:
        """Who holds the live lease on ``digest``, or ``None``."""
        digest = check_digest(digest)
        now = time.time()

        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                f"SELECT owner FROM {_LEASES} WHERE namespace = ? AND digest = ?"
                " AND expires_at > ?",
                (self._namespace, digest, now),
            ).fetchone()
            return None if row is None else str(row[0])

        return self._run("lease_owner", q)

    def _poll(self, digest: str) -> tuple[bytes | None, bool]:
        now = time.time()

        def q(c: sqlite3.Connection) -> tuple[bytes | None, bool]:
            row = c.execute(
                f"SELECT (SELECT value FROM {_ENTRIES} WHERE namespace = ?1 AND digest = ?2"
                " AND (expires_at IS NULL OR expires_at > ?3)),"
                f" EXISTS (SELECT 1 FROM {_LEASES} WHERE namespace = ?1 AND digest = ?2"
                " AND expires_at > ?3)",
                (self._namespace, digest, now),
            ).fetchone()
            return (None if row[0] is None else bytes(row[0])), bool(row[1])

        return self._run("wait_value", q)

    def wait_value(
        self,
        digest: str,
        timeout: float | timedelta,
        *,
        poll_min: float = 0.002,
        poll_max: float = 0.1,
    ) -> bytes | None:
        """Wait for another process's value of ``digest``, polling with backoff
        (``poll_min`` doubling to ``poll_max`` seconds).

        Returns the value once it is there; ``None`` as soon as no one holds the lease and no
        value is there (try the lease yourself), or after ``timeout`` seconds.
        """
        digest = check_digest(digest)
        poll_min, poll_max = check_poll(poll_min, poll_max)
        deadline = time.monotonic() + check_wait(timeout)
        delay = backoff(poll_min, poll_max)
        while True:
            value, leased = self._poll(digest)
            if value is not None or not leased:
                return value
            left = deadline - time.monotonic()
            if left <= 0.0:
                return None
            time.sleep(min(delay(), left))

    # -- async twins (in a worker thread) -------------------------------------------------

    async def aget(self, digest: str) -> bytes | None:
        """:meth:`get` in a worker thread."""
        return await asyncio.to_thread(self.get, digest)

    async def aget_with_ttl(self, digest: str) -> tuple[bytes, float] | None:
        """:meth:`get_with_ttl` in a worker thread."""
        return await asyncio.to_thread(self.get_with_ttl, digest)

    async def attl_left(self, digest: str) -> float | None:
        """:meth:`ttl_left` in a worker thread."""
        return await asyncio.to_thread(self.ttl_left, digest)

    async def aget_many(
        self, digests: Sequence[str], *, chunk_size: int = 500
    ) -> list[bytes | None]:
        """:meth:`get_many` in a worker thread."""
        return await asyncio.to_thread(self.get_many, list(digests), chunk_size=chunk_size)

    async def aset(self, digest: str, value: bytes, ttl: float | timedelta | None = None) -> None:
        """:meth:`set` in a worker thread."""
        await asyncio.to_thread(self.set, digest, value, ttl)

    async def adelete(self, digest: str) -> bool:
        """:meth:`delete` in a worker thread."""
        return await asyncio.to_thread(self.delete, digest)

    async def aclear(self) -> int:
        """:meth:`clear` in a worker thread."""
        return await asyncio.to_thread(self.clear)

    async def apurge(self) -> int:
        """:meth:`purge` in a worker thread."""
        return await asyncio.to_thread(self.purge)

    async def atry_lease(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """:meth:`try_lease` in a worker thread."""
        return await asyncio.to_thread(self.try_lease, digest, owner, ttl)

    async def arenew(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """:meth:`renew` in a worker thread."""
        return await asyncio.to_thread(self.renew, digest, owner, ttl)

    async def arelease(self, digest: str, owner: str) -> bool:
        """:meth:`release` in a worker thread."""
        return await asyncio.to_thread(self.release, digest, owner)

    async def alease_owner(self, digest: str) -> str | None:
        """:meth:`lease_owner` in a worker thread."""
        return await asyncio.to_thread(self.lease_owner, digest)

    async def await_value(
        self,
        digest: str,
        timeout: float | timedelta,
        *,
        poll_min: float = 0.002,
        poll_max: float = 0.1,
    ) -> bytes | None:
        """:meth:`wait_value` on the loop: each poll in a worker thread, the sleeps on the loop."""
        digest = check_digest(digest)
        poll_min, poll_max = check_poll(poll_min, poll_max)
        deadline = time.monotonic() + check_wait(timeout)
        delay = backoff(poll_min, poll_max)
        while True:
            value, leased = await asyncio.to_thread(self._poll, digest)
            if value is not None or not leased:
                return value
            left = deadline - time.monotonic()
            if left <= 0.0:
                return None
            await asyncio.sleep(min(delay(), left))

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this store opened (closing twice is harmless)."""
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns), weakref.WeakSet()
        sq = _sqlite()
        for c in conns:
            try:
                c.close()
            except sq.Error:
                pass

    async def aclose(self) -> None:
        """:meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r}, namespace={self._namespace!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Another process opens the same file (its own connections and breaker).
        return (_reopen, (self._path, self._namespace, self._timeout))


def _reopen(path: str, namespace: str, timeout: float) -> SqliteStore:
    return SqliteStore(path, namespace=namespace, timeout=timeout)
