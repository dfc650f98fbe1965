"""ap.Semaphore: permits in Rust, FIFO among threads and tasks on any loop, nothing leaks."""

from __future__ import annotations

import asyncio
import datetime
import gc
import random
import threading
import time
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentperf as ap


async def waiters(sem: ap.Semaphore, n: int, seconds: float = 10.0) -> None:
    """Until ``n`` callers are queued on ``sem`` (threads and tasks alike); fails after
    ``seconds``."""
    end = time.monotonic() + seconds
    while sem.waiting < n:  # the state is in Rust: no event to wait on
        assert time.monotonic() < end, f"{sem.waiting} waiters after {seconds} s, not {n}"
        await asyncio.sleep(0.001)


def test_basic_counting_and_properties() -> None:
    sem = ap.Semaphore(3)
    assert sem.permits == 3 and sem.available == 3 and sem.waiting == 0
    assert sem.try_acquire() and sem.acquire() and sem.acquire(timeout=0)
    assert sem.available == 0
    assert not sem.try_acquire()
    assert not sem.acquire(timeout=0)
    for _ in range(3):
        sem.release()
    assert sem.available == 3
    assert "permits=3" in repr(sem)


def test_release_more_than_acquired_is_a_value_error() -> None:
    sem = ap.Semaphore(2)
    with pytest.raises(ValueError, match="released more often than acquired"):
        sem.release()
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    assert sem.available == 2, "a bad release does not change the limit"


@pytest.mark.parametrize("bad", [0, -1])
def test_permits_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="permits"):
        ap.Semaphore(bad)


@pytest.mark.parametrize("bad", [1.0, "2", None, True])
def test_permits_wrong_type(bad: object) -> None:
    with pytest.raises(TypeError, match="permits"):
        ap.Semaphore(bad)  # type: ignore[arg-type]


def test_permits_too_large() -> None:
    with pytest.raises(ValueError, match="permits"):
        ap.Semaphore(2**70)


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_bad_timeouts(bad: float) -> None:
    sem = ap.Semaphore(1)
    sem.acquire()
    with pytest.raises(ValueError, match="timeout"):
        sem.acquire(timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        sem.acquire(timeout="1")  # type: ignore[arg-type]


async def test_bad_async_timeouts() -> None:
    sem = ap.Semaphore(1)
    with pytest.raises(ValueError, match="timeout"):
        await sem.aacquire(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        await sem.aacquire(timeout="1")  # type: ignore[arg-type]
    assert sem.available == 1


def test_blocking_timeout_and_timedelta() -> None:
    sem = ap.Semaphore(1)
    sem.acquire()
    t0 = time.perf_counter()
    assert not sem.acquire(timeout=datetime.timedelta(milliseconds=50))
    assert time.perf_counter() - t0 >= 0.045
    assert sem.waiting == 0, "a timed-out waiter leaves the queue"
    sem.release()
    assert sem.available == 1


def test_with_statement_releases_on_error() -> None:
    sem = ap.Semaphore(1)
    with pytest.raises(KeyError), sem as s:
        assert s is sem and sem.available == 0
        raise KeyError("x")
    assert sem.available == 1


async def test_async_with_and_aacquire() -> None:
    sem = ap.Semaphore(1)
    async with sem as s:
        assert s is sem and sem.available == 0
        assert not await sem.aacquire(timeout=0.02)
    assert sem.available == 1
    assert await sem.aacquire(timeout=0)
    sem.release()


def test_aacquire_outside_a_loop_is_an_error_only_when_it_must_wait() -> None:
    sem = ap.Semaphore(1)
    assert asyncio.run(sem.aacquire())
    with pytest.raises(RuntimeError):
        sem._wait_async()  # no running loop: cannot park a future
    sem.release()
    assert sem.available == 1


@pytest.mark.timeout(20)
def test_threads_are_served_fifo_and_blocking_waits_release_the_gil() -> None:
    sem = ap.Semaphore(1)
    sem.acquire()
    order: list[int] = []
    threads = []
    for k in range(5):
        th = threading.Thread(target=lambda k=k: (sem.acquire(), order.append(k), sem.release()))
        th.start()
        threads.append(th)
        while sem.waiting < k + 1:  # this loop runs only because waiters dropped the GIL
            time.sleep(0.001)
    assert not sem.try_acquire(), "try_acquire never barges past queued waiters"
    sem.release()
    for th in threads:
        th.join()
    assert order == [0, 1, 2, 3, 4]
    assert sem.available == 1


@pytest.mark.timeout(20)
async def test_tasks_and_threads_share_one_fifo_queue() -> None:
    sem = ap.Semaphore(1)
    await sem.aacquire()
    order: list[str] = []

    async def task(name: str) -> None:
        await sem.aacquire()
        order.append(name)
        sem.release()

    t1 = asyncio.create_task(task("task1"))
    await waiters(sem, 1)
    th = threading.Thread(target=lambda: (sem.acquire(), order.append("thread"), sem.release()))
    th.start()
    await waiters(sem, 2)
    t2 = asyncio.create_task(task("task2"))
    await waiters(sem, 3)
    sem.release()
    await t1
    await asyncio.to_thread(th.join)
    await t2
    assert order == ["task1", "thread", "task2"]
    assert sem.available == 1


async def test_cancelled_waiter_takes_nothing_and_the_next_is_served() -> None:
    sem = ap.Semaphore(1)
    await sem.aacquire()
    a = asyncio.create_task(sem.aacquire())
    b = asyncio.create_task(sem.aacquire())
    await waiters(sem, 2)
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    sem.release()
    assert await b
    assert sem.available == 0
    sem.release()
    assert sem.available == 1


async def test_permit_granted_to_a_waiter_cancelled_in_that_instant_is_handed_on() -> None:
    sem = ap.Semaphore(1)
    await sem.aacquire()
    a = asyncio.create_task(sem.aacquire())
    b = asyncio.create_task(sem.aacquire())
    await waiters(sem, 2)
    sem.release()  # granted to a; a has not run yet
    a.cancel()  # ... and is cancelled before it could
    with pytest.raises(asyncio.CancelledError):
        await a
    assert await b, "the permit a gave back went to b"
    sem.release()
    assert sem.available == 1


@pytest.mark.timeout(60)
@settings(max_examples=30)
@given(
    permits=st.integers(1, 4),
    plan=st.lists(st.tuples(st.floats(0, 0.003), st.booleans()), min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_random_cancellation_leaks_no_permit(
    permits: int, plan: list[tuple[float, bool]], seed: int
) -> None:
    rnd = random.Random(seed)

    async def main() -> None:
        sem = ap.Semaphore(permits)
        inside = 0
        peak = 0

        async def worker(hold: float) -> None:
            nonlocal inside, peak
            async with sem:
                inside += 1
                peak = max(peak, inside)
                try:
                    await asyncio.sleep(hold)
                finally:
                    inside -= 1

        tasks = [asyncio.create_task(worker(hold)) for hold, _ in plan]
        for (_, cancel), t in zip(plan, tasks, strict=True):
            if cancel:
                await asyncio.sleep(rnd.random() * 0.002)
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= permits
        assert sem.available == sem.permits
        assert sem.waiting == 0

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_shared_by_threads_and_two_event_loops_at_once() -> None:
    limit = 3
    sem = ap.Semaphore(limit)
    lock = threading.Lock()
    inside = 0
    peak = 0
    errors: list[BaseException] = []

    def enter() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)

    def leave() -> None:
        nonlocal inside
        with lock:
            inside -= 1

    def thread_worker() -> None:
        try:
            for k in range(100):
                if sem.acquire(timeout=None if k % 4 else 0.0005):
                    enter()
                    time.sleep(0.0002)
                    leave()
                    sem.release()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    async def loop_main() -> None:
        async def one(k: int) -> None:
            if k % 5 == 0:
                got = await sem.aacquire(timeout=0.0005)
                if not got:
                    return
            else:
                await sem.aacquire()
            enter()
            try:
                await asyncio.sleep(0.0002)
            finally:
                leave()
                sem.release()

        tasks = [asyncio.create_task(one(k)) for k in range(200)]
        for t in tasks[::7]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def loop_thread() -> None:
        try:
            asyncio.run(loop_main())
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    ths = [threading.Thread(target=thread_worker) for _ in range(3)]
    ths += [threading.Thread(target=loop_thread) for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    assert 1 <= peak <= limit
    assert sem.available == limit
    assert sem.waiting == 0


@pytest.mark.timeout(30)
def test_dropped_waiter_gives_its_permit_back() -> None:
    """A task destroyed with its loop while queued (no cancellation ever delivered)."""
    sem = ap.Semaphore(1)
    sem.acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(sem.aacquire())
    loop.run_until_complete(waiters(sem, 1))
    assert sem.waiting == 1
    sem.release()  # granted to the parked task, whose loop never runs again
    loop.close()
    del task
    gc.collect()
    assert sem.available == 1


@pytest.mark.timeout(20)
async def test_sync_acquire_on_a_running_loop_refuses_to_wait() -> None:
    """Regression: ``with sem:`` / ``sem.acquire()`` in a coroutine while a task held the
    permit blocked the loop for good (the holder could never run to release it)."""
    sem = ap.Semaphore(1)
    with sem:  # a free permit is still taken at once
        assert sem.available == 0
    assert sem.acquire() is True
    sem.release()

    entered, leave = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with sem:
            entered.set()
            await leave.wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    with pytest.raises(RuntimeError, match=r"async with sem.*await sem\.aacquire\(\)"):
        sem.acquire()
    with pytest.raises(RuntimeError, match="running event loop"):
        sem.acquire(timeout=5)
    with pytest.raises(RuntimeError, match="running event loop"):
        with sem:
            pass  # pragma: no cover - never entered
    assert sem.acquire(timeout=0) is False, "timeout=0 never waits, so it is not refused"
    assert not sem.try_acquire()
    assert sem.waiting == 0, "a refused acquire leaves nothing queued"
    leave.set()
    await task
    assert sem.available == 1
    # A thread of its own (no running loop there) still waits as before.
    got = await asyncio.to_thread(sem.acquire, 1.0)
    assert got and sem.available == 0
    sem.release()


def test_semaphore_and_pool_support_weak_references() -> None:
    """Regression: ``weakref.ref(ap.Semaphore(1))`` raised TypeError."""
    sem = ap.Semaphore(1)
    ref = weakref.ref(sem)
    assert ref() is sem
    del sem
    gc.collect()
    assert ref() is None
    pool = ap.AgentPool(lambda: str.upper, max_size=1)
    pref = weakref.ref(pool)
    assert pref() is pool
    pool.close()
    del pool
    gc.collect()
    assert pref() is None
