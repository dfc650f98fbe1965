"""ap.BatchExecutor: every point of API.md "Batch execution"."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentperf as ap

# --- helpers ---------------------------------------------------------------------------------


async def double(x: int) -> int:
    return 2 * x


class Boom(Exception):
    pass


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class InFlight:
    """Counts concurrent calls (thread-safe) and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *a: object) -> None:
        with self.lock:
            self.now -= 1


# --- configuration ---------------------------------------------------------------------------


def test_defaults_and_overrides() -> None:
    ex = ap.BatchExecutor(double)
    assert ex.config == ap.BatchConfig()
    assert ex.config.max_concurrency == 10 and ex.config.timeout == 300.0
    assert ex.config.item_timeout is None
    assert ex.config.error_policy is ap.ErrorPolicy.CONTINUE and ex.config.enable_stats
    ex2 = ap.BatchExecutor(double, max_concurrency=3, error_policy="fail_fast")
    assert ex2.config.max_concurrency == 3
    assert ex2.config.error_policy is ap.ErrorPolicy.FAIL_FAST
    cfg = ap.BatchConfig(max_concurrency=7)
    assert ap.BatchExecutor(double, cfg).config is cfg
    assert ap.BatchExecutor(double, cfg, timeout=1.0).config.max_concurrency == 7


@pytest.mark.parametrize(
    ("kw", "exc", "field"),
    [
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"max_concurrency": -3}, ValueError, "max_concurrency"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency"),
        ({"max_concurrency": True}, TypeError, "max_concurrency"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": "10"}, TypeError, "timeout"),
        ({"item_timeout": 0}, ValueError, "item_timeout"),
        ({"error_policy": "sometimes"}, ValueError, "error_policy"),
        ({"error_policy": 3}, TypeError, "error_policy"),
        ({"enable_stats": "yes"}, TypeError, "enable_stats"),
        ({"semaphore": 3}, TypeError, "semaphore"),
        ({"semaphore": asyncio.Semaphore(3)}, TypeError, "semaphore"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"on_progress": 5}, TypeError, "on_progress"),
        ({"nonsense": 1}, TypeError, "nonsense"),
    ],
)
def test_bad_configuration(kw: dict[str, Any], exc: type[Exception], field: str) -> None:
    with pytest.raises(exc, match=field):
        ap.BatchExecutor(double, **kw)


def test_bad_agent_and_bad_inputs() -> None:
    with pytest.raises(TypeError, match="agent"):
        ap.BatchExecutor(42)
    with pytest.raises(TypeError, match="config"):
        ap.BatchExecutor(double, {"max_concurrency": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inputs"):
        ap.BatchExecutor(double).execute(12)  # type: ignore[arg-type]


# --- results ---------------------------------------------------------------------------------


async def test_outputs_in_input_order_whatever_the_completion_order() -> None:
    async def agent(x: int) -> int:
        await asyncio.sleep(0.001 * ((x * 7) % 5))
        return x * x

    r = await ap.BatchExecutor(agent, max_concurrency=4).aexecute(range(30))
    assert r.outputs == [x * x for x in range(30)]
    assert r.errors == []
    s = r.stats
    assert (s.total_count, s.success_count, s.failure_count, s.cancelled_count) == (30, 30, 0, 0)
    assert s.duration_s > 0 and s.throughput > 0
    assert 0 < s.min_item_s <= s.avg_item_s <= s.max_item_s


class ExecuteAgent:
    def execute(self, x: int) -> str:
        return f"sync {x}"

    async def aexecute(self, x: int) -> str:
        return f"async {x}"


class InvokeOnly:
    def invoke(self, x: int) -> int:
        return x + 1


@pytest.mark.parametrize(
    ("agent", "expect"),
    [
        (double, [0, 2, 4]),
        (lambda x: x * 3, [0, 3, 6]),
        (ExecuteAgent(), ["async 0", "async 1", "async 2"]),
        (InvokeOnly(), [1, 2, 3]),
    ],
)
async def test_every_agent_shape(agent: Any, expect: list[Any]) -> None:
    with ap.BatchExecutor(agent, max_concurrency=2) as ex:
        assert (await ex.aexecute([0, 1, 2])).outputs == expect


async def test_langchain_runnable() -> None:
    from langchain_core.runnables import RunnableLambda

    r = await ap.BatchExecutor(RunnableLambda(lambda x: x + 10)).aexecute([1, 2])
    assert r.outputs == [11, 12]


async def test_inputs_of_every_kind() -> None:
    ex = ap.BatchExecutor(double, max_concurrency=3)

    def gen() -> Iterator[int]:
        yield from range(7)

    async def agen() -> AsyncIterator[int]:
        for i in range(7):
            await asyncio.sleep(0)
            yield i

    expect = [2 * i for i in range(7)]
    for inputs in (list(range(7)), tuple(range(7)), range(7), gen(), iter(range(7)), agen()):
        r = await ex.aexecute(inputs)
        assert r.outputs == expect
        assert r.stats.total_count == 7
    empty = await ex.aexecute([])
    assert empty.outputs == [] and empty.stats.total_count == 0


async def test_continue_collects_every_error_unchanged() -> None:
    raised: dict[int, Exception] = {}

    async def agent(x: int) -> int:
        if x % 3 == 0:
            raised[x] = Boom(x)
            raise raised[x]
        return x

    r = await ap.BatchExecutor(agent, max_concurrency=4).aexecute(range(10))
    assert sorted(e.index for e in r.errors) == [0, 3, 6, 9]
    for e in r.errors:
        assert e.error is raised[e.index], "the agent's exception object, unchanged"
        assert e.input == e.index
        assert r.outputs[e.index] is None
    assert r.stats.failure_count == len(r.errors) == 4
    assert r.stats.success_count == 6 and r.stats.cancelled_count == 0


@pytest.mark.timeout(20)
async def test_fail_fast_cancels_running_calls_not_only_pending_ones() -> None:
    finished: list[int] = []
    started: list[int] = []

    async def agent(x: int) -> int:
        started.append(x)
        if x == 2:
            await asyncio.sleep(0.02)
            raise Boom("first")
        await asyncio.sleep(10)
        finished.append(x)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4, error_policy=ap.ErrorPolicy.FAIL_FAST)
    t0 = time.perf_counter()
    r = await ex.aexecute(range(100))
    assert time.perf_counter() - t0 < 5, "running calls were stopped"
    assert finished == []
    assert [e.index for e in r.errors] == [2] and str(r.errors[0].error) == "first"
    s = r.stats
    assert (s.total_count, s.success_count, s.failure_count, s.cancelled_count) == (100, 0, 1, 99)
    assert len(started) == 4, "nothing started after the failure"
    await settle()
    assert only_this_task_left()


async def test_fail_fast_keeps_outputs_already_finished() -> None:
    async def agent(x: int) -> int:
        if x == 5:
            raise Boom(x)
        return x

    r = await ap.BatchExecutor(agent, max_concurrency=1, error_policy="fail_fast").aexecute(
        range(10)
    )
    assert r.outputs == [0, 1, 2, 3, 4, None, None, None, None, None]
    assert r.stats.success_count == 5 and r.stats.cancelled_count == 4


@pytest.mark.timeout(20)
async def test_batch_timeout_records_running_calls_and_cancels_the_rest() -> None:
    async def agent(x: int) -> int:
        if x < 3:
            return x
        await asyncio.sleep(30)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=2, timeout=0.1)
    t0 = time.perf_counter()
    r = await ex.aexecute(range(10))
    assert 0.09 < time.perf_counter() - t0 < 5
    assert r.outputs[:3] == [0, 1, 2]
    assert sorted(e.index for e in r.errors) == [3, 4]
    assert all(isinstance(e.error, ap.BatchTimeoutError) for e in r.errors)
    assert all(isinstance(e.error, TimeoutError) for e in r.errors)
    s = r.stats
    assert (s.success_count, s.failure_count, s.cancelled_count) == (3, 2, 5)
    await settle()
    assert only_this_task_left()


@pytest.mark.timeout(20)
async def test_item_timeout_fails_the_item_with_timeout_error() -> None:
    own = TimeoutError("the agent's own")

    async def agent(x: int) -> int:
        if x == 1:
            await asyncio.sleep(10)
        if x == 2:
            raise own
        return x

    r = await ap.BatchExecutor(agent, item_timeout=0.05).aexecute(range(4))
    assert r.outputs == [0, None, None, 3]
    errs = {e.index: e.error for e in r.errors}
    assert isinstance(errs[1], TimeoutError) and "item_timeout" in str(errs[1])
    assert not isinstance(errs[1], ap.BatchTimeoutError)
    assert errs[2] is own
    assert r.stats.failure_count == 2


@pytest.mark.timeout(20)
def test_sync_agent_stopped_by_timeout_finishes_in_background() -> None:
    done = threading.Event()

    def agent(x: int) -> int:
        if x == 0:
            time.sleep(0.3)
            done.set()
        return x

    with ap.BatchExecutor(agent, max_concurrency=2, item_timeout=0.05) as ex:
        r = ex.execute([0, 1])
        assert r.outputs == [None, 1]
        assert isinstance(r.errors[0].error, TimeoutError)
        assert not done.is_set()
    assert done.wait(5), "the thread finished its call"


# --- statistics ------------------------------------------------------------------------------


async def test_cumulative_stats() -> None:
    async def agent(x: int) -> int:
        if x == 0:
            raise Boom()
        return x

    ex = ap.BatchExecutor(agent)
    assert ex.stats() == ap.BatchExecutorStats(0, 0, 0, 0, 0, 0.0)
    await ex.aexecute(range(4))
    await ex.aexecute(range(1, 5))
    s = ex.stats()
    assert (s.executions, s.total_tasks, s.success_tasks, s.failed_tasks) == (2, 8, 7, 1)
    assert s.success_rate == pytest.approx(87.5)
    off = ap.BatchExecutor(agent, enable_stats=False)
    await off.aexecute(range(3))
    assert off.stats().executions == 0


# --- accounting invariant --------------------------------------------------------------------


@pytest.mark.timeout(60)
@settings(max_examples=40)
@given(
    pattern=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40),
    conc=st.integers(1, 6),
    policy=st.sampled_from(list(ap.ErrorPolicy)),
    sync_agent=st.booleans(),
)
def test_accounting_invariant(
    pattern: list[tuple[bool, int]], conc: int, policy: ap.ErrorPolicy, sync_agent: bool
) -> None:
    def check(x: int) -> int:
        if pattern[x][0]:
            raise Boom(x)
        return -x

    async def aagent(x: int) -> int:
        for _ in range(pattern[x][1]):
            await asyncio.sleep(0)
        return check(x)

    def sagent(x: int) -> int:
        time.sleep(pattern[x][1] * 0.0002)
        return check(x)

    with ap.BatchExecutor(
        sagent if sync_agent else aagent, max_concurrency=conc, error_policy=policy
    ) as ex:
        r = ex.execute(range(len(pattern)))
    s = r.stats
    n = len(pattern)
    assert s.total_count == n == len(r.outputs)
    assert s.success_count + s.failure_count + s.cancelled_count == n
    assert s.failure_count == len(r.errors)
    assert s.success_count == sum(1 for o in r.outputs if o is not None)
    assert all(o is None or o == -i for i, o in enumerate(r.outputs))
    for e in r.errors:
        assert pattern[e.index][0] and isinstance(e.error, Boom)
    failing = [i for i, (f, _) in enumerate(pattern) if f]
    if policy is ap.ErrorPolicy.CONTINUE:
        assert sorted(e.index for e in r.errors) == failing
        assert s.cancelled_count == 0
    elif failing:
        assert len(r.errors) >= 1
        # Blocking calls already in their threads may still fail; async ones are cancelled.
        if not sync_agent:
            assert len(r.errors) == 1
    else:
        assert s.success_count == n


# --- streaming -------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_astream_yields_in_completion_order_as_results_arrive() -> None:
    release = asyncio.Event()

    async def agent(x: int) -> int:
        if x == 0:
            await release.wait()
        return x

    got: list[ap.BatchItem] = []
    async for item in ap.BatchExecutor(agent, max_concurrency=3).astream(range(5)):
        got.append(item)
        if len(got) == 4:
            release.set()  # item 0 is still blocked: the others arrived before it
    assert [g.index for g in got] == [1, 2, 3, 4, 0]
    assert all(g.ok and g.output == g.index == g.input for g in got)


async def test_astream_reports_errors_as_items() -> None:
    async def agent(x: int) -> int:
        if x == 1:
            raise Boom()
        return x

    stream = ap.BatchExecutor(agent).astream(range(3))
    items = [i async for i in stream]
    bad = [i for i in items if not i.ok]
    assert len(items) == 3 and [b.index for b in bad] == [1] and isinstance(bad[0].error, Boom)
    assert bad[0].output is None
    assert stream.stats is not None and stream.stats.failure_count == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["break", "exception", "aclose", "async_with"])
async def test_leaving_astream_early_cancels_the_rest(how: str) -> None:
    ran: list[int] = []

    async def agent(x: int) -> int:
        ran.append(x)
        await asyncio.sleep(0.001 if x < 5 else 10)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4)
    if how == "break":
        async for item in ex.astream(range(1000)):
            if item.index == 2:
                break
    elif how == "exception":
        with pytest.raises(Boom):
            async for _item in ex.astream(range(1000)):
                raise Boom()
    elif how == "aclose":
        s = ex.astream(range(1000))
        await s.__anext__()
        await s.aclose()
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()
    else:
        async with ex.astream(range(1000)) as s:
            async for _ in s:
                break
    await settle()
    assert only_this_task_left()
    assert len(ran) < 20


@pytest.mark.timeout(20)
def test_sync_stream_and_early_exit() -> None:
    ex = ap.BatchExecutor(lambda x: x + 1, max_concurrency=3)
    items = list(ex.stream(range(10)))
    assert sorted(i.output for i in items) == list(range(1, 11))
    gen = ex.stream(range(10_000))
    first = next(gen)
    assert first.ok
    gen.close()  # leaves nothing running
    assert ex.stats().executions == 2


async def test_sync_twins_refuse_a_running_loop() -> None:
    ex = ap.BatchExecutor(double)
    with pytest.raises(RuntimeError, match="aexecute"):
        ex.execute([1])
    with pytest.raises(RuntimeError, match="astream"):
        ex.stream([1])


async def test_the_fix_a_refusal_suggests_works() -> None:
    """The snippet in each RuntimeError's message runs (``await ex.astream(...)`` did not)."""
    ex = ap.BatchExecutor(double)
    for call, expect in (
        ((lambda: ex.execute([1, 2])), [2, 4]),
        ((lambda: ex.stream([1, 2])), [2, 4]),
    ):
        with pytest.raises(RuntimeError) as info:
            call()
        snippet = re.findall(r"`([^`]+)`", str(info.value))
        assert len(snippet) == 1, str(info.value)
        code = snippet[0].replace("...", "[1, 2]")
        if code.startswith("async for"):
            body = f"    out = []\n    {code}:\n        out.append(item.output)\n    return out"
        else:
            body = f"    return sorted(({code}).outputs)"
        scope: dict[str, Any] = {"ex": ex}
        exec(f"async def fix():\n{body}\n", scope)
        assert sorted(await scope["fix"]()) == expect, code


ONE_INPUT: list[Any] = ["abc", b"abc", bytearray(b"abc"), {"task": "summarize"}]


@pytest.mark.parametrize("inputs", ONE_INPUT, ids=lambda x: type(x).__name__)
def test_one_string_bytes_or_dict_is_not_a_batch(inputs: Any) -> None:
    """``execute("abc")`` ran the agent on 'a', 'b', 'c'; it is a TypeError now, everywhere."""
    calls: list[Any] = []
    ex = ap.BatchExecutor(calls.append)
    kind = type(inputs).__name__
    for run in (ex.execute, ex.stream, ex.astream, lambda x: asyncio.run(ex.aexecute(x))):
        with pytest.raises(TypeError, match=rf"inputs=.*{kind}.*pass a list") as info:
            run(inputs)
        assert "[" in str(info.value), "the message shows the list to pass"
    assert calls == []
    assert ex.execute([inputs]).outputs == [None] and calls == [inputs]


def test_executor_supports_weak_references() -> None:
    ex = ap.BatchExecutor(double)
    ref = weakref.ref(ex)
    assert ref() is ex
    del ex
    gc.collect()
    assert ref() is None


async def test_input_iterable_errors_propagate() -> None:
    def gen() -> Iterator[int]:
        yield 1
        raise KeyError("bad input")

    with pytest.raises(KeyError, match="bad input"):
        await ap.BatchExecutor(double).aexecute(gen())
    with pytest.raises(KeyError):
        async for _ in ap.BatchExecutor(double).astream(gen()):
            pass
    await settle()
    assert only_this_task_left()


# --- concurrency bound and laziness ----------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit", [1, 7, 32])
async def test_async_concurrency_bound_under_stress(limit: int) -> None:
    flight = InFlight()

    async def agent(x: int) -> int:
        with flight:
            await asyncio.sleep(0.0005 * (x % 3))
        return x

    r = await ap.BatchExecutor(agent, max_concurrency=limit).aexecute(range(2000))
    assert r.stats.success_count == 2000
    assert flight.peak == limit  # never above, and reached


@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit", [4, 40])
def test_sync_agents_really_reach_max_concurrency(limit: int) -> None:
    flight = InFlight()
    # The first `limit` calls pass only once all of them are in flight at the same time.
    barrier = threading.Barrier(limit, timeout=10)

    def agent(x: int) -> int:
        with flight:
            if x < limit:
                barrier.wait()
            time.sleep(0.002)
        return x

    with ap.BatchExecutor(agent, max_concurrency=limit) as ex:
        r = ex.execute(range(limit * 4))
    assert r.errors == []
    assert r.outputs == list(range(limit * 4))
    assert flight.peak == limit, "more than the loop's default executor, never above the limit"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["aexecute", "astream"])
async def test_inputs_are_consumed_lazily(mode: str) -> None:
    limit = 5
    consumed = 0
    done = 0
    gate = asyncio.Event()
    observed: list[tuple[int, int]] = []

    def gen() -> Iterator[int]:
        nonlocal consumed
        for i in range(10_000_000):
            consumed += 1
            yield i

    async def agent(x: int) -> int:
        nonlocal done
        if x >= 50:
            await gate.wait()
        done += 1
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=limit, timeout=None)
    if mode == "aexecute":
        task = asyncio.create_task(ex.aexecute(gen()))
        await asyncio.sleep(0.05)
        observed.append((consumed, done))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        async for item in ex.astream(gen()):
            if item.index == 40:
                await asyncio.sleep(0.05)
                observed.append((consumed, done))
                break
    consumed_at, done_at = observed[0]
    assert consumed_at <= done_at + limit + 2 * max(limit, 16)
    assert consumed_at < 200
    await settle()
    assert only_this_task_left()


# --- shared semaphore ------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_semaphore_shared_among_executors() -> None:
    sem = ap.Semaphore(3)
    flight = InFlight()

    async def aagent(x: int) -> int:
        with flight:
            await asyncio.sleep(0.001)
        return x

    def sagent(x: int) -> int:
        with flight:
            time.sleep(0.001)
        return x

    a = ap.BatchExecutor(aagent, max_concurrency=5, semaphore=sem)
    b = ap.BatchExecutor(sagent, max_concurrency=5, semaphore=sem)
    ra, rb = await asyncio.gather(a.aexecute(range(200)), b.aexecute(range(200)))
    b.close()
    assert ra.stats.success_count == rb.stats.success_count == 200
    assert flight.peak == 3
    assert sem.available == 3


@pytest.mark.timeout(30)
def test_semaphore_shared_across_threads_and_loops_with_timeouts() -> None:
    sem = ap.Semaphore(4)
    flight = InFlight()

    async def agent(x: int) -> int:
        with flight:
            await asyncio.sleep(0.0005 if x % 10 else 0.2)
        return x

    def run() -> None:
        ex = ap.BatchExecutor(agent, max_concurrency=6, semaphore=sem, timeout=0.3)
        r = ex.execute(range(300))
        assert r.stats.success_count + r.stats.failure_count + r.stats.cancelled_count == 300

    ths = [threading.Thread(target=run) for _ in range(3)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert flight.peak <= 4
    assert sem.available == 4, "permits of stopped items were all returned"


# --- progress --------------------------------------------------------------------------------


async def test_on_progress_and_bar(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int | None]] = []
    ex = ap.BatchExecutor(double, on_progress=lambda d, t: calls.append((d, t)))
    await ex.aexecute(range(5))
    assert calls == [(i, 5) for i in range(1, 6)]
    calls.clear()
    await ex.aexecute(x for x in range(3))
    assert calls == [(1, None), (2, None), (3, None)]
    await ap.BatchExecutor(double, progress=True).aexecute(range(7))
    assert "7/7" in capsys.readouterr().err


def test_progress_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match=r"pip install 'agentperf-rs\[progress\]'"):
        ap.BatchExecutor(double, progress=True)


# --- lifetime --------------------------------------------------------------------------------


def test_close_is_idempotent_and_final() -> None:
    ex = ap.BatchExecutor(lambda x: x)
    assert ex.execute([1]).outputs == [1]
    ex.close()
    ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        ex.execute([1])


async def test_async_context_manager() -> None:
    async with ap.BatchExecutor(lambda x: -x) as ex:
        assert (await ex.aexecute([3])).outputs == [-3]
    with pytest.raises(RuntimeError, match="closed"):
        await ex.aexecute([1])


@pytest.mark.timeout(20)
async def test_cancelling_aexecute_leaves_nothing_behind() -> None:
    async def agent(x: int) -> int:
        await asyncio.sleep(10)
        return x

    task = asyncio.create_task(ap.BatchExecutor(agent).aexecute(range(100)))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert only_this_task_left()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stop", ["fail_fast", "item_timeout", "early_exit"])
async def test_semaphore_permits_come_back_however_items_stop(stop: str) -> None:
    sem = ap.Semaphore(2)

    async def agent(x: int) -> int:
        if x == 3:
            raise Boom()
        await asyncio.sleep(0.001 if x < 6 else 10)
        return x

    kw: dict[str, Any] = {"max_concurrency": 4, "semaphore": sem}
    if stop == "fail_fast":
        r = await ap.BatchExecutor(agent, error_policy="fail_fast", **kw).aexecute(range(50))
        assert r.stats.failure_count == 1
    elif stop == "item_timeout":
        r = await ap.BatchExecutor(agent, item_timeout=0.05, **kw).aexecute(range(12))
        assert sorted(e.index for e in r.errors) == [3, *range(6, 12)]
    else:
        async for item in ap.BatchExecutor(agent, **kw).astream(range(50)):
            if item.index == 5:
                break
    await settle()
    assert only_this_task_left()
    assert sem.available == 2 and sem.waiting == 0
