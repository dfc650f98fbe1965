"""Async waiters and the garbage collector (aio::Notifier, issue 11 point 3).

A parked task is reachable from its owner (semaphore, pool, cached agent, rate limiter), as
with ``asyncio.Semaphore``: it lives, and is served, as long as the owner does. A task abandoned
together with its owner (task -> coroutine -> waiter -> future -> task, with the owner in the
loop) is a cycle the collector sees and frees. No Python object is released under an owner's
Rust lock: a future whose finaliser re-enters the owner during a grant finishes (each case in a
subprocess, bounded by a timeout, since such a re-entry would deadlock the whole interpreter).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextlib import contextmanager
from typing import Any

import pytest

import agentperf as ap


@contextmanager
def fresh_loop() -> Generator[asyncio.AbstractEventLoop, None, None]:
    loop = asyncio.new_event_loop()
    # A collected pending task reports "Task was destroyed but it is pending!": expected here.
    loop.set_exception_handler(lambda _loop, _ctx: None)
    try:
        yield loop
    finally:
        loop.close()


async def until(pred: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not pred():
        assert loop.time() < end, "state not reached"
        await asyncio.sleep(0.001)


def collected(refs: list[weakref.ref[Any]]) -> bool:
    for _ in range(3):
        gc.collect()
        if all(r() is None for r in refs):
            return True
    return False


Scenario = Callable[[], Coroutine[Any, Any, list[weakref.ref[Any]]]]


def abandon(scenario: Scenario) -> list[weakref.ref[Any]]:
    """Run `scenario` (which parks tasks and returns weak references) and leave its tasks
    pending on an open loop, unreferenced."""
    with fresh_loop() as loop:
        refs = loop.run_until_complete(scenario())
        # The parked tasks are not scheduled: only their own cycle refers to them.
        assert all(r() is not None for r in refs)
        assert collected(refs), [r() for r in refs]
        return refs


def parked(task: asyncio.Task[Any]) -> list[weakref.ref[Any]]:
    fut = task._fut_waiter  # type: ignore[attr-defined]
    assert fut is not None, "the task is not parked on a future"
    return [weakref.ref(task), weakref.ref(fut)]


class Agent:
    def __call__(self, x: Any) -> Any:
        return x


def test_a_semaphore_waiter_abandoned_with_its_semaphore_is_collected() -> None:
    async def scenario() -> list[weakref.ref[Any]]:
        sem = ap.Semaphore(1)
        assert sem.acquire()
        task = asyncio.ensure_future(sem.aacquire())
        await until(lambda: sem.waiting == 1)
        return [*parked(task), weakref.ref(sem)]

    abandon(scenario)


def test_a_pool_waiter_abandoned_with_its_pool_is_collected() -> None:
    async def scenario() -> list[weakref.ref[Any]]:
        pool = ap.AgentPool(Agent, max_size=1, acquire_timeout=None)
        held = await pool.aacquire()
        task = asyncio.ensure_future(pool.aacquire())
        await until(lambda: pool.stats().waiting == 1)
        del held
        return [*parked(task), weakref.ref(pool)]

    abandon(scenario)


def test_a_flight_follower_and_leader_abandoned_with_their_cache_are_collected() -> None:
    async def scenario() -> list[weakref.ref[Any]]:
        never = asyncio.Event()

        async def agent(x: Any) -> Any:
            await never.wait()
            return x

        cache = ap.CachedAgent(agent, max_size=10)
        leader = asyncio.ensure_future(cache.aexecute("k"))
        await until(lambda: cache._in_flight() == 1)
        follower = asyncio.ensure_future(cache.aexecute("k"))
        await until(lambda: cache._waiters() == 1)
        return [*parked(follower), weakref.ref(leader), weakref.ref(cache)]

    abandon(scenario)


def test_an_abandoned_task_parked_on_a_live_owner_lives_and_is_served() -> None:
    """The owner keeps a parked task alive (as asyncio's primitives do)."""
    done: list[str] = []

    async def waiter(name: str, acquire: Callable[[], Awaitable[Any]]) -> None:
        await acquire()
        done.append(name)

    async def scenario() -> None:
        sem = ap.Semaphore(1)
        assert sem.acquire()
        pool = ap.AgentPool(Agent, max_size=1, acquire_timeout=None)
        held = pool.acquire()
        never = asyncio.Event()
        gate = asyncio.Event()

        async def agent(x: Any) -> Any:
            await gate.wait()
            return x

        cache = ap.CachedAgent(agent, max_size=10)
        lead = asyncio.ensure_future(cache.aexecute("k"))
        await until(lambda: cache._in_flight() == 1)
        refs = [
            weakref.ref(asyncio.ensure_future(waiter("sem", sem.aacquire))),
            weakref.ref(asyncio.ensure_future(waiter("pool", pool.aacquire))),
            weakref.ref(asyncio.ensure_future(waiter("flight", lambda: cache.aexecute("k")))),
        ]
        await until(lambda: sem.waiting == 1 and pool.stats().waiting == 1)
        await until(lambda: cache._waiters() == 1)
        gc.collect()
        assert all(r() is not None for r in refs), "a task parked on a live owner was collected"
        sem.release()
        pool.release(held)
        gate.set()
        await lead
        await until(lambda: len(done) == 3)
        assert sorted(done) == ["flight", "pool", "sem"]
        assert not never.is_set()
        pool.close()

    with fresh_loop() as loop:
        loop.run_until_complete(scenario())


def test_cancelled_waiters_leak_nothing_and_hold_no_future() -> None:
    owners: list[Any] = []

    async def park_and_cancel() -> list[weakref.ref[Any]]:
        sem = ap.Semaphore(1)
        assert sem.acquire()
        pool = ap.AgentPool(Agent, max_size=1, acquire_timeout=None)
        held = pool.acquire()
        gate = asyncio.Event()

        async def agent(x: Any) -> Any:
            await gate.wait()
            return x

        cache = ap.CachedAgent(agent, max_size=10)
        lead = asyncio.ensure_future(cache.aexecute("k"))
        await until(lambda: cache._in_flight() == 1)
        tasks = [
            asyncio.ensure_future(sem.aacquire()),
            asyncio.ensure_future(pool.aacquire()),
            asyncio.ensure_future(cache.aexecute("k")),
        ]
        await until(lambda: sem.waiting == 1 and pool.stats().waiting == 1)
        await until(lambda: cache._waiters() == 1)
        futs = [weakref.ref(t._fut_waiter) for t in tasks]  # type: ignore[attr-defined]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        owners.extend([sem, pool, held, cache, lead, gate])
        return futs

    async def check() -> None:
        sem, pool, held, cache, lead, gate = owners
        assert (sem.waiting, pool.stats().waiting, cache._waiters()) == (0, 0, 0)
        sem.release()
        assert sem.available == 1, "a cancelled semaphore waiter leaked a permit"
        pool.release(held)
        assert pool.stats().idle_count == 1, "a cancelled pool waiter leaked the agent"
        gate.set()
        assert await lead == "k"
        assert cache._in_flight() == 0
        pool.close()

    with fresh_loop() as loop:
        futs = loop.run_until_complete(park_and_cancel())
        # The owners are alive; the cancelled waiters' futures are gone all the same.
        assert collected(futs), [f() for f in futs]
        loop.run_until_complete(check())


# The rate limiter: its waiter re-arms a fresh future each time it is woken, and the loop's
# timer (the head's grant instant, or a look now and then) refers to the current one too, so a
# task parked on it is also kept by an open loop (as one in `asyncio.sleep` is): the cases
# below that abandon the task close its loop first (which drops the timers).


def abandon_closed(scenario: Scenario) -> list[weakref.ref[Any]]:
    """`abandon`, but the loop is closed (its timers dropped) before collecting."""
    with fresh_loop() as loop:
        refs = loop.run_until_complete(scenario())
    assert all(r() is not None for r in refs)
    assert collected(refs), [r() for r in refs]
    return refs


def test_a_limiter_waiter_abandoned_with_its_limiter_is_collected() -> None:
    async def scenario() -> list[weakref.ref[Any]]:
        lim = ap.RateLimiter(1, per=3600.0, burst=1)
        assert lim.try_acquire()
        head = asyncio.ensure_future(lim.aacquire())
        behind = asyncio.ensure_future(lim.aacquire(2.0))
        await until(lambda: lim.waiting == 2)
        return [*parked(head), *parked(behind), weakref.ref(lim)]

    abandon_closed(scenario)


def test_an_abandoned_task_parked_on_a_live_limiter_lives_and_is_served() -> None:
    done: list[str] = []

    async def waiter(name: str, lim: ap.RateLimiter) -> None:
        assert await lim.aacquire()
        done.append(name)

    async def scenario() -> None:
        # The next unit is due 0.2 s after the first, the one after 0.2 s later.
        lim = ap.RateLimiter(1, per=0.2, burst=1)
        assert lim.try_acquire()
        refs = {name: weakref.ref(asyncio.ensure_future(waiter(name, lim))) for name in ("a", "b")}
        await until(lambda: lim.waiting == 2)
        gc.collect()
        # Served already (a very slow machine) or still alive: never collected while parked.
        assert all(r() is not None or n in done for n, r in refs.items()), done
        await until(lambda: len(done) == 2)
        assert done == ["a", "b"]
        assert lim.stats().acquired == 3 and lim.waiting == 0

    with fresh_loop() as loop:
        loop.run_until_complete(scenario())


def test_cancelled_limiter_waiters_book_nothing_and_hold_no_future() -> None:
    owners: list[ap.RateLimiter] = []

    async def park_and_cancel() -> list[weakref.ref[Any]]:
        lim = ap.RateLimiter(1, per=3600.0, burst=1)
        assert lim.try_acquire()
        tasks = [asyncio.ensure_future(lim.aacquire()) for _ in range(3)]
        await until(lambda: lim.waiting == 3)
        futs = [weakref.ref(t._fut_waiter) for t in tasks]  # type: ignore[attr-defined]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        owners.append(lim)
        return futs

    with fresh_loop() as loop:
        futs = loop.run_until_complete(park_and_cancel())
        # The limiter and the loop are alive; the cancelled waiters' futures are gone.
        assert collected(futs), [f() for f in futs]
        (lim,) = owners
        st = lim.stats()
        assert (lim.waiting, st.acquired, st.granted, st.waited) == (0, 1, 1.0, 0), st


# A finaliser that re-enters the owner while the owner grants: each case parks a waiter whose
# future runs `hook` when it is freed, cancels it (its handle withdraws), and then makes the
# owner grant past the withdrawn entry. Were the future freed under the owner's lock, `hook`
# (which takes that lock) would deadlock the interpreter.
REENTRY = textwrap.dedent(
    """
    import asyncio, gc, sys
    import agentperf as ap

    hits = []

    class DelFuture(asyncio.Future):
        hook = None
        busy = False
        def __del__(self):
            # Not re-entered by the futures the hook itself creates and frees.
            if DelFuture.hook is not None and not DelFuture.busy:
                DelFuture.busy = True
                try:
                    hits.append(DelFuture.hook())
                finally:
                    DelFuture.busy = False

    class Loop(asyncio.SelectorEventLoop):
        def create_future(self):
            return DelFuture(loop=self)

    class Agent:
        def __call__(self, x):
            return x

    async def until(pred):
        for _ in range(5000):
            if pred():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("state not reached")

    async def semaphore():
        sem = ap.Semaphore(1)
        assert sem.acquire()
        t = asyncio.ensure_future(sem.aacquire())
        await until(lambda: sem.waiting == 1)
        DelFuture.hook = lambda: sem.try_acquire() and sem.release()
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        del t
        gc.collect()
        sem.release()
        assert sem.available == 1

    async def pool():
        p = ap.AgentPool(Agent, max_size=1)
        a = p.acquire()
        t = asyncio.ensure_future(p.aacquire())
        await until(lambda: p.stats().waiting == 1)
        def hook():
            # Takes the pool's waiter-queue lock (every agent is busy: parks, then withdraws).
            try:
                return type(p._atry()).__name__
            except RuntimeError:  # no running loop
                return None
        DelFuture.hook = hook
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        del t
        gc.collect()
        # A grant skips the withdrawn entry on its way to the next waiter.
        t2 = asyncio.ensure_future(p.aacquire())
        await until(lambda: p.stats().waiting == 1)
        p.release(a)
        assert await t2 is a
        p.release(a)
        assert p.stats().idle_count == 1
        p.close()

    async def flight():
        gate = asyncio.Event()
        async def agent(x):
            await gate.wait()
            return x
        c = ap.CachedAgent(agent, max_size=10)
        lead = asyncio.ensure_future(c.aexecute("k"))
        await until(lambda: c._in_flight() == 1)
        t = asyncio.ensure_future(c.aexecute("k"))
        await until(lambda: c._waiters() == 1)
        DelFuture.hook = lambda: c.invalidate("other")
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        del t
        gc.collect()
        gate.set()
        assert await lead == "k"

    async def limiter():
        lim = ap.RateLimiter(1, per=3600.0, burst=1)
        assert lim.try_acquire()
        t = asyncio.ensure_future(lim.aacquire())
        await until(lambda: lim.waiting == 1)
        DelFuture.hook = lambda: lim.try_acquire()
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        del t
        gc.collect()
        # A queue walk past the withdrawn entry (a poll of a new waiter, then its cancel).
        t2 = asyncio.ensure_future(lim.aacquire())
        await until(lambda: lim.waiting == 1)
        t2.cancel()
        await asyncio.gather(t2, return_exceptions=True)
        assert lim.waiting == 0 and lim.stats().acquired == 1

    loop = Loop()
    loop.run_until_complete({case}())
    DelFuture.hook = None
    loop.close()
    assert hits, "the finaliser never ran"
    print("ok", len(hits))
    """
)


@pytest.mark.parametrize("case", ["semaphore", "pool", "flight", "limiter"])
def test_a_future_finaliser_re_entering_its_owner_does_not_deadlock(case: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", REENTRY.replace("{case}", case)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok"), r.stdout
