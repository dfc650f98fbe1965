"""ap.Cache against a reference LRU+TTL model (hypothesis state machine, manual clock)."""

from __future__ import annotations

import math
from collections import OrderedDict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import agentperf as ap

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "é", b"a", b"b", "x" * 40])
TTLS = st.sampled_from([None, math.inf, 0.5, 1.0, 2.5, 5.0])
STEPS = st.sampled_from([0.5, 1.0, 3.0])
NS = 1_000_000_000
NEVER = None


class CacheModel(RuleBasedStateMachine):
    """One shard (max_size < 8192): eviction is exact LRU, so the model is exact."""

    @initialize(max_size=st.integers(1, 5), ttl=st.sampled_from([None, 1.0, 3.0]))
    def setup(self, max_size: int, ttl: float | None) -> None:
        self.cache = ap.Cache(max_size=max_size, ttl=ttl, _manual_clock=True)
        self.max_size = max_size
        self.default = None if ttl is None else int(ttl * NS)
        self.now = 0
        self.d: OrderedDict[object, tuple[int, int | None]] = OrderedDict()  # LRU first
        self.hits = self.misses = self.evictions = self.expirations = 0

    def _expired(self, exp: int | None) -> bool:
        return exp is not None and exp <= self.now

    @rule(key=KEYS, value=st.integers(), ttl=TTLS)
    def set(self, key: object, value: int, ttl: float | None) -> None:
        self.cache.set(key, value, ttl=ttl)  # type: ignore[arg-type]
        if ttl is None:
            life = self.default
        elif ttl == math.inf:
            life = None
        else:
            life = int(ttl * NS)
        exp = None if life is None else self.now + life
        if key in self.d:
            self.d[key] = (value, exp)
            self.d.move_to_end(key)
            return
        if len(self.d) >= self.max_size:
            # Full: every expired entry goes first (the cache drops up to 64 per insert,
            # more than these caches hold); a live one only when none has expired.
            gone = [k for k, (_, e) in self.d.items() if self._expired(e)]
            for k in gone:
                del self.d[k]
            self.expirations += len(gone)
            if not gone:
                self.d.popitem(last=False)
                self.evictions += 1
        self.d[key] = (value, exp)

    @rule(key=KEYS)
    def get(self, key: object) -> None:
        got = self.cache.get(key, "MISSING")  # type: ignore[arg-type]
        if key not in self.d:
            self.misses += 1
            assert got == "MISSING"
            return
        value, exp = self.d[key]
        if self._expired(exp):
            del self.d[key]
            self.misses += 1
            self.expirations += 1
            assert got == "MISSING"
            return
        self.d.move_to_end(key)
        self.hits += 1
        assert got == value

    @rule(key=KEYS)
    def contains(self, key: object) -> None:
        expect = key in self.d and not self._expired(self.d[key][1])
        assert (key in self.cache) == expect

    @rule(key=KEYS)
    def delete(self, key: object) -> None:
        got = self.cache.delete(key)  # type: ignore[arg-type]
        if key not in self.d:
            assert got is False
            return
        _, exp = self.d.pop(key)
        if self._expired(exp):
            self.expirations += 1
            assert got is False
        else:
            assert got is True

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.cache._advance(dt)
        self.now += int(dt * NS)

    @rule()
    def sweep(self) -> None:
        gone = [k for k, (_, exp) in self.d.items() if self._expired(exp)]
        for k in gone:
            del self.d[k]
        self.expirations += len(gone)
        assert self.cache._sweep() == len(gone)

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.d.clear()

    @invariant()
    def agrees(self) -> None:
        assert len(self.cache) == len(self.d) <= self.max_size
        s = self.cache.stats()
        assert (s.hits, s.misses, s.evictions, s.expirations) == (
            self.hits,
            self.misses,
            self.evictions,
            self.expirations,
        )

    def teardown(self) -> None:
        if hasattr(self, "cache"):
            self.cache.close()


TestCacheModel = CacheModel.TestCase
