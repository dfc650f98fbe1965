"""SqliteStore on real SQLite files in tmp_path: the store contract, then what is SQLite's
own (processes and threads writing one file, purge, persistence, a locked file)."""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentperf import SqliteStore
from agentperf.store import Breaker, BreakerOpenError, StoreError
from store_contract import SPAWN, StoreContract


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cache.db")


class TestSqliteContract(StoreContract):
    @pytest.fixture
    def store(self, db: str) -> Iterator[SqliteStore]:
        with SqliteStore(db, namespace="main") as s:
            yield s

    @pytest.fixture
    def other_store(self, db: str) -> Iterator[SqliteStore]:
        with SqliteStore(db, namespace="other") as s:
            yield s

    @pytest.fixture
    def store_factory(self, db: str) -> Iterator[Callable[[], SqliteStore]]:
        made: list[SqliteStore] = []

        def make() -> SqliteStore:
            made.append(SqliteStore(db, namespace="main"))
            return made[-1]

        yield make
        for s in made:
            s.close()

    @pytest.fixture
    def spec(self, db: str) -> tuple[str, str, str]:
        return ("sqlite", db, "main")


def _hammer(path: str, digests: list[str], tag: str, threads: int) -> int:
    store = SqliteStore(path, namespace="hammer", timeout=30.0)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for round_ in range(3):
                for d in digests:
                    store.set(d, f"{tag}-{t}-{round_}".encode(), ttl=600.0)
                    store.get(d)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    store.close()
    if errors:
        raise errors[0]
    return len(digests) * 3 * threads


@pytest.mark.timeout(240)
def test_four_processes_of_threads_insert_the_same_keys(db: str) -> None:
    digests = [f"same{i}" for i in range(60)]
    with SPAWN.Pool(4) as pool:
        done = pool.starmap(_hammer, [(db, digests, f"p{i}", 4) for i in range(4)])
    assert done == [60 * 3 * 4] * 4  # every write went through, none raised
    with SqliteStore(db, namespace="hammer") as s:
        values = s.get_many(digests)
        assert all(v is not None and v.decode().startswith("p") for v in values)
        assert len(s) == 60


def test_persists_across_reopen(db: str) -> None:
    with SqliteStore(db, namespace="p") as s:
        s.set("kept", b"v", ttl=600.0)
    with SqliteStore(db, namespace="p") as s:
        assert s.get("kept") == b"v"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


def test_purge_removes_expired_rows_only(db: str) -> None:
    with SqliteStore(db, namespace="a") as a, SqliteStore(db, namespace="b") as b:
        for i in range(1500):
            a.set(f"old{i}", b"v", ttl=0.05)
        b.set("old", b"v", ttl=0.05)
        a.set("live", b"v", ttl=600.0)
        a.set("forever", b"v")
        assert a.try_lease("lease", "me", 0.05)
        time.sleep(0.2)
        assert a.purge() == 1501  # every namespace's expired rows
        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT namespace, digest FROM agentperf_v1_entries ORDER BY digest"
        ).fetchall()
        leases = conn.execute("SELECT count(*) FROM agentperf_v1_leases").fetchone()[0]
        conn.close()
        assert rows == [("a", "forever"), ("a", "live")]
        assert leases == 0
        assert a.purge() == 0


def test_expired_rows_are_never_returned_before_purge(db: str) -> None:
    with SqliteStore(db) as s:
        s.set("e", b"v", ttl=0.05)
        time.sleep(0.15)
        assert s.get("e") is None
        assert s.get_many(["e"]) == [None]
        assert s.ttl_left("e") is None
        assert len(s) == 0
        assert s.delete("e") is False  # the row was there, but dead


@pytest.mark.timeout(60)
def test_locked_file_is_a_store_error_then_the_breaker_opens(db: str) -> None:
    now = [0.0]
    breaker = Breaker(failures=5, reset_after=5.0, clock=lambda: now[0])
    with SqliteStore(db, timeout=0.1, breaker=breaker) as s:
        s.set("k", b"v")
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for _ in range(5):
                t0 = time.monotonic()
                with pytest.raises(StoreError) as err:
                    s.set("k", b"w")
                assert time.monotonic() - t0 < 5.0
                assert isinstance(err.value.__cause__, sqlite3.OperationalError)
            assert breaker.state == "open"
            with pytest.raises(BreakerOpenError):
                s.get("k")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        with pytest.raises(BreakerOpenError):
            s.get("k")  # still open: skipped without touching the file
        now[0] = 5.0
        assert s.get("k") == b"v"  # the trial call
        assert breaker.state == "closed"


def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="namespace"):
        SqliteStore(tmp_path / "x.db", namespace="a:b")
    with pytest.raises(ValueError, match="namespace"):
        SqliteStore(tmp_path / "x.db", namespace="")
    with pytest.raises(ValueError, match="namespace"):
        SqliteStore(tmp_path / "x.db", namespace="has space")
    with pytest.raises(ValueError, match="namespace"):
        SqliteStore(tmp_path / "x.db", namespace="n" * 200)
    with pytest.raises(TypeError, match="namespace"):
        SqliteStore(tmp_path / "x.db", namespace=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        SqliteStore(tmp_path / "no" / "such" / "x.db")
    with pytest.raises(ValueError, match="path"):
        SqliteStore(":memory:")
    with pytest.raises(TypeError, match="path"):
        SqliteStore(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        SqliteStore(tmp_path / "x.db", timeout=0)
    with pytest.raises(TypeError, match="breaker"):
        SqliteStore(tmp_path / "x.db", breaker="yes")  # type: ignore[arg-type]


def test_closed_store_raises_store_error(db: str) -> None:
    s = SqliteStore(db, breaker=False)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get("k")


def test_pickles_to_the_same_file(db: str) -> None:
    with SqliteStore(db, namespace="pk") as s:
        s.set("k", b"v")
        clone: Any = pickle.loads(pickle.dumps(s))
        assert clone.namespace == "pk" and clone.get("k") == b"v"
        clone.close()


def test_each_thread_has_its_own_connection(db: str) -> None:
    with SqliteStore(db) as s:
        s.set("k", b"v")
        seen: list[int] = []

        def read() -> None:
            assert s.get("k") == b"v"
            seen.append(id(s._conn()))

        ts = [threading.Thread(target=read) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert len(set(seen)) == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
@pytest.mark.timeout(60)
def test_forked_child_opens_its_own_connection(db: str) -> None:
    with SqliteStore(db) as s:
        s.set("k", b"parent")
        pid = os.fork()
        if pid == 0:  # child: the parent's connection must not be reused
            code = 1
            try:
                s.set("k2", b"child")
                code = 0 if s.get("k") == b"parent" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert s.get("k2") == b"child"


def test_namespace_value_in_error_message(db: str) -> None:
    bad = f"bad:{uuid.uuid4().hex[:4]}"
    with pytest.raises(ValueError) as err:
        SqliteStore(db, namespace=bad)
    assert bad in str(err.value) and "namespace" in str(err.value)
