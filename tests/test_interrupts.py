"""Ctrl-C (any signal handler that raises) interrupts a thread blocked in an acquire, and the
interrupted waiter leaves nothing behind."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

import agentperf as ap


class Interrupted(Exception):
    pass


class _Echo:
    def __call__(self, x: object) -> object:
        return x


@pytest.fixture
def interrupt_soon() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.timeout(20)
def test_semaphore_acquire_without_timeout_is_interruptible(interrupt_soon: None) -> None:
    sem = ap.Semaphore(1)
    assert sem.acquire()
    with pytest.raises(Interrupted):
        sem.acquire()  # would block forever
    assert sem.available == 0, "the interrupted waiter took nothing"
    sem.release()
    assert sem.available == 1
    assert sem.try_acquire(), "no stale waiter is served before a new caller"


@pytest.mark.timeout(20)
def test_pool_acquire_without_timeout_is_interruptible(interrupt_soon: None) -> None:
    with ap.AgentPool(_Echo, max_size=1, initial_size=1, acquire_timeout=None) as pool:
        held = pool.acquire()
        with pytest.raises(Interrupted):
            pool.acquire()  # would block forever
        s = pool.stats()
        assert (s.waiting, s.active_count, s.size) == (0, 1, 1)
        pool.release(held)
        again = pool.acquire(timeout=1.0)
        assert again is held, "the agent was not handed to the interrupted waiter"
        pool.release(again)
        assert pool.stats().acquired == pool.stats().released == 2
