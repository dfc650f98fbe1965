"""The second-tier block: a ``CachedAgent`` with a store, measured with ``SqliteStore`` in a
temporary file (always) and with ``RedisStore`` when a redis-server is reachable (``REDIS_URL``,
else ``127.0.0.1:6379``; the report starts none).

- L2 hit latency: ``execute`` of an input only the store holds (an empty in-process tier),
  against the same value read by hand (``sqlite3`` ``SELECT`` or redis-py ``GET``, plus
  ``json.loads``); the peer is LangChain's ``SQLiteCache.lookup`` (else diskcache's ``get``).
- Agent calls across two processes and a restart: two replica processes serve the same
  Zipf-popular requests at once, then a third (the restart, an empty in-process cache) serves
  them again. Baseline: the in-process ``CachedAgent`` alone; the ideal is one call per
  distinct input; the Redis row's peer is a redis-py layer written by hand.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .measure import have, median_ns_per_call
from .registry import Block
from .row import Row

__all__ = ["BLOCK", "redis_url", "rows"]

_VALUE = {"text": "an answer " * 20, "usage": {"prompt_tokens": 12, "completion_tokens": 80}}
_LATENCY = "L2 hit latency"
_CALLS = "Agent calls, 2 replicas + a restart"


def redis_url(timeout: float = 0.2) -> str | None:
    """``REDIS_URL`` if set, else ``redis://127.0.0.1:6379/0`` if it answers PING within
    ``timeout`` seconds, else ``None``."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0"
    except OSError:
        pass
    return None


def _answer(x: Any) -> Any:
    return _VALUE


def _open(kind: str, where: str, namespace: str) -> Any:
    import agentperf as ap

    if kind == "redis":
        return ap.RedisStore(where, namespace=namespace, timeout=1.0)
    return ap.SqliteStore(where, namespace=namespace)


# -- L2 hit latency ---------------------------------------------------------------------------


def _latency(kind: str, where: str, quick: bool) -> tuple[float, float, float | None, str]:
    import agentperf as ap

    n, repeat = (300, 3) if quick else (1000, 5)
    ns = f"lat{os.getpid()}x{random.randrange(10**9)}"
    store = _open(kind, where, ns)
    try:
        with ap.CachedAgent(_answer, ttl=3600.0, max_size=n, store=store) as warm:
            for i in range(n):
                warm.execute(i)
        fresh: list[Any] = []

        def ours_round() -> Callable[[], Any]:
            c = ap.CachedAgent(_answer, ttl=3600.0, max_size=n, store=store)
            fresh.append(c)
            it = iter(range(n))
            return lambda: c.execute(next(it))

        samples = []
        for _ in range(repeat):
            call = ours_round()
            samples.append(median_ns_per_call(call, loops=n, repeat=1))
        ours = sorted(samples)[len(samples) // 2]
        for c in fresh:
            c.close()
        body = json.dumps(_VALUE).encode()
        bare, peer, peer_name = _bare_and_peer(kind, where, n, repeat, body)
    finally:
        try:
            store.clear()
        finally:
            store.close()
    return ours, bare, peer, peer_name


def _bare_and_peer(
    kind: str, where: str, n: int, repeat: int, body: bytes
) -> tuple[float, float | None, str]:
    import agentperf as ap

    keys = [ap.hash_key(i) for i in range(n)]
    if kind == "redis":
        import redis

        r = redis.Redis.from_url(where)
        for k in keys:
            r.set("agentperf-report-bare:" + k, body, ex=600)
        get, loads = r.get, json.loads
        it = [iter(keys)]

        def bare_call() -> Any:
            got: Any = get("agentperf-report-bare:" + next(it[0]))
            return loads(got)

        samples = []
        for _ in range(repeat):
            it[0] = iter(keys)
            samples.append(median_ns_per_call(bare_call, loops=n, repeat=1))
        r.delete(*["agentperf-report-bare:" + k for k in keys])
        r.close()
        return sorted(samples)[len(samples) // 2], None, ""
    import sqlite3

    path = where + ".bare"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB, exp REAL)")
    con.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", [(k, body, 1e18) for k in keys])
    it2 = [iter(keys)]

    def bare_sql() -> Any:
        row = con.execute(
            "SELECT v FROM t WHERE k = ? AND exp > ?", (next(it2[0]), time.time())
        ).fetchone()
        return json.loads(row[0])

    samples = []
    for _ in range(repeat):
        it2[0] = iter(keys)
        samples.append(median_ns_per_call(bare_sql, loops=n, repeat=1))
    con.close()
    bare = sorted(samples)[len(samples) // 2]
    peer, name = _sqlite_peer(where + ".peer", keys, repeat, body)
    return bare, peer, name


def _sqlite_peer(path: str, keys: list[str], repeat: int, body: bytes) -> tuple[float | None, str]:
    try:
        if have("langchain_community"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Looked up by name: langchain is a bench-only peer without stubs.
                SQLiteCache = importlib.import_module("langchain_community.cache").SQLiteCache
                Generation = importlib.import_module("langchain_core.outputs").Generation

                warnings.simplefilter("ignore")  # again: the import adds filters of its own
                lc = SQLiteCache(database_path=path)
                for k in keys:
                    lc.update(k, "llm", [Generation(text=body.decode())])
                it = [iter(keys)]
                samples = []
                for _ in range(repeat):
                    it[0] = iter(keys)
                    samples.append(
                        median_ns_per_call(
                            lambda: lc.lookup(next(it[0]), "llm"), loops=len(keys), repeat=1
                        )
                    )
            return sorted(samples)[len(samples) // 2], "LangChain SQLiteCache.lookup"
        if have("diskcache"):
            diskcache: Any = importlib.import_module("diskcache")  # no type stubs

            with diskcache.Cache(path) as dc:
                for k in keys:
                    dc.set(k, json.loads(body))
                it = [iter(keys)]
                samples = []
                for _ in range(repeat):
                    it[0] = iter(keys)
                    samples.append(
                        median_ns_per_call(lambda: dc.get(next(it[0])), loops=len(keys), repeat=1)
                    )
            return sorted(samples)[len(samples) // 2], "diskcache.Cache.get"
    except Exception:  # a peer that cannot run here
        pass
    return None, "no peer installed (pip install langchain-community)"


# -- agent calls across processes ---------------------------------------------------------------


def _record(path: str, x: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (x + "\n").encode())
    finally:
        os.close(fd)


def replica(kind: str, where: str, ns: str, calls: str, prompts: list[str], start: Any) -> None:
    """One replica process: serve ``prompts`` 8 at a time (a 5 ms agent)."""
    import agentperf as ap

    def agent(x: str) -> Any:
        _record(calls, x)
        time.sleep(0.005)
        return {"text": f"answer to {x}"}

    serve: Callable[[str], Any]
    store = None
    if kind == "in-process":
        serve = ap.CachedAgent(agent, ttl=600.0, max_size=10_000).execute
    elif kind == "by-hand":
        import redis

        r = redis.Redis.from_url(where)

        def serve(x: str) -> Any:
            k = f"{ns}:{ap.hash_key(x)}"
            got = r.get(k)
            if got is not None:
                return json.loads(got)
            v = agent(x)
            r.set(k, json.dumps(v), ex=600)
            return v
    else:
        store = _open(kind, where, ns)
        serve = ap.CachedAgent(agent, ttl=600.0, max_size=10_000, store=store).execute
    start.wait(60)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(serve, prompts))
    if store is not None:
        store.close()


def _calls(kind: str, where: str, quick: bool, tmp: str) -> tuple[int, int]:
    n = 300 if quick else 1000
    rng = random.Random(11)
    weights = [1.0 / k for k in range(1, n + 1)]
    prompts = [f"prompt {k}" for k in rng.choices(range(n), weights=weights, k=n)]
    ns = f"rep{os.getpid()}x{random.randrange(10**9)}"
    calls = os.path.join(tmp, f"calls-{kind}-{ns}.txt")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as mgr, ctx.Pool(2) as pool:
        start = mgr.Barrier(2)
        pool.starmap(replica, [(kind, where, ns, calls, prompts, start)] * 2)
        pool.apply(replica, (kind, where, ns, calls, prompts, mgr.Barrier(1)))  # the restart
    if kind in ("redis", "sqlite"):
        store = _open(kind, where, ns)
        store.clear()
        store.close()
    with open(calls) as f:
        made = sum(1 for _ in f)
    return made, len(set(prompts))


def rows(quick: bool) -> Iterator[Row]:
    """L2 hit latency and agent calls across processes, per reachable store."""
    with tempfile.TemporaryDirectory(prefix="agentperf-report-") as tmp:
        path = os.path.join(tmp, "tiers.db")
        ours, bare, peer, peer_name = _latency("sqlite", path, quick)
        yield Row(
            "tiers",
            f"{_LATENCY} (SqliteStore)",
            ours,
            "ns",
            bare,
            "sqlite3 SELECT + json.loads by hand",
            peer,
            peer_name,
            "-",
            note="execute() of an entry only the store holds (temporary file, WAL)",
            higher_is_better=False,
        )
        made, distinct = _calls("sqlite", path, quick, tmp)
        base, _ = _calls("in-process", "", quick, tmp)
        yield Row(
            "tiers",
            f"{_CALLS} (SqliteStore)",
            float(made),
            "calls",
            float(base),
            "in-process CachedAgent alone",
            None,
            "",
            "-",
            note=f"ideal: {distinct} (one per distinct input); saved {base - made} calls",
            higher_is_better=False,
            details={"distinct_calls": float(distinct)},
        )
        url = redis_url()
        if url is None:
            return
        ours, bare, _, _ = _latency("redis", url, quick)
        yield Row(
            "tiers",
            f"{_LATENCY} (RedisStore)",
            ours,
            "ns",
            bare,
            "redis-py GET + json.loads by hand",
            None,
            "",
            "-",
            note=f"target <= 1.5x the bare GET + decode; here {ours / bare:.2f}x ({url})",
            higher_is_better=False,
        )
        made, distinct = _calls("redis", url, quick, tmp)
        hand, _ = _calls("by-hand", url, quick, tmp)
        yield Row(
            "tiers",
            f"{_CALLS} (RedisStore)",
            float(made),
            "calls",
            float(base),
            "in-process CachedAgent alone",
            float(hand),
            "redis-py layer by hand, keyed by hash_key",
            "-",
            note=f"ideal: {distinct} (one per distinct input)",
            higher_is_better=False,
            details={"distinct_calls": float(distinct)},
        )


BLOCK = Block("tiers", "Second tier (store)", rows)
