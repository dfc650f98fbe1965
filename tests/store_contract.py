"""The behaviour every second-tier store must show, run against each real backend.

``tests/test_store_redis.py`` and ``tests/test_store_sqlite.py`` subclass
:class:`StoreContract` with a ``store`` fixture (and ``other_store``: the same backend, another
namespace; ``store_factory``: more handles on the same backend and namespace, as another
process would have). The helpers at the bottom run in spawned child processes.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentperf.store import Store, new_owner

SPAWN = multiprocessing.get_context("spawn")


def open_store(spec: tuple[str, str, str]) -> Any:
    """A store from a picklable ``(kind, url_or_path, namespace)``, in any process."""
    from agentperf import RedisStore, SqliteStore

    kind, where, namespace = spec
    if kind == "redis":
        return RedisStore(where, namespace=namespace, timeout=2.0)
    return SqliteStore(where, namespace=namespace)


class StoreContract:
    """Subclasses provide the fixtures ``store``, ``other_store``, ``store_factory`` and
    ``spec`` (a picklable description for child processes)."""

    # -- entries ----------------------------------------------------------------------------

    def test_round_trip_and_delete(self, store: Any) -> None:
        assert isinstance(store, Store)
        assert store.get("missing") is None
        store.set("d1", b"\x00binary\xffvalue", ttl=60.0)
        assert store.get("d1") == b"\x00binary\xffvalue"
        store.set("d1", b"second")
        assert store.get("d1") == b"second"
        assert store.delete("d1") is True
        assert store.delete("d1") is False
        assert store.get("d1") is None
        store.set("empty", b"")
        assert store.get("empty") == b""

    def test_ttl_left_and_get_with_ttl(self, store: Any) -> None:
        store.set("t", b"v", ttl=10.0)
        left = store.ttl_left("t")
        assert left is not None and 8.0 < left <= 10.0
        got = store.get_with_ttl("t")
        assert got is not None and got[0] == b"v" and 8.0 < got[1] <= 10.0
        store.set("forever", b"v", ttl=None)
        assert store.ttl_left("forever") == math.inf
        assert store.get_with_ttl("forever") == (b"v", math.inf)
        assert store.ttl_left("missing") is None
        assert store.get_with_ttl("missing") is None
        # A later write replaces the TTL too.
        store.set("t", b"w", ttl=None)
        assert store.ttl_left("t") == math.inf

    def test_short_ttl_expires(self, store: Any) -> None:
        store.set("short", b"v", ttl=1.0)
        store.set("long", b"v", ttl=60.0)
        assert store.get("short") == b"v"
        time.sleep(1.3)
        assert store.get("short") is None
        assert store.get_with_ttl("short") is None
        assert store.ttl_left("short") is None
        assert store.get_many(["short", "long"]) == [None, b"v"]

    def test_namespaces_are_isolated(self, store: Any, other_store: Any) -> None:
        store.set("same", b"mine")
        other_store.set("same", b"theirs")
        assert store.get("same") == b"mine"
        assert other_store.get("same") == b"theirs"
        store.set("only-mine", b"x")
        assert other_store.get("only-mine") is None
        assert store.try_lease("same", "a", 10.0)
        assert other_store.try_lease("same", "b", 10.0)  # leases are per namespace too

    def test_clear_removes_this_namespace_only(self, store: Any, other_store: Any) -> None:
        for i in range(2500):
            store.set(f"k{i}", b"v")
        other_store.set("k1", b"kept")
        assert store.try_lease("k1", "me", 30.0)
        assert store.clear() >= 2500
        assert store.get_many([f"k{i}" for i in range(2500)]) == [None] * 2500
        assert store.lease_owner("k1") is None
        assert other_store.get("k1") == b"kept"
        assert store.clear() == 0

    def test_get_many_10000_keys_in_chunks(self, store: Any) -> None:
        digests = [f"key{i}" for i in range(10_000)]
        for i, d in enumerate(digests):
            if i % 3:
                store.set(d, str(i).encode())
        want = [None if i % 3 == 0 else str(i).encode() for i in range(10_000)]
        assert store.get_many(digests, chunk_size=700) == want
        assert store.get_many(digests[::-1], chunk_size=1)[:5] == want[::-1][:5]
        assert store.get_many([]) == []
        with pytest.raises(ValueError, match="chunk_size"):
            store.get_many(digests, chunk_size=0)

    # -- leases -----------------------------------------------------------------------------

    def test_lease_owner_only(self, store: Any) -> None:
        assert store.try_lease("l", "alice", 10.0) is True
        assert store.try_lease("l", "bob", 10.0) is False
        assert store.try_lease("l", "alice", 10.0) is False  # not re-entrant
        assert store.lease_owner("l") == "alice"
        assert store.renew("l", "bob", 10.0) is False
        assert store.release("l", "bob") is False
        assert store.lease_owner("l") == "alice"
        assert store.renew("l", "alice", 20.0) is True
        assert store.release("l", "alice") is True
        assert store.release("l", "alice") is False
        assert store.renew("l", "alice", 10.0) is False
        assert store.lease_owner("l") is None
        assert store.try_lease("l", "bob", 10.0) is True

    def test_lease_runs_out_and_renew_keeps_it(self, store: Any) -> None:
        assert store.try_lease("out", "a", 0.2)
        assert store.try_lease("kept", "a", 1.0)
        time.sleep(0.3)
        assert store.renew("kept", "a", 5.0)
        time.sleep(1.0)  # past kept's first TTL: only the renewal holds it
        assert store.lease_owner("out") is None
        assert store.renew("out", "a", 5.0) is False  # ran out: renewing does not revive it
        assert store.try_lease("out", "b", 5.0)
        assert store.lease_owner("kept") == "a"
        assert store.try_lease("kept", "b", 5.0) is False

    @pytest.mark.timeout(60)
    def test_lease_exclusive_across_threads(self, store_factory: Callable[[], Any]) -> None:
        stores = [store_factory() for _ in range(4)]
        n = 16
        for round_ in range(10):
            barrier = threading.Barrier(n)
            won: list[str] = []

            def take(i: int, digest: str, barrier: threading.Barrier, won: list[str]) -> None:
                barrier.wait()
                if stores[i % 4].try_lease(digest, f"t{i}", 30.0):
                    won.append(f"t{i}")

            threads = [
                threading.Thread(target=take, args=(i, f"race{round_}", barrier, won))
                for i in range(n)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert len(won) == 1, won

    @pytest.mark.timeout(120)
    def test_lease_exclusive_across_processes(self, spec: tuple[str, str, str]) -> None:
        digests = [f"p{i}" for i in range(40)]
        with SPAWN.Pool(4) as pool:
            results = pool.starmap(
                _race_leases, [(spec, digests, f"proc{i}") for i in range(4)], chunksize=1
            )
        won = [d for r in results for d in r]
        assert sorted(won) == sorted(digests)  # each digest won exactly once

    @pytest.mark.timeout(60)
    def test_dead_leaders_lease_runs_out(self, store: Any, spec: tuple[str, str, str]) -> None:
        proc = SPAWN.Process(target=_lease_and_die, args=(spec, "orphan", 0.5))
        proc.start()
        proc.join(30)
        assert proc.exitcode == 3  # died holding the lease, never released it
        owner = store.lease_owner("orphan")
        if owner is not None:  # unless the machine was so slow that it already ran out
            assert owner.startswith("dead:")
            assert store.try_lease("orphan", "me", 10.0) is False
        # A follower waiting for the value learns that the lease is gone: None, then it leads.
        t0 = time.monotonic()
        assert store.wait_value("orphan", timeout=10.0) is None
        assert time.monotonic() - t0 < 9.0
        assert store.try_lease("orphan", "me", 10.0) is True

    # -- followers --------------------------------------------------------------------------

    @pytest.mark.timeout(30)
    def test_wait_value_sees_the_leaders_value(self, store: Any, store_factory: Any) -> None:
        leader = store_factory()
        owner = new_owner()
        assert leader.try_lease("w", owner, 10.0)

        def lead() -> None:
            time.sleep(0.2)
            leader.set("w", b"result", ttl=30.0)
            leader.release("w", owner)

        t = threading.Thread(target=lead)
        t.start()
        assert store.wait_value("w", timeout=10.0) == b"result"
        t.join(10)
        # Already there: at once. No value and no lease: None at once (take the lease).
        assert store.wait_value("w", timeout=0.0) == b"result"
        assert store.wait_value("nobody", timeout=10.0) is None

    @pytest.mark.timeout(30)
    def test_wait_value_none_when_released_without_value(self, store: Any) -> None:
        assert store.try_lease("gaveup", "a", 10.0)
        threading.Timer(0.2, store.release, args=("gaveup", "a")).start()
        t0 = time.monotonic()
        assert store.wait_value("gaveup", timeout=10.0) is None
        assert time.monotonic() - t0 < 9.0
        # Held and never written: the wait times out with None.
        assert store.try_lease("held", "a", 10.0)
        assert store.wait_value("held", timeout=0.2) is None

    # -- async twins ------------------------------------------------------------------------

    @pytest.mark.timeout(30)
    async def test_async_twins(self, store: Any, other_store: Any) -> None:
        assert await store.aget("a") is None
        await store.aset("a", b"1", ttl=10.0)
        await store.aset("b", b"2")
        assert await store.aget("a") == b"1"
        got = await store.aget_with_ttl("a")
        assert got is not None and got[0] == b"1" and 0 < got[1] <= 10.0
        assert await store.attl_left("b") == math.inf
        assert await store.aget_many(["a", "x", "b"], chunk_size=2) == [b"1", None, b"2"]
        assert await store.adelete("b") is True
        assert await store.adelete("b") is False
        assert await store.atry_lease("a", "me", 10.0) is True
        assert await store.atry_lease("a", "you", 10.0) is False
        assert await store.alease_owner("a") == "me"
        assert await store.arenew("a", "you", 10.0) is False
        assert await store.arenew("a", "me", 10.0) is True
        assert await store.arelease("a", "you") is False
        assert await store.arelease("a", "me") is True
        assert await store.await_value("a", timeout=1.0) == b"1"
        assert await store.await_value("nobody", timeout=1.0) is None
        await other_store.aset("a", b"other")
        assert await store.aclear() >= 1
        assert await other_store.aget("a") == b"other"

    @pytest.mark.timeout(30)
    async def test_await_value_wakes_on_the_leaders_value(self, store: Any) -> None:
        assert await store.atry_lease("aw", "lead", 10.0)

        async def lead() -> None:
            await asyncio.sleep(0.2)
            await store.aset("aw", b"done", ttl=30.0)
            await store.arelease("aw", "lead")

        task = asyncio.create_task(lead())
        # Other tasks run while it waits: the loop is never blocked.
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert await store.await_value("aw", timeout=10.0) == b"done"
        ticker.cancel()
        await task
        assert ticks > 3

    async def test_async_calls_from_two_loops(self, store: Any) -> None:
        # pytest-asyncio gives each test a loop; a thread with its own loop uses it too.
        await store.aset("loops", b"v")
        result: list[Any] = []
        th = threading.Thread(target=lambda: result.append(asyncio.run(store.aget("loops"))))
        th.start()
        th.join(20)
        assert result == [b"v"]
        assert await store.aget("loops") == b"v"

    # -- arguments --------------------------------------------------------------------------

    def test_bad_arguments(self, store: Any) -> None:
        for digest in ["", "a:b", "a b", "tab\t", "x" * 1000]:
            with pytest.raises(ValueError, match="digest"):
                store.get(digest)
        with pytest.raises(TypeError, match="digest"):
            store.get(123)
        with pytest.raises(TypeError, match="value"):
            store.set("d", "text")
        for ttl in [0, -1.0, float("nan")]:
            with pytest.raises(ValueError, match="ttl"):
                store.set("d", b"v", ttl=ttl)
        with pytest.raises(TypeError, match="ttl"):
            store.set("d", b"v", ttl="10")
        with pytest.raises(ValueError, match="ttl"):
            store.try_lease("d", "me", math.inf)
        with pytest.raises(ValueError, match="owner"):
            store.try_lease("d", "", 1.0)
        with pytest.raises(ValueError, match="poll_max"):
            store.wait_value("d", 1.0, poll_min=0.5, poll_max=0.1)

    def test_timedelta_durations(self, store: Any) -> None:
        from datetime import timedelta

        store.set("td", b"v", ttl=timedelta(seconds=30))
        left = store.ttl_left("td")
        assert left is not None and 25.0 < left <= 30.0
        assert store.try_lease("td", "me", timedelta(seconds=5))


# -- in child processes ---------------------------------------------------------------------


def _race_leases(spec: tuple[str, str, str], digests: list[str], owner: str) -> list[str]:
    store = open_store(spec)
    won = []
    try:
        for d in digests:
            if store.try_lease(d, owner, 60.0):
                won.append(d)
    finally:
        store.close()
    return won


def _lease_and_die(spec: tuple[str, str, str], digest: str, ttl: float) -> None:
    store = open_store(spec)
    assert store.try_lease(digest, f"dead:{os.getpid()}", ttl)
    os._exit(3)  # no release, no cleanup: a crashed leader
