"""Hit ratios of ``ap.Cache`` (``policy="lru"`` and ``"tinylfu"``) against other caches.

Run on a release build:  .venv/bin/python benches/cache_policy.py [--requests N] [--quick]

Every cache replays the same generated traces (fixed seeds) as ``get``, then ``set`` on a
miss. Peers: cachetools ``LRUCache``/``LFUCache``, cachebox ``LRUCache``/``LFUCache``,
moka_py ``Moka`` (TinyLFU) and theine ``Cache`` (W-TinyLFU); a peer that is not installed is
skipped. Traces:

* Zipf s = 0.8, 1.0, 1.2 over 100,000 keys, at 1,000 and 10,000 entries;
* scan: a hot set of half the cache (1,000) read 20 times over in random order, then
  10,000 keys seen once; printed: the share of the hot set still cached after the scan;
* LRU-friendly: 70 % of requests re-read one of the 500 most recent keys, 30 % a new key;
* loop: keys 0..1,099 in order, over and over, through 1,000 entries (LRU scores 0).

Then the hit path of ``ap.Cache.get`` (ns per call on a cached key, best of 9, the two
policies alternated), and the Rust memory per entry (``Cache._memory_bytes() / len``,
100,000 entries, ``ttl=None``).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import agentperf as ap

Factory = Callable[[int], Any]
MISSING = object()


def zipf(n_keys: int, s: float, n: int, seed: int) -> list[str]:
    """`n` draws of keys ranked 1..n_keys with P(k) proportional to k**-s."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(k**-s for k in range(1, n_keys + 1)))
    total = cum[-1]
    names = [f"k{k}" for k in range(n_keys)]
    return [names[bisect.bisect_left(cum, rng.random() * total)] for _ in range(n)]


def scan_trace(cap: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(warm-up, scan, hot set): the hot set read 20 times in random order, then 10,000
    one-time keys."""
    rng = random.Random(seed)
    hot = [f"hot{i}" for i in range(cap // 2)]
    warm: list[str] = []
    for _ in range(20):
        r = hot[:]
        rng.shuffle(r)
        warm += r
    scan = [f"scan{i}" for i in range(10_000)]
    return warm, scan, hot


def lru_friendly(n: int, seed: int) -> list[str]:
    """70 % re-reads of one of the 500 most recent keys, 30 % new keys."""
    rng = random.Random(seed)
    recent: list[str] = []
    out: list[str] = []
    fresh = 0
    for _ in range(n):
        if recent and rng.random() < 0.7:
            k = recent[-rng.randint(1, min(500, len(recent)))]
        else:
            k = f"n{fresh}"
            fresh += 1
        out.append(k)
        recent.append(k)
        if len(recent) > 2000:
            del recent[:1000]
    return out


def loop(n: int, period: int) -> list[str]:
    names = [f"l{i}" for i in range(period)]
    return [names[i % period] for i in range(n)]


# ---------------------------------------------------------------- caches


class Adapter:
    """`get(key) -> value or MISSING` and `set(key, value)` over one library's cache."""

    def __init__(self, get: Callable[[str], Any], set_: Callable[[str, Any], Any]) -> None:
        self.get = get
        self.set = set_


def ap_cache(policy: str) -> Factory:
    def make(cap: int) -> Adapter:
        c = ap.Cache(max_size=cap, ttl=None, policy=policy)  # type: ignore[arg-type]
        return Adapter(lambda k: c.get(k, MISSING), c.set)

    return make


def peers() -> dict[str, Factory]:
    out: dict[str, Factory] = {"ap lru": ap_cache("lru"), "ap tinylfu": ap_cache("tinylfu")}
    try:
        import cachetools

        def ct(cls: Any) -> Factory:
            def make(cap: int) -> Adapter:
                c = cls(maxsize=cap)
                return Adapter(lambda k: c.get(k, MISSING), c.__setitem__)

            return make

        out["cachetools LRU"] = ct(cachetools.LRUCache)
        out["cachetools LFU"] = ct(cachetools.LFUCache)
    except ImportError:
        pass
    try:
        import cachebox

        def cb(cls: Any) -> Factory:
            def make(cap: int) -> Adapter:
                c = cls(cap)
                return Adapter(lambda k: c.get(k, MISSING), c.insert)

            return make

        out["cachebox LRU"] = cb(cachebox.LRUCache)
        out["cachebox LFU"] = cb(cachebox.LFUCache)
    except ImportError:
        pass
    try:
        import moka_py

        def moka(cap: int) -> Adapter:
            c = moka_py.Moka(cap)

            def get(k: str) -> Any:
                v = c.get(k)
                return MISSING if v is None else v

            return Adapter(get, c.set)

        out["moka_py"] = moka
    except ImportError:
        pass
    try:
        import theine

        def th(cap: int) -> Adapter:
            c = theine.Cache(cap)

            def get(k: str) -> Any:
                v, found = c.get(k)
                return v if found else MISSING

            return Adapter(get, c.set)

        out["theine"] = th
    except ImportError:
        pass
    return out


def hit_ratio(make: Factory, cap: int, trace: Sequence[str]) -> float:
    a = make(cap)
    get, set_ = a.get, a.set
    hits = 0
    for k in trace:
        if get(k) is MISSING:
            set_(k, 1)
        else:
            hits += 1
    return hits / len(trace)


def hot_survival(make: Factory, cap: int, seed: int) -> float:
    warm, scan, hot = scan_trace(cap, seed)
    a = make(cap)
    get, set_ = a.get, a.set
    for k in itertools.chain(warm, scan):
        if get(k) is MISSING:
            set_(k, 1)
    # Let caches with deferred maintenance (moka, theine) settle: a read of a scan key each.
    return sum(get(k) is not MISSING for k in hot) / len(hot)


def hit_path_ns(n: int = 200_000, rounds: int = 9) -> dict[str, float]:
    """ns per ``get`` of a cached key (1,000 hot keys in a 10,000-entry cache), best of
    `rounds`, the policies measured in alternation so that noise from other processes hits
    both alike."""
    keys = [f"h{i}" for i in range(1000)]
    trace = [keys[i % 1000] for i in range(n)]
    gets = {}
    for policy in ("lru", "tinylfu"):
        c = ap.Cache(max_size=10_000, ttl=None, policy=policy)  # type: ignore[arg-type]
        for k in keys:
            c.set(k, 1)
        gets[policy] = c.get
    best = dict.fromkeys(gets, float("inf"))
    for _ in range(rounds):
        for policy, get in gets.items():
            t = time.perf_counter_ns()
            for k in trace:
                get(k)
            best[policy] = min(best[policy], (time.perf_counter_ns() - t) / n)
    return best


def memory_per_entry(policy: str, n: int = 100_000) -> float:
    c = ap.Cache(max_size=n, ttl=None, policy=policy)  # type: ignore[arg-type]
    for i in range(n):
        c.set(f"m{i}", None)
    return c._memory_bytes() / len(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1_000_000, help="requests per Zipf trace")
    p.add_argument("--quick", action="store_true", help="100,000 requests per trace")
    a = p.parse_args()
    n = 100_000 if a.quick else a.requests
    caches = peers()
    names = list(caches)
    t0 = time.perf_counter()
    rows: list[tuple[str, list[float]]] = []
    for s in (0.8, 1.0, 1.2):
        trace = zipf(100_000, s, n, seed=int(s * 10))
        for cap in (1_000, 10_000):
            rows.append((f"zipf s={s} @{cap:,}", [hit_ratio(caches[m], cap, trace) for m in names]))
    rows.append(("scan: hot set kept @1,000", [hot_survival(caches[m], 1_000, 7) for m in names]))
    lf = lru_friendly(n, seed=3)
    rows.append(("LRU-friendly @1,000", [hit_ratio(caches[m], 1_000, lf) for m in names]))
    lp = loop(min(n, 300_000), 1_100)
    rows.append(("loop 1,100 @1,000", [hit_ratio(caches[m], 1_000, lp) for m in names]))
    print(f"requests per Zipf and LRU-friendly trace: {n:,} (loop: {min(n, 300_000):,})")
    print("| trace | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, vals in rows:
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    ns = hit_path_ns()
    lru_ns, tiny_ns = ns["lru"], ns["tinylfu"]
    print(
        f"hit path ap.Cache.get: lru {lru_ns:.0f} ns, tinylfu {tiny_ns:.0f} ns "
        f"({tiny_ns / lru_ns:.2f}x)"
    )
    print(
        f"Rust memory per entry (100,000 entries): lru {memory_per_entry('lru'):.1f} B, "
        f"tinylfu {memory_per_entry('tinylfu'):.1f} B"
    )
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
