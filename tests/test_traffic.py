"""Traffic control end to end: the official openai client against a quota-bound server.

The server (``tests/llm_server.py``) runs on 127.0.0.1, started by the fixture. These tests
assert behaviour (every item completes, no quota is broken, retries are counted), never speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

import agentperf as ap

openai = pytest.importorskip("openai")
pytest.importorskip("aiohttp")

from llm_server import LLMServer, tokens_of  # noqa: E402


@pytest.fixture
def server() -> Iterator[LLMServer]:
    # 60/s on the server against 50/s in the limiters: room for loopback jitter in arrivals.
    with LLMServer(rps=60.0, error_rate=0.05, latency=0.02, jitter=0.01) as srv:
        yield srv


def chat_agent(srv: LLMServer) -> Callable[[str], Awaitable[str]]:
    client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=0)

    async def agent(prompt: str) -> str:
        r = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}], max_tokens=16
        )
        return r.choices[0].message.content or ""

    return agent


@pytest.mark.timeout(60)
async def test_a_rate_limited_retrying_batch_completes_without_breaking_the_quota(
    server: LLMServer,
) -> None:
    n = 120
    ex = ap.BatchExecutor(
        chat_agent(server),
        max_concurrency=20,
        rate_limit=ap.RateLimiter(50.0),
        retry=ap.RetryPolicy(attempts=6, backoff=0.05, max_backoff=0.5),
    )
    r = await ex.aexecute([f"q{i}" for i in range(n)])
    assert r.errors == []
    assert r.outputs == [f"echo: q{i}" for i in range(n)]
    assert server.counts["429"] == 0
    # every request the server saw is an attempt the batch counted: first calls and retries
    assert r.stats.attempts == server.counts["requests"]
    assert r.stats.attempts == n + server.counts["503"]
    assert r.stats.throttled_s > 0.0  # 120 calls at 50/s cannot all go at once


@pytest.mark.timeout(60)
async def test_without_the_limiter_the_same_batch_hits_the_quota(server: LLMServer) -> None:
    # The control: the quota above is real, and the limiter is what kept it.
    ex = ap.BatchExecutor(chat_agent(server), max_concurrency=20)
    r = await ex.aexecute([f"q{i}" for i in range(200)])
    assert server.counts["429"] > 0
    assert r.stats.failure_count > 0
    assert r.stats.attempts == 200


@pytest.mark.timeout(60)
async def test_retry_and_adaptive_concurrency_complete_an_unknown_quota(
    server: LLMServer,
) -> None:
    ctl = ap.AdaptiveConcurrency(initial=16, min=1, max=64)
    ex = ap.BatchExecutor(
        chat_agent(server),
        max_concurrency=ctl,
        retry=ap.RetryPolicy(attempts=10, backoff=0.05, max_backoff=1.0),
    )
    r = await ex.aexecute([f"q{i}" for i in range(150)])
    assert r.errors == []
    assert r.stats.success_count == 150
    assert r.stats.attempts == server.counts["requests"]
    assert 1 <= ex.stats().concurrency <= 64


@pytest.mark.timeout(60)
async def test_a_429_hint_pauses_every_caller_sharing_the_limiter() -> None:
    # One caller's 429 with retry-after-ms pauses the shared limiter: the other caller's next
    # grant waits for the pause too.
    with LLMServer(rps=2.0, latency=0.0, jitter=0.0) as srv:
        limiter = ap.RateLimiter(1000.0)
        agent = ap.RateLimitedAgent(chat_agent(srv), limiter)
        await agent.aexecute("a")
        await agent.aexecute("b")
        with pytest.raises(openai.RateLimitError) as caught:
            await agent.aexecute("c")  # the server's bucket of 2 is empty
        assert caught.value.status_code == 429
        t0 = time.monotonic()
        assert limiter.try_acquire() is False  # paused for the hint
        assert await limiter.aacquire(timeout=5.0) is True
        assert time.monotonic() - t0 >= 0.1  # retry-after-ms for half a token at 2/s
        assert limiter.stats().paused_s > 0.0


@pytest.mark.timeout(60)
async def test_a_token_budget_with_a_cost_function_gets_no_token_429() -> None:
    prompts = [f"q{i} " + "word " * (i % 40) for i in range(60)]
    total = sum(tokens_of({"messages": [{"content": p}], "max_tokens": 16}) for p in prompts)
    tpm = total * 1.2  # the whole run fits in the server's bucket, paced by the limiter
    with LLMServer(rps=None, tpm=tpm * 1.5, latency=0.01, jitter=0.0) as srv:

        def cost(p: str) -> float:
            return float(tokens_of({"messages": [{"content": p}], "max_tokens": 16}))

        ex = ap.BatchExecutor(
            chat_agent(srv),
            max_concurrency=10,
            rate_limit=(ap.RateLimiter(tpm, per=60.0), cost),
        )
        r = await ex.aexecute(prompts)
        assert r.stats.success_count == len(prompts)
        assert srv.counts["429_tokens"] == 0


@pytest.mark.timeout(60)
async def test_item_timeout_bounds_each_attempt_not_the_wait_for_the_limiter() -> None:
    calls = 0

    async def slow_then_fast(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(5.0)  # the first attempt hangs: its timeout is retried
        return x

    limiter = ap.RateLimiter(5.0, burst=1)  # one grant every 0.2 s: waits longer than 0.1 s
    ex = ap.BatchExecutor(
        slow_then_fast,
        max_concurrency=4,
        item_timeout=0.1,
        rate_limit=limiter,
        retry=ap.RetryPolicy(attempts=3, backoff=0.0, jitter=False),
    )
    r = await ex.aexecute(range(4))
    assert r.errors == []
    assert r.outputs == [0, 1, 2, 3]
    assert r.stats.attempts == 5
    assert r.stats.throttled_s > 0.1
