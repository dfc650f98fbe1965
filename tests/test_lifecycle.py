"""Lifecycle: fork, interpreter exit with everything still open, close() during calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import agentperf as ap
from agentperf._agentperf import _cleanup_thread_state

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Agent:
    closed: list[Agent]

    def __init__(self, closed: list[Agent], delay: float = 0.0) -> None:
        self.closed_list = closed
        self.delay = delay

    def execute(self, x: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        return ("out", x)

    async def aexecute(self, x: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        return ("out", x)

    def close(self) -> None:
        self.closed_list.append(self)


def wait_for(cond: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


async def await_state(cond: Any, seconds: float = 5.0) -> None:
    """Poll ``cond`` from a coroutine until it holds; fail after ``seconds``."""
    end = time.monotonic() + seconds
    while not cond():  # the state is in Rust: no event to wait on
        assert time.monotonic() < end, f"not reached in {seconds} s"
        await asyncio.sleep(0.001)


# --- fork ---------------------------------------------------------------------------------


def in_child(fn: Any) -> dict[str, Any]:
    """Run ``fn()`` in a forked child; return the dict it returns (or its error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            try:
                out = {"ok": True, **fn()}
            except BaseException as e:
                import traceback

                out = {"ok": False, "error": traceback.format_exc() + repr(e)}
                code = 1
            os.write(w, json.dumps(out, default=repr).encode())
            os.close(w)
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert chunks, f"the child wrote nothing (status {status})"
    out: dict[str, Any] = json.loads(b"".join(chunks))
    assert out["ok"], out.get("error")
    assert os.waitstatus_to_exitcode(status) == 0
    return out


@fork_only
@pytest.mark.timeout(60)
def test_child_uses_what_it_inherited_and_new_ones() -> None:
    closed: list[Agent] = []
    pool = ap.AgentPool(lambda: Agent(closed), max_size=3, initial_size=2, cleanup_interval=0.02)
    cache = ap.Cache(max_size=100, ttl=None, cleanup_interval=0.02)
    cached = ap.CachedAgent(lambda x: ("c", x), max_size=10, ttl=None)
    sem = ap.Semaphore(2)
    assert pool.execute(1) == ("out", 1)
    cache.set("parent", 1)
    assert cached.execute(1) == ("c", 1)
    leased = pool.acquire()  # leased by the parent at the fork
    assert sem.acquire()

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # The inherited pool: the parent's lease is written off, the rest works.
        s = pool.stats()
        out["child_stats"] = [s.size, s.active_count, s.acquired, s.released]
        assert s.active_count == 0 and s.acquired == s.released, s
        try:
            pool.release(leased)
            raise AssertionError("releasing the parent's lease in the child must fail")
        except ValueError:
            pass
        assert pool.execute(2) == ("out", 2)
        with pool.agent() as a:
            assert a.execute(3) == ("out", 3)
        assert asyncio.run(pool.aexecute(4)) == ("out", 4)
        s = pool.stats()
        assert s.size == s.idle_count and s.created - s.destroyed == s.size, s
        # The inherited caches.
        assert cache.get("parent") == 1
        cache.set("child", 2)
        assert cache.get("child") == 2
        assert cached.execute(1) == ("c", 1) and cached.stats().hits >= 1
        assert cached.execute(2) == ("c", 2)
        # The inherited semaphore keeps the parent's count.
        assert sem.available == 1
        assert sem.acquire(timeout=0) is True
        assert sem.acquire(timeout=0) is False
        sem.release()

        async def amain() -> bool:
            return await sem.aacquire(timeout=1.0)

        assert asyncio.run(amain()) is True
        sem.release()
        sem.release()
        # New ones.
        with ap.AgentPool(lambda: Agent([]), max_size=2) as p2:
            assert p2.execute(5) == ("out", 5)
        s2 = ap.Semaphore(1)
        with s2:
            assert s2.available == 0
        # The cleanup thread runs again in the child and sweeps a short-TTL entry.
        swept = ap.Cache(max_size=10, ttl=0.02, cleanup_interval=0.02)
        swept.set("k", 1)
        running, tasks = _cleanup_thread_state()
        out["cleanup"] = [running, tasks]
        assert running and tasks >= 1, (running, tasks)
        assert wait_for(lambda: len(swept) == 0), "the cleanup thread did not sweep in the child"
        assert swept.stats().expirations == 1
        return out

    out = in_child(child)
    assert out["cleanup"][0] is True
    # The parent is untouched by what the child did.
    pool.release(leased)
    sem.release()
    assert sem.available == 2
    assert cache.get("child") is None and cache.get("parent") == 1
    s = pool.stats()
    assert s.active_count == 0 and s.acquired == s.released, s
    assert _cleanup_thread_state()[0] is True
    pool.close()
    cache.close()
    cached.close()
    assert len(closed) == s.created


@fork_only
@pytest.mark.timeout(60)
def test_fork_while_threads_use_the_pool() -> None:
    """A fork in the middle of thread traffic: the child's pool is consistent and usable."""
    closed: list[Agent] = []
    pool = ap.AgentPool(lambda: Agent(closed, 0.001), max_size=2, initial_size=2)
    cache = ap.CachedAgent(pool, max_size=50, ttl=0.05, cleanup_interval=0.01)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 2:
                    cache.execute((i, n % 20))
                else:
                    pool.execute(n)
            except ap.PoolTimeoutError:
                pass
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            time.sleep(0.02)

            def child() -> dict[str, Any]:
                s = pool.stats()
                assert s.active_count == 0 and s.waiting == 0, s
                assert s.acquired == s.released, s
                for i in range(20):
                    assert pool.execute(i) == ("out", i)
                    assert cache.execute(("c", i % 5)) == ("out", ("c", i % 5))
                s = pool.stats()
                assert s.created - s.destroyed == s.size == s.idle_count, s
                return {"size": s.size}

            in_child(child)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:3]
    s = pool.stats()
    assert s.active_count == 0 and s.acquired == s.released and s.waiting == 0, s
    cache.close()
    pool.close()
    assert len(closed) == s.created


FORK_FROM_CLOSE_SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    import agentperf as ap

    statuses, closers = [], set()

    class ForkingClose:
        def __call__(self, x):
            return x

        def close(self):
            closers.add(threading.get_ident())
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    pool = ap.AgentPool(
        ForkingClose, max_size=2, initial_size=0, idle_timeout=0.02, cleanup_interval=0.01
    )
    with pool:
        pool.execute(1)
        end = time.monotonic() + 10
        while not statuses and time.monotonic() < end:
            time.sleep(0.005)
    assert statuses == [7], statuses
    assert threading.get_ident() not in closers, "not closed by the cleanup thread"
    # The cleanup thread still serves other caches and pools afterwards.
    c = ap.Cache(max_size=10, ttl=0.01, cleanup_interval=0.01)
    c.set("k", 1)
    end = time.monotonic() + 10
    while len(c) and time.monotonic() < end:
        time.sleep(0.005)
    assert len(c) == 0
    print("ok", flush=True)
    """
)


@pytest.mark.timeout(120)
def test_fork_from_an_agents_close_on_the_cleanup_thread() -> None:
    """User code run by the cleanup thread (an agent's close()) may fork: the fork hooks must
    not wait for the round that thread itself is running."""
    p = subprocess.run(
        [sys.executable, "-c", FORK_FROM_CLOSE_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", (p.returncode, p.stderr[-2000:])


FORK_WHILE_CHURNING_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    import agentperf as ap

    stop = threading.Event()
    made = [0, 0, 0]

    def churn(kind):
        while not stop.is_set():
            if kind == 0:
                c = ap.Cache(max_size=10, ttl=1.0, cleanup_interval=0.01)
                c.set("k", 1)
            elif kind == 1:
                c = ap.CachedAgent(lambda x: x, max_size=10, ttl=1.0, cleanup_interval=0.01)
                c.execute(1)
            else:
                c = ap.AgentPool(lambda: (lambda x: x), max_size=2, cleanup_interval=0.01)
                c.execute(1)
            c.close()
            made[kind] += 1

    threads = [threading.Thread(target=churn, args=(i % 3,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    forks, end = 0, time.monotonic() + 15
    while forks < 300 and time.monotonic() < end:
        pid = os.fork()
        if pid == 0:
            c = ap.Cache(max_size=10, ttl=1.0, cleanup_interval=0.01)
            c.set("a", 1)
            ok = c.get("a") == 1
            with ap.AgentPool(lambda: (lambda x: x), max_size=1) as p:
                ok = ok and p.execute(2) == 2
            os._exit(0 if ok else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        forks += 1
    stop.set()
    for t in threads:
        t.join(10)
    assert forks >= 20 and min(made) > 0, (forks, made)
    print("ok", forks, flush=True)
    """
)


@fork_only
@pytest.mark.timeout(120)
def test_fork_while_threads_create_and_close_caches_and_pools() -> None:
    """Regression: the fork hook held the cleanup thread's registry lock, taken detached, and
    then needed the GIL back (and other at-fork handlers let other threads run) while a
    thread holding the GIL waited for that lock to register or unregister a cache or pool:
    the parent hung within seconds."""
    p = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_CHURNING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout.startswith("ok"), (p.returncode, p.stderr[-2000:])


AT_FORK_SCRIPT = textwrap.dedent(
    """
    import os
    import agentperf as ap
    from agentperf import _lifecycle
    from agentperf._agentperf import _cleanup_thread_state

    calls = []

    def boom():
        raise RuntimeError("boom")

    def child_works():
        # The core has resumed when the child's callbacks run: caches and pools work.
        calls.append("c2")
        c = ap.Cache(max_size=4, ttl=1.0, cleanup_interval=0.01)
        c.set("k", 1)
        calls.append(c.get("k") == 1 and _cleanup_thread_state()[0])
        c.close()

    _lifecycle.at_fork(
        before=lambda: calls.append("b1"),
        after_in_parent=lambda: calls.append("p1"),
        after_in_child=lambda: calls.append("c1"),
    )
    _lifecycle.at_fork(before=boom, after_in_parent=boom, after_in_child=boom)
    _lifecycle.at_fork(
        before=lambda: calls.append("b2"),
        after_in_parent=lambda: calls.append("p2"),
        after_in_child=child_works,
    )
    try:
        _lifecycle.at_fork(before=1)
        raise AssertionError("a non-callable was accepted")
    except TypeError as e:
        assert "before=1" in str(e), e
    pid = os.fork()
    if pid == 0:
        os._exit(0 if calls == ["b2", "b1", "c1", "c2", True] else 5)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert code == 0, code
    assert calls == ["b2", "b1", "p1", "p2"], calls
    print("ok", flush=True)
    """
)


@fork_only
@pytest.mark.timeout(60)
def test_parts_register_fork_callbacks_in_one_place() -> None:
    """``_lifecycle.at_fork``: before callbacks in reverse order of registration, the core
    quiesced after them and resumed before the after callbacks (which run in order); a
    callback that raises is logged and the others still run."""
    p = subprocess.run(
        [sys.executable, "-c", AT_FORK_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", (p.returncode, p.stderr[-2000:])
    for when in ("before", "after"):
        assert f"{when}-fork callback" in p.stderr, p.stderr[-2000:]
    assert p.stderr.count("RuntimeError: boom") == 3  # before, in the parent, in the child


def test_the_package_registers_one_fork_hook() -> None:
    """Fork handling lives in ``agentperf._lifecycle``: no other module of the package calls
    ``os.register_at_fork`` (parts register with ``_lifecycle.at_fork``)."""
    pkg = os.path.dirname(ap.__file__)
    found = []
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), encoding="utf-8") as f:
                if "register_at_fork(" in f.read():
                    found.append(name)
    assert found == ["_lifecycle.py"], found


# --- interpreter exit ---------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, threading, time
    import agentperf as ap

    class A:
        def execute(self, x):
            time.sleep(0.02)
            return x
        async def aexecute(self, x):
            await asyncio.sleep(3600)
        def close(self):
            pass

    pool = ap.AgentPool(A, max_size=2, initial_size=2, cleanup_interval=0.01, idle_timeout=5)
    held = [pool.acquire(), pool.acquire()]
    cache = ap.Cache(max_size=100, ttl=0.01, cleanup_interval=0.01)
    cache.set("a", 1)
    cached = ap.CachedAgent(lambda x: x, ttl=1.0, cleanup_interval=0.01)
    cached.execute(1)
    sem = ap.Semaphore(1)
    sem.acquire()

    def waiter(t):
        try:
            pool.acquire(timeout=t)
        except ap.PoolTimeoutError:
            pass

    # Threads blocked in Rust waits (some time out around the exit, some never).
    for t in (None, 0.05, 0.15, 0.2, 0.25):
        threading.Thread(target=waiter, args=(t,), daemon=True).start()
    for t in (None, 0.1, 0.2):
        threading.Thread(target=sem.acquire, args=(t,), daemon=True).start()
    # A blocking batch on its thread pool, and a cached agent waiting on another's call.
    slow_ex = ap.BatchExecutor(lambda x: (time.sleep(0.02), x)[1], max_concurrency=4)
    threading.Thread(target=slow_ex.execute, args=(range(10**6),), daemon=True).start()
    # Followers blocked (in Rust) on a leader that runs on a non-daemon thread.
    slow = ap.CachedAgent(lambda x: time.sleep(0.3), ttl=None)
    threading.Thread(target=slow.execute, args=(1,)).start()
    time.sleep(0.01)
    for _ in range(3):
        threading.Thread(target=slow.execute, args=(1,), daemon=True).start()

    def loop_thread():
        async def main():
            ex = ap.BatchExecutor(A().aexecute, max_concurrency=50)
            p2 = ap.AgentPool(A, max_size=1)
            asyncio.ensure_future(p2.aexecute(1))
            asyncio.ensure_future(p2.aacquire(timeout=None))
            asyncio.ensure_future(sem.aacquire())
            await ex.aexecute(range(1000))
        asyncio.run(main())

    threading.Thread(target=loop_thread, daemon=True).start()
    MODE
    time.sleep(0.2)
    print("bye", flush=True)
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "mode",
    [
        "pass",
        "asyncio.run(asyncio.sleep(0))",
        # The main thread itself has a running batch (and an open pool) when the loop ends.
        "ap.BatchExecutor(A().aexecute, max_concurrency=8).astream(range(100))",
    ],
)
def test_exit_with_everything_open_is_clean(mode: str) -> None:
    script = EXIT_SCRIPT.replace("MODE", mode)
    for _ in range(3):
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
        )
        took = time.monotonic() - t0
        assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
        assert p.stdout.strip() == "bye"
        for bad in ("Traceback", "panicked", "Fatal Python error", "PanicException", "Abort"):
            assert bad not in p.stderr, p.stderr[-2000:]
        assert took < 15, f"exit took {took:.1f} s"


DAEMON_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import agentperf as ap

    def slow(x=None):
        time.sleep(0.0005)  # releases the GIL: wakes up during finalization
        return x

    class A:
        def __call__(self, x):
            return x
        def close(self):
            slow()

    class Del:
        def __call__(self, x):
            return x
        def __del__(self):
            slow()

    via = sys.argv[1]
    if via == "pool":  # inside the agent call
        pool = ap.AgentPool(lambda: slow, max_size=4)
        op = pool.execute
    elif via == "cached":
        op = ap.CachedAgent(slow, ttl=None).execute
    elif via == "del":  # inside __del__: every release retires the agent (max_lifetime)
        op = ap.AgentPool(Del, max_size=4, initial_size=0, max_lifetime=0.0005).execute
    elif via == "keygen":  # inside key_generator, on hits
        cached = ap.CachedAgent(A(), ttl=None, key_generator=lambda x: slow(str(x % 10)))
        op = cached.execute
    else:
        # "factory": every acquire creates (agents are discarded on release); "close": inside
        # the discarded agent's close(); "check": inside check, on every reuse.
        pool = ap.AgentPool(
            (lambda: slow(A())) if via == "factory" else A,
            max_size=4,
            initial_size=0,
            check=(lambda a: slow(True)) if via == "check" else None,
        )

        def op(i):
            a = pool.acquire()
            pool.release(a, discard=via != "check")

    def loop():
        i = 0
        while True:
            i += 1
            op(i)

    for _ in range(4):
        threading.Thread(target=loop, daemon=True).start()
    time.sleep(0.1)
    """
)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("via", ["pool", "cached", "keygen", "factory", "check", "close", "del"])
def test_exit_with_daemon_threads_inside_user_code(via: str) -> None:
    """CPython <= 3.13 ends such threads with pthread_exit at exit; the process must still
    exit 0 (it aborted with SIGABRT whenever user code called from Rust was on the stack)."""
    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", DAEMON_SCRIPT, via], capture_output=True, text=True, timeout=30
        )
        assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
        assert "Fatal Python error" not in p.stderr and "panicked" not in p.stderr, p.stderr


# --- close() while calls are in flight ----------------------------------------------------


@pytest.mark.timeout(60)
def test_pool_close_with_calls_in_flight_and_waiters() -> None:
    """API.md: in-flight calls complete, their agents are destroyed on release, new acquires
    raise PoolClosedError, waiting acquirers get PoolClosedError."""
    closed: list[Agent] = []
    made: list[Agent] = []

    def factory() -> Agent:
        a = Agent(closed, delay=0.3)
        made.append(a)
        return a

    pool = ap.AgentPool(factory, max_size=3, initial_size=3, acquire_timeout=None)
    results: list[Any] = []
    waiter_errors: list[BaseException] = []
    started = threading.Barrier(4)

    def call(i: int) -> None:
        started.wait()
        results.append(pool.execute(i))

    def wait() -> None:
        try:
            pool.acquire()
        except BaseException as e:
            waiter_errors.append(e)

    callers = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in callers:
        t.start()
    started.wait()
    assert wait_for(lambda: pool.stats().active_count == 3)
    waiters = [threading.Thread(target=wait) for _ in range(4)]
    for t in waiters:
        t.start()
    assert wait_for(lambda: pool.stats().waiting == 4)
    pool.close()
    for t in waiters:
        t.join(5)
    assert len(waiter_errors) == 4
    assert all(isinstance(e, ap.PoolClosedError) for e in waiter_errors), waiter_errors
    # In-flight calls are still running, their agents not yet destroyed.
    assert closed == [] and pool.stats().active_count == 3
    with pytest.raises(ap.PoolClosedError):
        pool.acquire(timeout=0)
    with pytest.raises(ap.PoolClosedError):
        pool.execute(9)
    for t in callers:
        t.join(5)
    assert sorted(results) == [("out", 0), ("out", 1), ("out", 2)]
    assert sorted(map(id, closed)) == sorted(map(id, made))  # destroyed on release, once
    s = pool.stats()
    assert s.size == 0 and s.active_count == 0 and s.waiting == 0, s
    assert s.created == s.destroyed == 3 and s.acquired == s.released == 3, s


@pytest.mark.timeout(60)
async def test_pool_close_with_async_calls_in_flight_and_waiters() -> None:
    closed: list[Agent] = []
    pool = ap.AgentPool(lambda: Agent(closed, delay=0.2), max_size=2, initial_size=2)
    calls = [asyncio.create_task(pool.aexecute(i)) for i in range(2)]
    await await_state(lambda: pool.stats().active_count == 2)
    waiters = [asyncio.create_task(pool.aacquire(timeout=None)) for _ in range(3)]
    leases = [asyncio.create_task(pool.agent().__aenter__()) for _ in range(2)]
    await await_state(lambda: pool.stats().waiting == 5)
    assert pool.stats().active_count == 2, "the calls were still running"
    pool.close()
    for t in waiters + leases:
        with pytest.raises(ap.PoolClosedError):
            await t
    with pytest.raises(ap.PoolClosedError):
        await pool.aacquire()
    assert closed == []
    assert await asyncio.gather(*calls) == [("out", 0), ("out", 1)]
    assert len(closed) == 2
    s = pool.stats()
    assert s.size == 0 and s.waiting == 0 and s.acquired == s.released == 2, s
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.timeout(60)
def test_pool_release_after_close_destroys_and_discard_too() -> None:
    closed: list[Agent] = []
    pool = ap.AgentPool(lambda: Agent(closed), max_size=3, initial_size=0)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    pool.close()
    pool.close()  # twice is harmless
    pool.release(a)
    pool.release(b, discard=True)
    with pytest.raises(ValueError):
        pool.release(a)  # twice
    assert closed == [a, b]
    pool.release(c)
    s = pool.stats()
    assert s.size == 0 and s.created == s.destroyed == 3 and s.acquired == s.released == 3


@pytest.mark.timeout(60)
def test_batch_close_lets_running_batches_finish() -> None:
    """A batch running when its executor is closed finishes normally; later ones raise.

    Regression: the blocking agents' thread pool was shut down under the running batch and
    every item not yet started failed with RuntimeError("cannot schedule new futures after
    shutdown"), errors that no agent call raised."""
    started: list[int] = []

    def agent(x: int) -> int:
        started.append(x)
        time.sleep(0.01)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4)
    got: dict[str, Any] = {}

    def run() -> None:
        got["r"] = ex.execute(range(60))

    t = threading.Thread(target=run)
    t.start()
    assert wait_for(lambda: len(started) >= 4)
    ex.close()
    assert len(started) < 60, "closed while the batch was running"
    t.join(30)
    r = got["r"]
    assert r.errors == [] and r.outputs == list(range(60)), r.errors[:3]
    assert r.stats.success_count == 60
    with pytest.raises(RuntimeError):
        ex.execute([1])
    # The thread pool is gone once the last batch ended (execute() itself runs on agentperf's
    # shared loop thread, which stays).
    assert wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("agentperf-batch")]
    )


@pytest.mark.timeout(60)
async def test_batch_close_with_async_batch_running() -> None:
    started: list[int] = []

    async def agent(x: int) -> int:
        started.append(x)
        await asyncio.sleep(0.01)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4)
    task = asyncio.create_task(ex.aexecute(range(40)))
    await await_state(lambda: len(started) >= 4)
    ex.close()
    assert len(started) < 40, "closed while the batch was running"
    r = await task
    assert r.stats.success_count == 40 and r.errors == []
    with pytest.raises(RuntimeError):
        await ex.aexecute([1])


@pytest.mark.timeout(60)
def test_cached_agent_close_with_calls_in_flight() -> None:
    """In-flight calls (leader and followers) still return; later calls raise RuntimeError."""
    gate = threading.Event()

    def slow(x: int) -> int:
        gate.wait(5)
        return x

    c = ap.CachedAgent(slow, ttl=None)
    out: list[Any] = []
    ts = [threading.Thread(target=lambda: out.append(c.execute(1))) for _ in range(3)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    c.close()
    gate.set()
    for t in ts:
        t.join(5)
    assert out == [1, 1, 1]
    with pytest.raises(RuntimeError):
        c.execute(1)
    assert len(c) == 0  # closing dropped everything, and the late result was not stored


_FORK_UNDER_LOAD = r"""
import faulthandler, os, sys, threading, time
import agentperf as ap

class Agent:
    def __call__(self, x):
        time.sleep(0.001)
        return x

pool = ap.AgentPool(Agent, max_size=2, initial_size=2)
cache = ap.CachedAgent(pool, max_size=50, ttl=0.05, cleanup_interval=0.01)
stop = threading.Event()

def worker(i):
    n = 0
    while not stop.is_set():
        n += 1
        try:
            cache.execute((i, n % 20)) if n % 2 else pool.execute(n)
        except ap.PoolTimeoutError:
            pass

threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
bad = []
for rnd in range(int(sys.argv[1])):
    time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        faulthandler.dump_traceback_later(10, exit=True)  # a hung child exits 1
        for i in range(10):
            pool.execute(i)
            cache.execute(("c", i % 5))
        os._exit(0)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.005)
    if status != 0:
        bad.append(rnd)
stop.set()
for t in threads:
    t.join()
print("bad", bad)
"""


@pytest.mark.timeout(240)
def test_children_forked_under_cache_and_pool_load_never_hang() -> None:
    # The cleanup thread's locks are held across fork(); released in the child through
    # parking_lot's table of parked threads, they hung the child when a parent thread held
    # that table's bucket lock at the fork (5 children in 600). They are futexes now.
    forks = "600" if os.environ.get("AGENTPERF_STRESS") == "full" else "300"
    p = subprocess.run(
        [sys.executable, "-c", _FORK_UNDER_LOAD, forks],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "bad []", p.stdout + p.stderr[-3000:]
