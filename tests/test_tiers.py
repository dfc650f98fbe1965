"""The second tier of CachedAgent against real stores: a redis-server started by the fixture
and SQLite files in tmp dirs. Tiers, counters, cache_control, invalidation, untrusted
entries, a failing store, bulk lookups of batches and bad configuration."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import agentperf as ap
from agentperf.tiers import pack, unpack
from redis_server import RedisServer, redis_server_fixture  # noqa: F401 - fixture

SECRET = b"tiers-test-secret-0123456789"


class Agent:
    """Counts its calls (thread-safe); returns a JSON value."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[Any] = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, x: Any) -> Any:
        with self.lock:
            self.calls.append(x)
        if self.delay:
            time.sleep(self.delay)
        return {"answer": x}


@pytest.fixture(params=["redis", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[..., Any]]:
    """A factory of stores of one namespace on one backend (each call: another handle)."""
    ns = "t" + uuid.uuid4().hex[:10]
    made: list[Any] = []
    if request.param == "redis":
        srv = request.getfixturevalue("redis_server")

        def make(**kw: Any) -> Any:
            made.append(ap.RedisStore(srv.url, namespace=kw.pop("namespace", ns), timeout=2.0))
            return made[-1]
    else:
        path = tmp_path / "cache.db"

        def make(**kw: Any) -> Any:
            made.append(ap.SqliteStore(path, namespace=kw.pop("namespace", ns)))
            return made[-1]

    yield make
    for s in made:
        s.close()


def cached(agent: Any, store: Any, **kw: Any) -> Any:
    kw.setdefault("ttl", 60.0)
    return ap.CachedAgent(agent, store=store, **kw)


# -- tiers ----------------------------------------------------------------------------------


def test_l2_hit_fills_l1_and_counts(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    with cached(agent, make_store()) as a:
        assert a.execute(1) == {"answer": 1}
        assert a.execute(1) == {"answer": 1}  # L1
        s = a.stats()
        assert (s.hits, s.misses, s.store_hits, s.store_misses, s.store_errors) == (1, 1, 0, 1, 0)
    with cached(agent, make_store()) as b:  # another process, as far as L1 goes
        assert b.execute(1) == {"answer": 1}
        assert b.execute(1) == {"answer": 1}
        s = b.stats()
        assert (s.hits, s.misses, s.store_hits, s.store_misses) == (2, 0, 1, 0)
        assert len(b) == 1
    assert agent.calls == [1]


async def test_async_tiers(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    with cached(agent, make_store()) as a, cached(agent, make_store()) as b:
        assert await a.aexecute("q") == {"answer": "q"}
        assert await b.aexecute("q") == {"answer": "q"}
        assert await b.aexecute("q") == {"answer": "q"}
        assert agent.calls == ["q"]
        assert b.stats().store_hits == 1 and b.stats().hits == 2


def test_l1_filled_for_the_remaining_ttl(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    with cached(agent, make_store(), ttl=3.0) as a:
        t0 = time.monotonic()
        a.execute("k")
    time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
    with cached(agent, make_store(), ttl=3.0) as b:
        b.execute("k")  # an L2 hit with ~1.5 s left: L1 keeps it that long, not 3 s
        assert agent.calls == ["k"]
        # Past the entry's expiry (3 s) and before a full-TTL L1 copy's (4.5 s).
        time.sleep(max(0.0, t0 + 3.6 - time.monotonic()))
        b.execute("k")
        assert agent.calls == ["k", "k"]


def test_ttl_none_never_expires(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    store = make_store()
    with cached(agent, store, ttl=None) as a:
        a.execute(1)
    digest = ap.hash_key(1)
    assert store.ttl_left(digest) == math.inf
    raw = store.get(digest)
    assert raw is not None and unpack(raw, time.time()) is not None
    assert unpack(raw, time.time())[1] == math.inf  # type: ignore[index]


def test_key_generator_is_used_for_the_store(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    keyfn = lambda x: x["id"]  # noqa: E731
    with cached(agent, make_store(), key_generator=keyfn) as a:
        a.execute({"id": "same", "noise": 1})
    with cached(agent, make_store(), key_generator=keyfn) as b:
        assert b.execute({"id": "same", "noise": 2}) == {"answer": {"id": "same", "noise": 1}}
    assert len(agent.calls) == 1


def test_agent_error_is_not_stored(make_store: Callable[..., Any]) -> None:
    n = [0]

    def flaky(x: int) -> int:
        n[0] += 1
        if n[0] == 1:
            raise KeyError("first")
        return x

    store = make_store()
    with cached(flaky, store) as a:
        with pytest.raises(KeyError):
            a.execute(5)
        assert store.get(ap.hash_key(5)) is None
        assert store.lease_owner(ap.hash_key(5)) is None  # released on the error
        assert a.execute(5) == 5


def test_threads_in_one_process_run_the_agent_once(make_store: Callable[..., Any]) -> None:
    agent = Agent(delay=0.2)
    with cached(agent, make_store()) as a:
        out: list[Any] = []
        threads = [threading.Thread(target=lambda: out.append(a.execute("x"))) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert out == [{"answer": "x"}] * 20
        assert agent.calls == ["x"]
        assert a.stats().store_misses == 1


def test_slow_leader_renews_its_lease(make_store: Callable[..., Any]) -> None:
    # The agent runs for 2.5 leases: the renewals keep the lease, so a caller of another
    # "process" waits for the value instead of running the agent a second time.
    agent = Agent(delay=3.0)
    with cached(agent, make_store(), lease=1.2) as a, cached(agent, make_store(), lease=1.2) as b:
        t = threading.Thread(target=a.execute, args=("slow",))
        t.start()
        deadline = time.monotonic() + 10.0
        while not agent.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.execute("slow") == {"answer": "slow"}
        t.join(20)
        assert agent.calls == ["slow"]
        assert b.stats().store_hits == 1


async def test_async_slow_leader_renews_its_lease(make_store: Callable[..., Any]) -> None:
    calls: list[Any] = []

    async def slow(x: Any) -> Any:
        calls.append(x)
        await asyncio.sleep(3.0)
        return x

    with cached(slow, make_store(), lease=1.2) as a, cached(slow, make_store(), lease=1.2) as b:
        first = asyncio.create_task(a.aexecute("s"))
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.01)
        assert await b.aexecute("s") == "s"
        assert await first == "s"
        assert calls == ["s"]


# -- cache_control ------------------------------------------------------------------------


def test_refresh_skips_both_lookups_and_stores(make_store: Callable[..., Any]) -> None:
    n = [0]

    def counter(x: Any) -> int:
        n[0] += 1
        return n[0]

    store = make_store()
    with cached(counter, store) as a, cached(counter, make_store()) as b:
        assert a.execute("k") == 1
        with ap.cache_control(refresh=True):
            assert a.execute("k") == 2
        assert a.execute("k") == 2  # the fresh value replaced L1
        assert b.execute("k") == 2  # and L2


def test_no_store_writes_neither_tier(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    store = make_store()
    with cached(agent, store) as a:
        with ap.cache_control(no_store=True):
            assert a.execute("n") == {"answer": "n"}
        assert len(a) == 0 and store.get(ap.hash_key("n")) is None
        a.execute("m")  # stored normally
    with cached(agent, make_store()) as b:
        with ap.cache_control(no_store=True):
            assert b.execute("m") == {"answer": "m"}  # an L2 hit, not kept in L1
        assert len(b) == 0
        assert b.stats().store_hits == 1
    assert agent.calls == ["n", "m"]


async def test_cache_control_reaches_batches_and_tasks(make_store: Callable[..., Any]) -> None:
    n = [0]

    def counter(x: Any) -> int:
        n[0] += 1
        return n[0]

    with cached(counter, make_store()) as a, ap.BatchExecutor(a, max_concurrency=4) as ex:
        first = (await ex.aexecute(["a", "b"])).outputs
        with ap.cache_control(refresh=True):
            again = (await ex.aexecute(["a", "b"])).outputs
        assert sorted(first) == [1, 2] and sorted(again) == [3, 4]
        assert (await ex.aexecute(["a", "b"])).outputs == again


def test_cache_control_without_a_store() -> None:
    n = [0]

    def counter(x: Any) -> int:
        n[0] += 1
        return n[0]

    with ap.CachedAgent(counter, ttl=60.0) as a:
        assert a.execute(1) == 1
        with ap.cache_control(refresh=True):
            assert a.execute(1) == 2
        assert a.execute(1) == 2
        with ap.cache_control(no_store=True):
            assert a.execute(9) == 3
            assert a.execute(1) == 2  # reads as usual
        assert len(a) == 1 and a.execute(9) == 4
        with ap.cache_control(no_store=True), ap.cache_control(refresh=True):
            assert a.execute(1) == 5  # the inner block's switches alone
        s = a.stats()
        assert (s.store_hits, s.store_misses, s.store_errors) == (0, 0, 0)


def test_cache_control_bad_input_and_nesting() -> None:
    with pytest.raises(TypeError, match="refresh"):
        ap.cache_control(refresh=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no_store"):
        ap.cache_control(no_store="yes")  # type: ignore[arg-type]
    from agentperf._control import current

    ctl = ap.cache_control(refresh=True)
    with ctl:
        with ctl:  # re-entrant
            assert current() == (True, False)
        assert current() == (True, False)
    assert current() == (False, False)
    assert ap._agentperf._cache_controls(0) == 0


# -- invalidation ---------------------------------------------------------------------------


def test_invalidate_reaches_the_store(make_store: Callable[..., Any]) -> None:
    agent = Agent()
    store, other = make_store(), make_store(namespace="o" + uuid.uuid4().hex[:8])
    other.set("keep", b"x")
    with cached(agent, store) as a:
        a.execute(1)
        a.execute(2)
        assert a.invalidate(1) is True
        assert store.get(ap.hash_key(1)) is None and store.get(ap.hash_key(2)) is not None
        assert a.invalidate(1) is False
        a.invalidate_all()
        assert len(a) == 0 and store.get(ap.hash_key(2)) is None
        assert other.get("keep") == b"x"  # another namespace
        a.execute(1)
    assert agent.calls == [1, 2, 1]


# -- untrusted entries ----------------------------------------------------------------------


class _Evil:
    def __reduce__(self) -> Any:
        return (os.system, ("touch /tmp/agentperf-tiers-pwned",))


def test_tampered_pickle_entry_is_a_miss_never_unpickled(
    make_store: Callable[..., Any],
) -> None:
    marker = "/tmp/agentperf-tiers-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    agent = Agent()
    store = make_store()
    codec = ap.PickleCodec(secret=SECRET)
    with cached(agent, store, codec=codec) as a:
        a.execute("t")
    digest = ap.hash_key("t")
    raw = store.get(digest)
    assert raw is not None
    # Keep the header and the signature; swap the pickle for one that runs code.
    head = raw[: 11 + 3 + 32]
    store.set(digest, head + pickle.dumps(_Evil()), 60.0)
    with cached(agent, make_store(), codec=codec) as b:
        assert b.execute("t") == {"answer": "t"}
        s = b.stats()
        assert (s.store_hits, s.store_misses, s.store_errors) == (0, 1, 1)
    assert not os.path.exists(marker)
    assert len(agent.calls) == 2
    # The leader wrote a good entry over it.
    with cached(agent, make_store(), codec=codec) as c:
        c.execute("t")
        assert c.stats().store_hits == 1


def test_store_full_of_garbage(make_store: Callable[..., Any]) -> None:
    store = make_store()
    inputs = list(range(40))
    garbage = [
        b"",
        b"\x00" * 5,
        os.urandom(64),
        b"AT\x01" + struct.pack(">d", float("nan")) + b"AJ\x01{}",  # NaN expiry
        b"AT\x01" + struct.pack(">d", time.time() - 10) + b"AJ\x01{}",  # expired by clock
        pack(b"AJ\x01{not json", 60.0),
        pack(os.urandom(32), 60.0),
        pack(b"AP\x01" + os.urandom(40), 60.0),
    ]
    for i in inputs:
        store.set(ap.hash_key(i), garbage[i % len(garbage)], 60.0)
    agent = Agent()
    for codec in (None, ap.PickleCodec(secret=SECRET)):
        with cached(agent, make_store(), codec=codec) as a:
            with ap.cache_control(no_store=True):
                assert [a.execute(i) for i in inputs] == [{"answer": i} for i in inputs]
            s = a.stats()
            assert s.store_hits == 0 and s.store_misses == len(inputs)
            # Every unreadable entry counted once (the expired-by-clock one is a plain miss).
            assert s.store_errors == len(inputs) - len(inputs) // len(garbage)


def test_output_the_codec_cannot_encode(make_store: Callable[..., Any]) -> None:
    store = make_store()
    with cached(lambda x: {x, 1}, store) as a:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert a.execute(2) == {1, 2}
            assert a.execute(3) == {1, 3}
        assert len([x for x in w if "cannot encode" in str(x.message)]) == 1  # once
        assert store.get(ap.hash_key(2)) is None
        assert store.lease_owner(ap.hash_key(2)) is None
        assert a.stats().store_errors == 2
        assert a.execute(2) == {1, 2}  # in L1 still


# -- a store that fails ---------------------------------------------------------------------


def test_dead_store_never_fails_a_call(tmp_path: Any) -> None:
    srv = RedisServer().start()
    store = ap.RedisStore(srv.url, namespace="dead", timeout=0.2)
    srv.stop()
    agent = Agent()
    with cached(agent, store) as a:
        t0 = time.monotonic()
        assert [a.execute(i) for i in range(50)] == [{"answer": i} for i in range(50)]
        assert time.monotonic() - t0 < 20.0
        s = a.stats()
        assert s.store_errors == 50 and s.store_misses == 50 and s.store_hits == 0
        assert store.breaker.times_opened >= 1
        assert a.execute(3) == {"answer": 3} and len(agent.calls) == 50  # L1 still works
    store.close()


# -- batches --------------------------------------------------------------------------------


def test_batch_reads_the_store_in_bulk(redis_server: RedisServer) -> None:
    ns = "b" + uuid.uuid4().hex[:8]
    agent = Agent()
    n = 10_000
    with ap.RedisStore(redis_server.url, namespace=ns, timeout=2.0) as store:
        with cached(agent, store, max_size=n) as warm:
            r = ap.BatchExecutor(warm, max_concurrency=32).execute(range(n))
            assert r.stats.failure_count == 0
        raw = redis.Redis.from_url(redis_server.url)
        raw.config_resetstat()
        with cached(agent, store, max_size=n) as cold:
            out = ap.BatchExecutor(cold, max_concurrency=32).execute(iter(range(n)))
            assert out.outputs == [{"answer": i} for i in range(n)]
            s = cold.stats()
            assert s.store_hits == n and s.hits == n and s.misses == 0
        stats = raw.info("commandstats")
        raw.close()
        assert "cmdstat_get" not in stats
        mgets = stats["cmdstat_mget"]["calls"]
        assert 0 < mgets <= n // 200  # ~n/500 windows, each one MGET
    assert len(agent.calls) == n


async def test_async_batch_reads_sqlite_in_bulk(tmp_path: Any) -> None:
    agent = Agent()

    async def items() -> Any:
        for i in range(1200):
            yield i

    with ap.SqliteStore(tmp_path / "b.db") as store:
        with cached(agent, store) as warm:
            await ap.BatchExecutor(warm, max_concurrency=8).aexecute(range(1200))
        with cached(agent, store, max_size=2000) as cold:
            r = await ap.BatchExecutor(cold, max_concurrency=8).aexecute(items())
            assert r.outputs == [{"answer": i} for i in range(1200)]
            assert cold.stats().store_hits == 1200
    assert len(agent.calls) == 1200


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("lease", [0, -1.0, float("nan"), float("inf")])
def test_lease_must_be_positive_and_finite(lease: float, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="lease"):
        ap.CacheConfig(lease=lease)
    with ap.SqliteStore(tmp_path / "c.db") as store:
        with pytest.raises(ValueError, match="lease"):
            ap.CachedAgent(Agent(), store=store, lease=lease)


def test_bad_tier_config(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="lease"):
        ap.CacheConfig(lease="30")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        ap.CacheConfig(store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="codec"):
        ap.CacheConfig(codec=object())  # type: ignore[arg-type]
    for url in ["", "not a url", "http://host", "redis://:99999999/0"]:
        with pytest.raises(ValueError, match="url"):
            ap.RedisStore(url)
    for ns in ["a:b", "a b", "", "x" * 200]:
        with pytest.raises(ValueError, match="namespace"):
            ap.SqliteStore(tmp_path / "n.db", namespace=ns)
    with pytest.raises(TypeError, match="secret"):
        ap.PickleCodec(secret="a str secret of enough length")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret"):
        ap.PickleCodec(secret=b"short")
    with pytest.raises(TypeError, match="output_type"):
        ap.JsonCodec(output_type=object())
    from datetime import timedelta

    assert ap.CacheConfig(lease=timedelta(seconds=2)).lease == 2.0


def test_store_less_agent_is_the_plain_class(tmp_path: Any) -> None:
    plain = ap.CachedAgent(Agent())
    assert type(plain) is ap.CachedAgent and not hasattr(plain, "_tier")
    with ap.SqliteStore(tmp_path / "c.db") as store:
        tiered = ap.CachedAgent(Agent(), store=store)
        assert isinstance(tiered, ap.CachedAgent) and tiered.store is store
        assert "store=" in repr(tiered)

        class Mine(ap.CachedAgent[Any, Any]):
            pass

        mine = Mine(Agent(), store=store)
        assert isinstance(mine, Mine) and mine.store is store
        tiered.close()
        mine.close()
    plain.close()


# -- cancellation and fork ------------------------------------------------------------------


async def test_cancelled_async_leader_releases_its_lease(make_store: Callable[..., Any]) -> None:
    from agentperf._renewal import RENEWER

    started = asyncio.Event()

    async def hang(x: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    store = make_store()
    with cached(hang, store, lease=30.0) as a:
        task = asyncio.create_task(a.aexecute("c"))
        await asyncio.wait_for(started.wait(), 10)
        digest = ap.hash_key("c")
        assert await store.alease_owner(digest) is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.alease_owner(digest) is None  # not left to run out (30 s)
        assert a._in_flight() == 0 and RENEWER.active() == 0
    with cached(Agent(), make_store()) as b:
        assert await asyncio.wait_for(b.aexecute("c"), 10) == {"answer": "c"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
def test_renewals_work_in_a_forked_child(tmp_path: Any) -> None:
    from agentperf._renewal import RENEWER

    store = ap.SqliteStore(tmp_path / "f.db")
    agent = Agent(delay=0.5)
    with cached(agent, store, lease=0.3) as a:
        t = threading.Thread(target=a.execute, args=("parent",))
        t.start()  # the parent renews while the fork happens
        deadline = time.monotonic() + 10
        while RENEWER.active() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no parent lease is renewed here; its own are
            ok = RENEWER.active() == 0
            child = ap.CachedAgent(Agent(delay=1.0), ttl=60.0, store=store, lease=0.3)
            th = threading.Thread(target=child.execute, args=("child",))
            th.start()
            time.sleep(0.7)  # past two lease lengths: only the child's renewals hold it
            ok = ok and store.lease_owner(ap.hash_key("child")) is not None
            th.join(10)
            ok = ok and child.stats().store_misses == 1
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            got = f.read()
        os.waitpid(pid, 0)
        t.join(20)
    assert got == b"1"
    assert store.lease_owner(ap.hash_key("child")) is None
    store.close()


@pytest.mark.filterwarnings("ignore:CachedAgent.*cannot encode:RuntimeWarning")
def test_batch_read_ahead_leaves_bad_inputs_to_their_own_calls(tmp_path: Any) -> None:
    agent = Agent()

    def keyfn(x: Any) -> str:
        if x == "bad key":
            raise LookupError("no key for it")
        return str(x)

    with ap.SqliteStore(tmp_path / "k.db") as store:
        with cached(agent, store, key_generator=keyfn) as warm:
            warm.execute(1)
        with cached(agent, store, key_generator=keyfn) as a:
            inputs = [1, "bad key", 2, object()]
            r = ap.BatchExecutor(a, max_concurrency=2).execute(inputs)
            assert r.outputs[0] == {"answer": 1} and r.outputs[2] == {"answer": 2}
            assert [e.index for e in r.errors] == [1]  # str(object()) is a key: it runs
            assert isinstance(r.errors[0].error, LookupError)
            assert a.stats().store_hits == 1
        with cached(agent, store) as b:  # no key_generator: hash_key refuses an object()
            r = ap.BatchExecutor(b, max_concurrency=2).execute([1, object(), 3])
            assert [e.index for e in r.errors] == [1]
            assert isinstance(r.errors[0].error, TypeError)
            assert r.outputs[2] == {"answer": 3}
