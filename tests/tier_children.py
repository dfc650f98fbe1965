"""Code that runs in spawned child processes for tests/test_tiers_processes.py (and the
benches): a cached agent over a store, whose agent appends one line per call to a file, so
the parent counts agent calls across processes."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import agentperf as ap


def open_store(spec: tuple[str, str, str], **kw: Any) -> Any:
    kind, where, namespace = spec
    if kind == "redis":
        return ap.RedisStore(where, namespace=namespace, timeout=kw.get("timeout", 2.0))
    return ap.SqliteStore(where, namespace=namespace)


class FileCountingAgent:
    """Appends ``pid input`` to ``path`` per call (O_APPEND: one write per line), sleeps
    ``delay`` and returns ``{"answer": input}``."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay

    def __call__(self, x: Any) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {x}\n".encode())
        finally:
            os.close(fd)
        if self.delay:
            time.sleep(self.delay)
        return {"answer": x}


def count_calls(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line.split(" ", 1)[1].strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def many_callers(
    spec: tuple[str, str, str],
    calls_path: str,
    key: str,
    callers: int,
    barrier: Any,
    lease: float,
    delay: float,
) -> list[Any]:
    """``callers`` threads of one process call one cold key at once (after every process is
    ready); returns their outputs."""
    store = open_store(spec)
    agent = ap.CachedAgent(FileCountingAgent(calls_path, delay), ttl=60.0, store=store, lease=lease)
    out: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        v = agent.execute(key)
        with lock:
            out.append(v)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    barrier.wait(60)
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    agent.close()
    store.close()
    return out


def lead_and_hang(spec: tuple[str, str, str], calls_path: str, key: str, lease: float) -> None:
    """Take the lease for ``key`` (the agent records its call, then hangs): killed by the
    parent while it holds the lease."""
    store = open_store(spec)
    agent = ap.CachedAgent(
        FileCountingAgent(calls_path, delay=3600.0), ttl=60.0, store=store, lease=lease
    )
    agent.execute(key)


def write_many(spec: tuple[str, str, str], calls_path: str, keys: list[str]) -> dict[str, Any]:
    """A cached agent over the shared file, run over ``keys``; returns its store counters."""
    store = open_store(spec)
    agent = ap.CachedAgent(FileCountingAgent(calls_path), ttl=600.0, store=store, lease=10.0)
    ex = ap.BatchExecutor(agent, max_concurrency=8)
    r = ex.execute(keys)
    s = agent.stats()
    ok = r.outputs == [{"answer": k} for k in keys]
    ex.close()
    agent.close()
    store.close()
    return {"ok": ok, "errors": s.store_errors, "failed": r.stats.failure_count}
