"""Traffic control against a quota-bound OpenAI-compatible server, side by side with peers.

    python benches/traffic_compare.py            # 1,000 calls a scenario, every approach
    python benches/traffic_compare.py --n 200 --scenario known

The server (``tests/llm_server.py``) runs on 127.0.0.1 in this process's background thread;
every agent is the official ``openai.AsyncOpenAI`` client with ``max_retries=0`` unless the
approach is "the client's own retries". Scenarios:

* ``known``: 50 requests/s, 2 % transient 503s; the limit is given to whoever can take it;
* ``unknown``: the same server, the limit not given (retries and adaptive concurrency only);
* ``halving``: no rate limit, but at most 16 requests in progress, 8 from the middle of the
  run on (503 past it);
* ``tokens``: 50 requests/s and 60,000 tokens/min, prompts of varied length.

Each row: completed items, wall time (and its ratio to the ideal where a quota sets one),
requests sent, requests per item, 429 answers. Speed is printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import aiometer
import openai
import tenacity
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import RunnableLambda

import agentperf as ap
from agentperf._http import is_transient
from llm_server import LLMServer, tokens_of

RPS = 50.0
TPM = 60_000.0
CONCURRENCY = 20


@dataclass
class Row:
    scenario: str
    approach: str
    completed: int
    n: int
    wall: float
    requests: int
    r429: int
    ideal: float | None

    def cells(self) -> list[str]:
        ratio = f" ({self.wall / self.ideal:.2f}x)" if self.ideal else ""
        return [
            self.scenario,
            self.approach,
            f"{100.0 * self.completed / self.n:.1f} %",
            f"{self.wall:.1f} s{ratio}",
            f"{self.requests:,}",
            f"{self.requests / self.n:.2f}",
            f"{self.r429:,}",
        ]


def prompts(n: int, varied: bool) -> list[str]:
    rng = random.Random(11)
    if not varied:
        return [f"question {i}" for i in range(n)]
    return [f"question {i}: " + "lorem ipsum " * rng.randint(1, 60) for i in range(n)]


CLIENTS: list[Any] = []  # closed at the end of each scenario, on its loop


def make_agent(srv: LLMServer, retries: int = 0) -> Callable[[str], Awaitable[str]]:
    client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=retries)
    CLIENTS.append(client)

    async def agent(prompt: str) -> str:
        r = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": prompt}], max_tokens=16
        )
        return r.choices[0].message.content or ""

    return agent


def cost(prompt: str) -> float:
    return float(tokens_of({"messages": [{"content": prompt}], "max_tokens": 16}))


# --- the approaches: each returns the number of items completed ----------------------------


async def run_agentperf(agent: Any, xs: list[str], **kw: Any) -> int:
    with ap.BatchExecutor(agent, timeout=None, **kw) as ex:
        r = await ex.aexecute(xs)
    return r.stats.success_count


def _tenacity(fn: Callable[[str], Awaitable[str]]) -> Callable[[str], Awaitable[str]]:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=30),
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
    )(fn)


async def run_aiometer(agent: Any, xs: list[str], rps: float | None) -> int:
    fn = _tenacity(agent)
    done = 0

    async def one(x: str) -> None:
        nonlocal done
        try:
            await fn(x)
            done += 1
        except Exception:
            pass

    await aiometer.run_on_each(one, xs, max_at_once=CONCURRENCY, max_per_second=rps)
    return done


async def run_langchain(agent: Any, xs: list[str], rps: float | None) -> int:
    limiter = InMemoryRateLimiter(requests_per_second=rps, max_bucket_size=rps) if rps else None

    async def call(x: str) -> str:
        if limiter is not None:
            await limiter.aacquire()
        return await agent(x)

    runnable = RunnableLambda(call).with_retry(
        retry_if_exception_type=(openai.APIStatusError, openai.APIConnectionError),
        wait_exponential_jitter=True,
        stop_after_attempt=5,
    )
    out = await runnable.abatch(xs, config={"max_concurrency": CONCURRENCY}, return_exceptions=True)
    return sum(1 for o in out if not isinstance(o, BaseException))


async def run_gather(agent: Any, xs: list[str]) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(x: str) -> bool:
        async with sem:
            try:
                await agent(x)
                return True
            except Exception:
                return False

    return sum(await asyncio.gather(*(one(x) for x in xs)))


# --- scenarios -----------------------------------------------------------------------------


async def scenario(name: str, n: int, only: set[str] | None) -> list[Row]:
    cfg: dict[str, Any] = {"rps": RPS, "error_rate": 0.02, "latency": 0.1, "jitter": 0.05}
    if name == "halving":
        cfg = {"rps": None, "capacity": 16, "latency": 0.1, "jitter": 0.05}
    if name == "tokens":
        cfg = {"rps": RPS, "tpm": TPM, "latency": 0.1, "jitter": 0.05}
    xs = prompts(n, varied=name == "tokens")
    ideal: float | None = n / RPS if name in ("known", "unknown") else None
    if name == "tokens":
        ideal = max(n / RPS, (sum(cost(x) for x in xs) - TPM) / (TPM / 60.0))
    known = name in ("known", "tokens")
    rows: list[Row] = []
    srv = LLMServer(**cfg).start()
    try:
        approaches: dict[str, Callable[[], Awaitable[int]]] = {}
        retry = ap.RetryPolicy(attempts=8, backoff=0.25, max_backoff=10.0)
        if known:
            limits: list[Any] = [ap.RateLimiter(RPS)]
            if name == "tokens":
                # The server's token bucket holds a minute's worth: so may the limiter's.
                limits.append((ap.RateLimiter(TPM, per=60.0, burst=TPM), cost))
            approaches["agentperf rate_limit + retry"] = lambda: run_agentperf(
                make_agent(srv), xs, max_concurrency=CONCURRENCY, rate_limit=limits, retry=retry
            )
        approaches["agentperf retry + adaptive"] = lambda: run_agentperf(
            make_agent(srv),
            xs,
            max_concurrency=ap.AdaptiveConcurrency(initial=16, min=1, max=64),
            retry=retry,
        )
        if name == "known":
            approaches["agentperf c=20 alone"] = lambda: run_agentperf(
                make_agent(srv), xs, max_concurrency=CONCURRENCY
            )
        rps = RPS if known else None
        approaches["aiometer + tenacity"] = lambda: run_aiometer(make_agent(srv), xs, rps)
        approaches["LangChain abatch + with_retry"] = lambda: run_langchain(
            make_agent(srv), xs, rps
        )
        approaches["gather + Semaphore + client retries"] = lambda: run_gather(
            make_agent(srv, retries=2), xs
        )
        for label, run in approaches.items():
            if only and not any(o in label for o in only):
                continue
            srv.reset()
            if name == "halving":
                srv.set_capacity(16)
                asyncio.get_running_loop().call_later(
                    n / 16 * 0.1 / 2, srv.set_capacity, 8
                )  # about half-way at full speed
            await asyncio.sleep(1.1)  # the server's buckets refill
            srv.reset()
            t0 = time.perf_counter()
            done = await run()
            wall = time.perf_counter() - t0
            c = srv.counts
            rows.append(Row(name, label, done, n, wall, c["requests"], c["429"], ideal))
            split = f"429s: {c['429_requests']} requests, {c['429_tokens']} tokens"
            print(" | ".join(rows[-1].cells()), "|", split, file=sys.stderr)
    finally:
        for client in CLIENTS:
            await client.close()
        CLIENTS.clear()
        srv.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="calls per scenario (default 1000)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=["known", "unknown", "halving", "tokens"],
        help="run only these (repeatable)",
    )
    p.add_argument("--only", action="append", help="run only approaches whose label has this")
    a = p.parse_args()
    names = a.scenario or ["known", "unknown", "halving", "tokens"]
    rows: list[Row] = []
    for name in names:
        rows += asyncio.run(scenario(name, a.n, set(a.only) if a.only else None))
    head = ["scenario", "approach", "completed", "wall (vs ideal)", "requests", "req/item", "429s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r.cells()) + " |")


if __name__ == "__main__":
    main()
