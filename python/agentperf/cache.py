"""The result cache: :class:`Cache`, :class:`CachedAgent` and the :func:`cached` decorator.

The store, the key digest, the hit path and single-flight live in Rust
(``agentperf._agentperf``); this module adds the constructor rule, the async path and the
decorator.

>>> import agentperf as ap
>>> calls = []
>>> def agent(x):
...     calls.append(x)
...     return x * 2
>>> with ap.CachedAgent(agent, max_size=100, ttl=60.0) as c:
...     c.execute(21), c.execute(21), len(calls)
(42, 42, 1)
"""

from __future__ import annotations

import datetime
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from . import _lifecycle
from ._agentperf import Cache as _Cache
from ._agentperf import CachedAgentCore, CacheStats, Flight
from ._closeable import Closeable
from ._config import name as _valid_name
from ._config import optional_callable
from ._runner import UNBOUNDED_MIN, Runner, widen
from .agent import adapt
from .config import CacheConfig, build
from .metrics import _registry

if TYPE_CHECKING:
    from ._types import SupportsAexecute, SupportsAinvoke, SupportsExecute, SupportsInvoke

__all__ = ["Cache", "CacheStats", "CachedAgent", "CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
I = TypeVar("I")  # noqa: E741 - the input type, as API.md writes CachedAgent[I, O]
O = TypeVar("O")  # noqa: E741 - the output type


class Cache(_Cache):
    """A sharded, thread-safe TTL/LRU (or W-TinyLFU) cache for ``str`` and ``bytes`` keys.

    ``Cache(max_size=10_000, ttl=None, *, cleanup_interval=60.0, enable_stats=True,
    policy="lru", max_weight=None, weigher=None, name=None)``; an argument given as ``None``
    takes its default. ``name`` (1 to 128 characters of ``A-Za-z0-9_.:/-``) exports the
    cache in the metrics (:mod:`agentperf.metrics`) while it lives.

    >>> c = Cache(max_size=2, name="profiles")
    >>> c.set("a", 1); c.get("a"), c.name
    (1, 'profiles')
    """

    __slots__ = ("_name",)
    _name: str | None

    def __new__(
        cls,
        max_size: int | None = None,
        ttl: float | datetime.timedelta | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> Cache:
        valid = _valid_name(name)
        self = super().__new__(cls, max_size, ttl, **options)
        self._name = valid
        if valid is not None:
            _registry.register("cache", self)
        return self

    @property
    def name(self) -> str | None:
        """The cache's name in the metrics; ``None``: not exported."""
        return self._name


class _Leading:
    """Reports a leader's failure to its flight: an ``Exception`` goes to every waiter (and is
    not cached); any other ``BaseException`` (cancellation, exit) hands the call on."""

    __slots__ = ("flight",)

    def __init__(self, flight: Flight) -> None:
        self.flight = flight

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception):
            self.flight.fail(exc)
        elif exc is not None:
            self.flight.abandon()


class CachedAgent(CachedAgentCore, Closeable, Generic[I, O]):
    """An agent whose outputs are cached by input, with single-flight.

    ``CachedAgent(agent, cfg)`` or ``CachedAgent(agent, max_size=..., ttl=...)`` (the fields of
    :class:`~agentperf.CacheConfig`). The key of an input is ``cfg.key_generator(input)`` if
    set, else :func:`~agentperf.hash_key`. Concurrent misses for one key, from threads or
    asyncio tasks, run the agent once; the others receive that output or that exception.
    Outputs are returned as stored (no copy); an agent that raises caches nothing.

    ``execute`` is one Rust call: the digest, the lookup, single-flight and, on a miss, the
    agent call. On a thread whose event loop is running, ``execute`` raises ``RuntimeError``
    rather than wait for another caller's in-flight call (use ``await aexecute(...)``).
    After :meth:`close`, ``execute`` and ``aexecute`` raise ``RuntimeError``.

    With ``store=`` (a :class:`~agentperf.RedisStore` or :class:`~agentperf.SqliteStore`;
    ``codec=``, ``lease=``), the store is a second tier shared by processes: see
    :mod:`agentperf.tiers`. Without one, nothing of it is imported.
    """

    config: CacheConfig
    """The settings in force."""
    agent: Any
    """The wrapped agent, as given."""
    _acall: Callable[[Any], Awaitable[Any]]
    _keyfn: Callable[[Any], str | bytes] | None
    _runner: Runner

    def __new__(cls, agent: Any, config: CacheConfig | None = None, /, **overrides: Any) -> Any:
        manual = bool(overrides.pop("_manual_clock", False))
        cfg = build(CacheConfig, config, overrides)
        runner = Runner(UNBOUNDED_MIN, "agentperf-cache")  # a blocking agent's misses, async
        adapter = adapt(agent, runner)
        call, tier = adapter.call, None
        if cfg.store is not None:  # the store-backed variant (agentperf.cache_tiers)
            from .cache_tiers import make_tier, tiered_class

            tier, call = make_tier(cfg, adapter)
            cls = tiered_class(cls)
        self = super().__new__(
            cls,
            call,
            cfg.max_size,
            cfg.ttl,
            cfg.cleanup_interval,
            cfg.enable_stats,
            cfg.key_generator,
            manual,
            policy=cfg.policy,
            max_weight=cfg.max_weight,
            weigher=cfg.weigher,
        )
        self.config = cfg
        self.agent = agent
        self._acall = adapter.acall
        self._keyfn = cfg.key_generator
        self._runner = runner
        if tier is not None:
            self._tier = tier
        _CACHED.add(self)
        if cfg.name is not None:
            _registry.register("cache", self)
        return self

    @property
    def name(self) -> str | None:
        """The cached agent's name in the metrics (``config.name``); ``None``: not
        exported."""
        return self.config.name

    def _widen_runner(self, limit: int) -> None:  # a BatchExecutor of that max_concurrency
        self._runner.widen(limit)
        widen(self.agent, limit)

    def close(self) -> None:
        """Drop every entry and stop the cleanup thread and the blocking-call threads."""
        super().close()
        self._runner.close()

    @overload
    def __init__(
        self: CachedAgent[I, O],
        agent: Callable[[I], Coroutine[Any, Any, O]],
        config: CacheConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: CachedAgent[I, O],
        agent: SupportsAexecute[I, O] | SupportsAinvoke[I, O],
        config: CacheConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: CachedAgent[I, O],
        agent: SupportsExecute[I, O] | SupportsInvoke[I, O],
        config: CacheConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
    @overload
    def __init__(
        self: CachedAgent[I, O],
        agent: Callable[[I], O],
        config: CacheConfig | None = None,
        /,
        **overrides: Any,
    ) -> None: ...
    def __init__(self, agent: Any, config: CacheConfig | None = None, /, **overrides: Any) -> None:
        pass

    if TYPE_CHECKING:  # typing only: the method is the Rust one

        def execute(self, input: I, /) -> O:
            """Run the agent on ``input``, or return the cached output (one Rust call)."""

    async def aexecute(self, input: I, /) -> O:
        """Run the agent on ``input`` without blocking the event loop, or return the cached
        output. Waiting for another caller's in-flight call never blocks the loop; a
        cancelled caller leaves nothing behind (a cancelled leader hands the call on)."""
        keyfn = self._keyfn
        key = None if keyfn is None else keyfn(input)
        got: O | Flight  # annotations only: nothing runs for them
        value: O
        while True:
            got = self._alookup(input, key)
            if type(got) is not Flight:
                return got
            if got.leader:
                with _Leading(got):
                    value = await self._acall(input)
                got.succeed(value)
                return value
            try:
                await got.future
            except BaseException:
                got.withdraw()
                raise
            done, value = got.outcome()
            if done:
                return value

    def cache_key(self, input: Any, /) -> str | bytes:
        """``key_generator(input)`` if set, else ``hash_key(input)``."""
        keyfn = self._keyfn
        if keyfn is None:
            return super().cache_key(input)
        k = keyfn(input)
        if not isinstance(k, (str, bytes)):
            raise TypeError(f"key_generator returned {type(k).__name__}: expected str or bytes")
        return k

    def invalidate(self, input: Any, /) -> bool:
        """Remove the entry for ``input``; ``True`` if one was removed. A call for it still
        in flight delivers its result to its waiters but does not cache it."""
        keyfn = self._keyfn
        return self._invalidate(input, None if keyfn is None else keyfn(input))

    def __repr__(self) -> str:
        cfg = self.config
        return f"CachedAgent({self.agent!r}, max_size={cfg.max_size}, ttl={cfg.ttl})"


_CACHED: weakref.WeakSet[CachedAgent[Any, Any]] = weakref.WeakSet()


def _after_fork_child() -> None:
    """In a forked child, no cached agent waits for a call in flight in the parent."""
    for c in list(_CACHED):
        c._after_fork_child()


_lifecycle.at_fork(after_in_child=_after_fork_child)


class CachedFunction(Protocol[P, R_co]):
    """A function wrapped by :func:`cached`."""

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def cache_stats(self) -> CacheStats:
        """Hits, misses, hit rate, size, max_size, evictions, expirations."""

    def cache_invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove the entry for these arguments; ``True`` if one was removed."""

    def cache_clear(self) -> None:
        """Remove every entry."""


class _Decorator(Protocol):
    def __call__(self, fn: Callable[P, R], /) -> CachedFunction[P, R]: ...


@overload
def cached(fn: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    *,
    max_size: int = 1000,
    ttl: float | None = 60.0,
    key: Callable[..., str | bytes] | None = None,
    cleanup_interval: float = 60.0,
    name: str | None = None,
) -> _Decorator: ...
def cached(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    max_size: int = 1000,
    ttl: float | None = 60.0,
    key: Callable[..., str | bytes] | None = None,
    cleanup_interval: float = 60.0,
    name: str | None = None,
) -> Any:
    """Cache a sync or async function's results, with single-flight.

    The key is ``hash_key((args, kwargs))`` unless ``key(*args, **kwargs)`` (returning str or
    bytes) is given. The wrapper has ``cache_stats()``, ``cache_invalidate(*args, **kwargs)``
    and ``cache_clear()``. ``name`` exports its cache in the metrics (:mod:`agentperf.metrics`).

    >>> @cached(max_size=100, ttl=60.0)
    ... def square(x):
    ...     return x * x
    >>> square(3), square(3), square.cache_stats().hits
    (9, 9, 1)
    """
    cfg = CacheConfig(max_size=max_size, ttl=ttl, cleanup_interval=cleanup_interval, name=name)
    optional_callable("key", key)

    def decorate(f: Callable[..., Any]) -> Any:
        if not callable(f):
            raise TypeError(f"cached() needs a function, got {type(f).__name__}")
        gen: Callable[[Any], str | bytes] | None = None
        if key is not None:
            k = key

            def gen(inp: tuple[tuple[Any, ...], dict[str, Any]]) -> str | bytes:
                return k(*inp[0], **inp[1])

        is_async = inspect.iscoroutinefunction(f)
        if is_async:

            async def agent(inp: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
                return await f(*inp[0], **inp[1])

        else:

            def agent(inp: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:  # type: ignore[misc]
                return f(*inp[0], **inp[1])

        core = CachedAgent(agent, cfg, key_generator=gen)
        wrapper: Any
        if is_async:

            @functools.wraps(f)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await core.aexecute((args, kwargs))

        else:
            execute = core.execute

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return execute((args, kwargs))

        def cache_invalidate(*args: Any, **kwargs: Any) -> bool:
            return core.invalidate((args, kwargs))

        wrapper.cache_stats = core.stats
        wrapper.cache_invalidate = cache_invalidate
        wrapper.cache_clear = core.invalidate_all
        wrapper.cache_agent = core
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate
