"""RedisStore against a real redis-server started by the fixture (tests/redis_server.py):
the store contract, the key layout, clients passed in, pub/sub wake-ups, and faults — a
killed, paused and restarted server, with the breaker opening and closing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from agentperf import RedisStore
from agentperf.store import KEY_FORMAT_VERSION, Breaker, BreakerOpenError, StoreError
from redis_server import (  # noqa: F401 - fixtures
    RedisServer,
    redis_server_each_fixture,
    redis_server_fixture,
)
from store_contract import StoreContract


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:12]


class TestRedisContract(StoreContract):
    @pytest.fixture
    def namespace(self) -> str:
        return _ns()

    @pytest.fixture
    def store(self, redis_server: RedisServer, namespace: str) -> Iterator[RedisStore]:
        with RedisStore(redis_server.url, namespace=namespace, timeout=2.0) as s:
            yield s

    @pytest.fixture
    def other_store(self, redis_server: RedisServer) -> Iterator[RedisStore]:
        with RedisStore(redis_server.url, namespace=_ns(), timeout=2.0) as s:
            yield s

    @pytest.fixture
    def store_factory(
        self, redis_server: RedisServer, namespace: str
    ) -> Iterator[Callable[[], RedisStore]]:
        made: list[RedisStore] = []

        def make() -> RedisStore:
            made.append(RedisStore(redis_server.url, namespace=namespace, timeout=2.0))
            return made[-1]

        yield make
        for s in made:
            s.close()

    @pytest.fixture
    def spec(self, redis_server: RedisServer, namespace: str) -> tuple[str, str, str]:
        return ("redis", redis_server.url, namespace)


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    yield r
    r.close()


def test_every_key_starts_with_the_namespace_prefix(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    ns = _ns()
    prefix = f"agentperf:{KEY_FORMAT_VERSION}:{ns}:"
    with RedisStore(redis_server.url, namespace=ns) as s:
        assert s.prefix == prefix
        s.set("abc", b"v", ttl=30.0)
        s.set("forever", b"v")
        assert s.try_lease("abc", "me", 30.0)
        keys = sorted(k.decode() for k in raw.keys(f"*{ns}*"))
        assert keys == [prefix + "abc", prefix + "abc:lease", prefix + "forever"]
        assert raw.get(prefix + "abc") == b"v"
        # The TTL was written with the value (SET ... PX), not by a second command.
        assert 29_000 < raw.pttl(prefix + "abc") <= 30_000
        assert raw.pttl(prefix + "forever") == -1


def test_clear_with_glob_characters_in_the_namespace(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    # SCAN MATCH is a glob: a namespace "a*" must not clear namespace "ab".
    tag = uuid.uuid4().hex[:6]
    with (
        RedisStore(redis_server.url, namespace=f"{tag}a*") as star,
        RedisStore(redis_server.url, namespace=f"{tag}ab") as plain,
        RedisStore(redis_server.url, namespace=f"{tag}a[b]") as brackets,
    ):
        star.set("k", b"1")
        plain.set("k", b"2")
        brackets.set("k", b"3")
        assert star.clear() == 1
        assert brackets.clear() == 1
        assert plain.get("k") == b"2"


def test_client_passed_in_sync_gets_an_async_twin(redis_server: RedisServer) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    ns = _ns()
    with RedisStore(client=client, namespace=ns) as s:
        s.set("k", b"sync")

        async def main() -> bytes | None:
            await s.aset("k2", b"async")
            return await s.aget("k")

        assert asyncio.run(main()) == b"sync"
        assert s.get("k2") == b"async"
    # The twin talks to the same db (3), and closing the store leaves the user's client open.
    assert client.get(f"agentperf:{KEY_FORMAT_VERSION}:{ns}:k2") == b"async"
    client.close()


async def test_client_passed_in_async_gets_a_sync_twin(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    s = RedisStore(client=client, namespace=_ns())
    await s.aset("k", b"async")
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(s.get("k")))
    t.start()
    t.join(10)
    assert got == [b"async"]
    s.close()
    assert await client.ping()
    await client.aclose()


def test_bad_configuration(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis_server.url, namespace="a:b")
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis_server.url, namespace="")
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis_server.url, namespace="with\nnewline")
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis_server.url, namespace="x" * 129)
    with pytest.raises(ValueError, match="url"):
        RedisStore(redis_server.url, client=redis.Redis())
    with pytest.raises(TypeError, match="client"):
        RedisStore(client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(client=redis.Redis(decode_responses=True))
    with pytest.raises(ValueError, match="timeout"):
        RedisStore(redis_server.url, timeout=0)
    with pytest.raises(TypeError, match="timeout"):
        RedisStore(redis_server.url, timeout="1")  # type: ignore[arg-type]


def test_missing_redis_is_an_import_error_naming_the_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import agentperf\n"
        "try:\n"
        "    agentperf.RedisStore()\n"
        "except ImportError as e:\n"
        "    assert 'agentperf-rs[redis]' in str(e), e\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_import_agentperf_imports_neither_redis_nor_pydantic() -> None:
    code = (
        "import sys, agentperf\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('redis', 'pydantic', 'sqlite3', 'pickle', 'hashlib'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- notifications ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_wait_value_is_woken_by_the_notification(redis_server: RedisServer) -> None:
    ns = _ns()
    with (
        RedisStore(redis_server.url, namespace=ns) as follower,
        RedisStore(redis_server.url, namespace=ns) as leader,
    ):
        assert leader.try_lease("n", "lead", 30.0)
        got: list[Any] = []
        # Polls 5 s apart and a 3 s timeout: only the notification can deliver the value.
        t = threading.Thread(
            target=lambda: got.append(
                follower.wait_value("n", timeout=3.0, poll_min=5.0, poll_max=5.0)
            )
        )
        t.start()
        assert follower._listener is not None
        assert follower._listener.subscribed.wait(10)
        time.sleep(0.05)
        leader.set("n", b"notified", ttl=30.0)
        t.join(10)
        assert got == [b"notified"]


@pytest.mark.timeout(30)
async def test_await_value_is_woken_by_the_release(redis_server: RedisServer) -> None:
    ns = _ns()
    follower = RedisStore(redis_server.url, namespace=ns)
    leader = RedisStore(redis_server.url, namespace=ns)
    assert await leader.atry_lease("r", "lead", 30.0)
    waiter = asyncio.create_task(follower.await_value("r", timeout=3.0, poll_min=5.0, poll_max=5.0))
    assert follower._listener is not None
    for _ in range(500):
        if follower._listener.subscribed.is_set():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    assert await leader.arelease("r", "lead")
    assert await waiter is None  # the lease is gone: the follower may lead now
    assert time.monotonic() - t0 < 2.5
    await follower.aclose()
    await leader.aclose()


def test_without_notify_polling_still_delivers(redis_server: RedisServer) -> None:
    ns = _ns()
    with (
        RedisStore(redis_server.url, namespace=ns, notify=False) as follower,
        RedisStore(redis_server.url, namespace=ns) as leader,
    ):
        assert follower._listener is None
        assert leader.try_lease("p", "lead", 30.0)
        threading.Timer(0.1, leader.set, args=("p", b"polled")).start()
        assert follower.wait_value("p", timeout=10.0) == b"polled"


def test_close_stops_the_listener_thread(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, namespace=_ns())
    assert s.wait_value("none", timeout=0.1) is None
    assert s.try_lease("held", "x", 5.0)
    assert s.wait_value("held", timeout=0.2) is None
    assert s._listener is not None and s._listener._thread is not None
    thread = s._listener._thread
    s.close()
    s.close()
    assert not thread.is_alive()
    with pytest.raises(StoreError, match="closed"):
        s.get("k")


# -- faults -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_killed_server_store_error_breaker_opens_restart_closes(
    redis_server_each: RedisServer,
) -> None:
    srv = redis_server_each
    breaker = Breaker(failures=5, reset_after=1.0)
    with RedisStore(srv.url, namespace=_ns(), timeout=0.25, breaker=breaker) as s:
        s.set("k", b"v")
        assert s.renew("nothing", "me", 1.0) is False  # loads the Lua script
        srv.kill()
        for _ in range(5):
            t0 = time.monotonic()
            with pytest.raises(StoreError) as err:
                s.get("k")
            assert time.monotonic() - t0 < 3.0  # about the timeout, not redis-py's retries
            assert isinstance(err.value.__cause__, redis.RedisError)
        assert breaker.state == "open"
        t0 = time.monotonic()
        with pytest.raises(BreakerOpenError):
            s.get("k")  # skipped without a connection attempt
        with pytest.raises(BreakerOpenError):
            s.set("k", b"w")
        srv.start()
        time.sleep(1.1)
        assert s.get("k") is None  # the trial call: a fresh, empty server
        assert breaker.state == "closed"
        # Scripts are gone after the restart: redis-py loads them again.
        assert s.try_lease("k", "me", 5.0)
        assert s.renew("k", "me", 5.0) is True
        assert s.release("k", "me") is True


@pytest.mark.timeout(120)
def test_paused_server_times_out_as_store_error(redis_server_each: RedisServer) -> None:
    srv = redis_server_each
    with RedisStore(srv.url, namespace=_ns(), timeout=0.25, breaker=False) as s:
        s.set("k", b"v")
        srv.pause()
        try:
            for call in (lambda: s.get("k"), lambda: s.set("k", b"w"), lambda: s.get_many(["k"])):
                t0 = time.monotonic()
                with pytest.raises(StoreError) as err:
                    call()
                assert time.monotonic() - t0 < 3.0
                assert isinstance(err.value.__cause__, redis.TimeoutError)
        finally:
            srv.resume()
        assert s.get("k") == b"v"


@pytest.mark.timeout(120)
async def test_killed_server_async_store_error(redis_server_each: RedisServer) -> None:
    srv = redis_server_each
    s = RedisStore(srv.url, namespace=_ns(), timeout=0.25, breaker=Breaker(reset_after=0.5))
    await s.aset("k", b"v")
    srv.kill()
    for _ in range(5):
        with pytest.raises(StoreError):
            await s.aget("k")
    with pytest.raises(BreakerOpenError):
        await s.aget_many(["k"])
    srv.start()
    await asyncio.sleep(0.6)
    assert await s.aget("k") is None
    assert s.breaker.state == "closed"
    await s.aclose()


@pytest.mark.timeout(120)
def test_wait_value_on_a_dead_server_is_a_store_error(redis_server_each: RedisServer) -> None:
    srv = redis_server_each
    with RedisStore(srv.url, namespace=_ns(), timeout=0.25) as s:
        assert s.try_lease("w", "lead", 30.0)
        threading.Timer(0.2, srv.kill).start()
        with pytest.raises(StoreError):
            s.wait_value("w", timeout=20.0)


def test_weak_references(redis_server: RedisServer) -> None:
    import weakref

    s = RedisStore(redis_server.url, namespace=_ns())
    ref = weakref.ref(s)
    assert ref() is s
    assert weakref.ref(s.breaker)() is s.breaker
    s.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
@pytest.mark.timeout(60)
def test_forked_child_gets_its_own_listener(redis_server: RedisServer) -> None:
    ns = _ns()
    with RedisStore(redis_server.url, namespace=ns) as s:
        assert s.try_lease("held", "x", 30.0)
        assert s.wait_value("held", timeout=0.1) is None  # the parent's listener runs
        assert s._listener is not None and s._listener.subscribed.wait(10)
        pid = os.fork()
        if pid == 0:  # child: a fresh listener thread, woken by the parent's write
            code = 1
            try:
                got = s.wait_value("held", timeout=20.0, poll_min=30.0, poll_max=30.0)
                code = 0 if got == b"from-parent" else 2
            finally:
                os._exit(code)
        time.sleep(1.0)
        s.set("held", b"from-parent")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_purge_is_a_no_op_on_redis(redis_server: RedisServer) -> None:
    with RedisStore(redis_server.url, namespace=_ns()) as s:
        s.set("k", b"v")
        assert s.purge() == 0
        assert asyncio.run(s.apurge()) == 0
        assert s.get("k") == b"v"


def test_pickles_as_its_settings(redis_server: RedisServer) -> None:
    import pickle

    ns = _ns()
    with RedisStore(redis_server.url, namespace=ns, timeout=1.5) as s:
        s.set("k", b"v")
        clone: Any = pickle.loads(pickle.dumps(s))
        assert (clone.namespace, clone.get("k")) == (ns, b"v")
        clone.close()
    with (
        RedisStore(client=redis.Redis(port=redis_server.port)) as from_client,
        pytest.raises(TypeError, match="URL"),
    ):
        pickle.dumps(from_client)


def test_no_twin_for_a_custom_connection_class(redis_server: RedisServer) -> None:
    class MyConnection(redis.Connection):
        pass

    pool = redis.ConnectionPool(connection_class=MyConnection, port=redis_server.port)
    client = redis.Redis(connection_pool=pool)
    with RedisStore(client=client, namespace=_ns(), breaker=False) as s:
        s.set("k", b"sync works")
        assert s.get("k") == b"sync works"
        with pytest.raises(StoreError, match="async half is missing"):
            asyncio.run(s.aget("k"))
    client.close()
