"""Cache policy (``policy="tinylfu"``) and weight bounds (``max_weight``, ``weigher``)."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

import agentperf as ap

POLICIES = ["lru", "tinylfu"]


def test_lru_is_the_default_and_tinylfu_is_chosen_by_name() -> None:
    assert ap.Cache(max_size=10).policy == "lru"
    assert ap.Cache(max_size=10, policy="tinylfu").policy == "tinylfu"
    assert ap.CacheConfig().policy == "lru"
    assert ap.CacheConfig(policy="tinylfu").policy == "tinylfu"


def test_tinylfu_keeps_the_hot_set_through_a_scan() -> None:
    def run(policy: str) -> int:
        c = ap.Cache(max_size=1000, policy=policy)  # type: ignore[arg-type]
        hot = [f"hot{i}" for i in range(500)]
        rng = random.Random(1)
        for _ in range(20):
            rng.shuffle(hot)
            for k in hot:
                if c.get(k) is None:
                    c.set(k, 1)
        for i in range(10_000):
            c.set(f"scan{i}", 1)
        assert len(c) <= 1000
        return sum(k in c for k in hot)

    assert run("tinylfu") >= 450
    assert run("lru") == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_expired_entries_go_first_under_both_policies(policy: str) -> None:
    c = ap.Cache(max_size=3, policy=policy, _manual_clock=True)  # type: ignore[arg-type]
    c.set("a", 1)
    c.set("b", 2, ttl=0.05)
    c.set("c", 3)
    for _ in range(5):
        c.get("a")
        c.get("c")
    c._advance(0.1)
    c.set("d", 4)
    s = c.stats()
    assert (s.evictions, s.expirations) == (0, 1)
    assert c.get("a") == 1 and c.get("c") == 3 and c.get("d") == 4


@pytest.mark.parametrize("policy", POLICIES)
def test_weight_bound_and_an_entry_too_heavy_to_store(policy: str) -> None:
    c = ap.Cache(max_size=100, policy=policy, max_weight=10, weigher=len)  # type: ignore[arg-type]
    for i in range(5):
        c.set(f"k{i}", "xyz")
        assert c.stats().weight <= 10
    s = c.stats()
    assert (s.size, s.weight, s.max_weight) == (3, 9, 10)
    c.set("k4", "x" * 11)  # heavier than max_weight: not stored
    assert c.get("k4") is None
    assert c.stats().weight == 6
    assert "weight=6" in repr(c.stats()) and "max_weight=10" in repr(c.stats())


def test_weight_is_the_count_without_a_weigher() -> None:
    c = ap.Cache(max_size=10)
    c.set("a", 1)
    c.set("b", 2)
    s = c.stats()
    assert (s.weight, s.max_weight) == (2, None)


def test_weigher_runs_outside_every_lock() -> None:
    c: ap.Cache
    depth = []

    def weigher(v: Any) -> int:
        # Re-entering the cache from the weigher would deadlock under a shard lock.
        if not depth:
            depth.append(1)
            c.get("other")
            c.set("side", b"")
        return len(v)

    c = ap.Cache(max_size=10, max_weight=100, weigher=weigher)
    c.set("a", b"12345")
    assert c.get("a") == b"12345"
    assert c.get("side") == b""


@pytest.mark.parametrize(
    ("result", "exc", "text"),
    [
        (-1, ValueError, "weigher=.*returned -1"),
        (1.5, TypeError, "weigher=.*returned 1.5"),
        (True, TypeError, "weigher=.*returned True"),
        ("3", TypeError, "weigher=.*returned '3'"),
    ],
)
def test_a_bad_weight_is_a_clear_error(result: Any, exc: type[Exception], text: str) -> None:
    c = ap.Cache(max_size=10, max_weight=10, weigher=lambda v: result)
    with pytest.raises(exc, match=text):
        c.set("a", 1)
    assert "a" not in c


def test_a_weigher_that_raises_is_a_type_error_naming_it() -> None:
    def weigher(v: Any) -> int:
        raise KeyError("boom")

    c = ap.Cache(max_size=10, max_weight=10, weigher=weigher)
    with pytest.raises(TypeError, match=r"weigher=.*raised KeyError") as e:
        c.set("a", 1)
    assert isinstance(e.value.__cause__, KeyError)
    assert len(c) == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "text"),
    [
        ({"policy": "lfu"}, ValueError, "policy='lfu'"),
        ({"policy": 3}, TypeError, "policy=3"),
        ({"max_weight": 0, "weigher": len}, ValueError, "max_weight=0"),
        ({"max_weight": -5, "weigher": len}, ValueError, "max_weight=-5"),
        ({"max_weight": 1.5, "weigher": len}, TypeError, "max_weight=1.5"),
        ({"max_weight": True, "weigher": len}, TypeError, "max_weight=True"),
        ({"max_weight": 10, "weigher": 3}, TypeError, "weigher=3"),
        ({"max_weight": 10}, ValueError, "weigher=None"),
    ],
)
def test_bad_configuration_names_field_and_value(
    kwargs: dict[str, Any], exc: type[Exception], text: str
) -> None:
    with pytest.raises(exc, match=text):
        ap.Cache(max_size=10, **kwargs)
    with pytest.raises(exc, match=text):
        ap.CacheConfig(**kwargs)
    with pytest.raises(exc, match=text):
        ap.CachedAgent(lambda x: x, **kwargs)


@pytest.mark.parametrize("policy", POLICIES)
def test_cached_agent_with_policy_and_weights(policy: str) -> None:
    calls = []

    def agent(x: int) -> str:
        calls.append(x)
        return "y" * x

    ca = ap.CachedAgent(agent, policy=policy, max_weight=10, weigher=len)
    assert ca.execute(3) == "yyy"
    assert ca.execute(3) == "yyy"
    assert ca.execute(20) == "y" * 20  # returned, not stored
    assert ca.execute(20) == "y" * 20
    assert calls == [3, 20, 20]
    s = ca.stats()
    assert (s.weight, s.max_weight, s.size) == (3, 10, 1)
    ca.close()


def test_cached_agent_weigher_error_reaches_the_caller_and_caches_nothing() -> None:
    ca = ap.CachedAgent(lambda x: x, max_weight=10, weigher=lambda v: -1)
    with pytest.raises(ValueError, match="weigher"):
        ca.execute(1)
    assert len(ca) == 0

    async def main() -> None:
        with pytest.raises(ValueError, match="weigher"):
            await ca.aexecute(2)

    asyncio.run(main())
    assert len(ca) == 0
    ca.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", POLICIES)
def test_bounds_hold_under_threads(policy: str) -> None:
    c = ap.Cache(max_size=500, policy=policy, max_weight=2_000, weigher=len)  # type: ignore[arg-type]
    bad: list[str] = []

    def work(t: int) -> None:
        rng = random.Random(t)
        for i in range(20_000):
            k = f"k{rng.randrange(3_000)}"
            if c.get(k) is None:
                c.set(k, "x" * rng.randrange(12))
            if i % 500 == 0:
                s = c.stats()
                if s.size > 500 or s.weight > 2_000 or len(c) > 500:
                    bad.append(f"{s}")

    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, bad[:3]
    s = c.stats()
    assert s.size <= 500 and s.weight <= 2_000
    assert s.hits > 0


def test_a_weigher_referring_to_its_cache_is_collected() -> None:
    import gc
    import weakref

    class W:
        cache: Any = None

        def __call__(self, v: Any) -> int:
            return 1

    w = W()
    c = ap.Cache(max_size=10, max_weight=10, weigher=w)
    w.cache = c
    ref = weakref.ref(c)
    del c, w
    gc.collect()
    assert ref() is None
