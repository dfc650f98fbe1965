"""Code that runs in spawned child processes for tests/test_cluster_limiter.py and
benches/cluster_limiter.py: processes that share one cluster-wide RateLimiter."""

from __future__ import annotations

import time
from typing import Any

import agentperf as ap


def grab(
    url: str,
    ns: str,
    name: str,
    rate: float,
    burst: float | None,
    seconds: float,
    barrier: Any,
    *,
    local: bool = False,
) -> list[float]:
    """Acquire as fast as the limiter allows for ``seconds``; the monotonic instants of the
    grants (CLOCK_MONOTONIC is one clock for every process of the host)."""
    store = ap.RedisStore(url, namespace=ns, timeout=2.0)
    lim = (
        ap.RateLimiter(rate, burst=burst)
        if local
        else ap.RateLimiter(rate, burst=burst, store=store, name=name)
    )
    got: list[float] = []
    barrier.wait(timeout=60)
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        if lim.acquire(timeout=left):
            got.append(time.monotonic())
    if not local:
        lim.close()
    store.close()
    return got


def paused_here(url: str, ns: str, name: str, started: Any, paused: Any) -> dict[str, Any]:
    """Wait until another process pauses the limiter: report what this process sees."""
    store = ap.RedisStore(url, namespace=ns, timeout=2.0)
    lim = ap.RateLimiter(1000, store=store, name=name)
    assert lim.try_acquire()
    started.set()
    assert paused.wait(timeout=60)
    deadline = time.monotonic() + 5.0
    # The pause reaches this process (its leases live 10 ms; the announcement comes sooner).
    while lim.try_acquire() and time.monotonic() < deadline:
        time.sleep(0.001)
    refused = not lim.try_acquire()
    paused_for = lim.paused_for
    t0 = time.monotonic()
    ok = lim.acquire(timeout=10.0)
    waited = time.monotonic() - t0
    out = {
        "paused_for": paused_for,
        "refused": refused,
        "granted_after": ok,
        "waited": waited,
    }
    store.close()
    return out
