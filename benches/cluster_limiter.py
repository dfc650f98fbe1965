"""The cluster-wide RateLimiter (``store=RedisStore``) beside a local one and a naive limiter.

    python benches/cluster_limiter.py          # starts its own redis-server on loopback

1. One thread, fewer grants than the burst (nothing waits): grants/s and the latency of one
   ``try_acquire`` (median, p99) for a local ``RateLimiter``, the cluster one (a round trip per
   lease of 1 % of the rate), and a naive Redis limiter (one GCRA script call per grant, as a
   limiter without leases does).
2. 4 processes (spawn) share 2,000 units/s (burst 20) for 3 s, each acquiring as fast as it
   may: the most grants in any 1 s window over the rate (target <= 1.02), the total against
   rate x time + burst, and the Redis script calls per second; beside 4 separate local
   limiters of 2,000/s (what a per-process limit lets through).
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import agentperf as ap

# One grant per call, GCRA on the server's clock, no lease: the usual Redis limiter.
_NAIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local T = tonumber(ARGV[1])
if tat + T - tonumber(ARGV[2]) > now then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', tat + T), 'PX', 60000)
return 1
"""


class Naive:
    def __init__(self, store: ap.RedisStore, rate: float, burst: float) -> None:
        self._client: Any = store._sync
        self._script = self._client.register_script(_NAIVE)
        self._key = store.prefix + "naive:" + uuid.uuid4().hex[:8]
        self._args = [1e6 / rate, burst * 1e6 / rate]

    def try_acquire(self) -> bool:
        return bool(self._script(keys=[self._key], args=self._args))


def _script_calls(store: ap.RedisStore) -> int:
    client: Any = store._sync
    stats = client.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


def one_thread(store: ap.RedisStore) -> None:
    # Each case takes fewer grants than its burst, so none ever waits: the figures are the
    # cost of a grant, with a round trip per lease (1 % of the rate) or per grant (naive).
    cases: list[tuple[str, Any, int]] = [
        ("local RateLimiter(100k/s)", ap.RateLimiter(100_000), 50_000),
        (
            "cluster, 100k/s (lease 1,000)",
            ap.RateLimiter(100_000, store=store, name="b-" + uuid.uuid4().hex[:6]),
            50_000,
        ),
        (
            "cluster, 2,000/s (lease 20)",
            ap.RateLimiter(2_000, store=store, name="b-" + uuid.uuid4().hex[:6]),
            1_500,
        ),
        ("naive Redis limiter (1 trip/grant)", Naive(store, 100_000, 100_000), 5_000),
    ]
    print("1. one thread, grants below the burst (never waits)")
    print(f"   {'limiter':36} {'grants/s':>10} {'median us':>10} {'p99 us':>8} {'trips':>6}")
    base = None
    for label, lim, n in cases:
        lat: list[float] = []
        pc = time.perf_counter
        calls0 = _script_calls(store)
        t0 = pc()
        for _ in range(n):
            a = pc()
            if not lim.try_acquire():
                raise SystemExit(f"{label}: refused below its burst")
            lat.append(pc() - a)
        elapsed = pc() - t0
        trips = _script_calls(store) - calls0
        gps = n / elapsed
        lat.sort()
        med, p99 = lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6
        base = base or gps
        print(
            f"   {label:36} {gps:>10,.0f} {med:>10.2f} {p99:>8.1f} {trips:>6,}"
            f"   ({base / gps:.1f}x local's time per grant)"
        )
        if hasattr(lim, "close"):
            lim.close()


def _peak(times: list[float], window: float = 1.0) -> int:
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + window) - i for i, t in enumerate(ts)), default=0)


def four_processes(url: str, store: ap.RedisStore, seconds: float = 3.0) -> None:
    from limiter_children import grab

    rate, burst, procs = 2000.0, 20.0, 4
    ctx = multiprocessing.get_context("spawn")
    print(f"2. {procs} processes share {rate:,.0f}/s (burst {burst:g}) for {seconds:g} s")
    for local in (False, True):
        name = "p-" + uuid.uuid4().hex[:6]
        barrier = ctx.Manager().Barrier(procs)
        calls0 = _script_calls(store)
        t0 = time.monotonic()
        with ctx.Pool(procs) as pool:
            runs = (
                pool.starmap(
                    grab,
                    [
                        (url, store.namespace, name, rate, burst, seconds, barrier)
                        for _ in range(procs)
                    ],
                    chunksize=1,
                )
                if not local
                else pool.starmap(
                    _grab_local,
                    [(url, store.namespace, name, rate, burst, seconds, barrier)] * procs,
                )
            )
        wall = time.monotonic() - t0
        times = [t for r in runs for t in r]
        span = max(times) - min(times)
        trips = (_script_calls(store) - calls0) / span
        label = "4 separate local limiters" if local else "one cluster-wide limiter"
        print(
            f"   {label:26} peak 1 s window / rate = {_peak(times) / rate:.3f}; total "
            f"{len(times):,} in {span:.2f} s = {len(times) / (rate * span + burst):.3f}x "
            f"(rate x time + burst); per process {[len(r) for r in runs]}; "
            f"Redis script calls {trips:,.0f}/s (wall {wall:.1f} s)"
        )


def _grab_local(*args: Any) -> list[float]:
    from limiter_children import grab

    return grab(*args, local=True)


def _scripts(client: object) -> int:
    """Scripts Redis has run (EVALSHA and EVAL calls): the limiter's round trips."""
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def main() -> None:
    from redis_server import RedisServer

    with RedisServer() as srv:
        store = ap.RedisStore(srv.url, namespace="bench" + uuid.uuid4().hex[:6], timeout=2.0)
        one_thread(store)
        four_processes(srv.url, store)
        store.close()


if __name__ == "__main__":
    main()
