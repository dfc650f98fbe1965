"""AgentPool under load (threads, asyncio with cancellations) and against a reference model.

Reduced counts (16 threads x 2,500 ops, 400 tasks) unless ``AGENTPERF_STRESS=full``
(``make stress``: 16 threads x 10k ops, 2,000 tasks), as for the rest of the stress suite.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

import agentperf as ap

FULL = os.environ.get("AGENTPERF_STRESS") == "full"
OPS = 10_000 if FULL else 2_500
TASKS = 2_000 if FULL else 400


class Tracked:
    """An agent that asserts nobody else uses it at the same time."""

    ids = itertools.count()

    def __init__(self, gauge: Gauge) -> None:
        self.id = next(Tracked.ids)
        self.gauge = gauge
        self.in_use = False
        self.closed = 0

    def take(self) -> None:
        assert not self.in_use, f"agent {self.id} handed to two callers"
        self.in_use = True
        self.gauge.up()

    def give(self) -> None:
        self.in_use = False
        self.gauge.down()

    def execute(self, x: int) -> int:
        self.take()
        try:
            if x % 5 == 0:
                time.sleep(0)  # let other threads in while this agent is busy
            if x % 13 == 0:
                raise ValueError(x)
            return x
        finally:
            self.give()

    async def aexecute(self, x: int) -> int:
        self.take()
        try:
            await asyncio.sleep(0)
            if x % 13 == 0:
                raise ValueError(x)
            return x
        finally:
            self.give()

    def close(self) -> None:
        self.closed += 1


class Gauge:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def up(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def down(self) -> None:
        with self.lock:
            self.now -= 1


def final_invariants(pool: ap.AgentPool, made: list[Tracked], gauge: Gauge) -> None:
    s = pool.stats()
    assert s.created - s.destroyed == s.size
    assert s.acquired == s.released
    assert (s.active_count, s.waiting) == (0, 0)
    assert s.idle_count == s.size, "an agent went missing"
    assert s.created == len(made)
    assert gauge.peak <= s.max_size
    assert pool._leased() == 0
    pool.close()
    assert all(a.closed == 1 for a in made), "an agent was closed twice or never"
    assert pool.stats().size == 0


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_sixteen_threads() -> None:
    gauge = Gauge()
    made: list[Tracked] = []
    made_lock = threading.Lock()

    def factory() -> Tracked:
        a = Tracked(gauge)
        with made_lock:
            made.append(a)
        return a

    pool = ap.AgentPool(factory, max_size=6, initial_size=2, acquire_timeout=5)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for i in range(OPS):
                r = rnd.random()
                if r < 0.5:
                    try:
                        pool.execute(i)
                    except ValueError:
                        pass
                else:
                    try:
                        a = pool.acquire(timeout=0.0005 if r < 0.55 else None)
                    except ap.PoolTimeoutError:
                        continue
                    a.take()
                    if r > 0.9:
                        time.sleep(0.0001)
                    a.give()
                    pool.release(a, discard=rnd.random() < 0.05)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = pool.stats()
    assert s.waits > 0, "the pool was never contended"
    final_invariants(pool, made, gauge)


@pytest.mark.stress
@pytest.mark.timeout(120)
async def test_asyncio_with_random_cancellations() -> None:
    gauge = Gauge()
    made: list[Tracked] = []

    async def factory() -> Tracked:
        await asyncio.sleep(0)
        a = Tracked(gauge)
        made.append(a)
        return a

    pool = ap.AgentPool(factory, max_size=5, initial_size=2, acquire_timeout=5)
    rnd = random.Random(7)

    async def user(i: int) -> None:
        if i % 3:
            try:
                await pool.aexecute(i)
            except ValueError:
                pass
        else:
            async with pool.agent(timeout=0.002 if i % 2 else None) as a:
                a.take()
                try:
                    await asyncio.sleep(0)
                finally:
                    a.give()

    async with pool:
        tasks = [asyncio.create_task(user(i)) for i in range(TASKS)]
        for _ in range(TASKS // 4):
            await asyncio.sleep(0)
            rnd.choice(tasks).cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        bad = [
            r
            for r in results
            if r is not None and not isinstance(r, (asyncio.CancelledError, ap.PoolTimeoutError))
        ]
        assert bad == []
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) > 0
        s = pool.stats()
        assert s.waits > 0
        final_invariants(pool, made, gauge)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_threads_and_loops_share_one_pool() -> None:
    gauge = Gauge()
    made: list[Tracked] = []
    lock = threading.Lock()

    def factory() -> Tracked:
        a = Tracked(gauge)
        with lock:
            made.append(a)
        return a

    pool = ap.AgentPool(factory, max_size=3, initial_size=0, acquire_timeout=10)
    n = OPS // 5

    def sync_worker() -> None:
        for i in range(n):
            try:
                pool.execute(i)
            except ValueError:
                pass

    def async_worker() -> None:
        async def main() -> None:
            async def one(i: int) -> None:
                try:
                    await pool.aexecute(i)
                except ValueError:
                    pass

            for k in range(0, n, 20):
                await asyncio.gather(*(one(i) for i in range(k, k + 20)))

        asyncio.run(main())

    ts = [threading.Thread(target=w) for w in [sync_worker] * 4 + [async_worker] * 4]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    final_invariants(pool, made, gauge)


# -- a reference model --------------------------------------------------------------------


class Model(RuleBasedStateMachine):
    """Single-threaded operations predicted exactly: idle agents are reused oldest first."""

    leased = Bundle("leased")

    def __init__(self) -> None:
        super().__init__()
        self.max_size = 3
        self.bad: set[int] = set()
        self.next_id = 0
        self.agents: dict[int, Any] = {}
        self.pool = ap.AgentPool(
            self.make,
            max_size=self.max_size,
            initial_size=1,
            acquire_timeout=0.001,
            check=self.check,
            idle_timeout=None,
            max_lifetime=None,
        )
        self.idle: list[int] = [0]
        self.out: set[int] = set()
        self.created, self.destroyed = 1, 0
        self.acquired = self.released = self.timeouts = 0
        self.returned: list[Any] = []

    def make(self) -> Any:
        agent = type("A", (), {"execute": lambda s, x: (s.id, x)})()
        agent.id = self.next_id
        self.agents[self.next_id] = agent
        self.next_id += 1
        return agent

    def check(self, agent: Any) -> bool:
        return agent.id not in self.bad

    def size(self) -> int:
        return self.created - self.destroyed

    def predict_acquire(self) -> int | None:
        while self.idle:
            i = self.idle.pop(0)
            if i in self.bad:
                self.destroyed += 1
                continue
            return i
        if self.size() < self.max_size:
            self.created += 1
            return self.next_id
        return None

    @rule(target=leased)
    def acquire(self) -> Any:
        want = self.predict_acquire()
        if want is None:
            with pytest.raises(ap.PoolTimeoutError):
                self.pool.acquire(timeout=0)
            self.timeouts += 1
            return None
        a = self.pool.acquire(timeout=0)
        assert a.id == want
        self.out.add(a.id)
        self.acquired += 1
        return a

    @rule(x=st.integers())
    def execute(self, x: int) -> None:
        want = self.predict_acquire()
        if want is None:
            with pytest.raises(ap.PoolTimeoutError):
                self.pool.execute(x)
            self.timeouts += 1
            return
        assert self.pool.execute(x) == (want, x)
        self.acquired += 1
        self.released += 1
        self.idle.append(want)

    @rule(a=consumes(leased), discard=st.booleans())
    def release(self, a: Any, discard: bool) -> None:
        if a is None:
            return
        self.pool.release(a, discard=discard)
        self.out.discard(a.id)
        self.released += 1
        if discard:
            self.destroyed += 1
        else:
            self.idle.append(a.id)
        self.returned.append(a)

    @precondition(lambda self: bool(self.returned))
    @rule(data=st.data())
    def release_twice(self, data: st.DataObject) -> None:
        a = data.draw(st.sampled_from(self.returned))
        if a.id in self.out:
            return
        with pytest.raises(ValueError):
            self.pool.release(a)

    @rule()
    def release_foreign(self) -> None:
        with pytest.raises(ValueError):
            self.pool.release(object())

    @precondition(lambda self: self.next_id > 0)
    @rule(data=st.data())
    def break_one(self, data: st.DataObject) -> None:
        self.bad.add(data.draw(st.integers(0, self.next_id - 1)))

    @invariant()
    def counters_match(self) -> None:
        s = self.pool.stats()
        assert s.size == self.size()
        assert s.idle_count == len(self.idle)
        assert s.active_count == len(self.out)
        assert (s.created, s.destroyed) == (self.created, self.destroyed)
        assert (s.acquired, s.released, s.timeouts) == (self.acquired, self.released, self.timeouts)
        assert s.waiting == 0 and s.size <= self.max_size

    def teardown(self) -> None:
        self.pool.close()
        s = self.pool.stats()
        assert s.size == len(self.out)


TestModel = Model.TestCase
