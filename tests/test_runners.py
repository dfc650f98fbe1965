"""Where agents run when the caller cannot run them itself (``agentperf._runner``).

Blocking agents from async code run in threads of agentperf's own, sized to the wrapper's
limit, never the loop's default executor (which holds ``min(32, cpus + 4)`` threads); async
agents from blocking code run on one long-lived event loop, so loop-bound clients keep
working across calls. And a pool holds any object, agent or not.

Concurrency is asserted as a peak count of agents running at once, never as a duration.
"""

from __future__ import annotations

import asyncio
import contextvars
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentperf as ap
from agentperf import _runner

# -- helpers ---------------------------------------------------------------------------------


class Gauge:
    """Counts calls running at once. Each call waits (up to ``hold`` s) until ``target``
    calls have been seen at once, so a limit below ``target`` shows as a lower peak."""

    def __init__(self, target: int, hold: float = 3.0) -> None:
        self.target = target
        self.hold = hold
        self.now = 0
        self.peak = 0
        self.cv = threading.Condition()

    def __call__(self, x: Any) -> Any:
        with self.cv:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.cv.notify_all()
            self.cv.wait_for(lambda: self.peak >= self.target, self.hold)
            self.now -= 1
        return x


class BlockingAgent:
    """A pooled blocking agent (sync ``execute`` only) that reports to a gauge."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge

    def execute(self, x: Any) -> Any:
        return self.gauge(x)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def runner_threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


# -- point 1: blocking agents from async code reach the wrapper's limit -----------------------


@pytest.mark.timeout(60)
def test_pool_aexecute_runs_max_size_blocking_agents_at_once() -> None:
    gauge = Gauge(20)

    async def main() -> list[Any]:
        async with ap.AgentPool(lambda: BlockingAgent(gauge), max_size=20, initial_size=0) as p:
            return await asyncio.gather(*(p.aexecute(i) for i in range(20)))

    assert asyncio.run(main()) == list(range(20))
    assert gauge.peak == 20


@pytest.mark.timeout(60)
def test_bare_cached_agent_runs_64_blocking_misses_at_once() -> None:
    gauge = Gauge(64)

    async def main() -> list[Any]:
        with ap.CachedAgent(gauge, max_size=1000) as c:
            return await asyncio.gather(*(c.aexecute(i) for i in range(64)))

    assert asyncio.run(main()) == list(range(64))
    assert gauge.peak == 64


@pytest.mark.timeout(60)
def test_batch_executor_over_a_pool_reaches_max_concurrency() -> None:
    gauge = Gauge(20)
    with (
        ap.AgentPool(lambda: BlockingAgent(gauge), max_size=20, initial_size=0) as pool,
        ap.BatchExecutor(pool, max_concurrency=20) as ex,
    ):
        r = ex.execute(range(40))
    assert r.outputs == list(range(40)) and not r.errors
    assert gauge.peak == 20


@pytest.mark.timeout(60)
def test_batch_executor_over_a_cached_agent_reaches_max_concurrency() -> None:
    gauge = Gauge(80)
    with ap.CachedAgent(gauge) as c, ap.BatchExecutor(c, max_concurrency=80) as ex:
        r = ex.execute(range(80))
    assert r.outputs == list(range(80)) and not r.errors
    assert gauge.peak == 80


@pytest.mark.timeout(30)
async def test_a_cancelled_caller_leaves_the_agent_leased_until_its_call_ends() -> None:
    started, go = threading.Event(), threading.Event()
    users: list[int] = []
    peak: list[int] = [0]
    lock = threading.Lock()

    class Agent:
        def execute(self, x: Any) -> Any:
            with lock:
                users.append(x)
                peak[0] = max(peak[0], len(users))
            started.set()
            go.wait(10)
            with lock:
                users.remove(x)
            return x

    async with ap.AgentPool(Agent, max_size=1, initial_size=1) as pool:
        task = asyncio.create_task(pool.aexecute(1))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The thread still runs the call: the agent is not handed out meanwhile.
        assert pool.stats().active_count == 1
        second = asyncio.create_task(pool.aexecute(2))
        await asyncio.sleep(0.05)
        assert not second.done() and pool.stats().waiting == 1
        go.set()
        assert await asyncio.wait_for(second, 10) == 2
        s = pool.stats()
        assert (s.active_count, s.acquired, s.released) == (0, 2, 2)
    assert peak[0] == 1, "the agent was used by two calls at once"


@pytest.mark.timeout(30)
async def test_contextvars_reach_the_blocking_agents_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    def agent(x: Any) -> Any:
        seen.append(var.get())
        return x

    var.set("from the caller")
    async with ap.AgentPool(lambda: agent, max_size=2) as pool:
        await pool.aexecute(1)
    with ap.CachedAgent(agent) as c:
        await c.aexecute(2)
    assert seen == ["from the caller", "from the caller"]
    assert threading.current_thread().name not in {"agentperf-pool", "agentperf-cache"}


@pytest.mark.timeout(30)
def test_runner_threads_exit_when_idle_and_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner.Runner, "idle_timeout", 0.2)
    gauge = Gauge(4)

    async def calls(p: ap.AgentPool) -> None:
        await asyncio.gather(*(p.aexecute(i) for i in range(4)))

    p = ap.AgentPool(lambda: BlockingAgent(gauge), max_size=4, initial_size=0)
    assert p._runner.threads == 0, "threads are created on demand"
    asyncio.run(calls(p))
    assert gauge.peak == 4
    wait_for(lambda: p._runner.threads == 0)  # idle: gone
    asyncio.run(calls(p))  # and made again on demand
    assert p._runner.threads > 0
    monkeypatch.setattr(_runner.Runner, "idle_timeout", 60.0)
    asyncio.run(calls(p))
    p.close()
    wait_for(lambda: p._runner.threads == 0)  # close() stops them at once
    assert p._runner.threads == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
def test_runner_and_shared_loop_work_again_after_fork() -> None:
    gauge = Gauge(2, hold=0.5)

    async def aagent(x: Any) -> Any:
        await asyncio.sleep(0)
        return (x, id(asyncio.get_running_loop()))

    pool = ap.AgentPool(lambda: BlockingAgent(gauge), max_size=2, initial_size=0)
    cached = ap.CachedAgent(aagent)

    async def two() -> list[Any]:
        return await asyncio.gather(pool.aexecute(1), pool.aexecute(2))

    assert asyncio.run(two()) == [1, 2]
    assert pool._runner.threads > 0
    assert cached.execute("parent")[0] == "parent"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            assert asyncio.run(two()) == [1, 2]
            assert cached.execute("child")[0] == "child"
            a, b = cached.execute("child 2")[1], cached.execute("child 3")[1]
            assert a == b, "one loop in the child too"
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pool.close()
    cached.close()


# -- point 2: sync entry points over async agents keep one loop -------------------------------


EXIT_SCRIPT = """
import asyncio, sys, threading, time
import agentperf as ap

async def echo(x):
    await asyncio.sleep(0)
    return x

async def forever(x):
    await asyncio.sleep(100)

assert ap.CachedAgent(echo).execute(1) == 1  # the shared loop runs
blocking = ap.CachedAgent(lambda x: time.sleep(0.01) or x)
assert asyncio.run(blocking.aexecute(2)) == 2  # a runner thread, idle now
if sys.argv[1] == "busy":  # a daemon thread still waits on the shared loop at exit
    threading.Thread(target=ap.CachedAgent(forever).execute, args=(1,), daemon=True).start()
    time.sleep(0.1)
print("bye")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state", ["idle", "busy"])
def test_interpreter_exit_is_prompt_and_quiet(state: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, state], capture_output=True, text=True, timeout=30
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "bye\n", "")


class LoopBound:
    """An async agent bound to the loop it was first used on (as httpx/openai clients are):
    calling it on another loop, or after that loop closed, raises."""

    made: list[LoopBound] = []

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.closed = False
        LoopBound.made.append(self)

    def _check(self) -> None:
        here = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = here
        if self.loop.is_closed():
            raise RuntimeError("Event loop is closed")
        if self.loop is not here:
            raise RuntimeError("bound to another event loop")

    async def aexecute(self, x: Any) -> Any:
        self._check()
        await asyncio.sleep(0)
        return x

    async def aclose(self) -> None:
        self._check()
        self.closed = True


@pytest.fixture
def no_close_failures(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="agentperf")
    yield
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert not failures, [r.getMessage() for r in failures]


@pytest.mark.timeout(60)
def test_pooled_loop_bound_agents_survive_many_sync_calls(no_close_failures: None) -> None:
    LoopBound.made = []
    pool = ap.AgentPool(LoopBound, max_size=4, initial_size=4)
    out: list[Any] = []
    errors: list[BaseException] = []

    def caller(base: int) -> None:
        try:
            out.extend(pool.execute(base + i) for i in range(10))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(100 * k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(out) == sorted(100 * k + i for k in range(4) for i in range(10))
    pool.close()
    assert len(LoopBound.made) == 4 and all(a.closed for a in LoopBound.made)


@pytest.mark.timeout(60)
def test_async_factory_agents_are_made_used_and_closed_on_one_loop(
    no_close_failures: None,
) -> None:
    LoopBound.made = []

    async def factory() -> LoopBound:
        return LoopBound(asyncio.get_running_loop())

    with ap.AgentPool(factory, max_size=2, initial_size=0) as pool:
        assert [pool.execute(i) for i in range(20)] == list(range(20))
        a = pool.acquire()
        pool.release(a, discard=True)  # destroyed from sync code
        assert a.closed
        assert pool.execute(20) == 20
    assert LoopBound.made and all(a.closed for a in LoopBound.made)


@pytest.mark.timeout(60)
def test_batch_execute_over_pooled_loop_bound_agents_keeps_one_loop(
    no_close_failures: None,
) -> None:
    LoopBound.made = []
    with (
        ap.AgentPool(LoopBound, max_size=3, initial_size=3) as pool,
        ap.BatchExecutor(pool, max_concurrency=3) as ex,
    ):
        for _ in range(3):
            r = ex.execute(range(9))
            assert not r.errors, r.errors
            assert r.outputs == list(range(9))
    assert len(LoopBound.made) == 3 and all(a.closed for a in LoopBound.made)


@pytest.mark.timeout(60)
def test_cached_loop_bound_agent_survives_many_sync_calls() -> None:
    agent = LoopBound()
    with ap.CachedAgent(agent, max_size=100) as c:
        assert [c.execute(i) for i in range(20)] == list(range(20))
        assert c.stats().misses == 20


@pytest.mark.timeout(30)
def test_async_agents_sync_twin_sees_the_callers_contextvars() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var2", default="unset")

    async def agent(x: Any) -> Any:
        return (x, var.get())

    var.set("caller")
    with ap.CachedAgent(agent) as c:
        assert c.execute(1) == (1, "caller")


@pytest.mark.timeout(30)
def test_an_interrupt_while_waiting_cancels_the_coroutine() -> None:
    class Interrupted(Exception):
        pass

    cancelled = threading.Event()

    async def slow(x: Any) -> Any:
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with ap.AgentPool(lambda: slow, max_size=1) as pool, pytest.raises(Interrupted):
            pool.execute(1)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    assert cancelled.wait(5), "the coroutine still runs"


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # an OpenAI-compatible /v1/chat/completions that echoes
        n = int(self.headers.get("Content-Length", "0"))
        prompt = json.loads(self.rfile.read(n))["messages"][-1]["content"]
        body = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "echo",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": prompt},
                        "finish_reason": "stop",
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@pytest.mark.timeout(60)
def test_pooled_and_cached_httpx_async_clients_keep_working(
    http_url: str, no_close_failures: None
) -> None:
    httpx = pytest.importorskip("httpx")

    class Client:
        def __init__(self) -> None:
            self.http = httpx.AsyncClient(base_url=http_url)

        async def aexecute(self, path: str) -> str:
            r = await self.http.get(path)
            return str(r.text)

        async def aclose(self) -> None:
            await self.http.aclose()

    with ap.AgentPool(Client, max_size=2, initial_size=2) as pool:
        assert [pool.execute(f"/p{i}") for i in range(10)] == [f"/p{i}" for i in range(10)]
    c = Client()
    with ap.CachedAgent(c) as cached:
        assert [cached.execute(f"/c{i}") for i in range(10)] == [f"/c{i}" for i in range(10)]
    assert _runner.run(_close(c)) is None


async def _close(c: Any) -> None:
    await c.aclose()


@pytest.mark.timeout(60)
def test_pooled_and_cached_async_openai_clients_keep_working(
    http_url: str, no_close_failures: None
) -> None:
    """The first release's report: 4 of 20 items failed with "Event loop is closed", one per
    pooled client. Optional: runs only where the ``openai`` package is installed."""
    openai = pytest.importorskip("openai")

    class Chat:
        def __init__(self) -> None:
            self.client = openai.AsyncOpenAI(
                base_url=f"{http_url}/v1", api_key="test", max_retries=0
            )

        async def aexecute(self, prompt: str) -> str:
            r = await self.client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": prompt}]
            )
            return str(r.choices[0].message.content)

        async def aclose(self) -> None:
            await self.client.close()

    prompts = [f"q{i}" for i in range(20)]
    with ap.AgentPool(Chat, max_size=4, initial_size=4) as pool:
        assert [pool.execute(p) for p in prompts] == prompts
    chat = Chat()
    with ap.CachedAgent(chat) as cached:
        assert [cached.execute(p) for p in prompts] == prompts
    _runner.run(_close(chat))


# -- point 7: a pool holds any object ---------------------------------------------------------


class Connection:
    """Not an agent: no __call__, execute or invoke."""

    def query(self, q: str) -> str:
        return q.upper()


async def _async_connection() -> Connection:
    return Connection()


@pytest.mark.timeout(30)
def test_a_pool_of_plain_objects_leases_them_as_they_are() -> None:
    with ap.AgentPool(Connection, max_size=2) as pool:
        conn = pool.acquire()
        assert type(conn) is Connection and conn.query("a") == "A"
        pool.release(conn)
        with pool.agent() as c2:
            assert c2.query("b") == "B"
        with pytest.raises(TypeError, match="Connection"):
            pool.execute("x")
        with pytest.raises(TypeError, match="Connection"):
            asyncio.run(pool.aexecute("x"))
        s = pool.stats()
        assert s.active_count == 0 and s.acquired == s.released == 4


@pytest.mark.timeout(30)
async def test_a_pool_of_plain_objects_from_an_async_factory() -> None:
    async with ap.AgentPool(_async_connection, max_size=2) as pool:
        conn = await pool.aacquire()
        assert type(conn) is Connection
        pool.release(conn)
        async with pool.agent() as c2:
            assert c2.query("c") == "C"
        with pytest.raises(TypeError, match="Connection"):
            await pool.aexecute("x")
        assert pool.stats().active_count == 0


@pytest.mark.timeout(30)
def test_a_pool_of_plain_objects_from_an_async_factory_in_sync_code() -> None:
    with ap.AgentPool(_async_connection, max_size=1, initial_size=0) as pool:
        conn = pool.acquire()
        assert type(conn) is Connection
        pool.release(conn)
        with pytest.raises(TypeError, match="Connection"):
            pool.execute("x")
