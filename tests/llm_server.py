"""An OpenAI-compatible chat server on 127.0.0.1 with quotas, for tests and benchmarks.

``POST /v1/chat/completions`` answers like the OpenAI API, with what quota-bound APIs do:

* a requests-per-second bucket (capacity: one second's worth) and a tokens-per-minute bucket
  (capacity: one minute's worth; a request costs its prompt's ~tokens plus ``max_tokens``);
  past either, ``429`` with ``retry-after`` (whole seconds), ``retry-after-ms`` and the
  ``x-ratelimit-*`` headers;
* a bound on requests in progress (``capacity``), which :meth:`LLMServer.set_capacity` can
  change mid-run; past it, ``503``;
* transient ``503`` s at a seeded rate;
* latency with jitter.

Every request is counted (:attr:`LLMServer.counts`). The server runs on its own event loop in
a daemon thread, listens on loopback only, and stops with :meth:`LLMServer.stop` (or ``with``).

>>> with LLMServer(rps=1000, latency=0.0) as srv:  # doctest: +SKIP
...     srv.base_url
'http://127.0.0.1:.../v1'
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import threading
import time
from typing import Any

from aiohttp import web

__all__ = ["LLMServer"]


class _Bucket:
    """A token bucket: ``rate`` units a second, holding at most ``capacity``."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.t = time.monotonic()

    def take(self, cost: float) -> float:
        """Take ``cost`` units; 0.0 on success, else seconds until they would be there."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        if self.level >= cost:
            self.level -= cost
            return 0.0
        return (cost - self.level) / self.rate


def tokens_of(body: dict[str, Any]) -> int:
    """A request's cost against a tokens budget: ~4 characters a token, plus ``max_tokens``."""
    chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    return max(1, math.ceil(chars / 4)) + int(body.get("max_tokens") or 16)


class LLMServer:
    """The server; see the module docstring. ``rps``/``tpm`` of ``None`` mean no such limit."""

    def __init__(
        self,
        *,
        rps: float | None = 50.0,
        tpm: float | None = None,
        capacity: int | None = None,
        error_rate: float = 0.0,
        latency: float = 0.05,
        jitter: float = 0.02,
        seed: int = 7,
    ) -> None:
        self.rps = rps
        self.tpm = tpm
        self._capacity = capacity
        self.error_rate = error_rate
        self.latency = latency
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._req = _Bucket(rps, rps) if rps else None
        self._tok = _Bucket(tpm / 60.0, tpm) if tpm else None
        self.counts: collections.Counter[str] = collections.Counter()
        self.in_progress = 0
        self.max_in_progress = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifetime --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI``/``AsyncOpenAI``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LLMServer:
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:  # reported to start()
                failed.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="llm-server", daemon=True)
        self._thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("the LLM server did not start within 10 s")
        if failed:
            raise failed[0]
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ---------------------------------------------------------------------------

    def set_capacity(self, capacity: int | None) -> None:
        """Change the bound on requests in progress (``None``: none) while it runs."""
        self._capacity = capacity

    def reset(self) -> None:
        """Zero the counters and refill the buckets (between runs of a benchmark)."""
        self.counts.clear()
        self.max_in_progress = 0
        if self.rps:
            self._req = _Bucket(self.rps, self.rps)
        if self.tpm:
            self._tok = _Bucket(self.tpm / 60.0, self.tpm)

    # --- the endpoint ----------------------------------------------------------------------

    def _limited(self, kind: str, wait: float, limit: float) -> web.Response:
        self.counts["429"] += 1
        self.counts[f"429_{kind}"] += 1
        headers = {
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            f"x-ratelimit-limit-{kind}": str(int(limit)),
            f"x-ratelimit-remaining-{kind}": "0",
            f"x-ratelimit-reset-{kind}": f"{wait:.3f}s",
        }
        body = {"error": {"message": f"Rate limit reached for {kind}", "type": "rate_limit"}}
        return web.json_response(body, status=429, headers=headers)

    async def _chat(self, request: web.Request) -> web.Response:
        self.counts["requests"] += 1
        try:
            body = await request.json()
        except json.JSONDecodeError:
            self.counts["400"] += 1
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        if self._req is not None:
            wait = self._req.take(1.0)
            if wait > 0.0:
                return self._limited("requests", wait, self._req.capacity)
        tokens = tokens_of(body)
        if self._tok is not None:
            wait = self._tok.take(tokens)
            if wait > 0.0:
                return self._limited("tokens", wait, self._tok.capacity)
        cap = self._capacity
        if cap is not None and self.in_progress >= cap:
            self.counts["503"] += 1
            self.counts["503_overloaded"] += 1
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        if self.error_rate and self._rng.random() < self.error_rate:
            self.counts["503"] += 1
            return web.json_response({"error": {"message": "try again"}}, status=503)
        self.in_progress += 1
        self.max_in_progress = max(self.max_in_progress, self.in_progress)
        try:
            delay = self.latency + self._rng.uniform(-self.jitter, self.jitter)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self.in_progress -= 1
        self.counts["200"] += 1
        prompt = str(body.get("messages", [{}])[-1].get("content", ""))
        return web.json_response(
            {
                "id": f"chatcmpl-{self.counts['requests']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"echo: {prompt}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens,
                    "completion_tokens": 3,
                    "total_tokens": tokens + 3,
                },
            }
        )
