"""Bad input: arbitrary configuration values for every config class and constructor.

Whatever is passed, the outcome is either a ``ValueError``/``TypeError`` whose message names
one of the fields given, or a working object. Never anything else: no ``SystemError``, no
``OverflowError``, no pyo3 ``PanicException``, no hang. (``hash_key`` is fuzzed in
``test_keys.py``.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentperf as ap


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class _IntLike:
    """Has ``__index__`` and ``__float__`` but is not an int or a float."""

    def __index__(self) -> int:
        return 3

    def __float__(self) -> float:
        return 3.0


huge_ints = st.sampled_from(
    [2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 2**127, 2**128, 10**30, 10**300]
)
# Ints past the float range (10**400) as durations are tested alone below
# (test_int_past_float_range_*): the Python validators still raise OverflowError for them.
FLOAT_MAX_INT = 2**1000
ints = st.one_of(
    st.integers(min_value=-5, max_value=20),
    st.integers(min_value=-FLOAT_MAX_INT, max_value=FLOAT_MAX_INT),
    huge_ints,
    huge_ints.map(lambda n: -n),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0.0, -0.0, 5e-324, 1e-9, 0.5, 1.0, 1e9, 1e18, 1e20, 1.8e19, 1e300, -1.0, math.inf]
    ),
    st.sampled_from([-math.inf, math.nan]),
)
timedeltas = st.one_of(
    st.timedeltas(),
    st.sampled_from(
        [
            datetime.timedelta(0),
            datetime.timedelta(microseconds=1),
            datetime.timedelta(seconds=-1),
            datetime.timedelta.max,
            datetime.timedelta.min,
        ]
    ),
)
values: st.SearchStrategy[Any] = st.one_of(
    ints,
    floats,
    timedeltas,
    st.text(max_size=8),
    st.binary(max_size=4),
    st.none(),
    st.booleans(),
    st.builds(_Opaque),
    st.builds(_IntLike),
    st.builds(object),
    st.lists(st.integers(), max_size=2),
    st.sampled_from(["continue", "FAIL_FAST", "fail_fast", "nope", "", "1", "0.5"]),
    st.sampled_from(list(ap.ErrorPolicy)),
    st.just(1 + 2j),
)

CACHE_FIELDS = ["max_size", "ttl", "cleanup_interval", "enable_stats", "key_generator"]
POOL_FIELDS = [
    "initial_size",
    "max_size",
    "idle_timeout",
    "max_lifetime",
    "acquire_timeout",
    "cleanup_interval",
    "check",
]
BATCH_FIELDS = ["max_concurrency", "timeout", "item_timeout", "error_policy", "enable_stats"]
BATCH_EXTRA = ["semaphore", "progress", "on_progress"]
STORE_FIELDS = ["max_size", "ttl", "cleanup_interval", "enable_stats"]


def kwargs_of(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))


def assert_names_a_field(e: BaseException, kw: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    """The error is a ValueError/TypeError naming one of the fields given."""
    assert type(e).__name__ != "PanicException", f"a Rust panic reached Python: {e!r}"
    assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__}: {e} for {kw!r}"
    msg = str(e)
    names = [*kw, *extra]
    assert any(name in msg for name in names), f"{msg!r} names none of {names!r}"


def outcome(fn: Any, *args: Any, **kw: Any) -> tuple[Any, BaseException | None]:
    try:
        return fn(*args, **kw), None
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return None, e


def same_verdict(a: BaseException | None, b: BaseException | None) -> None:
    """What the config class refuses the constructor refuses alike (the constructor may
    refuse more: a ``max_size`` past what the store can index)."""
    if a is not None:
        assert b is not None, f"config says {a!r}, the constructor accepts"
        assert type(a) is type(b), f"config raised {a!r}, constructor {b!r}"


def lasts(ttl: float | None) -> bool:
    """Whether an entry with this TTL surely outlives the few calls of a test."""
    return ttl is None or ttl >= 60


def check_cache_config(cfg: ap.CacheConfig) -> None:
    assert type(cfg.max_size) is int and cfg.max_size >= 1
    assert cfg.ttl is None or (type(cfg.ttl) is float and 0 < cfg.ttl < math.inf)
    assert type(cfg.cleanup_interval) is float and cfg.cleanup_interval > 0
    assert type(cfg.enable_stats) is bool
    assert cfg.key_generator is None or callable(cfg.key_generator)


def check_pool_config(cfg: ap.PoolConfig) -> None:
    assert type(cfg.max_size) is int and cfg.max_size >= 1
    assert type(cfg.initial_size) is int and 0 <= cfg.initial_size <= cfg.max_size
    for name in ("idle_timeout", "max_lifetime", "acquire_timeout"):
        v = getattr(cfg, name)
        assert v is None or (type(v) is float and 0 < v < math.inf), (name, v)
    assert type(cfg.cleanup_interval) is float and cfg.cleanup_interval > 0
    assert cfg.check is None or callable(cfg.check)


def check_batch_config(cfg: ap.BatchConfig) -> None:
    assert type(cfg.max_concurrency) is int and cfg.max_concurrency >= 1
    for name in ("timeout", "item_timeout"):
        v = getattr(cfg, name)
        assert v is None or (type(v) is float and 0 < v < math.inf), (name, v)
    assert isinstance(cfg.error_policy, ap.ErrorPolicy)
    assert type(cfg.enable_stats) is bool


# --- the config classes -------------------------------------------------------------------


@given(kwargs_of(CACHE_FIELDS))
def test_cache_config(kw: dict[str, Any]) -> None:
    cfg, err = outcome(ap.CacheConfig, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
    else:
        check_cache_config(cfg)


@given(kwargs_of(POOL_FIELDS))
def test_pool_config(kw: dict[str, Any]) -> None:
    cfg, err = outcome(ap.PoolConfig, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
    else:
        check_pool_config(cfg)


@given(kwargs_of(BATCH_FIELDS))
def test_batch_config(kw: dict[str, Any]) -> None:
    cfg, err = outcome(ap.BatchConfig, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
    else:
        check_batch_config(cfg)


@given(kwargs_of(CACHE_FIELDS), kwargs_of(CACHE_FIELDS))
def test_cache_config_replace(base: dict[str, Any], over: dict[str, Any]) -> None:
    """``X(agent, cfg, **overrides)``: overriding a valid config validates the overrides."""
    cfg, err = outcome(ap.CacheConfig, **base)
    if err is not None:
        return
    new, err = outcome(dataclasses.replace, cfg, **over)
    if err is not None:
        assert_names_a_field(err, over)
    else:
        check_cache_config(new)


# --- the constructors ---------------------------------------------------------------------


def double(x: Any) -> Any:
    return x * 2


@pytest.mark.timeout(120)
@given(kwargs_of(CACHE_FIELDS))
def test_cached_agent(kw: dict[str, Any]) -> None:
    _, cfg_err = outcome(ap.CacheConfig, **kw)
    agent, err = outcome(ap.CachedAgent, double, **kw)
    same_verdict(cfg_err, err)
    if err is not None:
        assert_names_a_field(err, kw)
        return
    with agent:
        assert agent.execute(21) == 42
        assert agent.execute(21) == 42
        s = agent.stats()
        if agent.config.enable_stats:
            assert s.hits + s.misses == 2
            if lasts(agent.config.ttl):
                assert (s.hits, s.misses) == (1, 1)
                assert agent.invalidate(21) is True


@pytest.mark.timeout(120)
@given(kwargs_of(CACHE_FIELDS))
async def test_cached_agent_async(kw: dict[str, Any]) -> None:
    agent, err = outcome(ap.CachedAgent, double, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
        return
    async with agent:
        assert await agent.aexecute(4) == 8
        assert await agent.aexecute(4) == 8


@pytest.mark.timeout(120)
@given(kwargs_of(STORE_FIELDS))
def test_cache_store(kw: dict[str, Any]) -> None:
    c, err = outcome(ap.Cache, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
        return
    with c:
        c.set("k", 1)
        ttl = kw.get("ttl")
        if lasts(ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else ttl):
            assert c.get("k") == 1
            assert "k" in c and len(c) == 1
            assert c.delete("k") is True
        else:  # may have expired already
            assert c.get("k") in (1, None)


@given(values)
def test_cache_set_ttl(ttl: Any) -> None:
    with ap.Cache(max_size=4) as c:
        _, err = outcome(c.set, "k", "v", ttl=ttl)
        if err is not None:
            assert_names_a_field(err, {"ttl": ttl})
            assert "k" not in c
            return
        if lasts(ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else ttl):
            assert c.get("k") == "v"
        else:  # may have expired already
            assert c.get("k") in ("v", None)


@given(values)
def test_cached_decorator(max_size: Any) -> None:
    deco, err = outcome(ap.cached, max_size=max_size, ttl=1.0)
    if err is None:
        f, err = outcome(deco, double)
    if err is not None:
        assert_names_a_field(err, {"max_size": max_size})
        return
    assert f(3) == 6 and f(3) == 6
    assert f.cache_stats().hits == 1
    f.cache_agent.close()


class TooMany(Exception):
    """The factory refuses past a few agents: a valid but huge ``initial_size`` stops here."""


FACTORY_LIMIT = 32


class Factory:
    def __init__(self) -> None:
        self.made = 0
        self.closed = 0

    def __call__(self) -> Any:
        if self.made >= FACTORY_LIMIT:
            raise TooMany
        self.made += 1
        f = self

        class Agent:
            def execute(self, x: Any) -> Any:
                return x * 2

            def close(self) -> None:
                f.closed += 1

        return Agent()


@pytest.mark.timeout(120)
@given(kwargs_of(POOL_FIELDS))
def test_agent_pool(kw: dict[str, Any]) -> None:
    cfg, cfg_err = outcome(ap.PoolConfig, **kw)
    factory = Factory()
    pool, err = outcome(ap.AgentPool, factory, **kw)
    if isinstance(err, TooMany):
        # Validation passed and the pool began making its initial agents.
        assert cfg_err is None and cfg.initial_size > FACTORY_LIMIT
        assert factory.closed == factory.made, "a failed constructor leaked agents"
        return
    same_verdict(cfg_err, err)
    if err is not None:
        assert_names_a_field(err, kw)
        assert factory.made == 0
        return
    with pool:
        assert pool.execute(5) == 10
        s = pool.stats()
        assert s.max_size == cfg.max_size
        assert s.created == factory.made >= max(cfg.initial_size, 1)
        if cfg.max_lifetime is None or cfg.max_lifetime >= 60:
            assert s.created == max(cfg.initial_size, 1)
        assert s.acquired == s.released == 1
    closed_all(factory)


def closed_all(factory: Factory) -> None:
    """Every agent made is closed once the pool is (close() waits for a cleanup round that
    had taken idle agents out)."""
    assert factory.closed == factory.made


@pytest.mark.timeout(120)
@given(kwargs_of(POOL_FIELDS))
async def test_agent_pool_async(kw: dict[str, Any]) -> None:
    factory = Factory()
    pool, err = outcome(ap.AgentPool, factory, **kw)
    if isinstance(err, TooMany):
        return
    if err is not None:
        assert_names_a_field(err, kw)
        return
    async with pool:
        assert await pool.aexecute(5) == 10
    closed_all(factory)


@given(values, values)
def test_pool_acquire_timeout_argument(timeout: Any, wait: Any) -> None:
    with ap.AgentPool(Factory(), max_size=1, initial_size=1) as pool:
        agent, err = outcome(pool.acquire, timeout)
        if err is not None:
            assert_names_a_field(err, {"timeout": timeout})
            assert pool.stats().active_count == 0
            return
        pool.release(agent)
        _, err = outcome(pool.agent, wait)
        if err is not None:
            assert_names_a_field(err, {"timeout": wait})


async def aquadruple(x: Any) -> Any:
    return x * 4


@pytest.mark.timeout(120)
@given(kwargs_of(BATCH_FIELDS + BATCH_EXTRA))
def test_batch_executor(kw: dict[str, Any]) -> None:
    _, cfg_err = outcome(ap.BatchConfig, **{k: v for k, v in kw.items() if k in BATCH_FIELDS})
    ex, err = outcome(ap.BatchExecutor, aquadruple, **kw)
    if err is not None:
        assert_names_a_field(err, kw)
        if cfg_err is not None:
            assert type(err) is type(cfg_err)
        return
    assert cfg_err is None
    with ex:
        result = ex.execute([1, 2, 3])
        st_ = result.stats
        assert st_.total_count == 3
        assert st_.success_count + st_.failure_count + st_.cancelled_count == 3
        assert len(result.errors) == st_.failure_count
        if ex.config.timeout is None and ex.config.item_timeout is None:
            assert result.outputs == [4, 8, 12]


@given(values)
def test_semaphore(permits: Any) -> None:
    sem, err = outcome(ap.Semaphore, permits)
    if err is not None:
        assert_names_a_field(err, {"permits": permits})
        return
    assert sem.permits == permits == sem.available
    assert sem.try_acquire() is True
    assert sem.available == permits - 1
    sem.release()
    assert sem.available == permits


@given(values)
def test_semaphore_acquire_timeout(timeout: Any) -> None:
    sem = ap.Semaphore(1)
    got, err = outcome(sem.acquire, timeout)
    if err is not None:
        assert_names_a_field(err, {"timeout": timeout})
        assert sem.available == 1
        return
    assert got is True and sem.available == 0
    sem.release()

    async def aacquire() -> Any:
        return await sem.aacquire(timeout)

    got, err = outcome(asyncio.run, aacquire())
    if err is not None:
        assert_names_a_field(err, {"timeout": timeout})
        assert sem.available == 1
        return
    assert got is True
    sem.release()


# --- ints past the float range --------------------------------------------------------------

PAST_FLOAT = 10**400

OVERFLOW_CASES = {
    "CacheConfig.ttl": lambda: ap.CacheConfig(ttl=PAST_FLOAT),
    "PoolConfig.idle_timeout": lambda: ap.PoolConfig(idle_timeout=PAST_FLOAT),
    "BatchConfig.timeout": lambda: ap.BatchConfig(timeout=PAST_FLOAT),
    "AgentPool.acquire.timeout": lambda: ap.AgentPool(Factory(), initial_size=0).acquire(
        timeout=PAST_FLOAT
    ),
}


@pytest.mark.parametrize("case", sorted(OVERFLOW_CASES))
def test_int_past_float_range_python_validators(case: str) -> None:
    _, err = outcome(OVERFLOW_CASES[case])
    if isinstance(err, OverflowError):
        raise err
    assert err is not None
    assert_names_a_field(err, {case.rsplit(".", 1)[1]: PAST_FLOAT})


RUST_OVERFLOW_CASES = {
    "Cache.ttl": lambda: ap.Cache(ttl=PAST_FLOAT),
    "Cache.cleanup_interval": lambda: ap.Cache(cleanup_interval=PAST_FLOAT),
    "Cache.set.ttl": lambda: ap.Cache().set("k", 1, ttl=PAST_FLOAT),
    "Semaphore.acquire.timeout": lambda: _held_semaphore().acquire(PAST_FLOAT),
    "Semaphore.aacquire.timeout": lambda: asyncio.run(_held_semaphore().aacquire(PAST_FLOAT)),
}


def _held_semaphore() -> ap.Semaphore:
    sem = ap.Semaphore(1)
    assert sem.try_acquire()
    return sem


@pytest.mark.parametrize("case", sorted(RUST_OVERFLOW_CASES))
def test_int_past_float_range_is_a_value_error(case: str) -> None:
    _, err = outcome(RUST_OVERFLOW_CASES[case])
    assert err is not None
    assert_names_a_field(err, {case.rsplit(".", 1)[1]: PAST_FLOAT})
    assert "is too large" in str(err)


@pytest.mark.parametrize("seconds", [9.3e18, 1.8e19, datetime.timedelta.max])
def test_huge_cleanup_interval_does_not_panic(seconds: Any) -> None:
    """An interval past what ``Instant`` arithmetic holds used to panic in the cleanup
    registration (PanicException from the constructor); it now means "a century"."""
    with ap.Cache(cleanup_interval=seconds) as c:
        c.set("k", 1)
        assert c.get("k") == 1
    with ap.CachedAgent(double, cleanup_interval=seconds) as a:
        assert a.execute(2) == 4
    with ap.AgentPool(Factory(), cleanup_interval=seconds, idle_timeout=1.0) as p:
        assert p.execute(2) == 4


def test_pool_max_size_past_usize() -> None:
    for n in (2**64, 2**64 + 1, 2**200):
        _, err = outcome(ap.AgentPool, Factory(), max_size=n)
        assert err is not None
        assert_names_a_field(err, {"max_size": n})


def test_semaphore_aacquire_accepts_a_timedelta() -> None:
    """API.md: a timedelta is accepted wherever a duration is (the sync acquire did)."""
    sem = _held_semaphore()
    got = asyncio.run(sem.aacquire(datetime.timedelta(milliseconds=10)))
    assert got is False and sem.available == 0
    sem.release()
    assert asyncio.run(sem.aacquire(datetime.timedelta(seconds=1))) is True


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lifetime", [5e-324, 1e-9])
def test_pool_shorter_lived_than_its_factory_still_constructs(lifetime: float) -> None:
    """An agent past ``max_lifetime`` by the time it is stored is destroyed at once; filling
    ``initial_size`` used to create agents forever (a hang with a real factory)."""
    factory = Factory()
    with ap.AgentPool(factory, initial_size=3, max_lifetime=lifetime) as pool:
        assert factory.made <= 3
        assert pool.execute(2) == 4

    async def main() -> None:
        f = Factory()

        async def afactory() -> Any:
            return f()

        async with ap.AgentPool(afactory, initial_size=3, max_lifetime=lifetime) as p:
            assert f.made <= 3
            assert await p.aexecute(2) == 4

    asyncio.run(main())


class BadRepr:
    """A value whose repr raises: the error must still be the clear one."""

    def __repr__(self) -> str:
        raise RuntimeError("repr failed")


class HugeRepr:
    def __repr__(self) -> str:
        return "H" * 1_000_000


BAD_VALUE_CALLS: list[tuple[str, Any]] = [
    ("max_size", lambda v: ap.CacheConfig(max_size=v)),
    ("ttl", lambda v: ap.CacheConfig(ttl=v)),
    ("max_size", lambda v: ap.Cache(max_size=v)),
    ("ttl", lambda v: ap.Cache(ttl=v)),
    ("max_size", lambda v: ap.CachedAgent(str, max_size=v)),
    ("key", lambda v: ap.cached(key=v)),
    ("max_size", lambda v: ap.PoolConfig(max_size=v)),
    ("idle_timeout", lambda v: ap.PoolConfig(idle_timeout=v)),
    ("factory", lambda v: ap.AgentPool(v)),
    ("max_concurrency", lambda v: ap.BatchConfig(max_concurrency=v)),
    ("error_policy", lambda v: ap.BatchConfig(error_policy=v)),
    ("semaphore", lambda v: ap.BatchExecutor(str, semaphore=v)),
    ("progress", lambda v: ap.BatchExecutor(str, progress=v)),
    ("permits", lambda v: ap.Semaphore(v)),
    ("timeout", lambda v: ap.Semaphore(1).acquire(v)),  # a free permit: still refused
    ("timeout", lambda v: asyncio.run(ap.Semaphore(1).aacquire(v))),
    ("config", lambda v: ap.CachedAgent(str, v)),
]


@pytest.mark.parametrize(("field", "call"), BAD_VALUE_CALLS)
@pytest.mark.parametrize("value", [BadRepr(), HugeRepr()], ids=["repr-raises", "repr-huge"])
def test_error_for_a_value_with_a_bad_repr(field: str, call: Any, value: Any) -> None:
    _, err = outcome(call, value)
    assert err is not None, f"{field}={type(value).__name__}() was accepted"
    assert_names_a_field(err, {field: value})
    msg = str(err)
    assert len(msg) < 500, f"a {len(msg)}-character message"
    if isinstance(value, BadRepr):
        assert "BadRepr object (repr failed)" in msg, msg
    else:
        assert "HHH..." in msg, msg
