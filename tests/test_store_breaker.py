"""The stores' breaker on a manual clock, and the guard that turns failures into StoreError."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from agentperf.store import Breaker, BreakerOpenError, StoreError
from agentperf.store._base import Guard


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_five_failures_in_a_row() -> None:
    clock = Clock()
    b = Breaker(clock=clock)
    for _ in range(4):
        b.record_failure()
        assert b.state == "closed" and b.allow()
    b.record_success()  # a success in between starts the count again
    for _ in range(4):
        b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and b.times_opened == 1
    assert not b.allow()
    clock.t = 4.99
    assert not b.allow()
    assert b.skipped == 2


def test_one_trial_after_reset_then_closed_or_open_again() -> None:
    clock = Clock()
    b = Breaker(failures=2, reset_after=5.0, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.t = 5.0
    assert b.state == "half-open"
    assert b.allow() is True
    assert b.allow() is False  # only one trial at a time
    b.record_failure()  # the trial failed: open for another 5 s
    assert b.state == "open" and b.times_opened == 2
    clock.t = 9.9
    assert not b.allow()
    clock.t = 10.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.allow() and b.allow()


def test_abandoned_trial_lets_another_through() -> None:
    clock = Clock()
    b = Breaker(failures=1, reset_after=1.0, clock=clock)
    b.record_failure()
    clock.t = 1.0
    assert b.allow()
    assert not b.allow()
    b.record_abandoned()
    assert b.allow()


def test_trial_is_exclusive_across_threads() -> None:
    clock = Clock()
    b = Breaker(failures=1, reset_after=1.0, clock=clock)
    b.record_failure()
    clock.t = 2.0
    barrier = threading.Barrier(16)
    allowed: list[bool] = []

    def go() -> None:
        barrier.wait()
        allowed.append(b.allow())

    ts = [threading.Thread(target=go) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert allowed.count(True) == 1


def test_failures_zero_never_opens() -> None:
    b = Breaker(failures=0)
    for _ in range(100):
        b.record_failure()
    assert b.state == "closed" and b.allow()


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="failures"):
        Breaker(failures=-1)
    with pytest.raises(TypeError, match="failures"):
        Breaker(failures=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reset_after"):
        Breaker(reset_after=float("nan"))
    with pytest.raises(ValueError, match="reset_after"):
        Breaker(reset_after=-1)
    with pytest.raises(TypeError, match="clock"):
        Breaker(clock=3.0)  # type: ignore[arg-type]
    assert Breaker(reset_after=timedelta(seconds=2)).reset_after == 2.0


def test_guard_wraps_failures_and_counts_them() -> None:
    clock = Clock()
    g = Guard("S", Breaker(failures=2, reset_after=5.0, clock=clock))

    def boom() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(StoreError, match=r"S\.get: ConnectionResetError: gone") as err:
        g.call("get", boom)
    assert isinstance(err.value.__cause__, ConnectionResetError)
    with pytest.raises(StoreError):
        g.call("get", boom)
    with pytest.raises(BreakerOpenError, match=r"S\.set: skipped"):
        g.call("set", lambda: 1)
    clock.t = 5.0
    assert g.call("get", lambda: 7) == 7
    assert g.breaker.state == "closed"


def test_guard_lets_interrupts_through_without_counting_them() -> None:
    clock = Clock()
    g = Guard("S", Breaker(failures=1, reset_after=1.0, clock=clock))

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        g.call("get", interrupted)
    assert g.breaker.state == "closed"


async def test_async_guard_cancellation_is_no_verdict() -> None:
    clock = Clock()
    g = Guard("S", Breaker(failures=1, reset_after=1.0, clock=clock))

    async def fail() -> None:
        raise OSError("down")

    with pytest.raises(StoreError):
        await g.acall("get", fail)
    clock.t = 1.0

    async def hang() -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(g.acall("get", hang))  # the trial call
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def ok() -> int:
        return 1

    assert await g.acall("get", ok) == 1  # the cancelled trial did not keep it half-open
    assert g.breaker.state == "closed"
