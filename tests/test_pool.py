"""AgentPool: every point of API.md's "Pooling" section, and the seed's defects kept out."""

from __future__ import annotations

import asyncio
import datetime
import gc
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import agentperf as ap
from agentperf.agent import adapt


class Agent:
    """A counting agent with close()."""

    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(Agent.ids)
        self.closed = 0
        self.calls = 0

    def execute(self, x: Any) -> Any:
        self.calls += 1
        if isinstance(x, BaseException):
            raise x
        return (self.id, x)

    def close(self) -> None:
        self.closed += 1

    def __repr__(self) -> str:
        return f"Agent#{self.id}"


class Factory:
    def __init__(self) -> None:
        self.made: list[Agent] = []

    def __call__(self) -> Agent:
        a = Agent()
        self.made.append(a)
        return a


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def await_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """``wait_for`` for a task: yields to the loop between looks."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def invariants(pool: ap.AgentPool) -> ap.PoolStats:
    s = pool.stats()
    assert s.created - s.destroyed == s.size
    assert s.acquired - s.released == s.active_count
    assert s.active_count <= s.max_size and s.size <= s.max_size
    return s


# -- configuration ------------------------------------------------------------------------


def test_config_object_and_keyword_overrides() -> None:
    f = Factory()
    with ap.AgentPool(f, ap.PoolConfig(max_size=3, initial_size=2)) as p:
        assert p.config.max_size == 3
        assert len(f.made) == 2, "initial_size agents are created up front"
        assert p.stats().idle_count == 2
    with ap.AgentPool(Factory(), max_size=4) as p:
        assert p.config.initial_size == 4 and p.stats().size == 4
    with ap.AgentPool(Factory()) as p:
        assert (p.config.initial_size, p.config.max_size) == (5, 50)
    with ap.AgentPool(Factory(), ap.PoolConfig(max_size=9), initial_size=0) as p:
        assert p.stats().size == 0 and p.config.max_size == 9


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("max_size", 0, ValueError),
        ("max_size", -3, ValueError),
        ("max_size", 2.5, TypeError),
        ("max_size", "8", TypeError),
        ("initial_size", -1, ValueError),
        ("initial_size", 51, ValueError),
        ("initial_size", None, TypeError),
        ("idle_timeout", 0, ValueError),
        ("idle_timeout", -1.0, ValueError),
        ("idle_timeout", math.nan, ValueError),
        ("idle_timeout", "5", TypeError),
        ("max_lifetime", 0.0, ValueError),
        ("max_lifetime", -2, ValueError),
        ("acquire_timeout", -0.5, ValueError),
        ("acquire_timeout", [], TypeError),
        ("cleanup_interval", 0, ValueError),
        ("cleanup_interval", None, TypeError),
        ("check", "yes", TypeError),
        ("no_such_field", 1, TypeError),
    ],
)
def test_bad_configuration(field: str, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc) as info:
        ap.AgentPool(Factory(), **{field: value})
    assert field in str(info.value)
    if field != "no_such_field":
        assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_bad_factory_and_config_types() -> None:
    with pytest.raises(TypeError, match="factory"):
        ap.AgentPool(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        ap.AgentPool(Factory(), ap.CacheConfig())  # type: ignore[arg-type]
    with ap.AgentPool(Factory(), max_size=1) as p:
        with pytest.raises(ValueError, match="timeout=-1"):
            p.acquire(timeout=-1)
        with pytest.raises(TypeError, match="timeout='x'"):
            p.acquire(timeout="x")  # type: ignore[arg-type]


def test_timedelta_and_inf_accepted() -> None:
    with ap.AgentPool(
        Factory(),
        max_size=1,
        idle_timeout=math.inf,
        acquire_timeout=datetime.timedelta(milliseconds=20),
    ) as p:
        assert p.config.idle_timeout is None
        a = p.acquire()
        t0 = time.monotonic()
        with pytest.raises(ap.PoolTimeoutError):
            p.acquire()
        assert time.monotonic() - t0 < 2
        with pytest.raises(ap.PoolTimeoutError):
            p.acquire(timeout=datetime.timedelta(milliseconds=1))
        p.release(a)


# -- execute, acquire, release ------------------------------------------------------------


def test_execute_reuses_and_passes_exceptions_unchanged() -> None:
    f = Factory()
    with ap.AgentPool(f, max_size=2, initial_size=1) as p:
        assert p.execute("x") == (f.made[0].id, "x")
        err = KeyError("boom")
        with pytest.raises(KeyError) as info:
            p.execute(err)
        assert info.value is err
        s = invariants(p)
        assert (s.size, s.idle_count, s.active_count) == (1, 1, 0), "a raising agent goes back"
        assert s.acquired == s.released == 2
        assert len(f.made) == 1


def test_every_agent_shape_is_pooled() -> None:
    async def afn(x: int) -> int:
        return x + 1

    class Inv:
        def invoke(self, x: int) -> int:
            return x * 3

    for make, want in [(lambda: afn, 2), (Inv, 3), (lambda: lambda x: x, 1)]:
        with ap.AgentPool(make, max_size=1) as p:
            assert p.execute(1) == want
            assert asyncio.run(p.aexecute(1)) == want


def test_bounded_and_released_agent_is_reused() -> None:
    f = Factory()
    with ap.AgentPool(f, max_size=2, initial_size=0, acquire_timeout=0.05) as p:
        a, b = p.acquire(), p.acquire()
        assert a is not b and p.stats().active_count == 2
        assert p.stats().utilization_pct == 100.0
        with pytest.raises(ap.PoolTimeoutError) as info:
            p.acquire()
        assert isinstance(info.value, TimeoutError)
        p.release(a)
        assert p.acquire() is a
        p.release(a)
        p.release(b)
        s = invariants(p)
        assert (s.created, s.timeouts, s.waits) == (2, 1, 1)


def test_release_errors() -> None:
    with ap.AgentPool(Factory(), max_size=2) as p, ap.AgentPool(Factory(), max_size=1) as q:
        a = p.acquire()
        with pytest.raises(ValueError, match="not an agent leased"):
            p.release(Agent())
        with pytest.raises(ValueError):
            q.release(a)
        p.release(a)
        with pytest.raises(ValueError, match="released already"):
            p.release(a)
        invariants(p)


def test_discard_destroys_and_replaces_on_demand() -> None:
    f = Factory()
    with ap.AgentPool(f, max_size=1, initial_size=1) as p:
        a = p.acquire()
        p.release(a, discard=True)
        assert a.closed == 1
        s = p.stats()
        assert (s.size, s.destroyed, s.recycled) == (0, 1, 0)
        b = p.acquire()
        assert b is not a and len(f.made) == 2
        p.release(b)


def test_lease_context_manager_sync_and_async() -> None:
    with ap.AgentPool(Factory(), max_size=1) as p:
        with pytest.raises(RuntimeError), p.agent() as a:
            assert p.stats().active_count == 1
            raise RuntimeError
        assert p.stats().idle_count == 1, "released even when the body raised"

        async def use() -> Any:
            async with p.agent() as b:
                assert p.stats().active_count == 1
                return b

        assert asyncio.run(use()) is a
        assert p.stats().active_count == 0


def test_pool_is_an_agent() -> None:
    with ap.AgentPool(lambda: lambda x: -x, max_size=2) as inner:
        ad = adapt(inner)
        assert ad.call(3) == -3
        assert asyncio.run(ad.acall(4)) == -4
        with ap.AgentPool(lambda: inner, max_size=1) as outer:
            assert outer.execute(5) == -5
            assert asyncio.run(outer.aexecute(6)) == -6
        assert isinstance(inner, ap.Agent)


# -- waiting ------------------------------------------------------------------------------


def test_waiters_are_fifo_across_threads_and_tasks() -> None:
    with ap.AgentPool(Factory(), max_size=1, acquire_timeout=10) as p:
        held = p.acquire()
        order: list[str] = []
        lock = threading.Lock()

        def thread_waiter(name: str) -> None:
            a = p.acquire()
            with lock:
                order.append(name)
            p.release(a)

        def task_waiter(name: str) -> None:
            async def go() -> None:
                a = await p.aacquire()
                with lock:
                    order.append(name)
                p.release(a)

            asyncio.run(go())

        workers = []
        for i, kind in enumerate([thread_waiter, task_waiter, thread_waiter, task_waiter]):
            t = threading.Thread(target=kind, args=(f"w{i}",))
            t.start()
            workers.append(t)
            wait_for(lambda i=i: p.stats().waiting == i + 1)
        p.release(held)
        for t in workers:
            t.join(10)
        assert order == ["w0", "w1", "w2", "w3"]
        s = invariants(p)
        assert (s.waits, s.waiting, s.idle_count) == (4, 0, 1)


def test_release_hands_the_agent_straight_to_a_waiter() -> None:
    with ap.AgentPool(Factory(), max_size=1, acquire_timeout=10) as p:
        a = p.acquire()
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(p.acquire()))
        t.start()
        wait_for(lambda: p.stats().waiting == 1)
        p.release(a)
        assert p.stats().idle_count == 0, "went idle although someone waited"
        t.join(5)
        assert got == [a]
        p.release(a)


def test_waiting_releases_the_gil_and_the_loop() -> None:
    with ap.AgentPool(Factory(), max_size=1, acquire_timeout=0.3) as p:
        a = p.acquire()
        ticks = 0
        stop = threading.Event()

        def spin() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1

        t = threading.Thread(target=spin)
        t.start()
        with pytest.raises(ap.PoolTimeoutError):
            p.acquire()
        stop.set()
        t.join()
        assert ticks > 1000, "the waiting thread held the GIL"

        async def main() -> int:
            beats = 0

            async def beat() -> None:
                nonlocal beats
                while True:
                    beats += 1
                    await asyncio.sleep(0.01)

            b = asyncio.create_task(beat())
            with pytest.raises(ap.PoolTimeoutError):
                await p.aacquire(timeout=0.2)
            b.cancel()
            return beats

        assert asyncio.run(main()) >= 5, "the waiting task blocked the loop"
        p.release(a)
        s = invariants(p)
        assert (s.timeouts, s.waiting) == (2, 0)


def test_avg_wait_counts_only_acquires_that_waited() -> None:
    with ap.AgentPool(Factory(), max_size=1, acquire_timeout=5) as p:
        for _ in range(50):
            p.execute(1)
        a = p.acquire()
        threading.Timer(0.2, p.release, (a,)).start()
        b = p.acquire()
        with pytest.raises(ap.PoolTimeoutError):
            p.acquire(timeout=0.1)
        p.release(b)
        s = p.stats()
        assert s.waits == 2 and s.timeouts == 1 and s.acquired == 52
        # mean of ~200 ms and ~100 ms; dividing by all 53 acquires would give ~6 ms
        assert 120 <= s.avg_wait_ms <= 1000, s.avg_wait_ms


# -- the seed's defects -------------------------------------------------------------------


def test_timed_out_acquire_leaks_no_agent() -> None:
    with ap.AgentPool(Factory(), max_size=2, initial_size=0) as p:
        for i in range(200):
            a, b = p.acquire(), p.acquire()
            # Release at about the moment the waiter times out.
            t = threading.Timer(0.001 * (i % 4), p.release, (a,))
            t.start()
            try:
                c = p.acquire(timeout=0.002)
            except ap.PoolTimeoutError:
                t.join()
            else:
                t.join()
                assert c is a
                p.release(c)
            p.release(b)
            s = invariants(p)
            assert s.idle_count == s.size == 2, f"agent lost at iteration {i}: {s}"
            assert s.waiting == 0


def test_a_waiter_giving_up_does_not_lose_the_wakeup() -> None:
    with ap.AgentPool(Factory(), max_size=1, acquire_timeout=10) as p:
        a = p.acquire()
        got: list[Any] = []
        gave_up: list[bool] = []

        def give_up() -> None:
            with pytest.raises(ap.PoolTimeoutError):
                p.acquire(timeout=0.05)
            gave_up.append(True)

        impatient = threading.Thread(target=give_up)
        impatient.start()
        wait_for(lambda: p.stats().waiting == 1)
        patient = threading.Thread(target=lambda: got.append(p.acquire()))
        patient.start()
        impatient.join()
        assert gave_up == [True]
        p.release(a)
        patient.join(5)
        assert got == [a], "the remaining waiter was never woken"
        p.release(a)


async def test_cancelled_after_handoff_gives_the_agent_on() -> None:
    p = ap.AgentPool(Factory(), max_size=1, acquire_timeout=10)
    a = p.acquire()
    first = asyncio.create_task(p.aacquire())
    await await_for(lambda: p.stats().waiting == 1)
    second = asyncio.create_task(p.aacquire())
    await await_for(lambda: p.stats().waiting == 2)
    p.release(a)  # granted to `first`, which has not run yet ...
    first.cancel()  # ... and is cancelled before it does
    got = await asyncio.wait_for(second, 5)
    assert got is a
    with pytest.raises(asyncio.CancelledError):
        await first
    p.release(got)
    s = invariants(p)
    assert (s.waiting, s.idle_count, s.active_count) == (0, 1, 0)
    async with p:
        pass


async def test_cancelled_waiter_leaks_nothing() -> None:
    async with ap.AgentPool(Factory(), max_size=1) as p:
        a = await p.aacquire()
        tasks = [asyncio.create_task(p.aacquire()) for _ in range(5)]
        await await_for(lambda: p.stats().waiting == 5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert p.stats().waiting == 0
        p.release(a)
        s = invariants(p)
        assert (s.idle_count, s.active_count) == (1, 0)
        assert await p.aacquire(timeout=0.5) is a
        p.release(a)


def test_factory_never_runs_under_a_pool_lock() -> None:
    p: ap.AgentPool | None = None
    leased: list[Any] = []
    done: list[bool] = []

    def factory() -> Agent:
        if p is not None:

            def other() -> None:
                assert p is not None
                p.stats()
                p.release(leased.pop())
                done.append(True)

            t = threading.Thread(target=other)
            t.start()
            t.join(5)
            assert not t.is_alive(), "deadlock: the factory ran under a pool lock"
            p.stats()
        return Agent()

    p = ap.AgentPool(factory, max_size=3, initial_size=1)
    leased.append(p.acquire())
    b = p.acquire()  # creates: the factory releases the first agent from another thread
    assert done == [True]
    p.release(b)
    invariants(p)
    p.close()


def test_expired_agents_are_never_handed_out() -> None:
    f = Factory()
    # The cleanup thread never runs in this test (interval far away); ages are read from a
    # manual clock.
    with ap.AgentPool(
        f, max_size=2, initial_size=1, max_lifetime=0.1, cleanup_interval=3600, _manual_clock=True
    ) as p:
        old = f.made[0]
        p._advance(0.15)
        a = p.acquire()
        assert a is not old and old.closed == 1, "an agent past max_lifetime was handed out"
        p._advance(0.15)
        p.release(a)  # too old at release: destroyed
        assert a.closed == 1 and p.stats().idle_count == 0
        # Handed from a release straight to a waiter: age checked there too.
        b = p.acquire()
        c = p.acquire()
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(p.acquire(timeout=5)))
        t.start()
        wait_for(lambda: p.stats().waiting == 1)
        p._advance(0.15)
        p.release(b)
        t.join(5)
        assert got and got[0] is not b and b.closed == 1
        p.release(got[0])
        p.release(c)
        s = invariants(p)
        assert s.recycled >= 3


# -- check hook ---------------------------------------------------------------------------


def test_check_runs_on_reused_agents_only() -> None:
    seen: list[Agent] = []
    verdict = {"ok": True}

    def check(a: Agent) -> bool:
        seen.append(a)
        return verdict["ok"]

    f = Factory()
    with ap.AgentPool(f, max_size=2, initial_size=0, check=check) as p:
        a = p.acquire()
        assert seen == [], "check ran on a fresh agent"
        p.release(a)
        assert p.acquire() is a and seen == [a]
        p.release(a)
        verdict["ok"] = False
        b = p.acquire()
        assert b is not a and a.closed == 1, "a failing agent was handed out"
        p.release(b)
        s = invariants(p)
        assert s.size == 1


def test_check_raising_destroys_and_goes_on() -> None:
    f = Factory()

    def check(a: Agent) -> bool:
        raise RuntimeError("broken")

    with ap.AgentPool(f, max_size=1, initial_size=1, check=check) as p:
        a = p.acquire()
        assert a is not f.made[0] and f.made[0].closed == 1
        p.release(a)


def test_check_runs_on_handoff_to_a_waiter() -> None:
    seen: list[Any] = []
    with ap.AgentPool(
        Factory(), max_size=1, initial_size=0, check=lambda a: seen.append(a) or False
    ) as p:
        a = p.acquire()
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(p.acquire(timeout=5)))
        t.start()
        wait_for(lambda: p.stats().waiting == 1)
        p.release(a)
        t.join(5)
        assert seen == [a] and got[0] is not a and a.closed == 1
        p.release(got[0])


# -- creation -----------------------------------------------------------------------------


def test_factory_failure_frees_the_slot() -> None:
    calls = {"n": 0}

    def factory() -> Agent:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("no")
        return Agent()

    with ap.AgentPool(factory, max_size=2, initial_size=1) as p:
        a = p.acquire()
        with pytest.raises(OSError):
            p.acquire()
        b = p.acquire()
        assert b is not a
        p.release(a)
        p.release(b)
        assert invariants(p).size == 2


def test_factory_failure_wakes_a_waiter_to_create() -> None:
    gate = threading.Event()
    inside = threading.Event()
    fail = {"on": True}

    def factory() -> Agent:
        if fail["on"]:
            inside.set()
            gate.wait(5)
            raise OSError("fail once")
        return Agent()

    p = ap.AgentPool(factory, max_size=1, initial_size=0, acquire_timeout=5)
    errs: list[BaseException] = []

    def first() -> None:
        try:
            p.acquire()
        except OSError as e:
            errs.append(e)

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(5)
    got: list[Any] = []
    t2 = threading.Thread(target=lambda: got.append(p.acquire()))
    t2.start()
    wait_for(lambda: p.stats().waiting == 1)
    fail["on"] = False
    gate.set()
    t1.join(5)
    t2.join(5)
    assert len(errs) == 1 and len(got) == 1
    p.release(got[0])
    p.close()


async def test_async_factory_creates_on_async_with_or_first_aacquire() -> None:
    made: list[Agent] = []

    async def factory() -> Agent:
        await asyncio.sleep(0)
        a = Agent()
        made.append(a)
        return a

    p = ap.AgentPool(factory, max_size=3, initial_size=2)
    assert made == [] and p.stats().size == 0
    async with p:
        assert len(made) == 2
        assert (await p.aexecute("q"))[1] == "q"
    q = ap.AgentPool(factory, max_size=3, initial_size=2)
    a = await q.aacquire()
    assert len(made) == 4 and q.stats().size == 2
    q.release(a)
    q.close()
    assert all(m.closed == 1 for m in made)


def test_async_factory_from_sync_code() -> None:
    async def factory() -> Agent:
        return Agent()

    with ap.AgentPool(factory, max_size=1, initial_size=0) as p:
        assert p.execute(1)[1] == 1


# -- destroy, close -----------------------------------------------------------------------


def test_close_wakes_waiters_and_destroys_late_releases() -> None:
    f = Factory()
    p = ap.AgentPool(f, max_size=2, initial_size=2, acquire_timeout=10)
    a, b = p.acquire(), p.acquire()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            p.acquire()
        except BaseException as e:
            errors.append(e)

    async def awaiter() -> None:
        try:
            await p.aacquire()
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=waiter), threading.Thread(target=asyncio.run, args=(awaiter(),))]
    for t in ts:
        t.start()
    wait_for(lambda: p.stats().waiting == 2)
    p.close()
    for t in ts:
        t.join(5)
    assert len(errors) == 2 and all(isinstance(e, ap.PoolClosedError) for e in errors)
    assert p.closed
    with pytest.raises(ap.PoolClosedError):
        p.acquire()
    with pytest.raises(ap.PoolClosedError):
        p.execute(1)
    with pytest.raises(ap.PoolClosedError):
        asyncio.run(p.aexecute(1))
    p.release(a)
    p.release(b)
    assert a.closed == b.closed == 1
    p.close()
    s = invariants(p)
    assert (s.size, s.waiting) == (0, 0)


def test_aclose_called_on_destroy_with_and_without_a_loop() -> None:
    closed: list[str] = []

    class AsyncAgent:
        async def aexecute(self, x: Any) -> Any:
            return x

        async def aclose(self) -> None:
            await asyncio.sleep(0)
            closed.append("a")

    p = ap.AgentPool(AsyncAgent, max_size=2, initial_size=2)
    a = p.acquire()
    p.release(a, discard=True)  # no running loop: asyncio.run
    assert closed == ["a"]

    async def main() -> None:
        async with ap.AgentPool(AsyncAgent, max_size=1) as q:
            b = await q.aacquire()
            q.release(b, discard=True)  # as a task of the running loop
        assert closed == ["a", "a"]  # `async with` waited for the aclose task

    asyncio.run(main())
    p.close()  # the idle one, with no loop: asyncio.run
    assert closed == ["a", "a", "a"]


def test_cleanup_thread_recycles_idle_agents_above_initial_size() -> None:
    f = Factory()
    with ap.AgentPool(
        f, max_size=4, initial_size=1, idle_timeout=0.05, cleanup_interval=0.02, _manual_clock=True
    ) as p:
        leased = [p.acquire() for _ in range(4)]
        for a in leased:
            p.release(a)
        p._advance(0.06)  # every agent idle past idle_timeout
        wait_for(lambda: p.stats().size == 1)  # the cleanup thread's rounds
        p._advance(0.06)
        for _ in range(3):  # more rounds: the last one is kept all the same
            p._reap()
        s = invariants(p)
        assert (s.size, s.idle_count, s.recycled) == (1, 1, 3), "shrunk below initial_size"
        assert sum(a.closed for a in f.made) == 3


def test_cleanup_thread_retires_agents_past_max_lifetime() -> None:
    f = Factory()
    with ap.AgentPool(f, max_size=2, initial_size=2, max_lifetime=0.05, cleanup_interval=0.02) as p:
        # The count drops when the round takes the agents out; close() follows outside the lock.
        wait_for(lambda: p.stats().size == 0 and all(a.closed == 1 for a in f.made))
        assert p.stats().recycled == 2


class SlowCloseFactory(Factory):
    """Agents whose close() sleeps 10 ms (releasing the GIL in the middle of a cleanup round);
    records which threads closed them and when the first close began."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = threading.Event()
        self.closers: set[int] = set()

    def __call__(self) -> Agent:
        factory = self

        class SlowClose(Agent):
            def close(self) -> None:
                factory.closers.add(threading.get_ident())
                factory.closing.set()
                time.sleep(0.01)
                super().close()

        a = SlowClose()
        self.made.append(a)
        return a

    def pool(self) -> ap.AgentPool:
        """8 agents that the cleanup thread retires for idleness 50 ms after their release."""
        return ap.AgentPool(
            self, max_size=8, initial_size=0, idle_timeout=0.05, cleanup_interval=0.01
        )


def test_close_waits_for_a_cleanup_round_that_took_idle_agents() -> None:
    """close() returns only once every agent is closed, those that a cleanup round running
    at that moment had already taken out of the idle set included."""
    f = SlowCloseFactory()
    p = f.pool()
    leased = [p.acquire() for _ in range(8)]
    for a in leased:
        p.release(a)
    assert f.closing.wait(5), "the cleanup round never started"
    p.close()
    assert [a.closed for a in f.made] == [1] * 8
    assert f.closers and threading.get_ident() not in f.closers, "closed by the cleanup thread"
    s = invariants(p)
    assert s.size == 0 and s.destroyed == 8


async def test_async_with_exit_waits_for_a_cleanup_round_without_blocking_the_loop() -> None:
    f = SlowCloseFactory()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    pool = f.pool()
    async with pool:
        leased = [await pool.aacquire() for _ in range(8)]
        for a in leased:
            pool.release(a)
        assert await asyncio.to_thread(f.closing.wait, 5), "the cleanup round never started"
        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
    during = ticks - before
    t.cancel()
    assert [a.closed for a in f.made] == [1] * 8
    assert during > 0, "the event loop was blocked while the cleanup round finished"


def test_cleanup_thread_runs_aclose_on_the_pools_loop() -> None:
    where: list[int] = []

    class AsyncAgent:
        async def aexecute(self, x: Any) -> Any:
            return x

        async def aclose(self) -> None:
            where.append(threading.get_ident())

    async def main() -> None:
        async with ap.AgentPool(
            AsyncAgent, max_size=1, max_lifetime=0.05, cleanup_interval=0.02
        ) as p:
            for _ in range(300):
                if where:
                    break
                await asyncio.sleep(0.01)
            assert p.stats().recycled == 1

    asyncio.run(main())
    assert where == [threading.get_ident()]


def test_pool_is_collected_and_unregisters() -> None:
    gc.collect()
    before = ap._agentperf._cleanup_thread_state()[1]
    p = ap.AgentPool(Factory(), max_size=1, cleanup_interval=0.01, idle_timeout=1)
    p.execute(1)
    assert ap._agentperf._cleanup_thread_state()[1] == before + 1
    ref = weakref.ref(p)
    del p
    gc.collect()
    assert ref() is None, "the pool is kept alive"
    assert ap._agentperf._cleanup_thread_state()[1] == before

    # A factory that refers back to its pool makes a cycle the collector must see through.
    class SelfRef(Factory):
        pool: ap.AgentPool | None = None

    f = SelfRef()
    q = ap.AgentPool(f, max_size=1, initial_size=0)
    f.pool = q
    ref = weakref.ref(q)
    del q, f
    gc.collect()
    assert ref() is None, "a pool in a reference cycle is never collected"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(30)
def test_pool_works_in_a_forked_child() -> None:
    p = ap.AgentPool(Factory(), max_size=2, initial_size=1, acquire_timeout=5)
    held = p.acquire()
    waiter = threading.Thread(target=lambda: p.release(p.acquire()))
    second = p.acquire()
    waiter.start()
    wait_for(lambda: p.stats().waiting == 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            s = p.stats()
            assert (s.active_count, s.waiting) == (0, 0), s
            a = p.acquire(timeout=1)
            b = p.acquire(timeout=1)
            p.release(a)
            p.release(b)
            assert p.execute(7)[1] == 7
            try:
                p.release(held)
            except ValueError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    p.release(held)
    p.release(second)
    waiter.join(5)
    assert os.waitstatus_to_exitcode(status) == 0
    invariants(p)
    p.close()


def test_a_factory_returning_one_object_many_times() -> None:
    shared = Agent()
    with ap.AgentPool(lambda: shared, max_size=3, initial_size=0) as p:
        leased = [p.acquire() for _ in range(3)]
        assert all(a is shared for a in leased) and p._leased() == 3
        for a in leased:
            p.release(a)
        with pytest.raises(ValueError):
            p.release(shared)
        s = invariants(p)
        assert (s.size, s.idle_count, s.active_count) == (3, 3, 0)


async def test_blocking_wait_inside_a_running_loop_is_refused() -> None:
    async with ap.AgentPool(Factory(), max_size=1) as p:
        a = p.acquire()  # an idle agent: no wait, allowed
        with pytest.raises(RuntimeError, match="aacquire"):
            p.acquire(timeout=1)
        with pytest.raises(RuntimeError, match="event loop"):
            p.execute(1)
        p.release(a)
        assert p.execute(2)[1] == 2
        s = invariants(p)
        assert (s.waiting, s.waits) == (0, 0)
