"""Type stubs of the Rust extension ``agentperf._agentperf``."""

import asyncio
import datetime
from asyncio import Future
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, Literal, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "AgentPerfError",
    "BatchTimeoutError",
    "Cache",
    "CacheStats",
    "CachedAgentCore",
    "Flight",
    "PoolClosedError",
    "PoolTimeoutError",
    "RateLimiter",
    "RateLimiterStats",
    "Semaphore",
    "_CreateSlot",
    "_Fill",
    "_Histogram",
    "_Leased",
    "_Pool",
    "_PoolWaiter",
    "_RateLimiterWait",
    "_SemaphoreWait",
    "_StartOver",
    "__version__",
    "_after_fork_child",
    "_after_fork_parent",
    "_before_fork",
    "_cache_controls",
    "_cleanup_thread_state",
    "_shutdown",
    "hash_key",
]

__version__: Final[str]

class AgentPerfError(Exception): ...
class PoolClosedError(AgentPerfError): ...
class PoolTimeoutError(AgentPerfError, TimeoutError): ...
class BatchTimeoutError(AgentPerfError, TimeoutError): ...

def hash_key(obj: object, /) -> str:
    """The SHA-256 hex digest (64 lowercase hex chars) of ``obj``'s canonical encoding.

    The encoding (``docs/keys.md``, version ``agentperf-key-v1``) is type-tagged and
    length-prefixed, computed in Rust by walking ``obj`` directly. Supported: ``None``,
    ``bool``, ``int`` (any size), ``float`` (by IEEE-754 bits; every NaN alike, ``-0.0`` differs
    from ``0.0``), ``str``, ``bytes``/``bytearray``, ``list``, ``tuple``, ``dict`` (insertion
    order ignored), ``set``/``frozenset`` (equal to each other), ``datetime.datetime``,
    ``date``, ``time`` and ``timedelta`` (wall fields, ``fold`` and ``utcoffset()``),
    ``uuid.UUID``, ``decimal.Decimal`` (not normalised: ``Decimal("1.0")`` and
    ``Decimal("1.00")`` differ), dataclass instances, enum members and objects with
    ``model_dump()`` (pydantic; a model whose dump holds a value of no supported type, such as
    ``HttpUrl``, is keyed by its ``model_dump(mode="json")``); subclasses of the built-ins
    encode as their base type. ``1``, ``1.0``, ``True`` and ``"1"`` all differ; so do a list
    and a tuple. Stable across processes, runs and ``PYTHONHASHSEED``.

    >>> hash_key({"b": 1, "a": 2}) == hash_key({"a": 2, "b": 1})
    True
    >>> hash_key([1, 2]) == hash_key((1, 2))
    False

    Raises ``TypeError`` (naming the type) for anything else: pass a ``key_generator`` to key
    such inputs. Raises ``ValueError`` for a cycle or more than 256 levels of nested
    containers, and ``RuntimeError`` if a container changes size while it is hashed.
    """

# -- pool (rust/src/pool/py.rs) ----------------------------------------------------------

@disjoint_base
class _Pool:
    """The Rust half of ``agentperf.AgentPool``; not for direct use."""

    def __new__(
        cls,
        make: Callable[[], tuple[object, object, object]],
        check: Callable[[Any], object] | None,
        destroy: Callable[[Any], None],
        initial_size: int,
        max_size: int,
        idle_timeout: float | None,
        max_lifetime: float | None,
        acquire_timeout: float | None,
        cleanup_interval: float,
        _manual_clock: bool = False,
    ) -> Self: ...
    def execute(self, input: Any, /) -> Any:
        """Acquire an agent, call it on ``input``, release it."""
    def acquire(self, timeout: float | None = None) -> Any:
        """Lease an agent, waiting up to ``timeout`` seconds."""
    def release(self, agent: object, discard: bool = False) -> None:
        """Give back a leased agent; ``discard=True`` destroys it."""
    def close(self) -> None:
        """Close the pool; closing twice is harmless."""
    def _close_nowait(self) -> None: ...
    def _cleaning(self) -> bool: ...
    def _wait_cleaning(self) -> None: ...
    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
    def _fill(self) -> None: ...
    def _reserve_initial(self) -> bool: ...
    def _add_idle(self, obj: object, call: object, acall: object) -> None: ...
    def _atry(self) -> _Leased | _CreateSlot | _PoolWaiter: ...
    def _adopt(self, obj: object, call: object, acall: object) -> Any: ...
    def _create_failed(self) -> None: ...
    def _stats(
        self,
    ) -> tuple[tuple[int, int, int, int, int], tuple[int, int, int, int, int, int, int], float]: ...
    def _wait_histogram(self) -> tuple[list[int], float]: ...
    def _leased(self) -> int: ...
    def _reap(self) -> None: ...
    def _advance(self, seconds: float) -> None: ...
    def _after_fork_child(self) -> None: ...

@final
class _PoolWaiter:
    """An asyncio task parked on a pool."""

    @property
    def future(self) -> asyncio.Future[bool]: ...
    def withdraw(self, timed_out: bool = False) -> None: ...
    def take(self) -> _Leased | _CreateSlot | _StartOver: ...

@final
class _Leased:
    """A step of an async acquire: the agent is leased to the caller."""

    @property
    def agent(self) -> Any:
        """The leased object, as the factory made it."""
    @property
    def acall(self) -> Any:
        """Its async call."""

@final
class _CreateSlot:
    """A step of an async acquire: a slot reserved for the caller to create into."""

@final
class _StartOver:
    """A step of an async acquire: nothing was handed over; try again."""

def _before_fork() -> None: ...
def _after_fork_parent() -> None: ...
def _after_fork_child() -> None: ...
def _shutdown() -> None: ...
def _cleanup_thread_state() -> tuple[bool, int]: ...

# --- cache -------------------------------------------------------------------------------

_Seconds = float | int | datetime.timedelta

@final
class CacheStats:
    """Counters and size of a cache at one instant (``hit_rate`` in percent).

    A caller served by another caller's in-flight call counts as a hit when that call
    succeeded, as a miss when it raised, and in ``coalesced`` either way.
    """

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def hit_rate(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def max_weight(self) -> int | None: ...
    @property
    def evictions(self) -> int: ...
    @property
    def expirations(self) -> int: ...
    @property
    def coalesced(self) -> int: ...
    @property
    def store_hits(self) -> int:
        """Calls served by the second tier (also counted in ``hits``); 0 without a store."""
    @property
    def store_misses(self) -> int:
        """Calls the store could not serve."""
    @property
    def store_errors(self) -> int:
        """Store failures and entries that could not be decoded or encoded."""
    def _with_store(self, store_hits: int, store_misses: int, store_errors: int) -> CacheStats: ...

@disjoint_base
class Cache:
    """A sharded, thread-safe TTL/LRU (or W-TinyLFU) cache for ``str`` and ``bytes`` keys.

    ``None`` arguments take the defaults: ``max_size=10_000``, ``ttl`` forever,
    ``cleanup_interval=60.0``, ``enable_stats=True``, ``policy="lru"``, no ``max_weight``.
    With ``max_weight``, ``weigher(value) -> int`` weighs each value (outside every lock) and
    the sum of weights stays within ``max_weight``; a heavier value is not stored.
    """

    def __new__(
        cls,
        max_size: int | None = None,
        ttl: _Seconds | None = None,
        *,
        cleanup_interval: _Seconds | None = None,
        enable_stats: bool | None = None,
        policy: Literal["lru", "tinylfu"] | None = None,
        max_weight: int | None = None,
        weigher: Callable[[Any], int] | None = None,
        _manual_clock: bool = False,
    ) -> Self: ...
    def get(self, key: str | bytes, default: Any = None) -> Any: ...
    def set(self, key: str | bytes, value: object, ttl: _Seconds | None = None) -> None: ...
    def __contains__(self, key: str | bytes, /) -> bool: ...
    def __len__(self) -> int: ...
    def delete(self, key: str | bytes) -> bool: ...
    def clear(self) -> None: ...
    def stats(self) -> CacheStats: ...
    @property
    def max_size(self) -> int: ...
    @property
    def policy(self) -> str: ...
    def _memory_bytes(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Cache: ...
    def __exit__(self, *_exc: object) -> bool: ...
    def _advance(self, seconds: float) -> None: ...
    def _sweep(self) -> int: ...

@disjoint_base
class CachedAgentCore:
    """The Rust half of ``agentperf.CachedAgent``."""

    def __new__(
        cls,
        call: Callable[[Any], Any],
        max_size: int,
        ttl: _Seconds | None,
        cleanup_interval: _Seconds,
        enable_stats: bool,
        key_generator: Callable[[Any], str | bytes] | None,
        _manual_clock: bool = False,
        *,
        policy: Literal["lru", "tinylfu"] | None = None,
        max_weight: int | None = None,
        weigher: Callable[[Any], int] | None = None,
    ) -> Any: ...
    def execute(self, input: Any, /) -> Any:
        """Run the agent on ``input``, or return the cached output for it."""
    def _alookup(self, input: object, key: str | bytes | None = None, /) -> Any: ...
    def cache_key(self, input: object, /) -> str | bytes: ...
    def invalidate(self, input: object, /) -> bool: ...
    def _invalidate(self, input: object, key: str | bytes | None = None, /) -> bool: ...
    def invalidate_all(self) -> None: ...
    def _put(
        self,
        input: object,
        key: str | bytes | None,
        value: object,
        ttl: float | None = None,
        /,
    ) -> None: ...
    def stats(self) -> CacheStats: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...
    def _advance(self, seconds: float) -> None: ...
    def _in_flight(self) -> int: ...
    def _waiters(self) -> int: ...
    def _after_fork_child(self) -> None: ...

@final
class Flight:
    """A miss of ``CachedAgent.execute``/``aexecute``: lead the call or await another's."""

    @property
    def leader(self) -> bool: ...
    @property
    def future(self) -> asyncio.Future[bool]: ...
    def succeed(self, value: object) -> None:
        """Leader: the agent returned ``value`` (a ``_Fill`` says how the cache keeps it)."""
    def fail(self, exc: BaseException) -> None: ...
    def abandon(self) -> None: ...
    def outcome(self) -> tuple[bool, Any]: ...
    def withdraw(self) -> None: ...

@final
class _Fill:
    """A leader's output with how the in-process tier keeps it (the second tier's)."""

    def __new__(
        cls, value: object, ttl: float | None = None, keep: bool = True, hit: bool = False
    ) -> _Fill: ...
    @property
    def value(self) -> Any: ...

def _cache_controls(delta: int) -> int: ...

# --- semaphore -------------------------------------------------------------------------------

@disjoint_base
class Semaphore:
    """A counting semaphore whose permits are kept in Rust (FIFO-fair, threads and loops)."""

    def __new__(cls, permits: int) -> Self: ...
    def try_acquire(self) -> bool: ...
    def acquire(self, timeout: float | timedelta | None = None) -> bool: ...
    def release(self) -> None: ...
    def _wait_async(self) -> tuple[Future[bool], _SemaphoreWait] | None: ...
    @property
    def available(self) -> int: ...
    @property
    def permits(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    def __enter__(self) -> Semaphore: ...
    def __exit__(self, *_args: object) -> bool: ...

@final
class _SemaphoreWait:
    def finish(self, keep: bool) -> bool: ...

# --- histogram -------------------------------------------------------------------------------

@final
class _Histogram:
    """A lock-free histogram of durations in seconds (fixed buckets, see ``bounds()``)."""

    def __new__(cls) -> _Histogram: ...
    @staticmethod
    def bounds() -> list[float]:
        """The finite buckets' upper bounds in seconds (inclusive); a last bucket is +Inf."""
    def observe(self, seconds: float) -> None: ...
    def observe_many(self, seconds: list[float]) -> None: ...
    def snapshot(self) -> tuple[list[int], float]:
        """``(counts per bucket, sum_s)``; counts not cumulative, +Inf last."""

# --- rate limiter ----------------------------------------------------------------------------

@final
class RateLimiterStats:
    """A rate limiter's counters at one instant."""

    @property
    def granted(self) -> float: ...
    @property
    def acquired(self) -> int: ...
    @property
    def waited(self) -> int: ...
    @property
    def wait_s(self) -> float: ...
    @property
    def paused_s(self) -> float: ...
    @property
    def waiting(self) -> int: ...

@disjoint_base
class RateLimiter:
    """A GCRA rate limiter kept in Rust, FIFO-fair among threads and tasks on any loop."""

    def __new__(
        cls, rate: float, per: float | timedelta = 1.0, burst: float | None = None
    ) -> Self: ...
    def try_acquire(self, cost: float = 1.0) -> bool: ...
    def acquire(self, cost: float = 1.0, timeout: float | timedelta | None = None) -> bool: ...
    def _wait_async(self, cost: float = 1.0) -> _RateLimiterWait | None: ...
    def pause(self, seconds: float | timedelta) -> None: ...
    def stats(self) -> RateLimiterStats: ...
    @property
    def rate(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def burst(self) -> float: ...
    @property
    def waiting(self) -> int: ...
    @property
    def paused_for(self) -> float: ...

@final
class _RateLimiterWait:
    def arm(self) -> tuple[Future[bool], float | None] | None: ...
    def finish(self, keep: bool) -> bool: ...
