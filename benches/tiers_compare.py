"""The second tier against what people write by hand and against LangChain, aiocache and
diskcache, measured in one run on this machine (a redis-server is started for it).

1. Replicas + restart: two replica processes serve the same 1,000 Zipf-popular prompts at
   once (16 in flight each, a 20 ms agent), then one of them is restarted (a new process with
   an empty in-process cache) and serves them again. Agent calls in all, against the number of
   distinct prompts (the ideal).
2. 8 processes x 100 concurrent callers of one cold key: agent calls.
3. L2 hit cost: ``cached.execute(x)`` of an entry only the store holds, against a bare
   redis-py ``GET`` plus ``json.loads`` of the same value (median per call; ratio).
4. Bulk lookups of a batch: 10,000 entries in Redis through ``BatchExecutor`` (one ``MGET``
   per window) against the same batch with one ``GET`` each, and aiocache's ``RedisCache.get``
   each (items/s).
5. SQLite under 4 concurrent writer processes (1,000 keys each, half shared): ``SqliteStore``
   against LangChain's ``SQLiteCache`` and diskcache (ops/s of get-then-set, errors).

    .venv/bin/python benches/tiers_compare.py          # about a minute or two
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.simplefilter("ignore")  # the peers' deprecation notices

import agentperf as ap  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
DELAY = 0.02


def zipf_prompts(n: int = 1000, vocab: int = 1000, s: float = 1.0, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    weights = [1.0 / (k**s) for k in range(1, vocab + 1)]
    return [f"prompt {k}" for k in rng.choices(range(vocab), weights=weights, k=n)]


def record(path: str, x: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (x.replace("\n", " ") + "\n").encode())
    finally:
        os.close(fd)


def lines(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


# -- 1. replicas ----------------------------------------------------------------------------


def make_layer(kind: str, where: str, calls: str) -> Callable[[str], Any]:
    """A sync ``serve(prompt)`` for one contender, in this process."""

    def agent(x: str) -> dict[str, str]:
        record(calls, x)
        time.sleep(DELAY)
        return {"text": f"answer to {x}"}

    if kind == "in-process":
        return ap.CachedAgent(agent, ttl=3600.0, max_size=10_000).execute
    if kind in ("ap+redis", "ap+sqlite"):
        store: Any = (
            ap.RedisStore(where, namespace="replicas")
            if kind == "ap+redis"
            else ap.SqliteStore(where, namespace="replicas")
        )
        return ap.CachedAgent(agent, ttl=3600.0, max_size=10_000, store=store).execute
    if kind == "redis-py by hand":
        import redis

        r = redis.Redis.from_url(where)

        def by_hand(x: str) -> Any:
            k = "hand:" + ap.hash_key(x)
            got = r.get(k)
            if got is not None:
                return json.loads(got)
            v = agent(x)
            r.set(k, json.dumps(v), ex=3600)
            return v

        return by_hand
    if kind == "LangChain SQLiteCache":
        from langchain_community.cache import SQLiteCache
        from langchain_core.outputs import Generation

        lc = SQLiteCache(database_path=where)

        def lc_sqlite(x: str) -> Any:
            got = lc.lookup(x, "llm")
            if got:
                return {"text": got[0].text}
            v = agent(x)
            lc.update(x, "llm", [Generation(text=v["text"])])
            return v

        return lc_sqlite
    raise ValueError(kind)


def replica(kind: str, where: str, calls: str, prompts: list[str], start: Any) -> int:
    """Serve ``prompts`` 16 at a time; returns the requests that failed."""
    start.wait(60)
    if kind == "LangChain AsyncRedisCache":
        return asyncio.run(_lc_async_redis(where, calls, prompts))
    serve = make_layer(kind, where, calls)
    warnings.simplefilter("ignore")  # again: LangChain's import adds filters of its own
    failed = 0
    with ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(serve, p) for p in prompts]:
            try:
                f.result()
            except Exception:
                failed += 1
    return failed


async def _lc_async_redis(where: str, calls: str, prompts: list[str]) -> int:
    import redis.asyncio
    from langchain_community.cache import AsyncRedisCache
    from langchain_core.outputs import Generation

    warnings.simplefilter("ignore")
    lc = AsyncRedisCache(redis.asyncio.Redis.from_url(where), ttl=3600)
    sem = asyncio.Semaphore(16)
    failed = 0

    async def serve(x: str) -> None:
        nonlocal failed
        async with sem:
            try:
                got = await lc.alookup(x, "llm")
                if got:
                    return
                record(calls, x)
                await asyncio.sleep(DELAY)
                await lc.aupdate(x, "llm", [Generation(text=f"answer to {x}")])
            except Exception:
                failed += 1

    await asyncio.gather(*(serve(p) for p in prompts))
    return failed


def bench_replicas(redis_url: str, tmp: str) -> list[tuple[str, int, int, int]]:
    prompts = zipf_prompts()
    distinct = len(set(prompts))
    out = []
    kinds = [
        "in-process",
        "redis-py by hand",
        "LangChain AsyncRedisCache",
        "LangChain SQLiteCache",
        "ap+redis",
        "ap+sqlite",
    ]
    for i, kind in enumerate(kinds):
        calls = os.path.join(tmp, f"replicas{i}.txt")
        where = redis_url if "redis" in kind.lower() else os.path.join(tmp, f"rep{i}.db")
        if kind == "LangChain SQLiteCache":
            where = os.path.join(tmp, f"lc{i}.db")
        if "redis" in kind.lower():
            import redis

            redis.Redis.from_url(redis_url).flushall()
        start = SPAWN.Manager().Barrier(2)
        try:
            with SPAWN.Pool(2) as pool:
                failed = sum(pool.starmap(replica, [(kind, where, calls, prompts, start)] * 2))
                one = SPAWN.Manager().Barrier(1)
                failed += pool.apply(replica, (kind, where, calls, prompts, one))  # restarted
        except Exception as e:  # a peer that cannot run here
            print(f"  {kind}: skipped ({type(e).__name__}: {e})")
            continue
        out.append((kind, lines(calls), distinct, failed))
    return out


# -- 2. one cold key, 8 processes -------------------------------------------------------------


def cold_key(kind: str, where: str, calls: str, start: Any) -> None:
    serve = make_layer(kind, where, calls)
    threads = [threading.Thread(target=serve, args=("the cold key",)) for _ in range(100)]
    start.wait(60)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def bench_cold_key(redis_url: str, tmp: str) -> list[tuple[str, int]]:
    out = []
    for i, kind in enumerate(["redis-py by hand", "ap+redis", "ap+sqlite"]):
        calls = os.path.join(tmp, f"cold{i}.txt")
        where = redis_url if "redis" in kind else os.path.join(tmp, f"cold{i}.db")
        start = SPAWN.Manager().Barrier(8)
        procs = [SPAWN.Process(target=cold_key, args=(kind, where, calls, start)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        out.append((kind, lines(calls)))
    return out


# -- 3. L2 hit cost ---------------------------------------------------------------------------


def bench_l2_hit(redis_url: str, n: int = 2000, rounds: int = 7) -> tuple[float, float]:
    import redis

    value = {"text": "x" * 200, "usage": {"prompt_tokens": 12, "completion_tokens": 80}}
    store = ap.RedisStore(redis_url, namespace="l2hit")
    warm = ap.CachedAgent(lambda x: value, ttl=3600.0, max_size=n, store=store)
    for i in range(n):
        warm.execute(i)
    r = redis.Redis.from_url(redis_url)
    keys = [f"bare:{ap.hash_key(i)}" for i in range(n)]
    body = json.dumps(value).encode()
    for k in keys:
        r.set(k, body, px=3_600_000)

    def ours() -> float:
        c = ap.CachedAgent(lambda x: value, ttl=3600.0, max_size=n, store=store)
        ex = c.execute
        t = time.perf_counter()
        for i in range(n):
            ex(i)
        dt = time.perf_counter() - t
        assert c.stats().store_hits == n
        return dt / n

    def bare() -> float:
        get, loads = r.get, json.loads
        t = time.perf_counter()
        for k in keys:
            loads(get(k))
        return (time.perf_counter() - t) / n

    a, b = [], []
    for _ in range(rounds):  # interleaved, so that machine noise hits both alike
        b.append(bare())
        a.append(ours())
    store.close()
    return statistics.median(a), statistics.median(b)


# -- 4. bulk lookups --------------------------------------------------------------------------


def bench_bulk(redis_url: str, n: int = 10_000) -> list[tuple[str, float]]:
    value = {"text": "y" * 100}
    store = ap.RedisStore(redis_url, namespace="bulk")
    warm = ap.CachedAgent(lambda x: value, ttl=3600.0, max_size=n, store=store)
    ap.BatchExecutor(warm, max_concurrency=32).execute(range(n))
    out = []

    c = ap.CachedAgent(lambda x: value, ttl=3600.0, max_size=n, store=store)
    t = time.perf_counter()
    r = ap.BatchExecutor(c, max_concurrency=32).execute(range(n))
    rate = n / (time.perf_counter() - t)
    out.append(("BatchExecutor(CachedAgent(store)): MGET per window", rate))
    assert c.stats().store_hits == n and r.stats.failure_count == 0

    c = ap.CachedAgent(lambda x: value, ttl=3600.0, max_size=n, store=store)

    async def one_each(x: int) -> Any:  # not the cached agent itself: no read-ahead
        return await c.aexecute(x)

    t = time.perf_counter()
    ap.BatchExecutor(one_each, max_concurrency=32).execute(range(n))
    out.append(("the same, one GET each", n / (time.perf_counter() - t)))
    assert c.stats().store_hits == n
    store.close()

    try:
        from urllib.parse import urlparse

        from aiocache import RedisCache
        from aiocache.serializers import JsonSerializer
    except ImportError:
        return out
    u = urlparse(redis_url)

    async def aio() -> float:
        cache = RedisCache(
            endpoint=u.hostname, port=u.port, namespace="aio", serializer=JsonSerializer()
        )
        for i in range(0, n, 500):
            await cache.multi_set([(str(j), value) for j in range(i, min(n, i + 500))])
        sem = asyncio.Semaphore(32)

        async def get(i: int) -> Any:
            async with sem:
                return await cache.get(str(i))

        t = time.perf_counter()
        got = await asyncio.gather(*(get(i) for i in range(n)))
        dt = time.perf_counter() - t
        assert all(g == value for g in got)
        await cache.close()
        return n / dt

    out.append(("aiocache RedisCache.get each (32 in flight)", asyncio.run(aio())))
    return out


# -- 5. SQLite with concurrent writers --------------------------------------------------------


def sqlite_writer(kind: str, where: str, keys: list[str], start: Any) -> tuple[int, int, float]:
    value = "z" * 500
    if kind == "ap.SqliteStore":
        s = ap.SqliteStore(where, namespace="w")

        def get(k: str) -> Any:
            return s.get(ap.hash_key(k))

        def put(k: str) -> None:
            s.set(ap.hash_key(k), value.encode(), 3600.0)
    elif kind == "LangChain SQLiteCache":
        from langchain_community.cache import SQLiteCache
        from langchain_core.outputs import Generation

        lc = SQLiteCache(database_path=where)

        def get(k: str) -> Any:
            return lc.lookup(k, "llm")

        def put(k: str) -> None:
            lc.update(k, "llm", [Generation(text=value)])
    else:
        import diskcache

        dc = diskcache.Cache(where)

        def get(k: str) -> Any:
            return dc.get(k)

        def put(k: str) -> None:
            dc.set(k, value, expire=3600)

    warnings.simplefilter("ignore")
    start.wait(60)
    ops = errors = 0
    t = time.perf_counter()
    for k in keys:
        try:
            if get(k) is None or get(k) == []:
                put(k)
            ops += 1
        except Exception:
            errors += 1
    return ops, errors, time.perf_counter() - t


def bench_sqlite(tmp: str) -> list[tuple[str, float, int]]:
    shared = [f"shared {i}" for i in range(500)]
    sets = [[f"own {n} {i}" for i in range(500)] + shared for n in range(4)]
    for s in sets:
        random.Random(len(s[0])).shuffle(s)
    out = []
    for i, kind in enumerate(["ap.SqliteStore", "LangChain SQLiteCache", "diskcache"]):
        where = os.path.join(tmp, f"w{i}.db" if kind != "diskcache" else f"dc{i}")
        if kind == "LangChain SQLiteCache":
            from langchain_community.cache import SQLiteCache

            SQLiteCache(database_path=where)  # the schema, before the writers race on it
        start = SPAWN.Manager().Barrier(4)
        try:
            with SPAWN.Pool(4) as pool:
                res = pool.starmap(sqlite_writer, [(kind, where, k, start) for k in sets])
        except Exception as e:
            print(f"  {kind}: skipped ({type(e).__name__}: {e})")
            continue
        ops = sum(r[0] for r in res)
        errors = sum(r[1] for r in res)
        wall = max(r[2] for r in res)
        out.append((kind, ops / wall, errors))
    return out


def main() -> None:
    from redis_server import RedisServer

    t0 = time.perf_counter()
    with RedisServer() as srv, tempfile.TemporaryDirectory() as tmp:
        rep = bench_replicas(srv.url, tmp)
        print("\n1. two replicas + one restarted, 1,000 Zipf prompts each pass (agent calls)")
        for kind, calls, distinct, failed in rep:
            extra = f", {failed} requests failed" if failed else ""
            print(f"  {kind:28s} {calls:5d} calls  (distinct {distinct}{extra})")
        print("\n2. 8 processes x 100 callers of one cold key (agent calls)")
        for kind, calls in bench_cold_key(srv.url, tmp):
            print(f"  {kind:28s} {calls:5d}")
        ours, bare = bench_l2_hit(srv.url)
        print("\n3. L2 hit (Redis), median per call")
        print(f"  CachedAgent.execute, entry only in the store  {ours * 1e6:7.1f} us")
        print(f"  bare redis-py GET + json.loads               {bare * 1e6:7.1f} us")
        ratio = ours / bare
        print(f"  ratio                                         {ratio:7.2f}x  (target <= 1.5)")
        print("\n4. 10,000 L2 hits in a batch (items/s)")
        for name, rate in bench_bulk(srv.url):
            print(f"  {name:52s} {rate:9,.0f}")
        print("\n5. SQLite, 4 writer processes x 1,000 get-then-set (half the keys shared)")
        for kind, rate, errors in bench_sqlite(tmp):
            print(f"  {kind:28s} {rate:9,.0f} ops/s  errors {errors}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
