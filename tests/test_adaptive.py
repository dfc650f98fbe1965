"""AdaptiveConcurrency: the AIMD rule on a manual clock, the permit interface on a real loop, and
a backend whose capacity halves mid-run."""

from __future__ import annotations

import asyncio
import datetime
import random
import threading
import weakref
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentperf as ap


class Status(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(initial: int = 16, lo: int = 1, hi: int = 256) -> tuple[ap.AdaptiveConcurrency, Clock]:
    clock = Clock()
    return ap.AdaptiveConcurrency(initial, lo, hi, _clock=clock), clock


def fill(ctl: ap.AdaptiveConcurrency) -> int:
    """Take every free slot; how many were taken."""
    n = 0
    while ctl.try_acquire():
        n += 1
    return n


def succeed_saturated(ctl: ap.AdaptiveConcurrency, n: int, latency: float = 1.0) -> None:
    """``n`` successful calls, each finishing while every slot is in use."""
    fill(ctl)
    for _ in range(n):
        ctl.release(latency)
        fill(ctl)


def httpx_503() -> httpx.HTTPStatusError:
    req = httpx.Request("GET", "http://127.0.0.1/")
    return httpx.HTTPStatusError("busy", request=req, response=httpx.Response(503, request=req))


# --- configuration and snapshot --------------------------------------------------------------


def test_defaults() -> None:
    ctl = ap.AdaptiveConcurrency()
    assert (ctl.initial, ctl.min, ctl.max, ctl.limit, ctl.in_flight) == (16, 1, 256, 16, 0)
    assert ctl.stats() == ap.AdaptiveStats(16, 0, 0, 0, 0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"initial": 0}, ValueError, "initial=0"),
        ({"min": 0}, ValueError, "min=0"),
        ({"max": 0, "initial": 1}, ValueError, "max=0"),
        ({"min": 5, "max": 4, "initial": 4}, ValueError, "min=5"),
        ({"initial": 300}, ValueError, "initial=300"),
        ({"initial": 2, "min": 4}, ValueError, "initial=2"),
        ({"initial": 16.0}, TypeError, "initial=16.0"),
        ({"max": True}, TypeError, "max=True"),
        ({"min": "1"}, TypeError, "min='1'"),
    ],
)
def test_bad_bounds_name_field_and_value(
    kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        ap.AdaptiveConcurrency(**kwargs)


def test_repr_weakref_and_unmatched_release() -> None:
    ctl = ap.AdaptiveConcurrency(initial=3, min=2, max=9)
    assert repr(ctl) == "AdaptiveConcurrency(initial=3, min=2, max=9, limit=3, in_flight=0)"
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        ctl.release(0.1)
    r = weakref.ref(ctl)
    del ctl
    assert r() is None


def test_bad_latency_is_refused_and_leaves_the_slot_held() -> None:
    ctl = ap.AdaptiveConcurrency(initial=2)
    assert ctl.try_acquire()
    for bad, error in ((None, TypeError), (-1.0, ValueError), (float("nan"), ValueError)):
        with pytest.raises(error, match="latency_s="):
            ctl.release(bad)  # type: ignore[arg-type]
        assert ctl.in_flight == 1
    ctl.release(datetime.timedelta(milliseconds=250))  # type: ignore[arg-type]
    assert ctl.in_flight == 0 and ctl.stats().rtt_s == pytest.approx(0.25)


def test_an_error_whose_attributes_raise_is_read_safely() -> None:
    class Weird(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("no status")

    ctl = ap.AdaptiveConcurrency(initial=4)
    assert ctl.try_acquire()
    ctl.release(0.1, Weird())
    assert ctl.limit == 4 and ctl.in_flight == 0


# --- the AIMD rule, on a manual clock ---------------------------------------------------------


def test_additive_increase_one_per_limits_worth_of_successes() -> None:
    ctl, _ = make(initial=4, hi=100)
    for limit in range(4, 30):
        assert ctl.limit == limit
        succeed_saturated(ctl, limit - 1)
        assert ctl.limit == limit  # not yet: one success short
        succeed_saturated(ctl, 1)
    assert ctl.limit == 30 and ctl.stats().increases == 26


def test_no_increase_while_the_limit_is_not_in_use() -> None:
    ctl, _ = make(initial=8, hi=100)
    for _ in range(500):
        assert ctl.try_acquire()
        ctl.release(0.5)  # one call at a time: no evidence for more than 8
    assert ctl.limit == 8 and ctl.stats().increases == 0
    assert ctl.stats().rtt_s == pytest.approx(0.5)


def test_never_above_max() -> None:
    ctl, _ = make(initial=4, hi=6)
    succeed_saturated(ctl, 1000)
    assert ctl.limit == 6 and ctl.stats().increases == 2


@pytest.mark.parametrize(
    "exc", [Status(429), Status(503), TimeoutError(), asyncio.TimeoutError(), httpx_503()]
)
def test_overload_halves_the_limit(exc: BaseException) -> None:
    ctl, _ = make(initial=16)
    assert ctl.try_acquire()
    ctl.release(0.1, exc)
    assert ctl.limit == 8 and ctl.stats().decreases == 1


@pytest.mark.parametrize(
    "exc", [Status(400), Status(500), ValueError(), asyncio.CancelledError(), KeyboardInterrupt()]
)
def test_other_outcomes_change_nothing(exc: BaseException) -> None:
    ctl, _ = make(initial=16)
    fill(ctl)
    for _ in range(100):
        ctl.release(0.1, exc)
        fill(ctl)
    s = ctl.stats()
    assert (s.limit, s.increases, s.decreases, s.rtt_s) == (16, 0, 0, 0.0)


def test_at_most_one_decrease_per_round_trip() -> None:
    ctl, clock = make(initial=64)
    succeed_saturated(ctl, 10, latency=1.0)  # smoothed RTT 1 s
    assert ctl.stats().rtt_s == pytest.approx(1.0)
    limit = ctl.limit
    clock.now = 200.0
    ctl.release(0.5, Status(503))  # sent at 199.5
    assert ctl.limit == limit // 2
    # Sent after that decrease, but it answers within one RTT of it: ignored.
    clock.now = 200.6
    ctl.release(0.3, Status(503))
    assert ctl.limit == limit // 2
    # A call sent before the decrease (under the old limit) says nothing about the new one,
    # even when it answers more than one RTT later (a slow timeout).
    clock.now = 203.0
    ctl.release(5.0, TimeoutError())
    assert ctl.limit == limit // 2
    # Sent after the decrease, answered more than one RTT after it: a new signal.
    clock.now = 201.5
    ctl.release(0.4, Status(429))
    assert ctl.limit == limit // 4 and ctl.stats().decreases == 2


def test_overload_within_a_round_trip_withdraws_the_refused_slot() -> None:
    ctl, clock = make(initial=8, hi=8)
    succeed_saturated(ctl, 3, latency=1.0)
    assert ctl.limit == 8 and ctl.in_flight == 8
    clock.now = 200.0
    ctl.release(0.2, Status(503))  # the cut: 8 -> 4, with 7 still in flight
    assert (ctl.limit, ctl.in_flight) == (4, 7)
    clock.now = 200.1
    ctl.release(0.05, Status(503))  # in the cool-down, calls in flight above the limit: no-op
    assert (ctl.limit, ctl.in_flight) == (4, 6)
    for _ in range(4):
        ctl.release(0.05, ValueError())  # neutral outcomes: 2 in flight under a limit of 4
    assert fill(ctl) == 2 and ctl.in_flight == 4
    ctl.release(0.0, Status(503))  # refused at once, in the cool-down: slot withdrawn
    assert (ctl.limit, ctl.in_flight) == (3, 3) and not ctl.try_acquire()
    assert ctl.stats().decreases == 2


@pytest.mark.timeout(30)
async def test_a_backend_refusing_at_once_is_not_flooded() -> None:
    """With no time passing (a manual clock) every refusal falls within one round trip of the
    first cut; the refused calls' slots must not be handed straight back to callers that
    would be refused as fast."""
    clock = Clock()
    ctl = ap.AdaptiveConcurrency(initial=8, min=1, max=8, _clock=clock)
    assert ctl.try_acquire()
    clock.now += 1.0
    ctl.release(1.0)  # an RTT sample of one second
    clock.now += 10.0
    capacity, load, refused = 2, 0, 0
    gate = asyncio.Event()

    async def backend() -> None:
        nonlocal load
        load += 1
        try:
            if load > capacity:
                raise Status(503)
            await gate.wait()
        finally:
            load -= 1

    async def caller() -> None:
        nonlocal refused
        for _ in range(50):
            try:
                async with ctl.slot():
                    await backend()
                return
            except Status:
                refused += 1
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    for _ in range(200):
        await asyncio.sleep(0)
    assert refused <= 10, refused  # the 6 over capacity at the start, then very few
    assert ctl.in_flight == capacity
    gate.set()
    await asyncio.gather(*tasks)
    assert ctl.in_flight == 0


def test_never_below_min_and_in_flight_may_exceed_a_lowered_limit() -> None:
    ctl, clock = make(initial=8, lo=3, hi=8)
    assert fill(ctl) == 8
    for _ in range(5):
        clock.now += 10.0
        ctl.release(0.0, Status(503))
    s = ctl.stats()
    assert (s.limit, s.in_flight) == (3, 3) and s.decreases == 2  # 8 -> 4 -> 3, then at min
    assert not ctl.try_acquire()
    ctl.release(0.0)
    assert ctl.try_acquire() and not ctl.try_acquire()


def test_sawtooth_stays_between_half_and_capacity() -> None:
    """A simulated backend of capacity 10 (overload when more are in flight): the limit
    oscillates under AIMD between about half the capacity and just above it."""
    ctl, clock = make(initial=2, hi=100)
    seen: list[int] = []
    for _ in range(3000):
        clock.now += 0.1
        fill(ctl)
        if ctl.in_flight > 10:
            ctl.release(0.1, Status(503))
        else:
            ctl.release(1.0)
        seen.append(ctl.limit)
    tail = seen[1000:]
    assert max(tail) <= 12 and min(tail) >= 4
    assert ctl.stats().decreases >= 3


# --- the permit interface, on a real loop -----------------------------------------------------


@pytest.mark.timeout(10)
async def test_waiters_are_served_first_come_first_served() -> None:
    ctl = ap.AdaptiveConcurrency(initial=1, min=1, max=1)
    await ctl.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await ctl.acquire()
        order.append(i)
        await asyncio.sleep(0)
        ctl.release(0.01)

    tasks = [asyncio.create_task(waiter(i)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert ctl.stats().waiting == 6
    assert not ctl.try_acquire()  # a newcomer does not pass the queue
    ctl.release(0.01)
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert ctl.in_flight == 0


@pytest.mark.timeout(10)
async def test_raising_the_limit_wakes_waiters() -> None:
    ctl = ap.AdaptiveConcurrency(initial=1, min=1, max=4)
    await ctl.acquire()
    got = [asyncio.create_task(ctl.acquire()) for _ in range(2)]
    await asyncio.sleep(0.01)
    ctl.release(0.01)  # a success at full use: the limit becomes 2, both waiters get in
    await asyncio.wait_for(asyncio.gather(*got), 5)
    assert (ctl.limit, ctl.in_flight) == (2, 2)


@pytest.mark.timeout(10)
async def test_lowering_the_limit_lets_calls_in_flight_finish() -> None:
    ctl = ap.AdaptiveConcurrency(initial=4, min=1, max=4)
    fail, finish = asyncio.Event(), asyncio.Event()
    done: list[int] = []

    async def call(i: int) -> None:
        async with ctl.slot():
            if i == 0:
                await fail.wait()
                raise Status(503)
            await finish.wait()
            done.append(i)

    calls = [asyncio.create_task(call(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert ctl.in_flight == 4
    fail.set()
    await asyncio.sleep(0.01)
    assert ctl.limit == 2 and ctl.in_flight == 3  # none of the three was cancelled
    late = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0.01)
    assert not late.done()
    finish.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[0], Status) and results[1:] == [None, None, None]
    assert sorted(done) == [1, 2, 3]
    await asyncio.wait_for(late, 5)
    assert ctl.in_flight == 1


@pytest.mark.timeout(10)
async def test_cancelled_waiters_take_nothing() -> None:
    ctl = ap.AdaptiveConcurrency(initial=1, min=1, max=1)
    await ctl.acquire()
    waiting = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ctl.stats().waiting == 0
    # Granted, then cancelled before it ran: the slot goes to the next waiter.
    granted = asyncio.create_task(ctl.acquire())
    nxt = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0.01)
    ctl.release(0.01)
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    await asyncio.wait_for(nxt, 5)
    assert ctl.in_flight == 1
    ctl.release(0.01)
    assert ctl.stats().in_flight == 0 and ctl.stats().waiting == 0


@pytest.mark.timeout(10)
async def test_slot_measures_latency_and_passes_the_error_on() -> None:
    clock = Clock()
    ctl = ap.AdaptiveConcurrency(initial=8, _clock=clock)
    async with ctl.slot():
        clock.now += 2.0
    assert ctl.stats().rtt_s == pytest.approx(2.0)
    with pytest.raises(Status):
        async with ctl.slot():
            clock.now += 5.0
            raise Status(429)
    assert ctl.limit == 4 and ctl.in_flight == 0


@pytest.mark.timeout(10)
async def test_release_from_another_thread_wakes_the_loop() -> None:
    ctl = ap.AdaptiveConcurrency(initial=1, min=1, max=1)
    await ctl.acquire()
    waiter = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0.01)
    t = threading.Thread(target=ctl.release, args=(0.01,))
    t.start()
    t.join()
    await asyncio.wait_for(waiter, 5)
    assert ctl.in_flight == 1


@pytest.mark.timeout(10)
async def test_a_slot_handed_over_from_another_thread_to_a_cancelled_waiter_comes_back() -> None:
    ctl = ap.AdaptiveConcurrency(initial=2, min=2, max=2)
    await ctl.acquire()
    await ctl.acquire()
    waiter = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0.01)
    # The other thread grants the waiter its slot; the hand-over waits for this loop, which
    # is blocked in join(), so the waiter is cancelled before the slot reaches it.
    t = threading.Thread(target=ctl.release, args=(0.01,))
    t.start()
    t.join()
    assert ctl.in_flight == 2 and ctl.stats().waiting == 0
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)
    assert ctl.in_flight == 1
    assert ctl.try_acquire()


class Exit(BaseException):
    pass


@pytest.mark.timeout(10)
async def test_a_waiter_ended_by_another_base_exception_leaks_no_slot() -> None:
    ctl = ap.AdaptiveConcurrency(initial=1, min=1, max=1)
    await ctl.acquire()
    coro = ctl.acquire()
    coro.send(None)  # parked on its future
    t = threading.Thread(target=ctl.release, args=(0.01,))
    t.start()
    t.join()  # the grant is on its way to this loop
    with pytest.raises(Exit):
        coro.throw(Exit())
    await asyncio.sleep(0.01)
    assert ctl.in_flight == 0 and ctl.try_acquire()


@pytest.mark.timeout(10)
async def test_with_a_retrying_agent_a_sleeping_retry_holds_no_slot() -> None:
    """The recipe of the class docstring: a slot per agent call, inside the retry loop."""
    ctl = ap.AdaptiveConcurrency(initial=4, min=1, max=4)
    calls = 0

    async def backend(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Status(503)
        return x

    class Slotted:
        async def aexecute(self, x: int) -> int:
            async with ctl.slot():
                return await backend(x)

        def execute(self, x: int) -> int:
            raise NotImplementedError

    agent = ap.RetryingAgent(Slotted(), ap.RetryPolicy(backoff=0.2, jitter=False))
    task = asyncio.create_task(agent.aexecute(7))
    await asyncio.sleep(0.1)  # the first call was refused; the retry sleeps
    assert calls == 1 and ctl.in_flight == 0 and ctl.limit == 2
    assert await task == 7 and calls == 2 and ctl.in_flight == 0


# --- a backend whose capacity halves mid-run --------------------------------------------------


@pytest.mark.timeout(60)
async def test_capacity_halving_mid_run_still_completes_every_item() -> None:
    items = 400
    capacity = 8
    load = 0
    completed = 0
    overloads = 0
    limits_before_drop: list[int] = []
    limits_after_drop: list[int] = []
    ctl = ap.AdaptiveConcurrency(initial=2, min=1, max=64)

    async def backend(x: int) -> int:
        nonlocal load
        load += 1
        try:
            if load > capacity:
                raise Status(503)
            await asyncio.sleep(0.005)
            return x * 2
        finally:
            load -= 1

    async def item(x: int) -> int:
        nonlocal completed, capacity, overloads
        while True:
            try:
                async with ctl.slot():
                    out = await backend(x)
            except Status:
                overloads += 1
                await asyncio.sleep(0.002)  # backs off holding no slot
                continue
            completed += 1
            if completed < items // 2:
                limits_before_drop.append(ctl.limit)
            elif completed == items // 2:
                capacity = 4
            elif completed > items // 2:
                limits_after_drop.append(ctl.limit)
            return out

    outs = await asyncio.gather(*(item(i) for i in range(items)))
    assert outs == [2 * i for i in range(items)]
    s = ctl.stats()
    assert s.in_flight == 0 and s.waiting == 0 and s.decreases >= 2
    # It climbed from 2 to the first capacity of 8 ...
    assert max(limits_before_drop) >= 7, limits_before_drop
    # ... then settles near the new capacity of 4: AIMD's sawtooth, from about half of it
    # to just above it, over the last half of the second phase.
    tail = limits_after_drop[len(limits_after_drop) // 2 :]

    assert 2 <= sum(tail) / len(tail) <= 6, tail
    assert max(tail) <= 8, tail
    assert overloads <= items // 4, overloads  # no retry storm


@pytest.mark.timeout(60)
def test_two_loops_in_two_threads_share_one_controller_without_leaks() -> None:
    """Slots handed between loops (call_soon_threadsafe), with waiters cancelled meanwhile:
    never more than the limit in flight, nothing leaked at the end."""
    ctl = ap.AdaptiveConcurrency(initial=3, min=3, max=3)
    lock = threading.Lock()
    now = peak = 0
    cancelled = 0

    async def job(rng: random.Random) -> None:
        nonlocal now, peak
        async with ctl.slot():
            with lock:
                now += 1
                peak = max(peak, now)
            try:
                await asyncio.sleep(rng.random() * 0.002)
            finally:
                with lock:
                    now -= 1

    async def main(seed: int) -> None:
        nonlocal cancelled
        rng = random.Random(seed)
        tasks = [asyncio.create_task(job(rng)) for _ in range(400)]
        for _ in range(100):
            await asyncio.sleep(rng.random() * 0.002)
            t = rng.choice(tasks)
            if t.cancel():
                with lock:
                    cancelled += 1
        await asyncio.gather(*tasks, return_exceptions=True)

    threads = [threading.Thread(target=asyncio.run, args=(main(s),)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = ctl.stats()
    assert (s.in_flight, s.waiting) == (0, 0)
    assert peak <= 3 and now == 0
    assert cancelled > 0


@given(
    bounds=st.tuples(st.integers(1, 8), st.integers(0, 8), st.integers(0, 40)),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["acquire", "acquire", "ok", "503", "400", "tick"]),
            st.sampled_from([0.0, 0.01, 0.3, 1.0, 2.0]),
        ),
        min_size=50,
        max_size=300,
    ),
)
def test_invariants_under_any_sequence(
    bounds: tuple[int, int, int], ops: list[tuple[str, float]]
) -> None:
    """Any sequence of acquires, outcomes and clock ticks: the limit stays in bounds, rises by
    at most one per success, never moves on a neutral error, halves at most once per RTT."""
    lo = bounds[0]
    initial = lo + bounds[1]
    hi = initial + bounds[2]
    ctl, clock = make(initial, lo, hi)
    held = 0
    last_halving = -1e9
    for op, x in ops:
        before = ctl.stats()
        if op == "acquire":
            got = ctl.try_acquire()
            assert got == (held < before.limit)
            held += got
        elif op == "tick":
            clock.now += x
        elif held:
            ctl.release(x, {"ok": None, "503": Status(503), "400": Status(400)}[op])
            held -= 1
            after = ctl.stats()
            if op == "ok":
                assert before.limit <= after.limit <= before.limit + 1
            elif op == "400":
                assert after.limit == before.limit
            else:
                assert after.limit <= before.limit
                if after.limit < before.limit - 1:  # a halving, not a withdrawn slot
                    assert clock.now - last_halving >= before.rtt_s
                    last_halving = clock.now
        s = ctl.stats()
        assert lo <= s.limit <= hi and s.in_flight == held and s.waiting == 0
