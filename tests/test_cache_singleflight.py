"""Single-flight of CachedAgent: threads, tasks, failures, cancellation, re-entrancy."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest

import agentperf as ap


class Blocking:
    """A sync agent that holds every call until released; counts calls."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, x: Any) -> Any:
        with self.lock:
            self.calls += 1
        self.started.set()
        assert self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return {"out": x}


def _run_threads(n: int, fn: Any) -> list[Any]:
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = ("ok", fn())
        except BaseException as e:
            out[i] = ("err", e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    return [ts, out]


def _until(cond: Any, timeout: float = 10.0) -> None:
    """Wait (polling) until ``cond()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the state waited for never came"
        time.sleep(0.001)


async def _auntil(cond: Any, timeout: float = 10.0) -> None:
    """``_until`` for a task: yields to the loop between looks."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the state waited for never came"
        await asyncio.sleep(0.001)


def _wait_waiters(c: ap.CachedAgent, agent: Blocking, n: int) -> None:
    """Wait until the leader runs the agent and the other ``n - 1`` threads wait on it."""
    assert agent.started.wait(10)
    _until(lambda: c._waiters() == n - 1)


@pytest.mark.timeout(30)
def test_16_threads_one_call() -> None:
    agent = Blocking()
    c = ap.CachedAgent(agent)
    ts, out = _run_threads(16, lambda: c.execute("k"))
    _wait_waiters(c, agent, 16)
    agent.release.set()
    for t in ts:
        t.join()
    assert agent.calls == 1
    assert all(kind == "ok" for kind, _ in out)
    first = out[0][1]
    assert all(v is first for _, v in out), "every waiter receives the very same object"
    s = c.stats()
    assert (s.hits, s.misses) == (15, 1), "callers served by the in-flight call count as hits"
    assert c._in_flight() == 0


@pytest.mark.timeout(30)
def test_16_threads_shared_failure_is_not_cached() -> None:
    err = RuntimeError("agent failed")
    agent = Blocking(fail=err)
    c = ap.CachedAgent(agent)
    ts, out = _run_threads(16, lambda: c.execute("k"))
    _wait_waiters(c, agent, 16)
    agent.release.set()
    for t in ts:
        t.join()
    assert agent.calls == 1
    assert all(kind == "err" and e is err for kind, e in out), "the same exception object"
    assert c.stats().size == 0
    agent.fail = None
    assert c.execute("k") == {"out": "k"}
    assert agent.calls == 2


class Stop(BaseException):
    """A BaseException that is not an Exception (like KeyboardInterrupt)."""


@pytest.mark.timeout(30)
def test_thread_leader_base_exception_hands_the_call_on() -> None:
    calls = 0
    started = threading.Event()
    release = threading.Event()
    lock = threading.Lock()

    def agent(x: Any) -> Any:
        nonlocal calls
        with lock:
            calls += 1
            n = calls
        started.set()
        if n == 1:
            assert release.wait(10)
            raise Stop
        return "second"

    c = ap.CachedAgent(agent)
    leader_out: list[Any] = []

    def lead() -> None:
        try:
            c.execute("k")
        except Stop as e:
            leader_out.append(e)

    lt = threading.Thread(target=lead)
    lt.start()
    assert started.wait(10)
    ts, out = _run_threads(8, lambda: c.execute("k"))
    _until(lambda: c._waiters() == 8)
    release.set()
    lt.join()
    for t in ts:
        t.join()
    assert len(leader_out) == 1, "the leader gets its own BaseException"
    assert calls == 2, "one waiter ran the agent again; the key was not left stuck"
    assert [v for _, v in out] == ["second"] * 8
    assert c._in_flight() == 0


@pytest.mark.timeout(30)
async def test_100_tasks_one_call() -> None:
    calls = 0
    gate = asyncio.Event()

    async def agent(x: Any) -> Any:
        nonlocal calls
        calls += 1
        await gate.wait()
        return [x]

    c = ap.CachedAgent(agent)
    tasks = [asyncio.create_task(c.aexecute("k")) for _ in range(100)]
    await _auntil(lambda: c._waiters() == 99)
    gate.set()
    res = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r is res[0] for r in res)
    s = c.stats()
    assert (s.hits, s.misses) == (99, 1)
    assert c._in_flight() == 0


@pytest.mark.timeout(30)
async def test_100_tasks_shared_failure() -> None:
    calls = 0
    err = KeyError("nope")

    async def agent(x: Any) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise err

    c = ap.CachedAgent(agent)
    res = await asyncio.gather(*(c.aexecute("k") for _ in range(100)), return_exceptions=True)
    assert calls == 1
    assert all(r is err for r in res)
    assert c.stats().size == 0 and c._in_flight() == 0


@pytest.mark.timeout(30)
async def test_cancelled_async_leader_hands_the_call_on() -> None:
    calls = 0
    first_started = asyncio.Event()

    async def agent(x: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            await asyncio.sleep(60)
        await asyncio.sleep(0.01)
        return "done"

    c = ap.CachedAgent(agent)
    leader = asyncio.create_task(c.aexecute("k"))
    await first_started.wait()
    waiters = [asyncio.create_task(c.aexecute("k")) for _ in range(20)]
    await _auntil(lambda: c._waiters() == 20)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.gather(*waiters) == ["done"] * 20
    assert calls == 2
    assert c._in_flight() == 0
    assert await c.aexecute("k") == "done" and calls == 2


@pytest.mark.timeout(30)
async def test_cancelled_waiters_leak_nothing() -> None:
    gate = asyncio.Event()
    calls = 0

    async def agent(x: Any) -> Any:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "v"

    c = ap.CachedAgent(agent)
    leader = asyncio.create_task(c.aexecute("k"))
    await _auntil(lambda: c._in_flight() == 1)
    waiters = [asyncio.create_task(c.aexecute("k")) for _ in range(50)]
    await _auntil(lambda: c._waiters() == 50)
    for w in waiters[::2]:
        w.cancel()
    await _auntil(lambda: c._waiters() == 25)
    gate.set()
    assert await leader == "v"
    res = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in res[::2])
    assert res[1::2] == ["v"] * 25
    assert calls == 1 and c._in_flight() == 0


@pytest.mark.timeout(30)
async def test_timeout_of_a_waiter_then_others_finish() -> None:
    gate = asyncio.Event()

    async def agent(x: Any) -> Any:
        await gate.wait()
        return "v"

    c = ap.CachedAgent(agent)
    leader = asyncio.create_task(c.aexecute("k"))
    await _auntil(lambda: c._in_flight() == 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.aexecute("k"), 0.02)
    gate.set()
    assert await leader == "v"
    assert await c.aexecute("k") == "v"


@pytest.mark.timeout(30)
async def test_threads_and_tasks_share_one_flight() -> None:
    agent = Blocking()
    c = ap.CachedAgent(agent)
    ts, out = _run_threads(4, lambda: c.execute("k"))
    assert await asyncio.to_thread(agent.started.wait, 10)
    tasks = [asyncio.create_task(c.aexecute("k")) for _ in range(10)]
    await _auntil(lambda: c._waiters() == 13)
    agent.release.set()
    res = await asyncio.gather(*tasks)
    for t in ts:
        await asyncio.to_thread(t.join)
    assert agent.calls == 1
    assert all(r == {"out": "k"} for r in res)
    assert all(v == {"out": "k"} for _, v in out)


@pytest.mark.timeout(30)
def test_reentrant_sync_call_raises() -> None:
    box: dict[str, Any] = {}

    def agent(x: Any) -> Any:
        if x == "outer":
            try:
                box["cache"].execute("outer")
            except RuntimeError as e:
                box["err"] = e
            return box["cache"].execute("inner")  # another key is fine
        return "inner-value"

    c = ap.CachedAgent(agent)
    box["cache"] = c
    assert c.execute("outer") == "inner-value"
    assert "re-entrant" in str(box["err"])
    assert c._in_flight() == 0


@pytest.mark.timeout(30)
async def test_reentrant_async_call_raises() -> None:
    box: dict[str, Any] = {}

    async def agent(x: Any) -> Any:
        if x == "outer":
            with pytest.raises(RuntimeError, match="re-entrant"):
                await box["cache"].aexecute("outer")
            with pytest.raises(RuntimeError, match="re-entrant"):
                box["cache"].execute("outer")  # blocking the loop thread would deadlock too
            return await box["cache"].aexecute("inner")
        return "inner-value"

    c = ap.CachedAgent(agent)
    box["cache"] = c
    assert await c.aexecute("outer") == "inner-value"
    assert c._in_flight() == 0


@pytest.mark.timeout(30)
def test_invalidate_during_flight_is_not_cached() -> None:
    agent = Blocking()
    c = ap.CachedAgent(agent)
    ts, out = _run_threads(3, lambda: c.execute("k"))
    _wait_waiters(c, agent, 3)
    assert c.invalidate("k") is False
    agent.release.set()
    for t in ts:
        t.join()
    assert [v for _, v in out] == [{"out": "k"}] * 3
    assert c.stats().size == 0, "a result invalidated while in flight is not cached"
    c.execute("k")
    assert agent.calls == 2


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_many_threads_many_keys() -> None:
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def agent(x: int) -> int:
        with lock:
            calls[x] = calls.get(x, 0) + 1
        time.sleep(0.001)
        return x * 10

    c = ap.CachedAgent(agent, max_size=1000)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(300):
                k = (seed * 7 + i) % 50
                assert c.execute(k) == k * 10
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert all(n == 1 for n in calls.values()), calls
    s = c.stats()
    assert s.hits + s.misses == 16 * 300
    assert c._in_flight() == 0


# ------------------------------------------------------------------------------ corrections


def _tb_len(e: BaseException) -> int:
    n, tb = 0, e.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


@pytest.mark.timeout(60)
def test_a_shared_failure_counts_misses_and_keeps_its_traceback_short() -> None:
    n = 300
    err = ConnectionError("429 Too Many Requests")
    agent = Blocking(fail=err)
    c = ap.CachedAgent(agent)
    ts, out = _run_threads(n, lambda: c.execute("k"))
    _wait_waiters(c, agent, n)
    agent.release.set()
    for t in ts:
        t.join()
    assert agent.calls == 1
    assert all(kind == "err" and e is err for kind, e in out), "the leader's exception object"
    s = c.stats()
    assert (s.hits, s.misses, s.coalesced) == (0, n, n - 1), s
    assert s.hit_rate == 0.0
    # Each raise appends the raising frames to the one shared traceback; it must not keep
    # one more frame per caller.
    assert _tb_len(err) < 20, _tb_len(err)
    agent.fail = None
    c.execute("k")
    ts, out = _run_threads(8, lambda: c.execute("k"))
    for t in ts:
        t.join()
    s = c.stats()
    assert (s.hits, s.misses, s.coalesced) == (8, n + 1, n - 1), "hits from the cache"


@pytest.mark.timeout(30)
def test_coalesced_counts_callers_served_by_a_successful_flight() -> None:
    agent = Blocking()
    c = ap.CachedAgent(agent)
    ts, _ = _run_threads(16, lambda: c.execute("k"))
    _wait_waiters(c, agent, 16)
    agent.release.set()
    for t in ts:
        t.join()
    assert agent.calls == 1
    s = c.stats()
    assert (s.hits, s.misses, s.coalesced) == (15, 1, 15)
    assert "coalesced=15" in repr(s)
    assert ap.Cache().stats().coalesced == 0


@pytest.mark.timeout(60)
async def test_a_shared_async_failure_counts_misses_and_keeps_its_traceback_short() -> None:
    n = 1000
    err = ConnectionError("429 Too Many Requests")
    gate = asyncio.Event()
    calls = 0

    async def agent(x: Any) -> Any:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise err

    c = ap.CachedAgent(agent)
    tasks = [asyncio.create_task(c.aexecute("k")) for _ in range(n)]
    await _auntil(lambda: c._waiters() == n - 1)
    gate.set()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(r is err for r in res)
    s = c.stats()
    assert (s.hits, s.misses, s.coalesced) == (0, n, n - 1), s
    assert _tb_len(err) < 20, _tb_len(err)


@pytest.mark.timeout(30)
async def test_sync_execute_on_a_running_loop_refuses_to_wait_for_a_flight() -> None:
    agent = Blocking()
    c = ap.CachedAgent(agent)
    leader = threading.Thread(target=lambda: c.execute("k"))
    leader.start()
    assert await asyncio.to_thread(agent.started.wait, 10)
    # Old behaviour: the loop blocked until the leader finished (released here after 2 s).
    timer = threading.Timer(2.0, agent.release.set)
    timer.start()
    try:
        with pytest.raises(RuntimeError, match=r"await cached\.aexecute\(\.\.\.\)"):
            c.execute("k")
    finally:
        agent.release.set()
        timer.cancel()
        await asyncio.to_thread(leader.join)
    assert c.execute("k") == {"out": "k"}, "a hit never waits, so it is allowed"
    assert await c.aexecute("k") == {"out": "k"}
    assert agent.calls == 1 and c._in_flight() == 0


class ForkAgent:
    """Blocks its first call in the parent until released; in a forked child, answers at once."""

    def __init__(self) -> None:
        self.parent = os.getpid()
        self.started = threading.Event()
        self.release = threading.Event()

    def execute(self, x: Any) -> Any:
        if os.getpid() == self.parent:
            self.started.set()
            assert self.release.wait(20)
            return ("parent", x)
        return ("child", x)

    async def aexecute(self, x: Any) -> Any:
        return self.execute(x)


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_key_in_flight_at_fork_is_not_in_flight_in_the_child() -> None:
    agent = ForkAgent()
    c = ap.CachedAgent(agent)
    leader = threading.Thread(target=lambda: c.execute("k"))
    leader.start()
    assert agent.started.wait(10)
    followers, out = _run_threads(2, lambda: c.execute("k"))
    _until(lambda: c._waiters() == 2)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            signal.alarm(10)
            assert c.execute("k") == ("child", "k")
            assert c.execute("k") == ("child", "k")
            assert c._in_flight() == 0
            code = 0
        finally:
            os._exit(code)
    code = _wait_child(pid, 30)
    agent.release.set()
    leader.join(10)
    for t in followers:
        t.join(10)
    assert code == 0, "the child's execute of the parent's in-flight key never returned"
    assert [v for _, v in out] == [("parent", "k")] * 2
    assert c.execute("k") == ("parent", "k")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_task_waiting_at_fork_leads_in_the_child() -> None:
    agent = ForkAgent()
    c = ap.CachedAgent(agent)
    leader = threading.Thread(target=lambda: c.execute("k"))
    leader.start()
    assert await asyncio.to_thread(agent.started.wait, 10)
    follower = asyncio.create_task(c.aexecute("k"))
    await _auntil(lambda: c._waiters() == 1)
    loop = asyncio.get_running_loop()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            signal.alarm(10)
            # asyncio forgets the running loop in a child; this test goes on with it.
            asyncio.events._set_running_loop(loop)
            got = await asyncio.wait_for(follower, 5)
            assert got == ("child", "k"), got
            code = 0
        finally:
            os._exit(code)
    code = await asyncio.to_thread(_wait_child, pid, 30)
    agent.release.set()
    await asyncio.to_thread(leader.join, 10)
    assert await follower == ("parent", "k")
    assert code == 0, "a task of the forking thread's loop waited forever in the child"
