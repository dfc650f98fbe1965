"""How soon a follower in another process learns of the leader's value, per store and mode.

The leader (this process) takes the lease, tells a follower process (spawned) to wait with
``wait_value``, works for a random 50-500 ms (an agent call), writes the value and releases the
lease. The follower stamps the moment ``wait_value`` returns; the latency is that stamp minus the
leader's stamp just before its write (``time.monotonic`` is one clock for the whole machine on
Linux). Modes: Redis with pub/sub notification, Redis polling only (backoff 2 ms doubling to
100 ms), SQLite polling (same backoff).

    .venv/bin/python benches/store_follower_latency.py [N]     # N rounds a mode, default 200
"""

from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import agentperf as ap


def open_store(kind: str, where: str, notify: bool) -> Any:
    if kind == "redis":
        return ap.RedisStore(where, namespace="bench", timeout=2.0, notify=notify)
    return ap.SqliteStore(where, namespace="bench")


def follower(kind: str, where: str, notify: bool, conn: Any) -> None:
    store = open_store(kind, where, notify)
    while True:
        digest = conn.recv()
        if digest is None:
            break
        conn.send("waiting")
        value = store.wait_value(digest, timeout=30.0)
        conn.send((time.monotonic(), value is not None))
    store.close()


def run(kind: str, where: str, notify: bool, n: int) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=follower, args=(kind, where, notify, child))
    proc.start()
    store = open_store(kind, where, notify)
    rng = random.Random(7)
    lat: list[float] = []
    owner = ap.store.new_owner()
    try:
        for i in range(n):
            digest = f"{kind}{int(notify)}x{i}"
            assert store.try_lease(digest, owner, 30.0)
            parent.send(digest)
            assert parent.recv() == "waiting"
            time.sleep(rng.uniform(0.05, 0.5))
            t0 = time.monotonic()
            store.set(digest, b"value", ttl=60.0)
            store.release(digest, owner)
            t1, ok = parent.recv()
            assert ok
            lat.append(t1 - t0)
        parent.send(None)
        proc.join(30)
    finally:
        store.close()
        if proc.is_alive():
            proc.kill()
    return lat


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    from redis_server import RedisServer

    with RedisServer() as srv, tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        for label, kind, where, notify in [
            ("redis, pub/sub notification", "redis", srv.url, True),
            ("redis, polling only", "redis", srv.url, False),
            ("sqlite, polling", "sqlite", db, False),
        ]:
            lat = sorted(run(kind, where, notify, n))
            q = statistics.quantiles(lat, n=100)
            print(
                f"{label:30s} N={n}  median {statistics.median(lat) * 1e3:7.2f} ms"
                f"  p90 {q[89] * 1e3:7.2f} ms  p99 {q[98] * 1e3:7.2f} ms"
                f"  max {lat[-1] * 1e3:7.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
