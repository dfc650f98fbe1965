"""Traffic control: finish a batch against a quota-bound API, near the quota, without a storm.

The "API" here is simulated in the process (no network): it serves 40 requests a second,
answers past that with an HTTP 429 carrying ``retry-after-ms`` (shaped like the openai and
httpx errors), fails 5 % of calls with a transient 503, and takes 100 ms a call.

Run: python examples/rate_limited_batch.py
"""

from __future__ import annotations

import asyncio
import random
import time

import agentperf as ap

RATE = 40.0


class APIError(Exception):
    """Shaped like ``openai.APIStatusError``: a ``status_code`` and the response's headers."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers


class SimulatedAPI:
    """A token bucket of RATE requests a second (holding one second's worth), 5 % 503s."""

    def __init__(self) -> None:
        self.level = RATE
        self.t = time.monotonic()
        self.requests = 0
        self.refused = 0
        self.rng = random.Random(3)

    async def complete(self, prompt: str) -> str:
        self.requests += 1
        now = time.monotonic()
        self.level = min(RATE, self.level + (now - self.t) * RATE)
        self.t = now
        if self.level < 1.0:
            self.refused += 1
            wait_ms = (1.0 - self.level) / RATE * 1000
            raise APIError(429, {"retry-after-ms": f"{wait_ms:.0f}"})
        self.level -= 1.0
        await asyncio.sleep(0.1)  # 40 a second x 0.1 s: about 4 calls in flight fit the quota
        if self.rng.random() < 0.05:
            raise APIError(503, {})
        return f"answer to {prompt}"


async def main() -> None:
    prompts = [f"question {i}" for i in range(120)]

    api = SimulatedAPI()
    plain = await ap.BatchExecutor(api.complete, max_concurrency=20).aexecute(prompts)
    print(
        f"concurrency limit alone:  {plain.stats.success_count}/{len(prompts)} completed, "
        f"{api.requests} requests, {api.refused} refused with 429"
    )

    await asyncio.sleep(1.0)  # the quota refills
    api = SimulatedAPI()
    ex = ap.BatchExecutor(
        api.complete,
        max_concurrency=20,
        rate_limit=ap.RateLimiter(RATE),  # the quota, known
        retry=ap.RetryPolicy(attempts=5, backoff=0.1),  # the transient 503s
    )
    t0 = time.perf_counter()
    r = await ex.aexecute(prompts)
    wall = time.perf_counter() - t0
    s = r.stats
    print(
        f"rate_limit + retry:       {s.success_count}/{len(prompts)} completed in {wall:.1f} s "
        f"(ideal {len(prompts) / RATE - 1:.1f} s after the first second's burst), "
        f"{s.attempts} attempts, {api.refused} refused, {s.throttled_s:.1f} s throttled in all"
    )
    assert s.success_count == len(prompts) and not r.errors
    assert r.outputs[7] == "answer to question 7"
    assert s.attempts == api.requests

    await asyncio.sleep(1.0)
    api = SimulatedAPI()
    adaptive = ap.BatchExecutor(
        api.complete,
        max_concurrency=ap.AdaptiveConcurrency(initial=8, min=1, max=64),  # quota unknown
        retry=ap.RetryPolicy(attempts=10, backoff=0.1),
    )
    r = await adaptive.aexecute(prompts)
    print(
        f"retry + adaptive:         {r.stats.success_count}/{len(prompts)} completed, "
        f"{r.stats.attempts} attempts, concurrency now {adaptive.stats().concurrency}"
    )
    assert r.stats.success_count == len(prompts)


if __name__ == "__main__":
    asyncio.run(main())
