"""RetryPolicy's schedule and validation, and RetryingAgent on real agents (sync and async)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import http.server
import math
import random
import threading
import time
import traceback
import types
import weakref
from fractions import Fraction
from typing import Any

import httpx
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import agentperf as ap
from agentperf import _meter
from agentperf import retry as retry_mod


class Status(Exception):
    """An HTTP error of the openai/anthropic shape: ``status_code`` and ``headers``."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers or {}


class Exit(BaseException):
    """A BaseException that is not an Exception (like KeyboardInterrupt or SystemExit)."""


def httpx_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    resp = httpx.Response(status, headers=headers or {}, request=req)
    return httpx.HTTPStatusError("boom", request=req, response=resp)


def requests_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    return requests.HTTPError("boom", response=resp)


class Flaky:
    """Raises the next of ``errors`` on each call until they run out, then returns ``x``.

    Each raised exception is kept in ``raised``, in order, so tests can check identity.
    """

    def __init__(self, *errors: BaseException | type[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.raised: list[BaseException] = []
        self.lock = threading.Lock()

    def _next(self, x: Any) -> Any:
        with self.lock:
            self.calls += 1
            if not self.errors:
                return x
            err = self.errors.pop(0)
        if isinstance(err, type):
            err = err()
        self.raised.append(err)
        raise err

    def __call__(self, x: Any) -> Any:
        return self._next(x)


class AsyncFlaky(Flaky):
    async def __call__(self, x: Any) -> Any:
        await asyncio.sleep(0)
        return self._next(x)


class FakeTime:
    """Stands in for ``agentperf.retry``'s ``time`` module: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    ft = FakeTime()
    monkeypatch.setattr(retry_mod, "time", ft)
    return ft


def no_wait(**kw: Any) -> ap.RetryPolicy:
    return ap.RetryPolicy(backoff=0.0, **kw)


# --- the policy ------------------------------------------------------------------------------


def test_policy_defaults_are_the_contract() -> None:
    p = ap.RetryPolicy()
    assert (p.attempts, p.backoff, p.max_backoff, p.jitter) == (5, 0.5, 30.0, True)
    assert (p.retry_on, p.max_elapsed, p.respect_retry_after) == (None, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.attempts = 3  # type: ignore[misc]
    assert hash(p) == hash(ap.RetryPolicy())


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.0}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"backoff": -0.1}, ValueError, "backoff"),
        ({"backoff": None}, TypeError, "backoff"),
        ({"backoff": float("nan")}, ValueError, "backoff"),
        ({"backoff": "1"}, TypeError, "backoff"),
        ({"max_backoff": 0}, ValueError, "max_backoff"),
        ({"max_backoff": None}, TypeError, "max_backoff"),
        ({"backoff": 5.0, "max_backoff": 1.0}, ValueError, "max_backoff"),
        ({"max_elapsed": 0.0}, ValueError, "max_elapsed"),
        ({"max_elapsed": -5}, ValueError, "max_elapsed"),
        ({"jitter": 1}, TypeError, "jitter"),
        ({"respect_retry_after": None}, TypeError, "respect_retry_after"),
        ({"retry_on": 42}, TypeError, "retry_on"),
        ({"retry_on": (ValueError, "KeyError")}, TypeError, "retry_on"),
        ({"retry_on": (int,)}, TypeError, "retry_on"),
        ({"retry_on": KeyboardInterrupt}, ValueError, "retry_on"),
        ({"retry_on": (ValueError, asyncio.CancelledError)}, ValueError, "retry_on"),
    ],
)
def test_policy_bad_values_name_field_and_value(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as info:
        ap.RetryPolicy(**kwargs)
    assert f"{field}=" in str(info.value)
    assert repr(kwargs[field])[:8] in str(info.value)


def test_policy_accepts_timedelta_zero_backoff_inf_and_one_type() -> None:
    p = ap.RetryPolicy(
        backoff=datetime.timedelta(milliseconds=250),
        max_backoff=datetime.timedelta(seconds=2),
        max_elapsed=datetime.timedelta(minutes=1),
        retry_on=KeyError,
    )
    assert (p.backoff, p.max_backoff, p.max_elapsed, p.retry_on) == (0.25, 2.0, 60.0, (KeyError,))
    assert ap.RetryPolicy(backoff=0).backoff == 0.0
    assert ap.RetryPolicy(max_elapsed=float("inf")).max_elapsed is None
    assert ap.RetryPolicy(retry_on=[KeyError, OSError]).retry_on == (KeyError, OSError)
    assert not ap.RetryPolicy(retry_on=()).retryable(TimeoutError())  # retries nothing


def test_delay_is_exponential_and_capped() -> None:
    p = ap.RetryPolicy(backoff=0.5, max_backoff=30.0, jitter=False)
    assert [p.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert p.delay(10**9) == 30.0  # no overflow for absurd retry numbers
    assert ap.RetryPolicy(backoff=0.0, jitter=False).delay(50) == 0.0
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match="n="):
            p.delay(bad)  # type: ignore[arg-type]


def test_jitter_draws_uniformly_below_the_cap() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.args: list[tuple[float, float]] = []

        def uniform(self, a: float, b: float) -> float:
            self.args.append((a, b))
            return (a + b) / 2

    rec = Recorder()
    p = ap.RetryPolicy(backoff=1.0, max_backoff=5.0, jitter=True)
    assert [p.delay(n, rng=rec) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert rec.args == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 5.0)]
    rng = random.Random(7)
    draws = [p.delay(3, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 1.0 and max(draws) > 3.0  # spread over the range, not a constant


@pytest.mark.parametrize(
    "exc",
    [
        Status(429, {"Retry-After": "45"}),
        Status(503, {"retry-after-ms": "45000", "retry-after": "1"}),
        httpx_error(429, {"retry-after": "45"}),
        requests_error(503, {"Retry-After": "45"}),
    ],
)
def test_retry_hint_raises_delay_above_max_backoff(exc: Exception) -> None:
    p = ap.RetryPolicy(backoff=0.5, max_backoff=30.0, jitter=True)
    assert p.delay(1, exc) == pytest.approx(45.0)
    assert p.next_delay(1, exc, 0.0) == pytest.approx(45.0)
    ignoring = ap.RetryPolicy(
        backoff=0.5, max_backoff=30.0, jitter=False, respect_retry_after=False
    )
    assert ignoring.delay(1, exc) == 0.5


def test_small_hint_does_not_lower_the_backoff() -> None:
    p = ap.RetryPolicy(backoff=4.0, jitter=False)
    assert p.delay(1, Status(429, {"retry-after": "1"})) == 4.0


def test_default_rule_retries_transient_errors_only() -> None:
    p = ap.RetryPolicy()
    for exc in (
        TimeoutError(),
        ConnectionResetError(),
        asyncio.TimeoutError(),
        Status(429),
        Status(503),
        Status(500),
        httpx_error(502),
        httpx.ConnectError("refused"),
        requests_error(504),
        requests.ConnectionError("refused"),
    ):
        assert p.retryable(exc), exc
    for exc in (ValueError(), Status(400), Status(404), httpx_error(401), requests_error(422)):
        assert not p.retryable(exc), exc
    for base in (asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(), Exit()):
        assert not p.retryable(base)


def test_tuple_and_predicate_rules_replace_the_default() -> None:
    p = ap.RetryPolicy(retry_on=(KeyError, Status))
    assert p.retryable(KeyError()) and p.retryable(Status(400))
    assert not p.retryable(TimeoutError())
    seen: list[BaseException] = []

    def only_teapots(exc: BaseException) -> bool:
        seen.append(exc)
        return getattr(exc, "status_code", None) == 418

    q = ap.RetryPolicy(retry_on=only_teapots)
    teapot, boom = Status(418), Status(503)
    assert q.retryable(teapot) and not q.retryable(boom)
    assert seen == [teapot, boom]
    # Even a predicate that says yes to everything never sees cancellation.
    always = ap.RetryPolicy(retry_on=lambda e: True)
    assert not always.retryable(asyncio.CancelledError()) and not always.retryable(Exit())


def test_next_delay_stops_at_attempts_and_max_elapsed() -> None:
    p = ap.RetryPolicy(attempts=3, backoff=1.0, jitter=False, max_elapsed=10.0)
    err = TimeoutError()
    assert p.next_delay(1, err, 0.0) == 1.0
    assert p.next_delay(2, err, 1.0) == 2.0
    assert p.next_delay(3, err, 3.0) is None  # a 4th call would exceed attempts=3
    assert p.next_delay(1, ValueError(), 0.0) is None
    q = ap.RetryPolicy(attempts=100, backoff=1.0, jitter=False, max_elapsed=10.0)
    assert q.next_delay(3, err, 6.0) == 4.0  # starts at exactly 10.0: allowed
    assert q.next_delay(3, err, 6.5) is None  # would start at 10.5
    assert q.next_delay(1, Status(429, {"retry-after": "20"}), 0.0) is None
    assert ap.RetryPolicy(attempts=1).next_delay(1, err, 0.0) is None
    unbounded = ap.RetryPolicy(attempts=2000, backoff=1.0, max_backoff=math.inf, jitter=False)
    assert unbounded.next_delay(10, err, 0.0) == 512.0
    assert unbounded.next_delay(1500, err, 0.0) is None  # 2 ** 1499 s overflows: never


# --- the agent, sync -------------------------------------------------------------------------


def test_flaky_agent_succeeds_after_k_failures(fake_time: FakeTime) -> None:
    flaky = Flaky(TimeoutError, ConnectionError, Status(503))
    agent = ap.RetryingAgent(flaky, ap.RetryPolicy(backoff=0.5, jitter=False))
    assert agent.execute("x") == "x"
    assert flaky.calls == 4
    assert fake_time.sleeps == [0.5, 1.0, 2.0]
    assert agent.stats() == ap.RetryStats(calls=1, attempts=4, retries=3, successes=1, failures=0)


def test_gives_up_with_the_last_exception_unchanged(fake_time: FakeTime) -> None:
    flaky = Flaky(Status(503), Status(503), Status(503), Status(503))
    agent = ap.RetryingAgent(flaky, ap.RetryPolicy(attempts=3, backoff=0.1, jitter=False))
    with pytest.raises(Status) as info:
        agent.execute("x")
    assert flaky.calls == 3
    assert info.value is flaky.raised[-1]
    # No chaining to an earlier attempt, and the traceback holds one call of the agent.
    assert info.value.__context__ is None and info.value.__cause__ is None
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames.count("_next") == 1, frames
    assert fake_time.sleeps == pytest.approx([0.1, 0.2])
    s = agent.stats()
    assert (s.calls, s.attempts, s.retries, s.successes, s.failures) == (1, 3, 2, 0, 1)


def test_one_stored_exception_raised_again_does_not_grow_its_traceback() -> None:
    err = Status(503)

    def agent_fn(x: Any) -> Any:
        raise err

    agent = ap.RetryingAgent(agent_fn, no_wait(attempts=6))
    with pytest.raises(Status) as info:
        agent.execute(1)
    assert info.value is err
    frames = [f.name for f in traceback.extract_tb(err.__traceback__)]
    assert frames.count("agent_fn") == 1, frames


@pytest.mark.parametrize(
    "exc", [Status(400), ValueError("bad input"), httpx_error(404), requests_error(401)]
)
def test_non_transient_errors_are_not_retried(exc: Exception) -> None:
    flaky = Flaky(exc)
    agent = ap.RetryingAgent(flaky, no_wait())
    with pytest.raises(type(exc)) as info:
        agent.execute(1)
    assert info.value is exc and flaky.calls == 1
    assert agent.stats().failures == 1 and agent.stats().retries == 0


def test_real_client_errors_are_retried() -> None:
    flaky = Flaky(httpx_error(503), requests_error(502), httpx.ReadTimeout("slow"))
    agent = ap.RetryingAgent(flaky, no_wait())
    assert agent.execute(5) == 5 and flaky.calls == 4


def test_retry_on_tuple() -> None:
    flaky = Flaky(KeyError("a"), KeyError("b"), TimeoutError())
    agent = ap.RetryingAgent(flaky, no_wait(retry_on=(KeyError,)))
    with pytest.raises(TimeoutError):  # not in the tuple: no longer retried
        agent.execute(1)
    assert flaky.calls == 3


def test_retry_on_predicate_and_a_predicate_that_raises() -> None:
    flaky = Flaky(Status(418), Status(418), Status(503))
    agent = ap.RetryingAgent(flaky, no_wait(retry_on=lambda e: e.status_code == 418))
    with pytest.raises(Status) as info:
        agent.execute(1)
    assert info.value.status_code == 503 and flaky.calls == 3

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    flaky2 = Flaky(Status(503))
    agent2 = ap.RetryingAgent(flaky2, no_wait(retry_on=broken))
    with pytest.raises(RuntimeError, match="predicate bug") as info2:
        agent2.execute(1)
    assert info2.value.__context__ is flaky2.raised[0]
    assert flaky2.calls == 1 and agent2.stats().failures == 1


@pytest.mark.parametrize("exc_type", [Exit, KeyboardInterrupt, asyncio.CancelledError])
def test_base_exceptions_are_never_retried(exc_type: type[BaseException]) -> None:
    flaky = Flaky(exc_type, exc_type)
    agent = ap.RetryingAgent(flaky, no_wait(retry_on=lambda e: True))
    with pytest.raises(exc_type):
        agent.execute(1)
    assert flaky.calls == 1
    s = agent.stats()
    assert (s.calls, s.failures, s.successes, s.retries) == (1, 0, 0, 0)


def test_retry_after_hint_really_waits_above_max_backoff() -> None:
    flaky = Flaky(Status(429, {"retry-after-ms": "150"}), httpx_error(503, {"Retry-After": "0.1"}))
    agent = ap.RetryingAgent(flaky, ap.RetryPolicy(backoff=0.001, max_backoff=0.001))
    t0 = time.monotonic()
    assert agent.execute("ok") == "ok"
    assert time.monotonic() - t0 >= 0.25 - 0.01  # slept at least the two hints
    assert flaky.calls == 3


def test_max_elapsed_with_a_fake_clock(fake_time: FakeTime) -> None:
    flaky = Flaky(*[TimeoutError() for _ in range(50)])
    policy = ap.RetryPolicy(attempts=50, backoff=1.0, jitter=False, max_elapsed=10.0)
    with pytest.raises(TimeoutError):
        ap.RetryingAgent(flaky, policy).execute(1)
    # Retries start at 1, 3, 7; the next would start at 15 > 10.
    assert fake_time.sleeps == [1.0, 2.0, 4.0] and flaky.calls == 4


def test_max_elapsed_with_real_sleeps() -> None:
    flaky = Flaky(*[TimeoutError() for _ in range(50)])
    policy = ap.RetryPolicy(attempts=50, backoff=0.05, jitter=False, max_elapsed=0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ap.RetryingAgent(flaky, policy).execute(1)
    # Starts at >= 0.05, 0.15, 0.35, then >= 0.75 > 0.5: never a 5th call, however slow.
    assert 1 <= flaky.calls <= 4
    assert time.monotonic() - t0 >= 0.05 * (2 ** (flaky.calls - 1) - 1) - 0.01  # slept them


# --- the agent, async ------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_async_flaky_agent_retries() -> None:
    flaky = AsyncFlaky(Status(503), TimeoutError())
    agent = ap.RetryingAgent(flaky, no_wait())
    assert await agent.aexecute("a") == "a"
    assert flaky.calls == 3 and agent.stats().retries == 2


@pytest.mark.timeout(10)
async def test_async_wrapper_of_a_sync_agent_and_sync_wrapper_of_an_async_agent() -> None:
    flaky = Flaky(Status(502))
    assert await ap.RetryingAgent(flaky, no_wait()).aexecute(3) == 3 and flaky.calls == 2
    aflaky = AsyncFlaky(Status(502))
    out = await asyncio.to_thread(ap.RetryingAgent(aflaky, no_wait()).execute, 4)
    assert out == 4 and aflaky.calls == 2


@pytest.mark.timeout(10)
async def test_async_gives_up_with_the_same_object_unchained() -> None:
    flaky = AsyncFlaky(*[Status(503) for _ in range(5)])
    agent = ap.RetryingAgent(flaky, no_wait(attempts=4))
    with pytest.raises(Status) as info:
        await agent.aexecute(1)
    assert info.value is flaky.raised[-1] and flaky.calls == 4
    assert info.value.__context__ is None
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames.count("_next") == 1, frames


@pytest.mark.timeout(10)
async def test_async_retry_hint_waits() -> None:
    flaky = AsyncFlaky(Status(429, {"retry-after": "0.15"}))
    agent = ap.RetryingAgent(flaky, ap.RetryPolicy(backoff=0.001, max_backoff=0.001))
    t0 = time.monotonic()
    assert await agent.aexecute(1) == 1
    assert time.monotonic() - t0 >= 0.15 - 0.01


@pytest.mark.timeout(10)
async def test_cancelled_while_sleeping_makes_no_further_call() -> None:
    first_call = asyncio.Event()
    calls = 0

    async def failing(x: Any) -> Any:
        nonlocal calls
        calls += 1
        first_call.set()
        raise Status(503)

    agent = ap.RetryingAgent(failing, ap.RetryPolicy(backoff=5.0, jitter=False))
    task = asyncio.create_task(agent.aexecute(1))
    await first_call.wait()
    await asyncio.sleep(0.05)  # now sleeping before retry 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert calls == 1
    s = agent.stats()
    assert (s.calls, s.attempts, s.retries, s.failures) == (1, 1, 0, 0)


@pytest.mark.timeout(10)
async def test_async_base_exceptions_are_not_retried() -> None:
    flaky = AsyncFlaky(asyncio.CancelledError, Exit)
    agent = ap.RetryingAgent(flaky, no_wait(retry_on=lambda e: True))
    with pytest.raises(asyncio.CancelledError):
        await agent.aexecute(1)
    with pytest.raises(Exit):
        await agent.aexecute(1)
    assert flaky.calls == 2


# --- meter, composition, object behaviour -----------------------------------------------------


def test_every_retry_is_reported_to_the_meter() -> None:
    # The caller (a batch run) counts the call it makes; the wrapper reports the extra ones.
    meter = _meter.Meter()
    token = _meter.METER.set(meter)
    try:
        agent = ap.RetryingAgent(Flaky(TimeoutError, TimeoutError), no_wait())
        assert agent.execute(1) == 1
    finally:
        _meter.METER.reset(token)
    assert meter.calls == 2


@pytest.mark.timeout(10)
async def test_meter_from_async_and_from_a_worker_thread() -> None:
    meter = _meter.Meter()
    token = _meter.METER.set(meter)
    try:
        await ap.RetryingAgent(AsyncFlaky(TimeoutError), no_wait()).aexecute(1)
        await ap.RetryingAgent(Flaky(TimeoutError, TimeoutError), no_wait()).aexecute(1)
        await asyncio.to_thread(ap.RetryingAgent(Flaky(TimeoutError), no_wait()).execute, 1)
    finally:
        _meter.METER.reset(token)
    assert meter.calls == 1 + 2 + 1


def test_a_cache_outside_retries_only_misses() -> None:
    flaky = Flaky(TimeoutError, Status(503))
    retrying = ap.RetryingAgent(flaky, no_wait())
    with ap.CachedAgent(retrying, max_size=10, ttl=None) as cached:
        assert cached.execute("q") == "q"
        assert cached.execute("q") == "q"
        assert cached.stats().hits == 1
    assert flaky.calls == 3
    assert retrying.stats().calls == 1 and retrying.stats().retries == 2


def test_retrying_over_a_pool_leases_an_agent_per_attempt() -> None:
    class FailsFirst:
        def __init__(self) -> None:
            self.used = 0

        def execute(self, x: Any) -> Any:
            self.used += 1
            if self.used == 1:
                raise ConnectionError("cold start")
            return x

    with ap.AgentPool(FailsFirst, initial_size=1, max_size=1) as pool:
        agent = ap.RetryingAgent(pool, no_wait())
        assert agent.execute(9) == 9
        assert pool.stats().acquired == 2
    with ap.AgentPool(lambda: ap.RetryingAgent(FailsFirst(), no_wait()), max_size=2) as pool2:
        assert pool2.execute(7) == 7


def test_constructor_rule_repr_and_weakref() -> None:
    fn = Flaky()
    a = ap.RetryingAgent(fn)
    assert a.policy == ap.RetryPolicy() and a.agent is fn
    b = ap.RetryingAgent(fn, attempts=2, jitter=False)
    assert (b.policy.attempts, b.policy.jitter) == (2, False)
    assert ap.RetryingAgent(fn, policy=ap.RetryPolicy(attempts=4)).policy.attempts == 4
    c = ap.RetryingAgent(fn, ap.RetryPolicy(backoff=1.0), attempts=3)
    assert (c.policy.attempts, c.policy.backoff) == (3, 1.0)
    assert "RetryingAgent(" in repr(c) and "RetryPolicy(attempts=3" in repr(c)
    assert isinstance(c, ap.Agent)
    r = weakref.ref(c)
    del c
    assert r() is None
    with pytest.raises(TypeError, match="policy="):
        ap.RetryingAgent(fn, {"attempts": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agent="):
        ap.RetryingAgent(42)
    with pytest.raises(ValueError, match="attempts=0"):
        ap.RetryingAgent(fn, attempts=0)


@pytest.mark.timeout(30)
def test_counts_are_exact_under_threads() -> None:
    seen: set[int] = set()
    lock = threading.Lock()

    def fails_once_per_input(x: int) -> int:
        with lock:
            first = x not in seen
            seen.add(x)
        if first:
            raise TimeoutError
        return x

    agent = ap.RetryingAgent(fails_once_per_input, no_wait())

    def run(base: int) -> None:
        for i in range(100):
            assert agent.execute(base + i) == base + i

    threads = [threading.Thread(target=run, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert agent.stats() == ap.RetryStats(
        calls=800, attempts=1600, retries=800, successes=800, failures=0
    )


def test_fake_time_fixture_patches_only_the_retry_module(fake_time: FakeTime) -> None:
    assert isinstance(retry_mod.time, FakeTime)
    assert isinstance(time, types.ModuleType) and time.monotonic() != fake_time.now


@pytest.mark.timeout(30)
async def test_a_batch_over_a_retrying_agent_completes_every_item() -> None:
    failed: set[int] = set()

    async def flaky(x: int) -> int:
        await asyncio.sleep(0)
        if x % 3 == 0 and x not in failed:
            failed.add(x)
            raise Status(503)
        return x * 10

    agent = ap.RetryingAgent(flaky, no_wait())
    result = await ap.BatchExecutor(agent, max_concurrency=8).aexecute(range(60))
    assert result.outputs == [x * 10 for x in range(60)] and result.errors == []
    assert agent.stats() == ap.RetryStats(
        calls=60, attempts=80, retries=20, successes=60, failures=0
    )


@given(
    backoff=st.floats(0.0, 1e6),
    max_backoff=st.floats(1e-6, 1e6),
    n=st.integers(1, 10_000),
    jitter=st.booleans(),
    hint=st.one_of(st.none(), st.floats(0.0, 1e5)),
    seed=st.integers(0, 2**32),
)
def test_delay_bounds_property(
    backoff: float, max_backoff: float, n: int, jitter: bool, hint: float | None, seed: int
) -> None:
    max_backoff = max(max_backoff, backoff)  # max_backoff < backoff is refused
    p = ap.RetryPolicy(backoff=backoff, max_backoff=max_backoff, jitter=jitter)
    exc = None if hint is None else Status(429, {"retry-after": repr(hint)})
    cap = float(min(Fraction(max_backoff), Fraction(backoff) * 2 ** (n - 1)))  # exact
    d = p.delay(n, exc, rng=random.Random(seed))
    floor = 0.0 if hint is None else hint
    assert max(floor, 0.0) <= d <= max(cap, floor) * (1 + 1e-12)
    if not jitter:
        assert d == pytest.approx(max(cap, floor), rel=1e-12)
        assert p.delay(n + 1, exc) >= d  # never shorter for a later retry


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0.1) then 503, then 200 with the request count."""

    count = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with _Refusing.lock:
            _Refusing.count += 1
            n = _Refusing.count
        if n == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0.1")
        elif n == 2:
            self.send_response(503)
        else:
            self.send_response(200)
        body = str(n).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Any:
    _Refusing.count = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()
    t.join()


@pytest.mark.timeout(30)
def test_real_http_server_with_requests(refusing_server: str) -> None:
    def call(url: str) -> str:
        r = requests.get(url, timeout=5)
        r.raise_for_status()
        return r.text

    agent = ap.RetryingAgent(call, ap.RetryPolicy(backoff=0.001, max_backoff=0.001))
    t0 = time.monotonic()
    assert agent.execute(refusing_server) == "3"
    assert time.monotonic() - t0 >= 0.1 - 0.01  # honoured the server's Retry-After
    assert agent.stats().retries == 2


@pytest.mark.timeout(30)
async def test_real_http_server_with_httpx_async(refusing_server: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:

        async def call(url: str) -> str:
            r = await client.get(url)
            r.raise_for_status()
            return r.text

        agent = ap.RetryingAgent(call, ap.RetryPolicy(backoff=0.001, max_backoff=0.001))
        t0 = time.monotonic()
        assert await agent.aexecute(refusing_server) == "3"
        assert time.monotonic() - t0 >= 0.1 - 0.01
        assert agent.stats().retries == 2
