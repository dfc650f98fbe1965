"""``RedisStore``: a second tier shared by every process and host that reaches one Redis.

redis-py is imported only when a ``RedisStore`` is made (``pip install 'agentperf-rs[redis]'``)::

    store = RedisStore("redis://127.0.0.1:6379/0", namespace="myapp")
    store.set("abc123", b"value", ttl=60.0)
    store.get("abc123")  # b'value'
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._closeable import Closeable
from ._base import (
    KEY_FORMAT_VERSION,
    Guard,
    StoreError,
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
    ttl_ms,
)
from .breaker import Breaker

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore"]

_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_INF = float("inf")

# GET and PTTL in one atomic step (no expiry between them).
_GET_TTL = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
"""
# Compare-and-set on the lease's owner: only the holder renews or releases it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# Connection settings a twin client copies from the user's client (same server, same auth).
_TWIN_KEYS = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "credential_provider",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "client_name",
    "protocol",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
)


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.retry
    except ImportError as e:
        raise ImportError("RedisStore needs redis-py: pip install 'agentperf-rs[redis]'") from e
    return redis


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class _Listener:
    """One pub/sub subscription per store, in a daemon thread, waking the local waiters of a
    digest when another process writes it or releases its lease."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._reset()
        _LISTENERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        # The thread is gone in the child and its lock may have been held at the fork.
        self._reset()

    def add(self, digest: str, wake: Callable[[], None]) -> None:
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            self._waiters.setdefault(digest, set()).add(wake)
            if self._stop.is_set():
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="agentperf-redis-listener", daemon=True
                )
                self._thread.start()

    def remove(self, digest: str, wake: Callable[[], None]) -> None:
        with self._lock:
            ws = self._waiters.get(digest)
            if ws is not None:
                ws.discard(wake)
                if not ws:
                    del self._waiters[digest]

    def _dispatch(self, digest: str) -> None:
        with self._lock:
            wakes = list(self._waiters.get(digest, ()))
        for wake in wakes:
            wake()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub()
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self.subscribed.set()
                        # Anything published before we listened: let every waiter poll again.
                        with self._lock:
                            wakes = [w for ws in self._waiters.values() for w in ws]
                        for wake in wakes:
                            wake()
                    elif msg["type"] == "message":
                        data = msg["data"]
                        self._dispatch(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:
                # Down or slow: waiters fall back to polling until we are back.
                self.subscribed.clear()
                self._stop.wait(0.2)
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout=1.0)
        self._thread = None


_LISTENERS: weakref.WeakSet[_Listener] = weakref.WeakSet()


def _stop_listeners() -> None:
    listeners = list(_LISTENERS)
    for listener in listeners:  # all told first, so exit waits for the slowest, not the sum
        listener._stop.set()
    for listener in listeners:
        listener.stop()


def _listeners_after_fork() -> None:
    for listener in list(_LISTENERS):
        listener.after_fork_in_child()


atexit.register(_stop_listeners)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_listeners_after_fork)


class RedisStore(Closeable):
    """Entries in Redis, shared by every process and host that uses the same server.

    ``RedisStore(url=None, *, client=None, namespace="default", timeout=0.25)``: a URL
    (default ``redis://127.0.0.1:6379/0``) or a redis-py client, sync (``redis.Redis``) or
    async (``redis.asyncio.Redis``). The store has both halves, sync methods and their async
    ``a...`` twins: from a URL it makes both; from one client it makes the other half from that
    client's connection settings (host, port or socket path, db, auth, TLS files, timeouts).
    A client with another connection class gets no twin, and the missing half's methods raise
    :class:`StoreError` saying so. The async half made here keeps one client per event loop
    (redis-py's asyncio connections belong to the loop that opened them).

    ``timeout`` bounds every command on the clients made here (socket connect and read
    timeouts, and redis-py's retries are off): a down or slow server raises
    :class:`StoreError` after about ``timeout`` seconds, and after ``breaker.failures`` in a
    row the store is skipped (:class:`BreakerOpenError`) for ``breaker.reset_after`` seconds
    at a time. A client passed in keeps its own timeouts and retries (redis-py's defaults
    retry a refused connection for seconds: give it ``retry=Retry(NoBackoff(), 0)`` and a
    short ``socket_timeout`` so that a down server fails fast); its twin copies its timeouts
    and makes no retries.

    Keys: ``agentperf:{KEY_FORMAT_VERSION}:{namespace}:{digest}`` for entries,
    ``...:{digest}:lease`` for leases. Writes (``SET ... PX``) and lease releases are
    announced on the pub/sub channel ``agentperf:{version}:{namespace}::events`` (when
    ``notify``, the default), so :meth:`wait_value` wakes at once instead of at its next poll.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | redis.asyncio.Redis | None = None,
        namespace: str = "default",
        timeout: float | timedelta = 0.25,
        breaker: Breaker | bool | None = None,
        notify: bool = True,
    ) -> None:
        redis_mod = _import_redis()
        self._namespace = check_namespace(namespace)
        self._timeout = check_timeout("timeout", timeout)
        if url is not None and client is not None:
            raise ValueError(f"url: pass a URL or a client, not both (got url={url!r})")
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url: expected a str, got {url!r}")
        if not isinstance(notify, bool):
            raise TypeError(f"notify: expected a bool, got {notify!r}")
        self._breaker = make_breaker(breaker)
        self._prefix = f"agentperf:{KEY_FORMAT_VERSION}:{self._namespace}:"
        self._channel = self._prefix + ":events"
        self._notify = notify
        self._url = url
        self._redis = redis_mod
        self._async_by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        self._user_async: redis.asyncio.Redis | None = None
        self._ascripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._twin_kwargs: dict[str, Any] | None = None
        self._twin_class: type[Any] | None = None
        self._missing: str | None = None
        self._owns_sync = True
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._sync: redis.Redis | None
        if client is None:
            if url == "":
                raise ValueError("url='': expected a redis://, rediss:// or unix:// URL or None")
            try:
                self._sync = redis_mod.Redis.from_url(
                    url or _DEFAULT_URL, **self._our_options(False)
                )
            except (ValueError, TypeError) as e:
                raise ValueError(f"url={url!r}: {e}") from e
            where = url or _DEFAULT_URL
        elif isinstance(client, redis_mod.asyncio.Redis):
            self._check_bytes(client)
            self._user_async = client
            self._sync = self._make_twin(client, to_async=False)
            where = repr(client)
        elif isinstance(client, redis_mod.Redis):
            self._check_bytes(client)
            self._sync = client
            self._owns_sync = False
            self._prepare_async_twin(client)
            where = repr(client)
        else:
            raise TypeError(
                f"client: expected a redis.Redis or redis.asyncio.Redis, got {client!r}"
            )
        self._guard = Guard(f"RedisStore({where}, namespace={namespace!r})", self._breaker)
        self._listener: _Listener | None = None
        if self._sync is not None:
            self._get_ttl = self._sync.register_script(_GET_TTL)
            self._renew = self._sync.register_script(_RENEW)
            self._release = self._sync.register_script(_RELEASE)
            if notify:
                self._listener = _Listener(self._sync, self._channel)

    # -- clients --------------------------------------------------------------------------

    def _our_options(self, to_async: bool) -> dict[str, Any]:
        r = self._redis
        retry = (
            r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0)
            if to_async
            else r.retry.Retry(r.backoff.NoBackoff(), 0)
        )
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": retry,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }

    @staticmethod
    def _check_bytes(client: Any) -> None:
        kw = client.connection_pool.connection_kwargs
        if kw.get("decode_responses"):
            raise ValueError(
                "client: decode_responses=True returns str; the store needs a client made "
                "with decode_responses=False (values are bytes)"
            )

    def _twin_settings(self, client: Any, to_async: bool) -> tuple[type[Any], dict[str, Any]]:
        r = self._redis
        pool = client.connection_pool
        names = {
            "Connection": "Connection",
            "SSLConnection": "SSLConnection",
            "UnixDomainSocketConnection": "UnixDomainSocketConnection",
        }
        cls_name = names.get(pool.connection_class.__name__)
        if cls_name is None:
            raise TypeError(f"no twin for connection class {pool.connection_class!r}")
        target = getattr(r.asyncio.connection if to_async else r.connection, cls_name)
        kw = {k: pool.connection_kwargs[k] for k in _TWIN_KEYS if k in pool.connection_kwargs}
        retry = (
            r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0)
            if to_async
            else r.retry.Retry(r.backoff.NoBackoff(), 0)
        )
        kw.update(retry=retry, retry_on_timeout=False)
        return target, kw

    def _prepare_async_twin(self, client: Any) -> None:
        try:
            self._twin_class, self._twin_kwargs = self._twin_settings(client, to_async=True)
        except Exception as e:
            self._missing = f"the async half is missing ({e}); pass a redis.asyncio.Redis"

    def _make_twin(self, client: Any, to_async: bool) -> Any:
        try:
            cls, kw = self._twin_settings(client, to_async)
            pool = self._redis.ConnectionPool(connection_class=cls, **kw)
            return self._redis.Redis(connection_pool=pool)
        except Exception as e:
            self._missing = f"the sync half is missing ({e}); pass a redis.Redis"
            return None

    def _sync_client(self) -> Any:  # redis-py's return types are unions of sync and async
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._sync is None:
            raise StoreError(f"{self!r}: {self._missing}")
        return self._sync

    def _async_client(self) -> Any:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._user_async is not None:
            return self._user_async
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._async_by_loop = weakref.WeakKeyDictionary()
        client = self._async_by_loop.get(loop)
        if client is None:
            ra = self._redis.asyncio
            if self._url is not None or self._owns_sync:
                client = ra.Redis.from_url(self._url or _DEFAULT_URL, **self._our_options(True))
            elif self._twin_kwargs is not None and self._twin_class is not None:
                pool = ra.ConnectionPool(connection_class=self._twin_class, **self._twin_kwargs)
                client = ra.Redis(connection_pool=pool)
            else:
                raise StoreError(f"{self!r}: {self._missing}")
            self._async_by_loop[loop] = client
        return client

    # -- keys -----------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace: every key of this store starts with ``agentperf:{v}:{namespace}:``."""
        return self._namespace

    @property
    def prefix(self) -> str:
        """``agentperf:{KEY_FORMAT_VERSION}:{namespace}:``, the start of every key written."""
        return self._prefix

    @property
    def breaker(self) -> Breaker:
        """The breaker guarding this store."""
        return self._breaker

    def key(self, digest: str) -> str:
        """The Redis key of ``digest``'s entry."""
        return self._prefix + check_digest(digest)

    def lease_key(self, digest: str) -> str:
        """The Redis key of ``digest``'s lease."""
        return self._prefix + check_digest(digest) + ":lease"

    @staticmethod
    def _with_ttl(got: Any) -> tuple[bytes, float] | None:
        if got is None:
            return None
        value, pttl = got
        return bytes(value), (_INF if int(pttl) < 0 else int(pttl) / 1000.0)

    @staticmethod
    def _ttl(pttl: Any) -> float | None:
        p = int(pttl)
        if p == -2:
            return None
        return _INF if p == -1 else p / 1000.0

    # -- sync -----------------------------------------------------------------------------

    def get(self, digest: str) -> bytes | None:
        """The value of ``digest``, or ``None``."""
        key = self.key(digest)
        got = self._guard.call("get", lambda: self._sync_client().get(key))
        return None if got is None else bytes(got)

    def get_with_ttl(self, digest: str) -> tuple[bytes, float] | None:
        """``(value, seconds left)`` (``math.inf`` when it never expires), in one round trip."""
        key = self.key(digest)
        return self._with_ttl(
            self._guard.call(
                "get_with_ttl", lambda: self._get_ttl(keys=[key], client=self._sync_client())
            )
        )

    def ttl_left(self, digest: str) -> float | None:
        """Seconds until ``digest`` expires (``math.inf``: never), or ``None`` if missing."""
        key = self.key(digest)
        return self._ttl(self._guard.call("ttl_left", lambda: self._sync_client().pttl(key)))

    def get_many(self, digests: Sequence[str], *, chunk_size: int = 1000) -> list[bytes | None]:
        """The values of ``digests`` in order (``None`` for misses): one ``MGET`` per
        ``chunk_size`` keys, all chunks pipelined in one round trip."""
        keys = [self.key(d) for d in digests]
        size = check_chunk(chunk_size)
        if not keys:
            return []

        def run() -> Any:
            pipe = self._sync_client().pipeline(transaction=False)
            for i in range(0, len(keys), size):
                pipe.mget(keys[i : i + size])
            return pipe.execute()

        chunks = self._guard.call("get_many", run)
        return [None if v is None else bytes(v) for chunk in chunks for v in chunk]

    def set(self, digest: str, value: bytes, ttl: float | timedelta | None = None) -> None:
        """Write ``value`` with its TTL in one atomic command (``SET ... PX``; ``ttl=None``:
        no expiry), and announce it to waiters."""
        key = self.key(digest)
        value = check_value(value)
        t = check_ttl(ttl)
        px = None if t is None else ttl_ms(t)

        def run() -> None:
            if self._notify:
                pipe = self._sync_client().pipeline(transaction=False)
                pipe.set(key, value, px=px)
                pipe.publish(self._channel, digest)
                pipe.execute()
            else:
                self._sync_client().set(key, value, px=px)

        self._guard.call("set", run)

    def delete(self, digest: str) -> bool:
        """Remove ``digest``'s entry; whether it was there."""
        key = self.key(digest)
        return bool(self._guard.call("delete", lambda: self._sync_client().unlink(key)))

    def clear(self, *, batch: int = 1000) -> int:
        """Remove every key of this namespace (entries and leases; other namespaces stay):
        ``SCAN`` and ``UNLINK`` ``batch`` keys at a time. Returns the keys removed."""
        size = check_chunk(batch)
        match = _glob_escape(self._prefix) + "*"

        def run() -> int:
            c = self._sync_client()
            n, cursor = 0, 0
            while True:
                cursor, keys = c.scan(cursor, match=match, count=size)
                if keys:
                    n += int(c.unlink(*keys))
                if int(cursor) == 0:
                    return n

        return self._guard.call("clear", run)

    def purge(self) -> int:
        """Nothing to do: Redis drops expired keys itself (here for the :class:`Store`
        protocol, so a cleanup interval can call every store's ``purge``). Returns 0."""
        return 0

    async def apurge(self) -> int:
        """Async :meth:`purge` (nothing to do)."""
        return 0

    def try_lease(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Take the lease on ``digest`` for ``ttl`` seconds if no one holds it
        (``SET NX PX``)."""
        key, owner, t = self.lease_key(digest), check_owner(owner), check_lease_ttl(ttl)
        return bool(
            self._guard.call(
                "try_lease",
                lambda: self._sync_client().set(key, owner, nx=True, px=ttl_ms(t)),
            )
        )

    def renew(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Extend ``owner``'s lease to ``ttl`` seconds from now; ``False`` if it is not held
        by ``owner`` (any more)."""
        key, owner, t = self.lease_key(digest), check_owner(owner), check_lease_ttl(ttl)
        return bool(
            self._guard.call(
                "renew",
                lambda: self._renew(
                    keys=[key], args=[owner, ttl_ms(t)], client=self._sync_client()
                ),
            )
        )

    def release(self, digest: str, owner: str) -> bool:
        """Give up ``owner``'s lease (and wake the waiters); ``False`` if not held by it."""
        key, owner = self.lease_key(digest), check_owner(owner)
        return bool(
            self._guard.call(
                "release",
                lambda: self._release(
                    keys=[key], args=[owner, self._channel, digest], client=self._sync_client()
                ),
            )
        )

    def lease_owner(self, digest: str) -> str | None:
        """Who holds the lease on ``digest``, or ``None``."""
        key = self.lease_key(digest)
        got = self._guard.call("lease_owner", lambda: self._sync_client().get(key))
        return None if got is None else bytes(got).decode()

    def _poll(self, key: str, lease: str) -> tuple[bytes | None, bool]:
        def run() -> Any:
            pipe = self._sync_client().pipeline(transaction=False)
            pipe.get(key)
            pipe.exists(lease)
            return pipe.execute()

        value, leased = self._guard.call("wait_value", run)
        return (None if value is None else bytes(value)), bool(leased)

    def _wait_cap(self, poll_max: float) -> float:
        # With a live subscription, polls are only the fallback for a lost message or a dead
        # leader (whose lease expiry publishes nothing).
        if self._listener is not None and self._listener.subscribed.is_set():
            return max(poll_max, 0.5)
        return poll_max

    def wait_value(
        self,
        digest: str,
        timeout: float | timedelta,
        *,
        poll_min: float = 0.002,
        poll_max: float = 0.1,
    ) -> bytes | None:
        """Wait for another caller's value of ``digest``.

        Returns the value once it is there; ``None`` as soon as no one holds the lease and no
        value is there (try the lease yourself), or after ``timeout`` seconds. Woken by the
        writer's notification when ``notify``, else polling with backoff (``poll_min``
        doubling to ``poll_max`` seconds).
        """
        key, lease = self.key(digest), self.lease_key(digest)
        poll_min, poll_max = check_poll(poll_min, poll_max)
        deadline = time.monotonic() + check_wait(timeout)
        delay = poll_min / 2.0
        event = threading.Event()
        listener = self._listener
        if listener is not None:
            listener.add(digest, event.set)
        try:
            while True:
                value, leased = self._poll(key, lease)
                if value is not None or not leased:
                    return value
                left = deadline - time.monotonic()
                if left <= 0.0:
                    return None
                delay = min(delay * 2.0, self._wait_cap(poll_max))
                if listener is None:
                    time.sleep(min(delay, left))
                else:
                    event.wait(min(delay, left))
                    event.clear()
        finally:
            if listener is not None:
                listener.remove(digest, event.set)

    # -- async ----------------------------------------------------------------------------

    async def aget(self, digest: str) -> bytes | None:
        """Async :meth:`get`."""
        key = self.key(digest)

        async def run() -> Any:
            return await self._async_client().get(key)

        got = await self._guard.acall("get", run)
        return None if got is None else bytes(got)

    async def aget_with_ttl(self, digest: str) -> tuple[bytes, float] | None:
        """Async :meth:`get_with_ttl`."""
        key = self.key(digest)

        async def run() -> Any:
            return await self._ascript(self._async_client(), _GET_TTL, [key], [])

        return self._with_ttl(await self._guard.acall("get_with_ttl", run))

    async def _ascript(self, c: Any, source: str, keys: list[str], args: list[Any]) -> Any:
        # redis-py's Script runs EVALSHA and loads the script again after NOSCRIPT (a restart).
        scripts = self._ascripts.get(c)
        if scripts is None:
            scripts = self._ascripts[c] = {}
        script = scripts.get(source)
        if script is None:
            script = scripts[source] = c.register_script(source)
        return await script(keys=keys, args=args)

    async def attl_left(self, digest: str) -> float | None:
        """Async :meth:`ttl_left`."""
        key = self.key(digest)

        async def run() -> Any:
            return await self._async_client().pttl(key)

        return self._ttl(await self._guard.acall("ttl_left", run))

    async def aget_many(
        self, digests: Sequence[str], *, chunk_size: int = 1000
    ) -> list[bytes | None]:
        """Async :meth:`get_many`."""
        keys = [self.key(d) for d in digests]
        size = check_chunk(chunk_size)
        if not keys:
            return []

        async def run() -> Any:
            pipe = self._async_client().pipeline(transaction=False)
            for i in range(0, len(keys), size):
                pipe.mget(keys[i : i + size])
            return await pipe.execute()

        chunks = await self._guard.acall("get_many", run)
        return [None if v is None else bytes(v) for chunk in chunks for v in chunk]

    async def aset(self, digest: str, value: bytes, ttl: float | timedelta | None = None) -> None:
        """Async :meth:`set`."""
        key = self.key(digest)
        value = check_value(value)
        t = check_ttl(ttl)
        px = None if t is None else ttl_ms(t)

        async def run() -> None:
            c = self._async_client()
            if self._notify:
                pipe = c.pipeline(transaction=False)
                pipe.set(key, value, px=px)
                pipe.publish(self._channel, digest)
                await pipe.execute()
            else:
                await c.set(key, value, px=px)

        await self._guard.acall("set", run)

    async def adelete(self, digest: str) -> bool:
        """Async :meth:`delete`."""
        key = self.key(digest)

        async def run() -> Any:
            return await self._async_client().unlink(key)

        return bool(await self._guard.acall("delete", run))

    async def aclear(self, *, batch: int = 1000) -> int:
        """Async :meth:`clear`."""
        size = check_chunk(batch)
        match = _glob_escape(self._prefix) + "*"

        async def run() -> int:
            c = self._async_client()
            n, cursor = 0, 0
            while True:
                cursor, keys = await c.scan(cursor, match=match, count=size)
                if keys:
                    n += int(await c.unlink(*keys))
                if int(cursor) == 0:
                    return n

        return await self._guard.acall("clear", run)

    async def atry_lease(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Async :meth:`try_lease`."""
        key, owner, t = self.lease_key(digest), check_owner(owner), check_lease_ttl(ttl)

        async def run() -> Any:
            return await self._async_client().set(key, owner, nx=True, px=ttl_ms(t))

        return bool(await self._guard.acall("try_lease", run))

    async def arenew(self, digest: str, owner: str, ttl: float | timedelta) -> bool:
        """Async :meth:`renew`."""
        key, owner, t = self.lease_key(digest), check_owner(owner), check_lease_ttl(ttl)

        async def run() -> Any:
            return await self._ascript(self._async_client(), _RENEW, [key], [owner, ttl_ms(t)])

        return bool(await self._guard.acall("renew", run))

    async def arelease(self, digest: str, owner: str) -> bool:
        """Async :meth:`release`."""
        key, owner = self.lease_key(digest), check_owner(owner)

        async def run() -> Any:
            return await self._ascript(
                self._async_client(), _RELEASE, [key], [owner, self._channel, digest]
            )

        return bool(await self._guard.acall("release", run))

    async def alease_owner(self, digest: str) -> str | None:
        """Async :meth:`lease_owner`."""
        key = self.lease_key(digest)

        async def run() -> Any:
            return await self._async_client().get(key)

        got = await self._guard.acall("lease_owner", run)
        return None if got is None else bytes(got).decode()

    async def _apoll(self, key: str, lease: str) -> tuple[bytes | None, bool]:
        async def run() -> Any:
            pipe = self._async_client().pipeline(transaction=False)
            pipe.get(key)
            pipe.exists(lease)
            return await pipe.execute()

        value, leased = await self._guard.acall("wait_value", run)
        return (None if value is None else bytes(value)), bool(leased)

    async def await_value(
        self,
        digest: str,
        timeout: float | timedelta,
        *,
        poll_min: float = 0.002,
        poll_max: float = 0.1,
    ) -> bytes | None:
        """Async :meth:`wait_value` (the notification wakes the waiting task on its loop)."""
        key, lease = self.key(digest), self.lease_key(digest)
        poll_min, poll_max = check_poll(poll_min, poll_max)
        deadline = time.monotonic() + check_wait(timeout)
        delay = poll_min / 2.0
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed
                pass

        listener = self._listener
        if listener is not None:
            listener.add(digest, wake)
        try:
            while True:
                value, leased = await self._apoll(key, lease)
                if value is not None or not leased:
                    return value
                left = deadline - time.monotonic()
                if left <= 0.0:
                    return None
                delay = min(delay * 2.0, self._wait_cap(poll_max))
                d = min(delay, left)
                if listener is None:
                    await asyncio.sleep(d)
                else:
                    try:
                        await asyncio.wait_for(event.wait(), d)
                    except asyncio.TimeoutError:
                        pass
                    event.clear()
        finally:
            if listener is not None:
                listener.remove(digest, wake)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the listener and close the clients this store made (not a client passed in).
        Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._listener is not None:
            self._listener.stop()
        if self._sync is not None and self._owns_sync:
            try:
                self._sync.close()
            except Exception:
                pass
        # Async clients of other loops cannot be awaited here; dropping them closes them.
        self._async_by_loop = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        """:meth:`close`, and close the current loop's async client too."""
        client: Any = None
        try:
            client = self._async_by_loop.get(asyncio.get_running_loop())
        except RuntimeError:
            pass
        self.close()
        if client is not None:
            try:
                await client.aclose()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"RedisStore(namespace={self._namespace!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A store made from a URL travels to other processes (multiprocessing, Ray) as its
        # settings; there it connects anew, with a breaker of its own.
        if self._user_async is not None or not self._owns_sync:
            raise TypeError("a RedisStore made from a client cannot be pickled; make it from a URL")
        return (
            _reopen,
            (self._url or _DEFAULT_URL, self._namespace, self._timeout, self._notify),
        )


def _reopen(url: str, namespace: str, timeout: float, notify: bool) -> RedisStore:
    return RedisStore(url, namespace=namespace, timeout=timeout, notify=notify)
