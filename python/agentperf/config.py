"""Configuration for the cache, the pool and the batch executor.

Each class holds the seed's defaults and validates on construction: a bad value raises
``ValueError`` (or ``TypeError`` for a wrong type) whose message names the field and the value.
Durations are seconds as ``float``; a ``datetime.timedelta`` is accepted and converted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _config as v

if TYPE_CHECKING:
    from .adaptive import AdaptiveConcurrency
    from .codec import Codec
    from .store import Store

__all__ = ["BatchConfig", "CacheConfig", "ErrorPolicy", "PoolConfig"]

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """Settings of a :class:`~agentperf.CachedAgent` (and of ``@cached``).

    >>> CacheConfig(max_size=10_000, ttl=60.0).ttl
    60.0
    """

    max_size: int = 1000
    """Most live entries; which goes first is the ``policy``'s choice."""
    ttl: float | None = 600.0
    """Seconds an entry lives; ``None`` (or ``math.inf``) means forever."""
    cleanup_interval: float = 60.0
    """Seconds between sweeps of expired entries by the shared cleanup thread."""
    enable_stats: bool = True
    """Count hits, misses, evictions and expirations."""
    key_generator: Callable[[Any], str | bytes] | None = None
    """``input -> key``; ``None`` uses :func:`~agentperf.hash_key`."""
    policy: str = "lru"
    """``"lru"`` (least recently used goes first) or ``"tinylfu"`` (W-TinyLFU: a new entry
    displaces the eviction victim only if a frequency sketch rates it higher)."""
    max_weight: int | None = None
    """Bound on the sum of ``weigher(value)`` over live entries (``None``: no weight bound);
    an output heavier than it is returned but not stored."""
    weigher: Callable[[Any], int] | None = None
    """``value -> int >= 0`` (e.g. ``len``); required with ``max_weight``."""
    name: str | None = None
    """The cached agent's name in the metrics (:mod:`agentperf.metrics`): 1 to 128 characters
    of ``A-Za-z0-9_.:/-``; ``None`` (the default) is not exported."""
    store: Store | None = None
    """A second tier shared by processes (:class:`~agentperf.RedisStore`,
    :class:`~agentperf.SqliteStore`); ``None``: the in-process cache alone."""
    codec: Codec | None = None
    """How outputs become the store's bytes and back; ``None`` means
    :class:`~agentperf.JsonCodec` ``()``."""
    lease: float = 30.0
    """Seconds a leader's lease in the store lasts unless renewed (it is renewed while the
    agent runs; only a dead leader's runs out, and then a waiter takes over)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_size", v.integer("max_size", self.max_size, minimum=1))
        ttl = v.seconds("ttl", self.ttl)
        set_(self, "ttl", None if ttl == float("inf") else ttl)
        set_(
            self,
            "cleanup_interval",
            v.seconds("cleanup_interval", self.cleanup_interval, allow_none=False),
        )
        set_(self, "enable_stats", v.boolean("enable_stats", self.enable_stats))
        set_(self, "key_generator", v.optional_callable("key_generator", self.key_generator))
        set_(self, "policy", v.cache_policy(self.policy))
        if self.max_weight is not None:
            set_(self, "max_weight", v.integer("max_weight", self.max_weight, minimum=1))
        set_(self, "weigher", v.optional_callable("weigher", self.weigher))
        if self.max_weight is not None and self.weigher is None:
            raise ValueError("weigher=None: max_weight needs a weigher (value -> int)")
        set_(self, "name", v.name(self.name))
        _check_tier(self)


def _check_tier(cfg: CacheConfig) -> None:
    """``store``, ``codec`` and ``lease`` (the second tier's fields)."""
    lease = v.seconds("lease", cfg.lease, allow_none=False)
    if lease is None or lease == float("inf"):
        raise ValueError(f"lease={v.show(cfg.lease)}: must be a finite number of seconds")
    object.__setattr__(cfg, "lease", lease)
    if cfg.store is not None:
        from .store import Store

        if not isinstance(cfg.store, Store):
            raise TypeError(
                f"store={v.show(cfg.store)}: expected an agentperf.RedisStore, SqliteStore "
                "or another agentperf.store.Store"
            )
    if cfg.codec is not None:
        from .codec import Codec

        if not isinstance(cfg.codec, Codec):
            raise TypeError(
                f"codec={v.show(cfg.codec)}: expected an agentperf.JsonCodec, PickleCodec "
                "or an object with encode(value) -> bytes and decode(bytes)"
            )


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Settings of an :class:`~agentperf.AgentPool` (the seed's ``DefaultPoolConfig``).

    ``initial_size`` left unset is ``min(5, max_size)``. ``None`` for ``acquire_timeout``,
    ``idle_timeout`` or ``max_lifetime`` means no limit.
    """

    initial_size: int = _UNSET
    """Agents created up front; idleness never shrinks the pool below it."""
    max_size: int = 50
    """Most agents alive at once; past it callers wait."""
    idle_timeout: float | None = 300.0
    """Seconds an idle agent is kept before the cleanup destroys it."""
    max_lifetime: float | None = 1800.0
    """Seconds after creation an agent is retired (never handed out past it)."""
    acquire_timeout: float | None = 10.0
    """Default wait for a free agent before ``PoolTimeoutError``."""
    cleanup_interval: float = 60.0
    """Seconds between rounds of the shared cleanup thread for this pool."""
    check: Callable[[Any], bool] | None = None
    """Runs before a reused agent is handed out; falsy or raising destroys it."""
    name: str | None = None
    """The pool's name in the metrics (:mod:`agentperf.metrics`): 1 to 128 characters of
    ``A-Za-z0-9_.:/-``; ``None`` (the default) is not exported."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        max_size = v.integer("max_size", self.max_size, minimum=1)
        set_(self, "max_size", max_size)
        if self.initial_size is _UNSET:
            set_(self, "initial_size", min(5, max_size))
        else:
            initial = v.integer("initial_size", self.initial_size, minimum=0)
            if initial > max_size:
                raise ValueError(
                    f"initial_size={v.show(initial)}: must be <= max_size ({max_size})"
                )
            set_(self, "initial_size", initial)
        for name in ("idle_timeout", "max_lifetime", "acquire_timeout"):
            s = v.seconds(name, getattr(self, name))
            set_(self, name, None if s == float("inf") else s)
        set_(
            self,
            "cleanup_interval",
            v.seconds("cleanup_interval", self.cleanup_interval, allow_none=False),
        )
        set_(self, "check", v.optional_callable("check", self.check))
        set_(self, "name", v.name(self.name))


class ErrorPolicy(enum.Enum):
    """What a batch does when an item fails."""

    FAIL_FAST = "fail_fast"
    """The first error cancels everything still pending or running."""
    CONTINUE = "continue"
    """Every item runs; every error is collected."""


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Settings of a :class:`~agentperf.BatchExecutor` (the seed's ``DefaultBatchConfig``)."""

    max_concurrency: int | AdaptiveConcurrency = 10
    """Most agent calls in flight at once, or an :class:`~agentperf.AdaptiveConcurrency` that
    finds the limit the backend sustains (between its ``min`` and ``max``)."""
    timeout: float | None = 300.0
    """Seconds for the whole batch; ``None`` means no limit."""
    item_timeout: float | None = None
    """Seconds for each agent call; ``None`` means no limit."""
    error_policy: ErrorPolicy = ErrorPolicy.CONTINUE
    """:attr:`ErrorPolicy.CONTINUE` or :attr:`ErrorPolicy.FAIL_FAST`."""
    enable_stats: bool = True
    """Keep cumulative statistics in :meth:`BatchExecutor.stats`."""
    name: str | None = None
    """The executor's name in the metrics (:mod:`agentperf.metrics`): 1 to 128 characters of
    ``A-Za-z0-9_.:/-``; ``None`` (the default) is not exported."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        mc = self.max_concurrency
        if isinstance(mc, int) or not _is_adaptive(mc):
            set_(self, "max_concurrency", v.integer("max_concurrency", mc, minimum=1))
        for name in ("timeout", "item_timeout"):
            s = v.seconds(name, getattr(self, name))
            set_(self, name, None if s == float("inf") else s)
        policy = self.error_policy
        if isinstance(policy, str) and not isinstance(policy, ErrorPolicy):
            try:
                policy = ErrorPolicy(policy.lower())
            except ValueError:
                raise ValueError(
                    f"error_policy={v.show(self.error_policy)}: expected one of "
                    f"{[p.value for p in ErrorPolicy]}"
                ) from None
        if not isinstance(policy, ErrorPolicy):
            raise TypeError(
                f"error_policy={v.show(self.error_policy)}: expected an ErrorPolicy, "
                f"got {type(self.error_policy).__name__}"
            )
        set_(self, "error_policy", policy)
        set_(self, "enable_stats", v.boolean("enable_stats", self.enable_stats))
        set_(self, "name", v.name(self.name))


def _is_adaptive(value: Any) -> bool:
    from .adaptive import AdaptiveConcurrency

    return isinstance(value, AdaptiveConcurrency)


def build(cls: type[Any], config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` (or the defaults) with keyword overrides: the wrappers' constructor rule."""
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"config={v.show(config)}: expected a {cls.__name__} or None")
    if config is None:
        return cls(**overrides)
    if overrides:
        return dataclasses.replace(config, **overrides)
    return config
