"""The caching block: hit latency, speedup over a 1 ms agent, hit rate of a repeated workload,
and the hit ratio of ``policy="tinylfu"`` against LRU on a Zipf trace.

Baseline: an ``OrderedDict`` LRU with expiry and a ``sha256(json.dumps(...))`` key. Peer:
cachebox's ``TTLCache`` (else cachetools') with the same key.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from .measure import SAMPLE_INPUT, have, json_sha256, median_ns_per_call, sleep_agent
from .registry import Block
from .row import Row

__all__ = ["BLOCK", "POLICY", "SPEEDUP", "rows"]

SPEEDUP = "Speedup (cached)"
"""The metric of the seed's "Cache Performance" block."""


class _PlainTTLCache:
    """The plain-Python baseline: an OrderedDict LRU with per-entry expiry."""

    def __init__(self, max_size: int, ttl: float) -> None:
        self.max_size, self.ttl = max_size, ttl
        self.data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self.lock:
            item = self.data.get(key)
            if item is None or item[0] < time.monotonic():
                return None
            self.data.move_to_end(key)
            return item[1]

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.data[key] = (time.monotonic() + self.ttl, value)
            self.data.move_to_end(key)
            while len(self.data) > self.max_size:
                self.data.popitem(last=False)


def _plain_cached(agent: Callable[[Any], Any]) -> Callable[[Any], Any]:
    cache = _PlainTTLCache(1000, 600.0)

    def call(x: Any) -> Any:
        key = json_sha256(x)
        out = cache.get(key)
        if out is None:
            out = agent(x)
            cache.set(key, out)
        return out

    return call


def _peer_cached(agent: Callable[[Any], Any]) -> tuple[str, Callable[[Any], Any]] | None:
    """The fastest-known installed peer doing the same job (cachebox, else cachetools)."""
    if have("cachebox"):
        import cachebox

        store: Any = cachebox.TTLCache(1000, 600.0)
        name = "cachebox.TTLCache + json/sha256 key"
    elif have("cachetools"):
        import cachetools

        store = cachetools.TTLCache(1000, 600.0)
        name = "cachetools.TTLCache + json/sha256 key"
    else:
        return None

    def call(x: Any) -> Any:
        key = json_sha256(x)
        out = store.get(key)
        if out is None:
            out = agent(x)
            store[key] = out
        return out

    return name, call


def rows(quick: bool) -> Iterator[Row]:
    """Hit latency, speedup over a 1 ms agent, hit rate on a repeated workload."""
    import agentperf as ap

    loops, repeat = (2_000, 7) if quick else (20_000, 15)
    slow = sleep_agent(0.001)
    with ap.CachedAgent(slow, max_size=1000, ttl=600.0) as cached:
        cached.execute(SAMPLE_INPUT)
        hit = median_ns_per_call(lambda: cached.execute(SAMPLE_INPUT), loops=loops, repeat=repeat)
    plain = _plain_cached(slow)
    plain(SAMPLE_INPUT)
    base = median_ns_per_call(lambda: plain(SAMPLE_INPUT), loops=loops, repeat=repeat)
    peer = _peer_cached(slow)
    peer_ns = None
    peer_name = "no peer installed (pip install cachebox)"
    if peer is not None:
        peer_name, call = peer
        call(SAMPLE_INPUT)
        peer_ns = median_ns_per_call(lambda: call(SAMPLE_INPUT), loops=loops, repeat=repeat)
    yield Row(
        "caching",
        "Hit latency",
        hit,
        "ns",
        base,
        "OrderedDict TTL + json/sha256 key",
        peer_ns,
        peer_name,
        "<1 µs (942 ns)",
        higher_is_better=False,
    )

    n_slow = 20 if quick else 100
    uncached = median_ns_per_call(lambda: slow(SAMPLE_INPUT), loops=n_slow, repeat=3)
    yield Row(
        "caching",
        SPEEDUP,
        uncached / hit,
        "x",
        uncached / base,
        "OrderedDict TTL + json/sha256 key",
        None if peer_ns is None else uncached / peer_ns,
        peer_name,
        "1130x",
        note="a 1 ms agent uncached vs a cache hit",
        details={"uncached_ns": uncached, "cached_ns": hit},
    )

    # A repeated workload: 5,000 requests over 250 distinct inputs, Zipf-like popularity. It
    # costs milliseconds, so --quick runs the same workload (its figure is the full run's).
    rng = random.Random(7)
    distinct = [{"task": "summarize", "doc": i} for i in range(250)]
    weights = [1.0 / (i + 1) for i in range(len(distinct))]
    workload = rng.choices(distinct, weights=weights, k=5_000)
    with ap.CachedAgent(lambda x: x, max_size=1000, ttl=600.0) as cached:
        for x in workload:
            cached.execute(x)
        rate = cached.stats().hit_rate
    ideal = 100.0 * (1 - len({d["doc"] for d in workload}) / len(workload))
    yield Row(
        "caching",
        "Hit rate (repeated workload)",
        rate,
        "%",
        ideal,
        "ideal (1 - distinct/requests)",
        None,
        "",
        "90-99%",
        note=f"{len(workload)} requests over {len(distinct)} inputs, Zipf popularity (the same "
        "workload under --quick). A hit rate measures how often a workload repeats itself (at "
        "best 1 - distinct/requests), not the cache: the seed's 90-99% is a workload's figure",
    )

    # The policy row: one Zipf (s = 1) trace of 200,000 requests over 100,000 keys through
    # 1,000 entries, under policy="tinylfu" and "lru" (about 0.5 s; the same under --quick).
    yield _policy_row()


POLICY = "Hit ratio, policy=tinylfu (Zipf s=1)"
"""The metric of the cache policy row."""


def _policy_row() -> Row:
    import agentperf as ap

    rng = random.Random(10)
    n_keys, n, cap = 100_000, 200_000, 1_000
    cum = list(itertools.accumulate(k**-1.0 for k in range(1, n_keys + 1)))
    names = [f"k{k}" for k in range(n_keys)]
    trace = rng.choices(names, cum_weights=cum, k=n)
    rate = {}
    for policy in ("tinylfu", "lru"):
        c = ap.Cache(max_size=cap, ttl=None, policy=policy)
        get, set_ = c.get, c.set
        for k in trace:
            if get(k) is None:
                set_(k, 1)
        rate[policy] = c.stats().hit_rate
        c.close()
    return Row(
        "caching",
        POLICY,
        rate["tinylfu"],
        "%",
        rate["lru"],
        'policy="lru"',
        None,
        "",
        "-",
        note=f"{n:,} requests over {n_keys:,} keys, {cap:,} entries (the same under --quick); "
        "benches/cache_policy.py compares the peers on 1M-request traces",
    )


BLOCK = Block("caching", "Caching", rows)
