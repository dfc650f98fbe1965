"""Reliability sweep: pool + cache + batch together, under threads and asyncio tasks, with faults.

Counts are reduced unless ``AGENTPERF_STRESS=full`` (``make stress``: >= 1,000,000 operations
in all). Faults injected: 10 % of agent calls raise, 2 % hang past the batch ``item_timeout``,
5 % of async callers are cancelled, agents turn unhealthy (``check`` refuses them, or raises),
callers discard agents, the factory fails now and then, and the cleanup thread recycles idle
and old agents meanwhile. At the end the invariants are exact: every agent the factory made is
accounted for (alive in the pool or closed exactly once), acquired == released, nobody waits,
no task is left, and the statistics add up.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

import agentperf as ap

pytestmark = pytest.mark.stress

FULL = os.environ.get("AGENTPERF_STRESS") == "full"
THREADS = 16
THREAD_OPS = 50_000 if FULL else 1_500  # per thread; a batch op counts its items
TASKS = 4_000  # asyncio tasks alive at once in each wave
WAVES = 50 if FULL else 3
KEYS = 2_000

P_RAISE = 0.10
P_HANG = 0.02
P_CANCEL = 0.05
P_SICK = 0.01  # an agent turns unhealthy after a call
P_CHECK_RAISES = 0.005
P_DISCARD = 0.05  # of manual leases
P_FACTORY_FAILS = 0.05
ITEM_TIMEOUT = 0.01
HANG = 0.03  # > ITEM_TIMEOUT


class Fault(Exception):
    """Injected by an agent call."""


class FactoryFault(Exception):
    """Injected by the factory."""


class CheckFault(Exception):
    """Injected by ``check``."""


@dataclass
class Ledger:
    """Every agent the factory made, and what happened to it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    made: list[Agent] = field(default_factory=list)
    factory_calls: int = 0
    factory_faults: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    overlap: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def factory(self) -> Agent:
        with self.lock:
            self.factory_calls += 1
            if self.rng.random() < P_FACTORY_FAILS:
                self.factory_faults += 1
                raise FactoryFault
            a = Agent(self, len(self.made), self.rng.randrange(2**32))
            self.made.append(a)
            return a

    def check(self, agent: Agent) -> bool:
        with self.lock:
            self.faults["check"] += 1
            r = self.rng.random()
        if r < P_CHECK_RAISES:
            with self.lock:
                self.faults["check_raised"] += 1
            raise CheckFault
        if agent.sick:
            with self.lock:
                self.faults["check_refused"] += 1
        return not agent.sick

    def count(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1


class Agent:
    """Sync and async shapes; asserts it never serves two callers at once."""

    def __init__(self, ledger: Ledger, ident: int, seed: int) -> None:
        self.ledger = ledger
        self.id = ident
        self.rng = random.Random(seed)
        self.busy = False
        self.sick = False
        self.calls = 0

    def _enter(self) -> float:
        if self.busy:
            self.ledger.overlap.append(f"agent {self.id} served two callers")
        if self.ledger.closes[self.id]:
            self.ledger.overlap.append(f"agent {self.id} called after close()")
        self.busy = True
        self.calls += 1
        return self.rng.random()

    def _exit(self) -> None:
        self.busy = False
        if self.rng.random() < P_SICK:
            self.sick = True

    def execute(self, x: int) -> tuple[str, int]:
        r = self._enter()
        try:
            if r < P_RAISE:
                self.ledger.count("raise")
                raise Fault(x)
            if r < P_RAISE + P_HANG:
                self.ledger.count("hang")
                time.sleep(HANG)
            return ("out", x)
        finally:
            self._exit()

    async def aexecute(self, x: int) -> tuple[str, int]:
        r = self._enter()
        try:
            if r < P_RAISE:
                self.ledger.count("raise")
                raise Fault(x)
            if r < P_RAISE + P_HANG:
                self.ledger.count("hang")
                await asyncio.sleep(HANG)
            else:
                await asyncio.sleep(0)
            return ("out", x)
        finally:
            self._exit()

    def close(self) -> None:
        with self.ledger.lock:
            self.ledger.closes[self.id] += 1


@dataclass
class Tally:
    """What the callers saw (merged from every thread and task)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: int = 0
    cache_calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    batch_total: int = 0
    batch_ok: int = 0
    batch_failed: int = 0
    batch_cancelled: int = 0
    unexpected: list[str] = field(default_factory=list)
    batch_errors: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)  # batches, by executor
    started_items: Counter[str] = field(default_factory=Counter)

    def start(self, ex: ap.BatchExecutor, n: int) -> None:
        """Count a batch right before it starts (its run is recorded even if cancelled)."""
        with self.lock:
            self.started[ex.name] += 1  # type: ignore[attr-defined]
            self.started_items[ex.name] += n  # type: ignore[attr-defined]

    def add(self, ops: int, cache_calls: int, outcomes: Counter[str]) -> None:
        with self.lock:
            self.ops += ops
            self.cache_calls += cache_calls
            self.outcomes.update(outcomes)

    def batch(self, r: ap.BatchResult, n: int) -> None:
        s = r.stats
        bad = []
        if s.success_count + s.failure_count + s.cancelled_count != s.total_count:
            bad.append(f"batch counts do not add up: {s}")
        if s.total_count != n or len(r.outputs) != n:
            bad.append(f"batch of {n} reported {s.total_count} items, {len(r.outputs)} outputs")
        if len(r.errors) != s.failure_count:
            bad.append(f"{len(r.errors)} errors for failure_count {s.failure_count}")
        failed = {e.index for e in r.errors}
        kinds = Counter(
            "pool_timeout"
            if isinstance(e.error, ap.PoolTimeoutError)
            else "item_timeout"
            if isinstance(e.error, TimeoutError)
            else type(e.error).__name__
            for e in r.errors
        )
        for i, out in enumerate(r.outputs):
            if out is not None and out != ("out", i):
                bad.append(f"item {i} output {out!r}")
            if out is not None and i in failed:
                bad.append(f"item {i} both failed and has an output")
        for e in r.errors:
            if not isinstance(e.error, (Fault, FactoryFault, ap.PoolTimeoutError, TimeoutError)):
                bad.append(f"batch item error {e.error!r}")
        with self.lock:
            self.batches += 1
            self.batch_total += s.total_count
            self.batch_ok += s.success_count
            self.batch_failed += s.failure_count
            self.batch_cancelled += s.cancelled_count
            self.batch_errors.update(kinds)
            self.unexpected.extend(bad)


# A CheckFault never reaches a caller: the agent is destroyed and the acquire goes on.
EXPECTED = (Fault, FactoryFault, ap.PoolTimeoutError, TimeoutError)


def classify(e: BaseException) -> str:
    if isinstance(e, ap.PoolTimeoutError):
        return "pool_timeout"
    if isinstance(e, EXPECTED):
        return type(e).__name__
    return "UNEXPECTED " + repr(e)


class Rig:
    """The system under test: a pool, a cache over it, batch executors over both."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.tally = Tally()
        self.sem = ap.Semaphore(12)
        self.pool = ap.AgentPool(
            self.ledger.factory,
            initial_size=0,
            max_size=12,
            idle_timeout=0.05,
            max_lifetime=0.5,
            acquire_timeout=2.0,
            cleanup_interval=0.02,
            check=self.ledger.check,
        )
        self.cached = ap.CachedAgent(self.pool, max_size=KEYS // 2, ttl=0.2, cleanup_interval=0.05)
        self.cache_calls = 0
        self.cc_lock = threading.Lock()

        async def via_cache(x: int) -> Any:
            self.count_cache()  # no await between this and the lookup
            return await self.cached.aexecute(x)

        self.batch_cached = ap.BatchExecutor(
            via_cache, max_concurrency=8, item_timeout=ITEM_TIMEOUT, name="cached"
        )
        self.batch_pool = ap.BatchExecutor(
            self.pool, max_concurrency=8, item_timeout=ITEM_TIMEOUT, semaphore=self.sem, name="pool"
        )

    def count_cache(self, n: int = 1) -> None:
        with self.cc_lock:  # batches run on the loops of several threads
            self.cache_calls += n

    # --- thread workers -----------------------------------------------------------------

    def thread_worker(self, seed: int, n_ops: int) -> None:
        rng = random.Random(seed)
        pool, cached = self.pool, self.cached
        seen: Counter[str] = Counter()
        ops = cache_calls = 0
        while ops < n_ops:
            r = rng.random()
            x = rng.randrange(KEYS)
            try:
                if r < 0.35:
                    cache_calls += 1
                    ops += 1
                    out = cached.execute(x)
                elif r < 0.60:
                    ops += 1
                    out = pool.execute(x)
                elif r < 0.75:
                    ops += 1
                    agent = pool.acquire(timeout=rng.choice([0.0, 0.05, None]))
                    discard = rng.random() < P_DISCARD
                    if discard:
                        self.ledger.count("discard")
                    try:
                        out = agent.execute(x)
                    finally:
                        pool.release(agent, discard=discard)
                elif r < 0.85:
                    ops += 1
                    with pool.agent() as agent:
                        out = agent.execute(x)
                else:
                    n = rng.randrange(5, 40)
                    ops += n
                    ex = self.batch_cached if r < 0.93 else self.batch_pool
                    self.tally.start(ex, n)
                    res = ex.execute(range(n))
                    self.tally.batch(res, n)
                    seen["batch"] += 1
                    continue
                if out != ("out", x):
                    seen[f"UNEXPECTED output {out!r} for {x}"] += 1
                else:
                    seen["ok"] += 1
            except BaseException as e:
                seen[classify(e)] += 1
        self.count_cache(cache_calls)
        self.tally.add(ops, 0, seen)

    # --- asyncio tasks ------------------------------------------------------------------

    async def task(self, rng: random.Random) -> tuple[int, str]:
        pool, cached = self.pool, self.cached
        r = rng.random()
        x = rng.randrange(KEYS)
        if r < 0.35:
            self.count_cache()
            out = await cached.aexecute(x)
        elif r < 0.60:
            out = await pool.aexecute(x)
        elif r < 0.72:
            agent = await pool.aacquire(timeout=rng.choice([0.0, 0.05, None]))
            discard = rng.random() < P_DISCARD
            if discard:
                self.ledger.count("discard")
            try:
                out = await agent.aexecute(x)
            finally:
                pool.release(agent, discard=discard)
        elif r < 0.80:
            async with pool.agent() as agent:
                out = await agent.aexecute(x)
        elif r < 0.95:
            n = rng.randrange(5, 30)
            ex = self.batch_cached if r < 0.9 else self.batch_pool
            self.tally.start(ex, n)
            res = await ex.aexecute(range(n))
            self.tally.batch(res, n)
            return n, "batch"
        else:
            # Leave a stream early: the rest is cancelled and no task is left behind.
            n = rng.randrange(10, 30)
            got = 0
            self.tally.start(self.batch_cached, n)
            async with self.batch_cached.astream(range(n)) as s:
                async for item in s:
                    got += 1
                    if item.error is None and item.output != ("out", item.index):
                        return got, f"UNEXPECTED stream item {item!r}"
                    if got == 3:
                        break
            return got, "stream"
        return 1, "ok" if out == ("out", x) else f"UNEXPECTED output {out!r} for {x}"

    async def wave(self, seed: int) -> None:
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self.task(random.Random(rng.random()))) for _ in range(TASKS)]
        cancelled = 0
        for t in tasks:
            if rng.random() < P_CANCEL:
                cancelled += 1
                loop.call_later(rng.uniform(0, 0.02), t.cancel)
        done, pending = await asyncio.wait(tasks, timeout=120)
        assert not pending, f"{len(pending)} tasks still pending after 120 s"
        seen: Counter[str] = Counter()
        ops = 0
        for t in done:
            if t.cancelled():
                seen["cancelled"] += 1
                ops += 1
                continue
            e = t.exception()
            if e is not None:
                seen[classify(e)] += 1
                ops += 1
            else:
                n, what = t.result()
                ops += n
                seen[what] += 1
        seen["cancel_requested"] += cancelled
        self.tally.add(ops, 0, seen)

    async def run_waves(self) -> None:
        for w in range(WAVES):
            await self.wave(1000 + w)

    # --- the invariants -----------------------------------------------------------------

    def settle(self) -> None:
        """Wait (bounded) until every destroyed agent's close() has run."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.ledger.lock:
                closed = sum(self.ledger.closes.values())
            if closed == self.pool.stats().destroyed:
                return
            time.sleep(0.01)

    def check_open(self) -> None:
        s = self.pool.stats()
        led = self.ledger
        assert not led.overlap, led.overlap[:5]
        assert s.active_count == 0 and s.waiting == 0, s
        assert s.acquired == s.released, s
        assert s.created == len(led.made), (s, len(led.made))
        assert s.created - s.destroyed == s.size == s.idle_count, s
        closed_twice = [i for i, n in led.closes.items() if n > 1]
        assert not closed_twice, f"agents closed more than once: {closed_twice[:10]}"
        alive = [a for a in led.made if led.closes[a.id] == 0]
        assert len(alive) == s.size, (len(alive), s)
        assert sum(led.closes.values()) == s.destroyed, (sum(led.closes.values()), s)
        assert self.sem.available == self.sem.permits
        c = self.cached.stats()
        assert c.hits + c.misses == self.cache_calls, (c, self.cache_calls)
        t = self.tally
        assert not t.unexpected, t.unexpected[:5]
        bad = {k: v for k, v in t.outcomes.items() if k.startswith("UNEXPECTED")}
        assert not bad, bad
        for ex in (self.batch_cached, self.batch_pool):
            x = ex.stats()
            name = ex.name  # type: ignore[attr-defined]
            assert x.executions == t.started[name], (name, x, t.started)
            assert x.total_tasks == t.started_items[name], (name, x, t.started_items)
            assert x.success_tasks + x.failed_tasks + x.cancelled_tasks == x.total_tasks, x
        # The batches that returned a result (not cancelled callers, not streams left early).
        assert t.batch_ok + t.batch_failed + t.batch_cancelled == t.batch_total

    def close_and_check(self) -> None:
        self.batch_cached.close()
        self.batch_pool.close()
        self.cached.close()
        self.pool.close()
        self.settle()
        s = self.pool.stats()
        led = self.ledger
        assert s.size == 0 and s.destroyed == s.created == len(led.made), s
        not_closed = [a.id for a in led.made if led.closes[a.id] != 1]
        assert not not_closed, f"agents lost or closed twice: {not_closed[:10]}"
        with pytest.raises(ap.PoolClosedError):
            self.pool.acquire(timeout=0)

    def report(self, title: str, seconds: float) -> None:
        s = self.pool.stats()
        t, led = self.tally, self.ledger
        c = self.cached.stats()
        print(
            f"\n[{title}] ops={t.ops} threads={THREADS} tasks={TASKS}x{WAVES} in {seconds:.1f}s; "
            f"faults: {dict(led.faults)}, factory {led.factory_faults}/{led.factory_calls} "
            f"failed; outcomes: {dict(t.outcomes)}; batches={t.batches} "
            f"items={t.batch_total} ok={t.batch_ok} failed={t.batch_failed} "
            f"cancelled={t.batch_cancelled} errors={dict(t.batch_errors)}; "
            f"pool created={s.created} destroyed={s.destroyed} "
            f"recycled={s.recycled} acquired={s.acquired} waits={s.waits} "
            f"timeouts={s.timeouts}; cache hits={c.hits} misses={c.misses}; lost=0",
            file=sys.stderr,
        )


@pytest.mark.timeout(1800 if FULL else 120)
def test_threads_and_tasks_together_with_faults() -> None:
    rig = Rig()
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=rig.thread_worker, args=(i, THREAD_OPS), name=f"stress-{i}")
        for i in range(THREADS)
    ]
    for t in threads:
        t.start()

    async def main() -> None:
        await rig.run_waves()
        # Each wave's tasks are all done; nothing else may be left on the loop.
        await asyncio.sleep(0)
        left = asyncio.all_tasks() - {asyncio.current_task()}
        assert not left, f"tasks left behind: {list(left)[:5]}"

    asyncio.run(main())
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), f"{t.name} deadlocked"
    rig.settle()
    rig.check_open()
    elapsed = time.perf_counter() - t0
    rig.report("threads+tasks", elapsed)
    tally, led = rig.tally, rig.ledger
    # The faults really happened (else the test proves nothing).
    assert led.faults["raise"] > 0 and led.faults["hang"] > 0
    assert led.factory_faults > 0 and led.faults["check_refused"] > 0
    assert tally.outcomes["cancelled"] > 0 and tally.batch_failed > 0
    assert rig.pool.stats().recycled > 0
    if FULL:
        assert tally.ops >= 1_000_000, tally.ops
    rig.close_and_check()


@pytest.mark.timeout(600 if FULL else 120)
async def test_cancellation_storm_leaks_nothing() -> None:
    """Thousands of tasks waiting on a tiny pool, most cancelled while queued or running."""
    ledger = Ledger()
    pool = ap.AgentPool(ledger.factory, initial_size=0, max_size=2, acquire_timeout=None)
    cached = ap.CachedAgent(pool, max_size=64, ttl=None)
    rounds = 20 if FULL else 3
    calls = 0

    async def one(x: int) -> Any:
        nonlocal calls
        if x % 2:
            calls += 1
            return await cached.aexecute(x % 50)
        return await pool.aexecute(x)

    rng = random.Random(3)
    n_cancelled = 0
    for _ in range(rounds):
        tasks = [asyncio.create_task(one(i)) for i in range(TASKS)]
        await asyncio.sleep(0)
        for t in tasks:
            if rng.random() < 0.8:
                t.cancel()
        await asyncio.wait(tasks, timeout=120)
        assert all(t.done() for t in tasks)
        n_cancelled += sum(t.cancelled() for t in tasks)
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                assert isinstance(t.exception(), (Fault, FactoryFault)), t.exception()
    s = pool.stats()
    assert s.waiting == 0 and s.active_count == 0 and s.acquired == s.released, s
    assert s.created == len(ledger.made) and s.created - s.destroyed == s.size, s
    c = cached.stats()
    assert c.hits + c.misses == calls, (c, calls)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    cached.close()
    pool.close()
    assert all(ledger.closes[a.id] == 1 for a in ledger.made)
    print(
        f"\n[storm] tasks={rounds * TASKS} cancelled={n_cancelled} pool created={s.created} "
        f"acquired={s.acquired} waits={s.waits}; cache hits={c.hits} misses={c.misses}; lost=0",
        file=sys.stderr,
    )


@pytest.mark.timeout(30)
async def test_cancelled_follower_counts_once() -> None:
    """Every call counts once in hits + misses, a follower cancelled while it waits for
    another caller's in-flight call included (it was not served: a miss)."""
    gate = asyncio.Event()

    async def slow(x: int) -> int:
        await gate.wait()
        return x

    with ap.CachedAgent(slow, max_size=8, ttl=None) as c:
        leader = asyncio.create_task(c.aexecute(1))
        await asyncio.sleep(0)
        followers = [asyncio.create_task(c.aexecute(1)) for _ in range(3)]
        await asyncio.sleep(0)
        followers[0].cancel()
        followers[1].cancel()
        await asyncio.wait(followers[:2])
        gate.set()
        assert await leader == 1 and await followers[2] == 1
        assert await c.aexecute(1) == 1
        s = c.stats()
        assert s.hits + s.misses == 5, s
        assert (s.hits, s.misses) == (2, 3), s
