"""Metrics: a named pool, cached agent and executor in Prometheus, scraped over HTTP.

Every agentperf object given ``name=`` is exported while it lives. This program serves the
metrics on a free port of 127.0.0.1 (as a service would on its own port), runs some work,
scrapes itself once and prints the hit rate and the pool's wait histogram it read back.

Run: python examples/metrics_prometheus.py    (needs: pip install 'agentperf-rs[prometheus]')
"""

from __future__ import annotations

import asyncio
import urllib.request

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

import agentperf as ap


class Model:
    """A stand-in for an LLM client: 5 ms a call."""

    async def aexecute(self, prompt: str) -> str:
        await asyncio.sleep(0.005)
        return prompt.upper()


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "name" in s.labels:
                key = s.labels.get("le") or s.labels.get("state") or ""
                out[(s.name, s.labels["name"] + (f"|{key}" if key else ""))] = s.value
    return out


def main() -> None:
    registry = prometheus_client.CollectorRegistry()
    ap.metrics.register_prometheus(registry)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]

    pool = ap.AgentPool(Model, max_size=4, initial_size=2, name="llm")
    cached = ap.CachedAgent(pool, max_size=100, ttl=60.0, name="answers")
    prompts = [f"question {i % 25}" for i in range(200)]  # 25 distinct of 200
    with ap.BatchExecutor(cached, max_concurrency=16, name="questions") as ex:
        result = ex.execute(prompts)
    assert result.stats.success_count == 200

    got = scrape(port)
    server.shutdown()
    server.server_close()
    thread.join(10)

    hits = got[("agentperf_cache_hits_total", "answers")]
    misses = got[("agentperf_cache_misses_total", "answers")]
    stats = cached.stats()
    assert (hits, misses) == (stats.hits, stats.misses)
    assert got[("agentperf_batch_items_total", "questions|success")] == 200
    acquires = got[("agentperf_pool_wait_time_seconds_count", "llm")]
    waited = acquires - got[("agentperf_pool_wait_time_seconds_bucket", "llm|0.0001")]
    print(f"cache 'answers': {hits:.0f} hits, {misses:.0f} misses ({stats.hit_rate:.0f} % hits)")
    print(f"pool 'llm': {acquires:.0f} acquires, {waited:.0f} of them waited for an agent")
    print(f"batch 'questions': {got[('agentperf_batch_attempts_total', 'questions')]:.0f} calls")
    pool.close()
    cached.close()


if __name__ == "__main__":
    main()
