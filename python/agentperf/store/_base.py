"""What every store shares: the error, the key format, argument checks and the guarded call."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from typing import Protocol, TypeVar, runtime_checkable

from ..errors import AgentPerfError
from .breaker import Breaker

__all__ = [
    "KEY_FORMAT_VERSION",
    "BreakerOpenError",
    "Store",
    "StoreError",
    "new_owner",
]

#: Version of the key layout and of the entries' encodings. Bumped when either changes, so a
#: new release never reads an old release's entries (they are simply misses).
KEY_FORMAT_VERSION = 1

_T = TypeVar("_T")

_NAME_RE = re.compile(r"[^\s:]+")
_NAMESPACE_MAX = 128
_DIGEST_MAX = 256
_OWNER_MAX = 256
# A century: far past any sensible TTL, and well inside Redis' and float's ranges.
_TTL_MAX = 100 * 365.25 * 86400.0


class StoreError(AgentPerfError):
    """A store could not serve a call: the server is down, slow (past ``timeout``), refused
    the command, or the file is locked or unreadable. It wraps the driver's exception
    (``__cause__``). The tiers of a cached agent catch it and go on without the store."""


class BreakerOpenError(StoreError):
    """The store was skipped without being contacted: its breaker is open after failures in a
    row (see :class:`~agentperf.store.Breaker`)."""


def new_owner() -> str:
    """A lease owner id unique across hosts, processes and calls: ``host:pid:random``."""
    import socket
    import uuid

    host = socket.gethostname().replace(":", "_").replace(" ", "_")[:64] or "host"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex}"


def check_name(field: str, value: object, limit: int) -> str:
    """A namespace, digest or owner: a non-empty ``str`` of at most ``limit`` characters with
    no ``:`` and no whitespace (``:`` separates the key's parts)."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a str, got {value!r}")
    if len(value) > limit or _NAME_RE.fullmatch(value) is None:
        raise ValueError(
            f"{field}: must be 1 to {limit} characters with no ':' and no whitespace, got {value!r}"
        )
    return value


def check_namespace(value: object) -> str:
    return check_name("namespace", value, _NAMESPACE_MAX)


def check_digest(value: object) -> str:
    if type(value) is str and 0 < len(value) <= _DIGEST_MAX and ":" not in value:
        # The fast path for hash_key's hex digests; the full check only for odd ones.
        if value.isalnum():
            return value
    return check_name("digest", value, _DIGEST_MAX)


def check_owner(value: object) -> str:
    # Owners may hold ':' (new_owner's host:pid:random); they are values, never key parts.
    if not isinstance(value, str):
        raise TypeError(f"owner: expected a str, got {value!r}")
    if not 0 < len(value) <= _OWNER_MAX or any(c.isspace() for c in value):
        raise ValueError(
            f"owner: must be 1 to {_OWNER_MAX} characters with no whitespace, got {value!r}"
        )
    return value


def check_value(value: object) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, bytes):
        raise TypeError(f"value: expected bytes (encode it with a codec), got {type(value)!r}")
    return value


def _as_float(field: str, value: object) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}: expected seconds as a float, got {value!r}")
    return float(value)


def check_ttl(value: object) -> float | None:
    """An entry's TTL: ``None`` (or ``math.inf``) for none, else seconds > 0 (capped at a
    century)."""
    if value is None:
        return None
    v = _as_float("ttl", value)
    if v == math.inf:
        return None
    if not v > 0.0:
        raise ValueError(f"ttl: must be > 0 seconds or None, got {value!r}")
    return min(v, _TTL_MAX)


def check_lease_ttl(value: object) -> float:
    v = _as_float("ttl", value)
    if not 0.0 < v < math.inf:
        raise ValueError(f"ttl: a lease needs a finite TTL > 0 seconds, got {value!r}")
    return min(v, _TTL_MAX)


def check_timeout(field: str, value: object) -> float:
    v = _as_float(field, value)
    if not 0.0 < v < math.inf:
        raise ValueError(f"{field}: must be finite and > 0 seconds, got {value!r}")
    return v


def check_wait(value: object) -> float:
    v = _as_float("timeout", value)
    if not v >= 0.0:
        raise ValueError(f"timeout: must be >= 0 seconds, got {value!r}")
    return v


def check_chunk(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"chunk_size: expected an int, got {value!r}")
    if value < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {value!r}")
    return value


def check_poll(poll_min: object, poll_max: object) -> tuple[float, float]:
    lo = check_timeout("poll_min", poll_min)
    hi = check_timeout("poll_max", poll_max)
    if hi < lo:
        raise ValueError(f"poll_max: must be >= poll_min ({lo!r}), got {poll_max!r}")
    return lo, hi


def ttl_ms(ttl: float) -> int:
    """Seconds to Redis' whole milliseconds, never 0 (``PX 0`` is an error)."""
    return max(1, math.ceil(ttl * 1000.0))


class Guard:
    """Runs store operations behind a breaker, turning every failure into :class:`StoreError`."""

    __slots__ = ("breaker", "name")

    def __init__(self, name: str, breaker: Breaker) -> None:
        self.name = name
        self.breaker = breaker

    def _refused(self, op: str) -> BreakerOpenError:
        return BreakerOpenError(
            f"{self.name}.{op}: skipped, the store failed "
            f"{self.breaker.failures} times in a row (breaker open for "
            f"{self.breaker.reset_after:g} s at a time)"
        )

    @contextlib.contextmanager
    def _guarded(self, op: str) -> Iterator[None]:
        """The breaker's verdict around one operation, sync or async alike."""
        if not self.breaker.allow():
            raise self._refused(op)
        try:
            yield
        except StoreError:
            self.breaker.record_failure()
            raise
        except Exception as e:
            self.breaker.record_failure()
            raise StoreError(f"{self.name}.{op}: {type(e).__name__}: {e}") from e
        except BaseException:
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()

    def call(self, op: str, fn: Callable[[], _T]) -> _T:
        # _guarded spelled out: a generator-based context manager costs a few µs, a
        # noticeable share of a loopback round trip (the L2 hit path runs through here).
        breaker = self.breaker
        if not breaker.allow():
            raise self._refused(op)
        try:
            r = fn()
        except StoreError:
            breaker.record_failure()
            raise
        except Exception as e:
            breaker.record_failure()
            raise StoreError(f"{self.name}.{op}: {type(e).__name__}: {e}") from e
        except BaseException:
            breaker.record_abandoned()
            raise
        breaker.record_success()
        return r

    async def acall(self, op: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        with self._guarded(op):
            return await fn()


def make_breaker(breaker: Breaker | bool | None) -> Breaker:
    if breaker is None or breaker is True:
        return Breaker()
    if breaker is False:
        return Breaker(failures=0)
    if not isinstance(breaker, Breaker):
        raise TypeError(f"breaker: expected a Breaker, None or False, got {breaker!r}")
    return breaker


def backoff(poll_min: float, poll_max: float) -> Callable[[], float]:
    """Waits between polls: ``poll_min``, doubling up to ``poll_max``."""
    state = [poll_min / 2.0]

    def next_delay() -> float:
        state[0] = min(state[0] * 2.0, poll_max)
        return state[0]

    return next_delay


@runtime_checkable
class Store(Protocol):
    """What a second-tier store offers a cached agent (``RedisStore``, ``SqliteStore``).

    Values are ``bytes`` (a codec makes them); digests are :func:`agentperf.hash_key` strings
    (no ``:``, no whitespace). Every method raises :class:`StoreError` when the store fails,
    and nothing else (bad arguments raise ``ValueError``/``TypeError``). Each ``x`` has an
    async twin ``ax``.

    Single flight across processes: the first caller of a missing digest takes the lease
    (``try_lease``), renews it while its agent runs (``renew``), writes the value (``set``) and
    then releases it (``release``). The others call ``wait_value``, which returns the value
    once it is there, or ``None`` when the lease is gone without one (the leader died or gave
    up: try the lease again) or the wait timed out. Write before releasing, or followers
    take over before the value is there. A lease is not re-entrant: ``try_lease`` by its
    holder is ``False`` too. ``get_with_ttl`` and ``ttl_left`` give the seconds left
    (``math.inf``: no expiry), to fill an in-process tier for the entry's remaining TTL.

    Failure: the tiers catch :class:`StoreError` and go on with the in-process cache and the
    agent, so a broken store never fails a call; ``breaker`` skips a failing store at once.
    """

    @property
    def namespace(self) -> str: ...

    @property
    def breaker(self) -> Breaker: ...

    def get(self, digest: str) -> bytes | None: ...
    def get_with_ttl(self, digest: str) -> tuple[bytes, float] | None: ...
    def get_many(self, digests: Sequence[str]) -> list[bytes | None]: ...
    def set(self, digest: str, value: bytes, ttl: float | None = None) -> None: ...
    def delete(self, digest: str) -> bool: ...
    def clear(self) -> int: ...
    def purge(self) -> int: ...
    def ttl_left(self, digest: str) -> float | None: ...
    def try_lease(self, digest: str, owner: str, ttl: float) -> bool: ...
    def renew(self, digest: str, owner: str, ttl: float) -> bool: ...
    def release(self, digest: str, owner: str) -> bool: ...
    def lease_owner(self, digest: str) -> str | None: ...
    def wait_value(self, digest: str, timeout: float) -> bytes | None: ...
    def close(self) -> None: ...

    async def aget(self, digest: str) -> bytes | None: ...
    async def aget_with_ttl(self, digest: str) -> tuple[bytes, float] | None: ...
    async def aget_many(self, digests: Sequence[str]) -> list[bytes | None]: ...
    async def aset(self, digest: str, value: bytes, ttl: float | None = None) -> None: ...
    async def adelete(self, digest: str) -> bool: ...
    async def aclear(self) -> int: ...
    async def apurge(self) -> int: ...
    async def attl_left(self, digest: str) -> float | None: ...
    async def atry_lease(self, digest: str, owner: str, ttl: float) -> bool: ...
    async def arenew(self, digest: str, owner: str, ttl: float) -> bool: ...
    async def arelease(self, digest: str, owner: str) -> bool: ...
    async def alease_owner(self, digest: str) -> str | None: ...
    async def await_value(self, digest: str, timeout: float) -> bytes | None: ...
    async def aclose(self) -> None: ...
