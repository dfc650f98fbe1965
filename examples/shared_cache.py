"""A second cache tier shared by processes: two "replicas" and a restart, one agent call.

Each replica is a separate process with its own in-process cache; they share one SQLite file
(``ap.RedisStore(url)`` shares across hosts the same way). The first to miss takes the store's
lease and runs the agent; the other waits for its value; the restarted replica finds it.

Run: python examples/shared_cache.py
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time

import agentperf as ap


def llm(question: str) -> dict[str, str]:
    """A stand-in for an LLM call that takes 300 ms; leaves one line per call in a file."""
    with open(os.environ["CALLS_FILE"], "a") as f:
        f.write(question + "\n")
    time.sleep(0.3)
    return {"answer": question.upper()}


def replica(path: str) -> None:
    with (
        ap.SqliteStore(path, namespace="example") as store,
        ap.CachedAgent(llm, ttl=3600.0, store=store, lease=10.0) as cached,
    ):
        out = cached.execute("what is a second tier?")
        assert out == {"answer": "WHAT IS A SECOND TIER?"}, out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cache.db")
        os.environ["CALLS_FILE"] = os.path.join(tmp, "calls.txt")
        ctx = multiprocessing.get_context("spawn")
        replicas = [ctx.Process(target=replica, args=(path,)) for _ in range(2)]
        for p in replicas:
            p.start()
        for p in replicas:
            p.join(60)
        restarted = ctx.Process(target=replica, args=(path,))
        restarted.start()
        restarted.join(60)
        assert all(p.exitcode == 0 for p in [*replicas, restarted])
        with open(os.environ["CALLS_FILE"]) as f:
            calls = len(f.read().splitlines())
        print(f"3 processes asked; the agent ran {calls} time(s)")
        assert calls == 1
        with ap.SqliteStore(path, namespace="example") as store:
            with ap.CachedAgent(llm, ttl=3600.0, store=store) as cached:
                cached.execute("what is a second tier?")
                s = cached.stats()
                print(f"here: hits={s.hits} store_hits={s.store_hits} misses={s.misses}")


if __name__ == "__main__":
    main()
