"""The cluster-wide RateLimiter (``store=ap.RedisStore(...)``) against a real redis-server:
one budget across threads, event loops and spawned processes, pauses that reach every
process, the local fallback while Redis is down, bookings given back by cancelled waiters.

Only bounds a slow machine cannot break are asserted: grants never exceed what the rate
allows (delays only make fewer), and waits that states can be polled for are polled for.
"""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing
import os
import pickle
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import agentperf as ap
from agentperf.store.limiter import ClusterRateLimiter
from limiter_children import grab, paused_here
from redis_server import (  # noqa: F401 - fixtures
    RedisServer,
    redis_server_each_fixture,
    redis_server_fixture,
)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[ap.RedisStore]:
    s = ap.RedisStore(redis_server.url, namespace="l" + uuid.uuid4().hex[:10], timeout=2.0)
    yield s
    s.close()


def _name() -> str:
    return "lim-" + uuid.uuid4().hex[:8]


def _peak(times: list[float], window: float = 1.0) -> int:
    """The most grants in any window of ``window`` seconds (starting at a grant)."""
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + window) - i for i, t in enumerate(ts)), default=0)


def _server_tat_ahead(store: ap.RedisStore, lim: ClusterRateLimiter) -> float:
    """Seconds the limiter's tat is ahead of the server's clock (0 when rested)."""
    client: Any = store._sync
    raw = client.get(lim.keys[0])  # the server's clock, in seconds
    sec, usec = client.time()
    return 0.0 if raw is None else max(0.0, float(raw) - (sec + usec / 1e6))


def test_made_by_rate_limiter_with_a_store(store: ap.RedisStore) -> None:
    name = _name()
    lim = ap.RateLimiter(100, per=2.0, burst=7, store=store, name=name)
    assert isinstance(lim, ClusterRateLimiter) and isinstance(lim, ap.RateLimiter)
    assert (lim.rate, lim.per, lim.burst, lim.name) == (100.0, 2.0, 7.0, name)
    assert lim.lease == 1.0  # 1 % of 100
    assert ap.RateLimiter(10_000, store=store, name=_name()).lease == 100.0
    assert ap.RateLimiter(10_000, burst=20, store=store, name=_name()).lease == 20.0
    assert lim.try_acquire()
    client: Any = store._sync
    keys = sorted(k.decode() for k in client.keys(store.prefix + "limiter:*"))
    assert keys == [f"{store.prefix}limiter:{name}:{k}" for k in ("members", "tat")]
    assert name in repr(lim)
    lim.close()
    lim.close()


def test_bad_input(store: ap.RedisStore) -> None:
    with pytest.raises(ValueError, match="name"):
        ap.RateLimiter(10, store=store)
    for bad in ["", "a b", "x" * 129, "é"]:
        with pytest.raises(ValueError, match="name"):
            ap.RateLimiter(10, store=store, name=bad)
    with pytest.raises(TypeError, match="name"):
        ap.RateLimiter(10, store=store, name=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        ap.RateLimiter(10, store="redis://x", name="n")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        ap.RateLimiter(0, store=store, name="n")
    with pytest.raises(ValueError, match="burst"):
        ap.RateLimiter(10, burst=0.5, store=store, name="n")
    lim = ap.RateLimiter(10, store=store, name=_name())
    for bad_cost in [0, -1, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="cost"):
            lim.try_acquire(bad_cost)
        with pytest.raises(ValueError, match="cost"):
            lim.acquire(bad_cost)
    with pytest.raises(TypeError, match="cost"):
        lim.try_acquire("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        lim.acquire(1, timeout=-1)
    with pytest.raises(ValueError, match="seconds"):
        lim.pause(-1)
    with pytest.raises(TypeError, match="seconds"):
        lim.pause("1")  # type: ignore[arg-type]


def test_grants_match_the_rate_over_a_window(store: ap.RedisStore) -> None:
    rate, burst = 400.0, 10.0
    lim = ap.RateLimiter(rate, burst=burst, store=store, name=_name())
    times: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5 and len(times) < 10_000:
        if lim.acquire(timeout=1.0):
            times.append(time.monotonic())
    elapsed = times[-1] - t0
    # Never above the rate (+ burst + 1 % in leases); and the waits are real bookings.
    assert len(times) <= rate * 1.01 * elapsed + burst + 1
    assert _peak(times) <= rate * 1.01 + burst + 1
    assert len(times) >= 0.5 * rate * elapsed  # not starved (a generous floor)
    st = lim.stats()
    assert st.granted == st.acquired == len(times)
    assert st.waited > 0 and st.wait_s > 0
    assert st.round_trips < 3 * len(times)
    assert st.store_errors == 0 and st.fallback_granted == 0


def test_leases_save_round_trips_when_the_budget_is_free(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(100_000, store=store, name=_name())
    n = sum(lim.try_acquire() for _ in range(2_000))
    assert n == 2_000
    # One round trip reserves up to 1,000 units (1 % of the rate) for 10 ms.
    assert lim.stats().round_trips < n / 2


def test_threads_and_event_loops_share_the_budget(store: ap.RedisStore) -> None:
    rate = 200.0
    lim = ap.RateLimiter(rate, burst=5, store=store, name=_name())
    got: list[float] = []
    lock = threading.Lock()

    def thread_side() -> None:
        for _ in range(40):
            assert lim.acquire(timeout=30)
            with lock:
                got.append(time.monotonic())

    async def loop_side() -> None:
        async def one() -> None:
            assert await lim.aacquire(timeout=30)
            with lock:
                got.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(80)))

    t0 = time.monotonic()
    threads = [threading.Thread(target=thread_side) for _ in range(2)]
    threads.append(threading.Thread(target=asyncio.run, args=(loop_side(),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 160
    elapsed = max(got) - t0
    assert len(got) <= rate * 1.01 * elapsed + 5 + 1
    assert lim.waiting == 0
    assert lim.stats().acquired == 160


@pytest.mark.timeout(180)
def test_4_processes_never_exceed_the_rate_in_any_window(redis_server: RedisServer) -> None:
    rate, burst, procs, seconds = 500.0, 5.0, 4, 2.5
    ns, name = "p" + uuid.uuid4().hex[:8], _name()
    barrier = SPAWN.Manager().Barrier(procs)
    with SPAWN.Pool(procs) as pool:
        runs = pool.starmap(
            grab,
            [(redis_server.url, ns, name, rate, burst, seconds, barrier) for _ in range(procs)],
            chunksize=1,
        )
    times = [t for r in runs for t in r]
    assert _peak(times) <= 1.02 * rate + burst
    # Bookings are served in order across processes: nobody is starved.
    assert all(len(r) >= 0.1 * len(times) for r in runs), [len(r) for r in runs]


@pytest.mark.timeout(120)
def test_pause_reaches_every_process(store: ap.RedisStore, redis_server: RedisServer) -> None:
    name = _name()
    lim = ap.RateLimiter(1000, store=store, name=name)
    m = SPAWN.Manager()
    started, paused = m.Event(), m.Event()
    with SPAWN.Pool(1) as pool:
        res = pool.apply_async(
            paused_here, (redis_server.url, store.namespace, name, started, paused)
        )
        assert started.wait(timeout=60)
        lim.pause(1.0)
        assert not lim.try_acquire()
        assert lim.paused_for > 0.5
        paused.set()
        out = res.get(timeout=60)
    assert out["refused"], out
    assert out["granted_after"], out
    assert out["paused_for"] > 0, out
    assert out["waited"] > 0.1, out


def test_pause_wakes_a_booked_waiter_to_book_again(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(10, burst=1, store=store, name=_name())
    assert lim.try_acquire()
    result: list[float] = []

    def waiter() -> None:
        t0 = time.monotonic()
        assert lim.acquire(timeout=10)
        result.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 10
    while lim.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    lim.pause(0.6)
    t.join(timeout=20)
    # Booked for ~0.1 s, then paused for 0.6 s: it waited for the pause.
    assert result and result[0] >= 0.5


async def test_a_cancelled_waiter_leaks_no_reservation(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(10, burst=5, store=store, name=_name())
    assert lim.try_acquire(5)
    ahead = _server_tat_ahead(store, lim)
    assert 0.3 < ahead <= 0.5
    task = asyncio.ensure_future(lim.aacquire(5))
    while _server_tat_ahead(store, lim) <= ahead:  # noqa: ASYNC110 - the state is in Redis
        await asyncio.sleep(0.001)
    booked = _server_tat_ahead(store, lim)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.waiting == 0
    assert lim.stats().acquired == 1
    # The booked units are not lost (given back to Redis, or kept for this process): the
    # next waiter gets that slot, not one after it (which would move the tat 0.5 s on).
    assert await lim.aacquire(5, timeout=5)
    assert _server_tat_ahead(store, lim) <= booked
    assert lim.stats().acquired == 2


async def test_a_wait_beyond_the_timeout_books_nothing(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(10, burst=5, store=store, name=_name())
    assert lim.try_acquire(5)
    ahead = _server_tat_ahead(store, lim)
    assert not await lim.aacquire(5, timeout=0.1)
    assert not await asyncio.to_thread(lim.acquire, 5, 0.1)
    assert not await asyncio.to_thread(lim.acquire, 5, 0)
    assert _server_tat_ahead(store, lim) <= ahead
    assert lim.stats().acquired == 1


def test_pickles_into_the_same_budget(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(10, burst=3, store=store, name=_name())
    twin = pickle.loads(pickle.dumps(lim))
    assert isinstance(twin, ClusterRateLimiter)
    assert (twin.rate, twin.burst, twin.name, twin.store.namespace) == (
        10.0,
        3.0,
        lim.name,
        store.namespace,
    )
    assert twin.try_acquire(3)
    assert not lim.try_acquire(1)  # the twin took the budget
    twin.store.close()


def test_redis_killed_falls_back_to_a_local_limiter_and_recovers(
    redis_server_each: RedisServer,
) -> None:
    srv = redis_server_each
    store = ap.RedisStore(
        srv.url, namespace="f", timeout=0.2, breaker=ap.store.Breaker(failures=1, reset_after=0.2)
    )
    lim = ap.RateLimiter(1000, burst=10, store=store, name=_name())
    assert lim.try_acquire()
    srv.kill()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lim.acquire(timeout=5)  # never fails a call
        for _ in range(20):
            assert lim.acquire(timeout=5)
        st = lim.stats()
        # What the lease held went first; the rest came from the fallback.
        assert st.store_errors >= 1 and st.fallback_granted >= 21 - st.lease
        assert st.acquired == 22
        # The local fallback still limits: the rate of this process alone (1 member).
        t0 = time.monotonic()
        n = sum(lim.try_acquire() for _ in range(1000))
        assert n <= 10 + 1000 * (time.monotonic() - t0) + 1
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    srv.start()  # empty: the tat key comes back only with a reservation that reached it
    client: Any = store._sync
    deadline = time.monotonic() + 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while not client.exists(lim.keys[0]) and time.monotonic() < deadline:
            lim.try_acquire()
            time.sleep(0.01)
    assert client.exists(lim.keys[0])  # back on the shared budget
    errors = lim.stats().store_errors
    assert all(lim.acquire(timeout=5) for _ in range(20))
    assert lim.stats().store_errors == errors
    store.close()


async def test_async_fallback_when_redis_is_down(redis_server_each: RedisServer) -> None:
    srv = redis_server_each
    store = ap.RedisStore(srv.url, namespace="fa", timeout=0.2)
    lim = ap.RateLimiter(100, burst=2, store=store, name=_name())
    srv.kill()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(await asyncio.gather(*(lim.aacquire(timeout=10) for _ in range(5))))
    assert lim.stats().store_errors >= 1
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_after_fork_a_child_works_with_its_own_leases(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(100_000, store=store, name=_name())
    assert lim.try_acquire()
    trips = lim.stats().round_trips
    assert lim.try_acquire() and lim.stats().round_trips == trips  # served by the lease
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            # The parent's lease stays the parent's: the child's first grant is a round trip.
            st = lim.stats()
            ok = lim.try_acquire() and lim.acquire()
            after = lim.stats()
            code = 0 if ok and after.round_trips > st.round_trips else 2
            code = code if after.acquired == st.acquired + 2 else 3
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    assert os.read(r, 1) == b"\x00"
    os.waitpid(pid, 0)
    assert lim.try_acquire()


def test_running_loop_refuses_a_blocking_wait(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(10, burst=1, store=store, name=_name())

    async def main() -> None:
        assert lim.acquire()
        with pytest.raises(RuntimeError, match="aacquire"):
            lim.acquire()

    asyncio.run(main())


def test_rate_limited_agent_and_429_pause(store: ap.RedisStore) -> None:
    lim = ap.RateLimiter(1000, store=store, name=_name())
    agent = ap.RateLimitedAgent(str.upper, lim)
    assert agent.execute("a") == "A"
    assert lim.stats().acquired == 1
    with ap.RateLimiter(5, store=store, name=_name()) as other:
        assert other.try_acquire()
    assert other.stats().acquired == 1
