"""The traffic-control block: a batch against a simulated quota-bound API, in the process.

The API serves ``RATE`` requests a second (a bucket holding one second's worth), answers past
that with a 429 carrying ``retry-after-ms``, fails 2 % of calls with a transient 503, and takes
10 ms a call; no network, no extra package. agentperf runs it with ``rate_limit=`` and
``retry=``; the baseline is the concurrency limit alone; the peer, when installed, aiometer's
``max_per_second`` with tenacity's retries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from .measure import have
from .registry import Block
from .row import Row

__all__ = ["BLOCK", "SimulatedAPI", "rows"]

RATE = 100.0
CONCURRENCY = 20


class APIError(Exception):
    """Shaped like the openai/httpx errors: ``status_code`` and the response's headers."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers


class SimulatedAPI:
    """The quota-bound API; ``requests`` and ``refused`` count what it saw."""

    def __init__(self, rate: float = RATE, error_rate: float = 0.02, seed: int = 5) -> None:
        self.rate = rate
        self.error_rate = error_rate
        self.level = rate
        self.t = time.monotonic()
        self.requests = 0
        self.refused = 0
        self.rng = random.Random(seed)

    async def complete(self, prompt: Any) -> str:
        self.requests += 1
        now = time.monotonic()
        self.level = min(self.rate, self.level + (now - self.t) * self.rate)
        self.t = now
        if self.level < 1.0:
            self.refused += 1
            wait_ms = (1.0 - self.level) / self.rate * 1000
            raise APIError(429, {"retry-after-ms": f"{wait_ms:.0f}"})
        self.level -= 1.0
        await asyncio.sleep(0.01)
        if self.rng.random() < self.error_rate:
            raise APIError(503, {})
        return f"answer to {prompt}"


def _run(
    make: Callable[[SimulatedAPI], Coroutine[Any, Any, int]], n: int
) -> tuple[float, float, float]:
    """(completed %, wall s, requests per item) of one approach on a fresh API."""
    api = SimulatedAPI()
    t0 = time.perf_counter()
    done = asyncio.run(make(api))
    wall = time.perf_counter() - t0
    return 100.0 * done / n, wall, api.requests / n


def rows(quick: bool) -> Iterator[Row]:
    """Completion, wall time against the ideal, and requests per item."""
    import agentperf as ap

    n = 150 if quick else 600
    items = list(range(n))
    ideal = n / RATE

    async def ours(api: SimulatedAPI) -> int:
        ex = ap.BatchExecutor(
            api.complete,
            max_concurrency=CONCURRENCY,
            rate_limit=ap.RateLimiter(RATE),
            retry=ap.RetryPolicy(attempts=6, backoff=0.05, max_backoff=1.0),
        )
        return (await ex.aexecute(items)).stats.success_count

    async def alone(api: SimulatedAPI) -> int:
        ex = ap.BatchExecutor(api.complete, max_concurrency=CONCURRENCY)
        return (await ex.aexecute(items)).stats.success_count

    async def aiometer_tenacity(api: SimulatedAPI) -> int:
        import aiometer
        import tenacity

        from .._http import is_transient

        call = tenacity.retry(
            stop=tenacity.stop_after_attempt(6),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
            retry=tenacity.retry_if_exception(is_transient),
            reraise=True,
        )(api.complete)
        done = 0

        async def one(x: Any) -> None:
            nonlocal done
            try:
                await call(x)
                done += 1
            except Exception:
                pass

        await aiometer.run_on_each(one, items, max_at_once=CONCURRENCY, max_per_second=RATE)
        return done

    a = _run(ours, n)
    b = _run(alone, n)
    peer_ok = have("aiometer") and have("tenacity")
    p = _run(aiometer_tenacity, n) if peer_ok else None
    peer_name = "aiometer + tenacity" if peer_ok else "aiometer/tenacity not installed"
    base_name = f"a concurrency limit alone (c={CONCURRENCY})"
    note = f"{n} calls; {RATE:.0f} req/s quota, 2 % 503s; ideal {ideal:.1f} s (items / rate)"
    claim = "none (new this round)"
    yield Row(
        "traffic",
        "Completed under a quota",
        a[0],
        "%",
        b[0],
        base_name,
        None if p is None else p[0],
        peer_name,
        claim,
        note=note,
    )
    yield Row(
        "traffic",
        "Wall time / ideal",
        a[1] / ideal,
        "ratio",
        b[1] / ideal,
        base_name,
        None if p is None else p[1] / ideal,
        peer_name,
        claim,
        higher_is_better=False,
        details={"wall_s": a[1], "ideal_s": ideal},
    )
    yield Row(
        "traffic",
        "Requests per item",
        a[2],
        "req/item",
        b[2],
        base_name,
        None if p is None else p[2],
        peer_name,
        claim,
        higher_is_better=False,
    )


BLOCK = Block("traffic", "Traffic control", rows)
