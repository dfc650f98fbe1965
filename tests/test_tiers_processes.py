"""The second tier across real processes (spawned): one agent call for a cold key among 8
processes, a leader killed while it holds the lease, 4 processes writing one SQLite file,
and a Redis server killed in the middle of a batch."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import agentperf as ap
from redis_server import RedisServer, redis_server_fixture  # noqa: F401 - fixture
from tier_children import (
    FileCountingAgent,
    count_calls,
    lead_and_hang,
    many_callers,
    write_many,
)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(params=["redis", "sqlite"])
def spec(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str, str]]:
    ns = "p" + uuid.uuid4().hex[:10]
    if request.param == "redis":
        srv = request.getfixturevalue("redis_server")
        yield ("redis", srv.url, ns)
    else:
        yield ("sqlite", str(tmp_path / "shared.db"), ns)


@pytest.mark.timeout(240)
def test_8_processes_many_callers_one_cold_key_one_call(
    spec: tuple[str, str, str], tmp_path: Any
) -> None:
    calls = str(tmp_path / "calls.txt")
    procs, callers = 8, 25
    barrier = SPAWN.Manager().Barrier(procs)
    with SPAWN.Pool(procs) as pool:
        results = pool.starmap(
            many_callers,
            [(spec, calls, "cold", callers, barrier, 10.0, 0.3) for _ in range(procs)],
            chunksize=1,
        )
    assert [len(r) for r in results] == [callers] * procs
    assert all(v == {"answer": "cold"} for r in results for v in r)
    assert count_calls(calls) == ["cold"]


@pytest.mark.timeout(120)
def test_leader_killed_holding_the_lease_a_waiter_takes_over(
    spec: tuple[str, str, str], tmp_path: Any
) -> None:
    from tier_children import open_store

    calls = str(tmp_path / "calls.txt")
    leader = SPAWN.Process(target=lead_and_hang, args=(spec, calls, "orphan", 1.0))
    leader.start()
    deadline = time.monotonic() + 60.0
    while not count_calls(calls) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert count_calls(calls) == ["orphan"]  # the leader runs, holding the lease
    store = open_store(spec)
    try:
        owner = store.lease_owner(ap.hash_key("orphan"))
        assert owner is not None and f":{leader.pid}:" in owner
        with ap.CachedAgent(FileCountingAgent(calls), store=store, lease=1.0) as waiter:
            out: list[Any] = []
            t = threading.Thread(target=lambda: out.append(waiter.execute("orphan")))
            t.start()
            time.sleep(0.3)  # the waiter is waiting on the live lease (renewed every 1/3 s)
            assert t.is_alive() and count_calls(calls) == ["orphan"]
            leader.kill()
            leader.join(10)
            t0 = time.monotonic()
            t.join(30)
            assert out == [{"answer": "orphan"}]
            assert time.monotonic() - t0 < 20.0
            # The waiter took over once the dead leader's lease ran out: one more call.
            assert count_calls(calls) == ["orphan", "orphan"]
            assert store.get(ap.hash_key("orphan")) is not None
    finally:
        if leader.is_alive():
            leader.kill()
        store.close()


@pytest.mark.timeout(240)
def test_4_processes_write_one_sqlite_file(tmp_path: Any) -> None:
    spec = ("sqlite", str(tmp_path / "one.db"), "w")
    calls = str(tmp_path / "calls.txt")
    # Overlapping key sets: each process has 150 of its own and 150 shared by all.
    shared = [f"s{i}" for i in range(150)]
    sets = [[f"p{n}-{i}" for i in range(150)] + shared for n in range(4)]
    with SPAWN.Pool(4) as pool:
        results = pool.starmap(write_many, [(spec, calls, keys) for keys in sets], chunksize=1)
    assert all(r["ok"] and r["failed"] == 0 and r["errors"] == 0 for r in results), results
    made = count_calls(calls)
    assert sorted(made) == sorted({k for keys in sets for k in keys})  # each key once
    with ap.SqliteStore(spec[1], namespace="w") as store:
        assert len(store) == 4 * 150 + 150


@pytest.mark.timeout(120)
def test_redis_killed_mid_batch_loses_no_item(tmp_path: Any) -> None:
    srv = RedisServer().start()
    try:
        store = ap.RedisStore(srv.url, namespace="kill", timeout=0.25)
        done = [0]

        def agent(x: int) -> int:
            done[0] += 1
            if done[0] == 100:
                srv.kill()  # half-way: the server is gone
            time.sleep(0.002)
            return x * 3

        n = 200
        with ap.CachedAgent(agent, ttl=60.0, store=store) as cached:
            with ap.BatchExecutor(cached, max_concurrency=8) as ex:
                r = ex.execute(range(n))
            assert r.outputs == [i * 3 for i in range(n)]
            assert r.stats.failure_count == 0 and r.stats.success_count == n
            s = cached.stats()
            assert s.store_errors >= 1 and s.hits + s.misses == n
        store.close()
    finally:
        srv.stop()
