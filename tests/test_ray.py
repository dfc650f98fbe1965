"""The batch executor on a real local Ray cluster (``ray.init(num_cpus=2)``, session scoped).

The behaviour tests run twice, on the local backend and on Ray, and assert the same things:
that is the proof that a batch behaves alike in one process and on actors.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import pathlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import agentperf as ap
from redis_server import redis_server_fixture  # noqa: F401 - fixture

ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Functions of this module travel to the actors by value (the workers cannot import it).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "local":
        yield None
        return
    request.getfixturevalue("ray_cluster")
    b = ap.RayBackend(actors=2)
    yield b
    b.close()


class Boom(Exception):
    pass


async def double_or_boom(x: int) -> int:
    await asyncio.sleep(0.001)
    if x % 5 == 3:
        raise Boom(f"bad {x}", x)
    return 2 * x


def blocking_double(x: int) -> int:
    time.sleep(0.001)
    return 2 * x


# --- one suite, both backends -------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_outputs_errors_and_counts(backend: Any) -> None:
    with ap.BatchExecutor(double_or_boom, max_concurrency=8, backend=backend) as ex:
        r = await ex.aexecute(range(50))
    assert r.outputs == [None if x % 5 == 3 else 2 * x for x in range(50)]
    assert sorted(e.index for e in r.errors) == [x for x in range(50) if x % 5 == 3]
    for e in r.errors:
        assert type(e.error) is Boom and e.error.args == (f"bad {e.input}", e.input)
    s = r.stats
    assert (s.total_count, s.success_count, s.failure_count, s.cancelled_count) == (50, 40, 10, 0)
    assert s.attempts == 50 and s.rerun == 0
    assert 0 < s.min_item_s <= s.avg_item_s <= s.max_item_s


@pytest.mark.timeout(120)
async def test_a_blocking_agent_and_an_unsized_input(backend: Any) -> None:
    def gen() -> Iterator[int]:
        yield from range(30)

    with ap.BatchExecutor(blocking_double, max_concurrency=4, backend=backend) as ex:
        r = await ex.aexecute(gen())
    assert r.outputs == [2 * x for x in range(30)]
    assert r.stats.total_count == 30


@pytest.mark.timeout(120)
def test_the_sync_twins(backend: Any) -> None:
    with ap.BatchExecutor(double_or_boom, max_concurrency=4, backend=backend) as ex:
        assert ex.execute([1, 2]).outputs == [2, 4]
        items = sorted(ex.stream(range(10)))
    assert [i.index for i in items] == list(range(10))
    assert [i.ok for i in items] == [x % 5 != 3 for x in range(10)]


@pytest.mark.timeout(120)
async def test_fail_fast_stops_the_rest(backend: Any) -> None:
    async def agent(x: int) -> int:
        if x == 2:
            raise Boom("first")
        await asyncio.sleep(0.5)
        return x

    ex = ap.BatchExecutor(
        agent, max_concurrency=4, error_policy=ap.ErrorPolicy.FAIL_FAST, backend=backend
    )
    with ex:
        r = await ex.aexecute(range(200))
    assert type(r.errors[0].error) is Boom
    s = r.stats
    assert s.failure_count >= 1 and s.cancelled_count > 150
    assert s.success_count + s.failure_count + s.cancelled_count == 200


@pytest.mark.timeout(120)
async def test_item_timeout_and_the_batch_timeout(backend: Any) -> None:
    async def agent(x: int) -> int:
        await asyncio.sleep(5.0 if x == 1 else 0.01)
        return x

    with ap.BatchExecutor(agent, max_concurrency=4, item_timeout=0.2, backend=backend) as ex:
        r = await ex.aexecute(range(6))
    assert [e.index for e in r.errors] == [1]
    assert isinstance(r.errors[0].error, TimeoutError)

    async def hang(x: int) -> int:
        await asyncio.sleep(30.0)
        return x

    second = None if backend is None else ap.RayBackend(actors=2)  # one executor a backend
    with ap.BatchExecutor(hang, max_concurrency=2, timeout=0.5, backend=second) as ex:
        r = await ex.aexecute(range(10))
    s = r.stats
    assert s.success_count == 0
    assert s.failure_count >= 1  # the calls running when the timeout passed
    assert all(isinstance(e.error, ap.BatchTimeoutError) for e in r.errors)
    assert s.failure_count + s.cancelled_count == 10


@pytest.mark.timeout(120)
async def test_leaving_a_stream_early_cancels_the_rest(backend: Any) -> None:
    async def agent(x: int) -> int:
        await asyncio.sleep(0.01 if x < 4 else 2.0)
        return x

    ex = ap.BatchExecutor(agent, max_concurrency=4, backend=backend)
    t0 = time.monotonic()
    async with ex.astream(range(100)) as stream:
        async for item in stream:
            assert item.ok
            break
    assert stream.stats is not None and stream.stats.cancelled_count >= 90
    assert time.monotonic() - t0 < 30.0  # did not wait for 96 calls of 2 s
    ex.close()


# --- Ray only -------------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_a_dying_actor_has_its_items_run_again(
    ray_cluster: None, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "died"

    async def agent(x: int) -> int:
        await asyncio.sleep(0.005)
        if x == 7 and not marker.exists():
            marker.write_text("once")
            os._exit(1)  # the actor's process dies mid-chunk
        return x

    with ap.BatchExecutor(agent, max_concurrency=8, backend=ap.RayBackend(actors=3)) as ex:
        r = await ex.aexecute(range(120))
    assert marker.exists()
    assert r.errors == []
    assert r.outputs == list(range(120))
    assert r.stats.rerun >= 1
    assert r.stats.success_count == 120  # none lost, none twice


@pytest.mark.timeout(180)
async def test_when_every_actor_dies_the_items_fail(ray_cluster: None) -> None:
    async def agent(x: int) -> int:
        os._exit(1)

    with ap.BatchExecutor(agent, max_concurrency=4, backend=ap.RayBackend(actors=2)) as ex:
        r = await ex.aexecute(range(20))
    s = r.stats
    assert s.success_count == 0 and s.failure_count >= 1
    assert all(isinstance(e.error, ray.exceptions.RayActorError) for e in r.errors)
    assert s.failure_count + s.cancelled_count == 20


@pytest.mark.timeout(120)
def test_bad_configuration(ray_cluster: None) -> None:
    with pytest.raises(ValueError, match="actors=0"):
        ap.RayBackend(actors=0)
    with pytest.raises(ValueError, match="chunk_size=0"):
        ap.RayBackend(chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        ap.RayBackend(chunk_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="actor_options"):
        ap.RayBackend(actor_options=[("num_cpus", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend="):
        ap.BatchExecutor(double_or_boom, backend="ray")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="semaphore="):
        ap.BatchExecutor(double_or_boom, semaphore=ap.Semaphore(2), backend=ap.RayBackend())
    # A limiter kept in one process: each actor would let the whole rate through.
    with pytest.raises(ValueError, match=r"rate_limit=.*store=.*name="):
        ap.BatchExecutor(double_or_boom, rate_limit=ap.RateLimiter(5), backend=ap.RayBackend())
    with pytest.raises(ValueError, match=r"rate_limit=.*store=.*name="):
        ap.BatchExecutor(
            double_or_boom, rate_limit=[(ap.RateLimiter(5), len)], backend=ap.RayBackend()
        )


@pytest.mark.timeout(120)
def test_an_agent_ray_cannot_serialise_is_named(ray_cluster: None) -> None:
    lock = threading.Lock()

    def agent(x: int) -> int:
        with lock:
            return x

    with ap.BatchExecutor(agent, backend=ap.RayBackend(actors=1)) as ex:
        with pytest.raises(TypeError, match=r"agent=.*Ray cannot serialise it"):
            ex.execute([1])


@pytest.mark.timeout(120)
def test_closing_the_executor_ends_the_actors(ray_cluster: None) -> None:
    backend = ap.RayBackend(actors=2)
    ex = ap.BatchExecutor(double_or_boom, backend=backend)
    assert ex.execute([1]).outputs == [2]
    handles = list(backend._handles)
    ex.close()
    assert backend._handles == []
    # ray.kill is asynchronous: a call sent right after it may still be served. Wait for the
    # actor's state (dead), not for a fixed time.
    deadline = time.monotonic() + 60
    dead = False
    while not dead and time.monotonic() < deadline:
        try:
            ray.get(handles[0].ping.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            dead = True
        else:
            time.sleep(0.05)
    assert dead, "the actor still answers a minute after the executor was closed"


def _stamp(x: int) -> float:
    return time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the host


@pytest.mark.timeout(180)
def test_a_cluster_wide_limiter_holds_across_the_actors(
    ray_cluster: None, redis_server: Any
) -> None:
    rate, burst, n = 40.0, 4.0, 70
    store = ap.RedisStore(redis_server.url, namespace="ray" + os.urandom(4).hex())
    lim = ap.RateLimiter(rate, burst=burst, store=store, name="ray-rpm")
    with ap.BatchExecutor(
        _stamp, max_concurrency=16, rate_limit=lim, backend=ap.RayBackend(actors=2)
    ) as ex:
        result = ex.execute(range(n))
    assert result.errors == [] and len(result.outputs) == n
    stamps = sorted(result.outputs)
    peak = max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))
    # One budget for both actors: never above the rate (+1 % in leases) and the burst.
    assert peak <= rate * 1.02 + burst
    client: Any = store._sync
    assert client.exists(lim.keys[0])  # the actors' limiters drew from Redis
    store.close()


@pytest.mark.timeout(120)
async def test_sync_entry_points_in_a_running_loop_are_refused(ray_cluster: None) -> None:
    with ap.BatchExecutor(double_or_boom, backend=ap.RayBackend(actors=1)) as ex:
        with pytest.raises(RuntimeError, match=r"execute\(\) blocks.*aexecute"):
            ex.execute([1])
        with pytest.raises(RuntimeError, match=r"stream\(\) blocks.*astream"):
            ex.stream([1])
        assert (await ex.aexecute([1, 2])).outputs == [2, 4]  # the async twin works here
