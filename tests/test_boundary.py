"""The boundary between the Python package and the Rust binding of the pool and the semaphore:
an async acquire's steps are typed objects, and every value is validated once, in Python, by
one set of rules (the semaphore's sync ``acquire``, all Rust, applies the same)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import agentperf as ap
from agentperf import _agentperf


class Echo:
    def __call__(self, x: Any) -> Any:
        return x


@pytest.mark.timeout(30)
async def test_async_acquire_steps_are_typed() -> None:
    pool = ap.AgentPool(Echo, max_size=2, initial_size=1)
    try:
        step = pool._atry()
        assert type(step) is _agentperf._Leased
        assert type(step.agent) is Echo and await step.acall(3) == 3
        slot = pool._atry()  # room for one more: the caller creates it
        assert type(slot) is _agentperf._CreateSlot
        made = Echo()
        acall = pool._adopt(made, made, made)
        assert acall is made
        waiter = pool._atry()  # full: parked
        assert type(waiter) is _agentperf._PoolWaiter
        pool.release(step.agent)
        await asyncio.wait_for(waiter.future, 5)
        got = waiter.take()
        assert type(got) is _agentperf._Leased and got.agent is step.agent
        assert type(waiter.take()) is _agentperf._StartOver  # nothing left to take
        pool.release(got.agent)
        pool.release(made)
        assert pool.stats().active_count == 0
    finally:
        pool.close()


@pytest.mark.parametrize(
    "field", ["idle_timeout", "max_lifetime", "acquire_timeout", "cleanup_interval"]
)
def test_a_pool_duration_too_large_is_refused_by_the_one_validator(field: str) -> None:
    with pytest.raises(ValueError) as info:
        ap.AgentPool(Echo, max_size=1, **{field: 1e300})
    assert str(info.value) == f"{field}={1e300!r}: is too large"
    with ap.AgentPool(Echo, max_size=1, **{field: math.inf}) as pool:  # no limit
        assert pool.execute(1) == 1


def test_a_pool_acquire_timeout_too_large_is_refused_by_the_one_validator() -> None:
    with ap.AgentPool(Echo, max_size=1) as pool:
        with pytest.raises(ValueError) as info:
            pool.acquire(timeout=1e300)
        assert str(info.value) == "timeout=1e+300: is too large"
        assert pool.stats().active_count == 0
        pool.release(pool.acquire(timeout=math.inf))


def test_semaphore_sync_and_async_acquire_refuse_the_same_timeouts() -> None:
    sem = ap.Semaphore(1)
    for bad in (1e300, 2.0**64, -1.0, math.nan):
        with pytest.raises(ValueError, match="timeout"):
            sem.acquire(bad)
        with pytest.raises(ValueError, match="timeout"):
            asyncio.run(sem.aacquire(bad))
        assert sem.available == 1
    assert sem.acquire(2.0**63) is True
    sem.release()
    assert asyncio.run(sem.aacquire(2.0**63)) is True
    sem.release()
