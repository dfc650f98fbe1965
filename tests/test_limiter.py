"""ap.RateLimiter: GCRA in Rust, FIFO among threads and tasks on any loop, within the bound.

Timing assertions only ever check what a slow machine cannot break: a grant never comes
*earlier* than the limit allows (delays only push grants later), and a deadline generous
enough to absorb scheduling noise is met. Speed is never asserted.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

import agentperf as ap

# A grant's timestamp is taken after the grant; it can only be late. Early by this much at
# most (clock reads on either side of the Rust call).
EPS = 0.005


def max_in_window(times: list[float], costs: list[float], per: float) -> float:
    """The most units whose timestamps fall in one closed window of ``per`` seconds."""
    pairs = sorted(zip(times, costs, strict=True))
    best = 0.0
    for i, (t, _) in enumerate(pairs):
        best = max(best, sum(c for u, c in pairs[i:] if u <= t + per))
    return best


async def queued(lim: ap.RateLimiter, n: int) -> None:
    """Until ``n`` callers are queued on ``lim`` (threads and tasks alike)."""
    while lim.waiting < n:  # noqa: ASYNC110 - the state is in Rust, no event to wait on
        await asyncio.sleep(0.001)


def wait_queued(lim: ap.RateLimiter, n: int) -> None:
    deadline = time.monotonic() + 10
    while lim.waiting < n:
        assert time.monotonic() < deadline, f"{lim.waiting} queued, expected {n}"
        time.sleep(0.001)


class LoopThread:
    """An event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loops() -> Iterator[tuple[LoopThread, LoopThread]]:
    a, b = LoopThread(), LoopThread()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# --- configuration --------------------------------------------------------------------------


def test_properties_defaults_and_repr() -> None:
    lim = ap.RateLimiter(500, per=60.0)
    assert (lim.rate, lim.per) == (500.0, 60.0)
    assert lim.burst == pytest.approx(500 / 60)
    assert ap.RateLimiter(10).burst == 10.0
    assert ap.RateLimiter(10, per=0.5).burst == 10.0
    assert ap.RateLimiter(0.5).burst == 1.0, "at least one call"
    assert ap.RateLimiter(30, per=3600).burst == 1.0
    assert ap.RateLimiter(10, burst=3).burst == 3.0
    assert ap.RateLimiter(10, per=datetime.timedelta(minutes=1)).per == 60.0
    assert "rate=500.0" in repr(lim) and "per=60.0" in repr(lim)
    assert weakref.ref(lim)() is lim
    s = lim.stats()
    assert (s.granted, s.acquired, s.waited, s.wait_s, s.paused_s, s.waiting) == (0, 0, 0, 0, 0, 0)
    assert "granted=" in repr(s)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": 10**400}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
        ({"rate": 1, "per": -1.0}, "per"),
        ({"rate": 1, "per": float("inf")}, "per"),
        ({"rate": 1, "burst": 0.5}, "burst"),
        ({"rate": 1, "burst": 0}, "burst"),
        ({"rate": 1, "burst": float("nan")}, "burst"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}="):
        ap.RateLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": "10"}, "rate"),
        ({"rate": None}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": 1, "per": "1"}, "per"),
        ({"rate": 1, "burst": "2"}, "burst"),
    ],
)
def test_bad_types_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(TypeError, match=f"^{field}="):
        ap.RateLimiter(**kwargs)  # type: ignore[arg-type]


async def test_bad_costs_timeouts_and_pauses() -> None:
    lim = ap.RateLimiter(10)
    for bad in (0, -1, float("nan"), float("inf"), 10**400):
        with pytest.raises(ValueError, match=r"^cost="):
            lim.try_acquire(bad)
        with pytest.raises(ValueError, match=r"^cost="):
            lim.acquire(bad)
        with pytest.raises(ValueError, match=r"^cost="):
            await lim.aacquire(bad)
    for wrong in ("1", True, [1]):
        with pytest.raises(TypeError, match=r"^cost="):
            lim.try_acquire(wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^cost="):
            await lim.aacquire(wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        lim.acquire(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        await lim.aacquire(timeout=float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        lim.acquire(timeout="1")  # type: ignore[arg-type]
    for bad_s in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^seconds="):
            lim.pause(bad_s)
    with pytest.raises(TypeError, match="seconds"):
        lim.pause("1")  # type: ignore[arg-type]
    assert lim.stats().granted == 0, "nothing was granted by a bad call"


# --- the limit ------------------------------------------------------------------------------


def test_burst_then_the_rate() -> None:
    lim = ap.RateLimiter(10, burst=3)
    assert [lim.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert not lim.acquire(timeout=0)
    time.sleep(0.25)  # at least two units come back
    assert lim.try_acquire() and lim.try_acquire(1.0)
    assert lim.stats().granted == 5.0 and lim.stats().waited == 0


@pytest.mark.timeout(60)
def test_blocking_grants_never_beat_the_rate() -> None:
    rate, burst, n = 40.0, 4.0, 60
    lim = ap.RateLimiter(rate, burst=burst)
    t0 = time.monotonic()
    times = []
    for _ in range(n):
        assert lim.acquire()
        times.append(time.monotonic())
    # Grants come no sooner than the rate allows: the last is (n - burst) / rate in.
    assert times[-1] - t0 >= (n - burst) / rate - EPS
    assert max_in_window(times, [1.0] * n, 1.0) <= rate + burst
    s = lim.stats()
    assert s.granted == n and s.waited > 0 and s.wait_s > 0


def test_a_cost_above_burst_waits_for_rest_then_leaves_a_debt() -> None:
    lim = ap.RateLimiter(10, burst=2)
    assert lim.try_acquire(5.0), "rested: above burst is granted at once"
    assert not lim.try_acquire(0.1), "the debt is owed"
    t0 = time.monotonic()
    assert lim.acquire()
    # Rested again at 0.5 s; one unit goes (2 - 1) / 10 s earlier than that.
    assert time.monotonic() - t0 >= 0.4 - EPS
    assert lim.try_acquire(1.0) is False
    lim2 = ap.RateLimiter(10, burst=2)
    assert lim2.try_acquire(1.0)
    assert not lim2.try_acquire(5.0), "above burst needs the limiter fully rested"
    assert lim2.acquire(5.0, timeout=5), "it neither waits forever"


@pytest.mark.timeout(60)
def test_threads_and_tasks_on_two_loops_share_the_bound(
    loops: tuple[LoopThread, LoopThread],
) -> None:
    rate, burst = 50.0, 5.0
    lim = ap.RateLimiter(rate, burst=burst)
    got: list[tuple[float, float]] = []
    lock = threading.Lock()
    costs = [1.0, 2.0, 0.5, 3.0]

    def record(cost: float) -> None:
        with lock:
            got.append((time.monotonic(), cost))

    def thread_work(k: int) -> None:
        for i in range(10):
            c = costs[(i + k) % 4]
            assert lim.acquire(c)
            record(c)

    async def task_work(k: int) -> None:
        for i in range(10):
            c = costs[(i + k) % 4]
            assert await lim.aacquire(c)
            record(c)

    async def tasks(k: int) -> None:
        await asyncio.gather(*(task_work(k + j) for j in range(3)))

    t0 = time.monotonic()
    futs = [loops[0].submit(tasks(0)), loops[1].submit(tasks(1))]
    threads = [threading.Thread(target=thread_work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    for f in futs:
        f.result(50)  # type: ignore[attr-defined]
    total = sum(c for _, c in got)
    assert len(got) == 90 and total == lim.stats().granted
    times = [t for t, _ in got]
    assert max(times) - t0 >= (total - burst) / rate - EPS, "faster than the rate"
    # Timestamps are taken after the grant: on a loaded machine several grants can be
    # recorded late and bunch up, so the window check allows a few units of noise.
    assert max_in_window(times, [c for _, c in got], 1.0) <= rate + burst + 6
    assert lim.waiting == 0


@pytest.mark.timeout(60)
def test_fifo_across_threads_and_loops(loops: tuple[LoopThread, LoopThread]) -> None:
    # 10 units a second, burst 3: grants about 0.1 s apart, so the order recorded is the
    # order granted. A big cost queued early is never overtaken by later small ones.
    lim = ap.RateLimiter(10, burst=3)
    assert lim.try_acquire(3.0)
    order: list[str] = []
    lock = threading.Lock()

    def thread_waiter(name: str, cost: float) -> None:
        assert lim.acquire(cost)
        with lock:
            order.append(name)

    async def task_waiter(name: str, cost: float) -> None:
        assert await lim.aacquire(cost)
        with lock:
            order.append(name)

    plan = [("t1", 1.0), ("A-big", 3.0), ("t2", 0.5), ("B1", 1.0), ("t3", 1.0), ("A2", 0.5)]
    started: list[object] = []
    for i, (name, cost) in enumerate(plan):
        if name.startswith("t"):
            th = threading.Thread(target=thread_waiter, args=(name, cost))
            th.start()
            started.append(th)
        else:
            lp = loops[0] if name.startswith("A") else loops[1]
            started.append(lp.submit(task_waiter(name, cost)))
        # Queued, or already served: on a loaded machine the first grant (0.1 s in) may come
        # before the next waiter queues, and then the queue never holds them all at once.
        deadline = time.monotonic() + 10
        while lim.waiting + len(order) < i + 1:
            assert time.monotonic() < deadline, f"{lim.waiting} queued, {order} served"
            time.sleep(0.001)
    for s in started:
        if isinstance(s, threading.Thread):
            s.join(30)
        else:
            s.result(30)  # type: ignore[attr-defined]
    assert order == [name for name, _ in plan]
    assert lim.stats().waited == len(plan)


@pytest.mark.timeout(120)
def test_mixed_waiters_with_timeouts_and_cancels_leak_nothing(
    loops: tuple[LoopThread, LoopThread],
) -> None:
    # Threads and tasks on two loops, random costs, some with short timeouts, some tasks
    # cancelled: every grant is accounted for, the rate holds over the run, nobody is left
    # queued, and a limiter left alone afterwards is fully rested again.
    import random

    rate, burst = 200.0, 10.0
    lim = ap.RateLimiter(rate, burst=burst)
    lock = threading.Lock()
    granted: list[tuple[float, float]] = []

    def record(c: float) -> None:
        with lock:
            granted.append((time.monotonic(), c))

    def thread_work(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(25):
            c = rnd.choice([0.5, 1.0, 2.0, 4.0])
            timeout = rnd.choice([None, 0.0, 0.005, 0.05])
            if lim.acquire(c, timeout=timeout):
                record(c)

    async def task_work(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(25):
            c = rnd.choice([0.5, 1.0, 3.0])
            timeout = rnd.choice([None, 0.0, 0.005, 0.05])
            t = asyncio.ensure_future(lim.aacquire(c, timeout=timeout))
            if rnd.random() < 0.2:
                await asyncio.sleep(rnd.choice([0, 0.001, 0.01]))
                t.cancel()
            try:
                ok = await t
            except asyncio.CancelledError:
                continue
            if ok:
                record(c)

    async def tasks(base: int) -> None:
        await asyncio.gather(*(task_work(base + j) for j in range(8)))

    t0 = time.monotonic()
    futs = [loops[0].submit(tasks(100)), loops[1].submit(tasks(200))]
    threads = [threading.Thread(target=thread_work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    for f in futs:
        f.result(100)  # type: ignore[attr-defined]
    total = sum(c for _, c in granted)
    s = lim.stats()
    assert s.granted == pytest.approx(total), "every grant is held by exactly one caller"
    assert s.acquired == len(granted) and s.waiting == 0
    if total > burst:
        assert max(t for t, _ in granted) - t0 >= (total - burst) / rate - EPS
    time.sleep(burst / rate + 0.05)
    assert lim.try_acquire(burst), "rested again: no reservation was left behind"


def test_try_acquire_never_jumps_the_queue() -> None:
    lim = ap.RateLimiter(2, burst=1)
    assert lim.try_acquire()
    th = threading.Thread(target=lim.acquire)
    th.start()
    wait_queued(lim, 1)
    time.sleep(0.1)
    assert not lim.try_acquire(0.01), "a queued waiter is first"
    th.join(10)
    assert lim.waiting == 0


# --- timeouts and cancellation ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_timed_out_thread_takes_nothing() -> None:
    lim = ap.RateLimiter(2, burst=1)  # a unit every 0.5 s
    assert lim.try_acquire()
    t0 = time.monotonic()
    assert lim.acquire(timeout=0.1) is False
    assert time.monotonic() - t0 >= 0.1 - EPS
    assert lim.waiting == 0
    # Had the timed-out waiter kept its unit, the next one would be due at 1.0 s, not 0.5 s.
    assert lim.acquire(timeout=0.85 - (time.monotonic() - t0))
    assert lim.stats().granted == 2.0


@pytest.mark.timeout(30)
async def test_a_timed_out_task_takes_nothing() -> None:
    lim = ap.RateLimiter(2, burst=1)
    assert lim.try_acquire()
    t0 = time.monotonic()
    assert await lim.aacquire(timeout=0.1) is False
    assert time.monotonic() - t0 >= 0.1 - EPS
    assert lim.waiting == 0
    assert await lim.aacquire(timeout=0.85 - (time.monotonic() - t0))
    assert lim.stats().granted == 2.0


@pytest.mark.timeout(30)
async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    lim = ap.RateLimiter(2, burst=1)
    assert lim.try_acquire()
    first = asyncio.create_task(lim.aacquire())
    await queued(lim, 1)
    second = asyncio.create_task(lim.aacquire(timeout=0.8))
    await queued(lim, 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # Due at 0.5 s once the first left; at 1.0 s (past its timeout) had it stayed.
    assert await second
    assert lim.stats().granted == 2.0 and lim.waiting == 0


@pytest.mark.timeout(30)
async def test_a_waiter_cancelled_while_being_granted_gives_the_grant_back() -> None:
    # Both are due at once; the first is cancelled after it was granted (in Rust) but before
    # its task ran: its unit is given back and the limiter is as if it never asked.
    lim = ap.RateLimiter(20, burst=1)
    assert lim.try_acquire()
    task = asyncio.create_task(lim.aacquire())
    await queued(lim, 1)
    time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose: the task cannot run
    assert not lim.try_acquire(), "the queued task is first (and is granted now)"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.try_acquire(), "the cancelled task's grant came back"
    assert lim.stats().granted == 2.0


@pytest.mark.timeout(30)
async def test_many_cancelled_and_timed_out_waiters_leave_nothing() -> None:
    lim = ap.RateLimiter(1000, burst=1)
    lim.pause(0.3)
    tasks = [asyncio.create_task(lim.aacquire(timeout=0.05)) for _ in range(50)]
    tasks += [asyncio.create_task(lim.aacquire()) for _ in range(50)]
    await queued(lim, 100)
    for t in tasks[50:75]:
        t.cancel()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert res[:50] == [False] * 50
    assert all(isinstance(r, asyncio.CancelledError) for r in res[50:75])
    assert res[75:] == [True] * 25
    assert lim.stats().granted == 25 and lim.waiting == 0
    gc.collect()


# --- pause ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_pause_from_another_thread_holds_every_waiter() -> None:
    lim = ap.RateLimiter(100)
    assert lim.try_acquire()
    t0 = time.monotonic()
    th = threading.Thread(target=lim.pause, args=(0.3,))
    th.start()
    th.join()
    assert not lim.try_acquire()
    assert lim.acquire()
    assert time.monotonic() - t0 >= 0.3 - EPS
    assert lim.stats().paused_s == pytest.approx(0.3, abs=0.01)


@pytest.mark.timeout(30)
async def test_pause_reaches_a_queued_task_and_only_extends() -> None:
    lim = ap.RateLimiter(5, burst=1)
    assert lim.try_acquire()
    t0 = time.monotonic()
    task = asyncio.create_task(lim.aacquire())
    await queued(lim, 1)
    lim.pause(datetime.timedelta(seconds=0.5))
    lim.pause(0.1)
    assert lim.paused_for > 0.3, "a shorter pause does not shorten"
    assert await task
    assert time.monotonic() - t0 >= 0.5 - EPS
    lim.pause(0)
    assert lim.paused_for == 0.0


# --- the event loop and signals -----------------------------------------------------------------


async def test_blocking_acquire_on_a_running_loop_refuses_to_wait() -> None:
    lim = ap.RateLimiter(1, burst=1)
    assert lim.acquire(), "free: no wait, no error"
    with pytest.raises(RuntimeError, match="aacquire"):
        lim.acquire()
    assert lim.acquire(timeout=0) is False
    assert lim.waiting == 0


@pytest.mark.timeout(30)
def test_a_waiter_whose_loop_closed_does_not_hold_up_the_queue() -> None:
    # As with asyncio's own locks, the limiter keeps a parked task's future (the task stays
    # reachable); its loop closing must not stall the waiters behind it.
    lim = ap.RateLimiter(10, burst=1)
    assert lim.try_acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(lim.aacquire())
    loop.run_until_complete(queued(lim, 1))
    loop.close()  # the task is never resumed, never cancelled
    assert lim.acquire(timeout=5), "served after the dead task's turn"
    assert lim.waiting == 0
    del task


async def test_rate_limited_execute_on_a_running_loop_refuses_to_wait() -> None:
    lim = ap.RateLimiter(1, burst=1)
    agent = ap.RateLimitedAgent(lambda x: x, lim)
    assert agent.execute(1) == 1, "free: no wait, no error"
    with pytest.raises(RuntimeError, match="aexecute"):
        agent.execute(2)
    assert lim.waiting == 0 and lim.stats().granted == 1.0


class Interrupted(Exception):
    pass


@pytest.mark.timeout(20)
def test_acquire_is_interruptible() -> None:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    lim = ap.RateLimiter(0.01, burst=1)  # next unit in 100 s
    assert lim.try_acquire()
    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(Interrupted):
            lim.acquire()
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    assert lim.waiting == 0 and lim.stats().granted == 1.0


# --- RateLimitedAgent -------------------------------------------------------------------------


class RateLimitError(Exception):
    """Shaped like ``openai.RateLimitError``: a status code and the response's headers."""

    def __init__(self, headers: dict[str, str], status_code: int = 429) -> None:
        super().__init__(f"Error code: {status_code}")
        self.status_code = status_code
        self.headers = headers


class Flaky:
    """Raises ``errors`` in turn on its first calls, then echoes; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, x: object) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return x


def test_rate_limited_agent_takes_every_limit_with_its_cost() -> None:
    rpm = ap.RateLimiter(1000, burst=100)
    tpm = ap.RateLimiter(10_000, burst=1000)
    agent = ap.RateLimitedAgent(str.upper, rpm, (tpm, len))
    assert agent.execute("hello") == "HELLO"
    assert agent.execute("hi") == "HI"
    assert rpm.stats().granted == 2.0 and tpm.stats().granted == 7.0
    assert agent.limits == ((rpm, None), (tpm, len))
    assert isinstance(agent, ap.Agent)
    assert "RateLimitedAgent(" in repr(agent)
    assert weakref.ref(agent)() is agent


@pytest.mark.timeout(30)
def test_rate_limited_agent_waits_for_the_rate() -> None:
    lim = ap.RateLimiter(10, burst=1)
    agent = ap.RateLimitedAgent(lambda x: x, lim)
    t0 = time.monotonic()
    assert [agent.execute(i) for i in range(4)] == [0, 1, 2, 3]
    assert time.monotonic() - t0 >= 0.3 - EPS, "calls went faster than the limit"
    assert lim.stats().waited == 3


@pytest.mark.timeout(30)
async def test_rate_limited_agent_async_shapes_share_the_limit() -> None:
    lim = ap.RateLimiter(20, burst=2)
    tokens = ap.RateLimiter(1000, burst=50)

    async def shout(x: str) -> str:
        await asyncio.sleep(0)
        return x.upper()

    a = ap.RateLimitedAgent(shout, lim, (tokens, lambda s: float(len(s))))
    b = ap.RateLimitedAgent(str.lower, lim)  # a blocking agent, run in a thread by aexecute
    t0 = time.monotonic()
    out = await asyncio.gather(*(a.aexecute("ab") for _ in range(5)), b.aexecute("CD"))
    assert out == ["AB"] * 5 + ["cd"]
    assert time.monotonic() - t0 >= (6 - 2) / 20 - EPS
    assert lim.stats().granted == 6.0 and tokens.stats().granted == 10.0
    assert lim.waiting == 0


def test_a_429_with_a_retry_hint_pauses_every_limit_and_reraises_the_same_error() -> None:
    rpm, tpm = ap.RateLimiter(100), ap.RateLimiter(10_000)
    err = RateLimitError({"retry-after": "0.4"})
    agent = ap.RateLimitedAgent(Flaky(err), rpm, (tpm, lambda x: 10.0))
    with pytest.raises(RateLimitError) as info:
        agent.execute("x")
    assert info.value is err
    assert rpm.paused_for > 0.3 and tpm.paused_for > 0.3
    # Another caller sharing the limiter (through another agent) backs off too.
    other = ap.RateLimitedAgent(lambda x: x, rpm)
    t0 = time.monotonic()
    assert other.execute("y") == "y"
    assert time.monotonic() - t0 >= 0.3
    assert rpm.stats().paused_s >= 0.3


async def test_retry_after_ms_and_http_dates_are_hints_too() -> None:
    lim = ap.RateLimiter(100)
    err = RateLimitError({"retry-after-ms": "250", "retry-after": "9"})

    async def limited(x: object) -> object:
        raise err

    agent = ap.RateLimitedAgent(limited, lim)
    with pytest.raises(RateLimitError) as info:
        await agent.aexecute("x")
    assert info.value is err
    assert 0.15 < lim.paused_for <= 0.25, "retry-after-ms wins"


def test_a_real_httpx_429_pauses_the_limits() -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("POST", "https://api.example.invalid/v1/chat/completions")
    response = httpx.Response(429, headers={"Retry-After": "1"}, request=request)
    err = httpx.HTTPStatusError("429 Too Many Requests", request=request, response=response)
    lim = ap.RateLimiter(5)
    agent = ap.RateLimitedAgent(Flaky(err), lim)
    with pytest.raises(httpx.HTTPStatusError) as info:
        agent.execute({"prompt": "hi"})
    assert info.value is err
    assert 0.8 < lim.paused_for <= 1.0


@pytest.mark.parametrize(
    "err",
    [
        RateLimitError({}),  # 429 without a hint: nothing to go by
        RateLimitError({"retry-after": "soon"}),  # an unusable hint
        RateLimitError({"retry-after": "5"}, status_code=503),  # not a rate limit
        ValueError("boom"),
    ],
)
def test_other_errors_pause_nothing_and_pass_unchanged(err: Exception) -> None:
    lim = ap.RateLimiter(5)
    agent = ap.RateLimitedAgent(Flaky(err), lim)
    with pytest.raises(type(err)) as info:
        agent.execute("x")
    assert info.value is err
    assert lim.paused_for == 0.0 and lim.stats().paused_s == 0.0


def test_rate_limited_agent_composes_with_the_other_wrappers() -> None:
    lim = ap.RateLimiter(1000, burst=100)
    inner = Flaky()
    # A cache in front: hits take nothing from the limit.
    cached = ap.CachedAgent(ap.RateLimitedAgent(inner, lim))
    assert [cached.execute(k) for k in ("a", "b", "a", "a")] == ["a", "b", "a", "a"]
    assert inner.calls == 2 and lim.stats().granted == 2.0
    # A pool behind: the limited agent is itself an agent any wrapper takes.
    with ap.AgentPool(lambda: lambda x: x * 2, max_size=2) as pool:
        limited = ap.RateLimitedAgent(pool, lim)
        assert limited.execute(21) == 42
        outer = ap.RateLimitedAgent(limited, (lim, lambda x: 2.0))
        assert outer.execute(1) == 2
    assert lim.stats().granted == 2.0 + 1.0 + 3.0


@pytest.mark.timeout(30)
async def test_waits_are_reported_to_the_running_batch() -> None:
    from agentperf import _meter

    # Each call after the first waits up to 0.1 s, less by however long the machine took to
    # get from one call to the next: so the bound is on what each wait reported against the
    # limiter's own count of that wait, not on a fixed 0.2 s.
    lim = ap.RateLimiter(10, burst=1)
    agent = ap.RateLimitedAgent(lambda x: x, lim)
    meter = _meter.Meter()
    token = _meter.METER.set(meter)
    steps = []
    try:
        assert await agent.aexecute(1) == 1
        assert meter.throttled_s == 0.0, "no wait, nothing reported"
        for call in (agent.aexecute, None):
            before, waits_before = meter.throttled_s, lim.stats().wait_s
            if call is not None:
                assert await call(2) == 2
            else:
                # A worker thread runs in a copy of the context: the same meter.
                assert await asyncio.to_thread(agent.execute, 3) == 3
            steps.append((meter.throttled_s - before, lim.stats().wait_s - waits_before))
    finally:
        _meter.METER.reset(token)
    for reported, waited in steps:
        # The reported span holds the limiter's wait (it starts before the acquire queues and
        # ends after the grant), and is not much more.
        assert waited - 2 * EPS <= reported <= waited + 0.05, steps
    assert any(waited > 0 for _, waited in steps), steps
    assert meter.throttled_s == pytest.approx(lim.stats().wait_s, abs=0.05)


def test_rate_limited_agent_bad_arguments() -> None:
    lim = ap.RateLimiter(5)
    with pytest.raises(ValueError, match="limits"):
        ap.RateLimitedAgent(len)
    for i, bad in enumerate([5, (lim,), (lim, 2.0), ("x", len), [lim, len]]):
        with pytest.raises(TypeError, match=r"limits\[1\]"):
            ap.RateLimitedAgent(len, lim, bad)  # type: ignore[arg-type]
        assert i >= 0
    with pytest.raises(TypeError, match="agent"):
        ap.RateLimitedAgent(42, lim)
    agent = ap.RateLimitedAgent(len, (lim, lambda x: -1.0))
    with pytest.raises(ValueError, match="cost"):
        agent.execute("x")
    assert lim.stats().granted == 0.0
