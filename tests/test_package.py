"""The package surface: errors, configuration validation, agent shapes, lifecycle hooks."""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import math
import pathlib
import re

import pytest

import agentperf as ap
from agentperf import _agentperf
from agentperf.agent import adapt


def test_error_tree() -> None:
    assert issubclass(ap.PoolClosedError, ap.AgentPerfError)
    assert issubclass(ap.PoolTimeoutError, ap.AgentPerfError)
    assert issubclass(ap.PoolTimeoutError, TimeoutError)
    assert issubclass(ap.BatchTimeoutError, TimeoutError)
    assert issubclass(ap.BatchTimeoutError, ap.AgentPerfError)
    assert not issubclass(ap.PoolClosedError, TimeoutError)
    assert ap.PoolTimeoutError.__module__ == "agentperf"


def test_config_defaults_follow_the_seed() -> None:
    c = ap.CacheConfig()
    assert (c.max_size, c.ttl, c.cleanup_interval, c.enable_stats, c.key_generator) == (
        1000,
        600.0,
        60.0,
        True,
        None,
    )
    p = ap.PoolConfig()
    assert (
        p.initial_size,
        p.max_size,
        p.idle_timeout,
        p.max_lifetime,
        p.acquire_timeout,
        p.cleanup_interval,
        p.check,
    ) == (5, 50, 300.0, 1800.0, 10.0, 60.0, None)
    assert ap.PoolConfig(max_size=2).initial_size == 2
    b = ap.BatchConfig()
    assert (b.max_concurrency, b.timeout, b.item_timeout, b.error_policy, b.enable_stats) == (
        10,
        300.0,
        None,
        ap.ErrorPolicy.CONTINUE,
        True,
    )


def test_config_accepts_timedelta_and_inf() -> None:
    assert ap.CacheConfig(ttl=datetime.timedelta(minutes=2)).ttl == 120.0
    assert ap.CacheConfig(ttl=math.inf).ttl is None
    assert ap.PoolConfig(idle_timeout=None).idle_timeout is None
    assert ap.BatchConfig(error_policy="fail_fast").error_policy is ap.ErrorPolicy.FAIL_FAST


@pytest.mark.parametrize(
    ("cls", "field", "value", "exc"),
    [
        (ap.CacheConfig, "max_size", 0, ValueError),
        (ap.CacheConfig, "max_size", 1.5, TypeError),
        (ap.CacheConfig, "max_size", True, TypeError),
        (ap.CacheConfig, "ttl", 0, ValueError),
        (ap.CacheConfig, "ttl", -1.0, ValueError),
        (ap.CacheConfig, "ttl", math.nan, ValueError),
        (ap.CacheConfig, "ttl", "10", TypeError),
        (ap.CacheConfig, "cleanup_interval", None, TypeError),
        (ap.CacheConfig, "cleanup_interval", 0.0, ValueError),
        (ap.CacheConfig, "enable_stats", 1, TypeError),
        (ap.CacheConfig, "key_generator", "nope", TypeError),
        (ap.PoolConfig, "max_size", 0, ValueError),
        (ap.PoolConfig, "initial_size", -1, ValueError),
        (ap.PoolConfig, "initial_size", 99, ValueError),
        (ap.PoolConfig, "idle_timeout", 0, ValueError),
        (ap.PoolConfig, "max_lifetime", -5, ValueError),
        (ap.PoolConfig, "acquire_timeout", -0.1, ValueError),
        (ap.PoolConfig, "cleanup_interval", 0, ValueError),
        (ap.PoolConfig, "check", 3, TypeError),
        (ap.BatchConfig, "max_concurrency", 0, ValueError),
        (ap.BatchConfig, "max_concurrency", "4", TypeError),
        (ap.BatchConfig, "timeout", 0, ValueError),
        (ap.BatchConfig, "item_timeout", -1, ValueError),
        (ap.BatchConfig, "error_policy", "sometimes", ValueError),
        (ap.BatchConfig, "error_policy", 3, TypeError),
    ],
)
def test_bad_configuration_names_field_and_value(
    cls: type, field: str, value: object, exc: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        cls(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


class _Exec:
    def execute(self, x: int) -> int:
        return x + 1

    async def aexecute(self, x: int) -> int:
        return x + 2


class _Invoke:
    def invoke(self, x: int) -> int:
        return x * 10


class _AsyncCall:
    async def __call__(self, x: int) -> int:
        return -x


async def _async_fn(x: int) -> int:
    return x * 3


def test_agent_shapes_sync() -> None:
    assert adapt(_Exec()).call(1) == 2
    assert adapt(_Invoke()).call(2) == 20
    assert adapt(lambda x: x - 1).call(5) == 4
    assert adapt(_async_fn).call(2) == 6
    assert adapt(_AsyncCall()).call(4) == -4
    with pytest.raises(TypeError, match=r"agent=.*int"):
        adapt(42)


async def test_agent_shapes_async() -> None:
    assert await adapt(_Exec()).acall(1) == 3
    assert await adapt(_Invoke()).acall(2) == 20
    assert await adapt(_async_fn).acall(2) == 6
    assert await adapt(_AsyncCall()).acall(4) == -4
    loop_thread = __import__("threading").get_ident()
    seen: list[int] = []

    def blocking(x: int) -> int:
        seen.append(__import__("threading").get_ident())
        return x

    assert await adapt(blocking).acall(7) == 7
    assert seen and seen[0] != loop_thread, "a blocking agent ran on the event loop"
    with pytest.raises(RuntimeError, match="async-only"):
        adapt(_async_fn).call(1)


def test_agent_exceptions_pass_unchanged() -> None:
    err = KeyError("x")

    def boom(_: object) -> None:
        raise err

    with pytest.raises(KeyError) as info:
        adapt(boom).call(1)
    assert info.value is err
    with pytest.raises(KeyError) as info2:
        asyncio.run(adapt(boom).acall(1))  # type: ignore[arg-type]
    assert info2.value is err


def test_cleanup_thread_idle_without_users() -> None:
    running, tasks = _agentperf._cleanup_thread_state()
    assert tasks >= 0
    assert isinstance(running, bool)


# --- the distribution ------------------------------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parent.parent
# `pip install agentperf...` or `agentperf[extra]` without `-rs`: the unrelated PyPI project.
WRONG_NAME = re.compile(r"""pip install\s+['"]?agentperf(?![-\w])|agentperf\[""")


def _shipped_texts() -> list[pathlib.Path]:
    """Everything that can tell a user what to install: docs, messages, build files."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "python" / "agentperf").rglob("*.py"))
    files += sorted((ROOT / "python" / "agentperf").rglob("*.pyi"))
    files += sorted((ROOT / "rust" / "src").rglob("*.rs"))
    files += sorted((ROOT / "examples").glob("*.py"))
    return [f for f in files if f.is_file()]


def test_nothing_tells_users_to_install_the_pypi_agentperf() -> None:
    """`agentperf` on PyPI is another project: every install hint names agentperf-rs."""
    found = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in _shipped_texts()
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if WRONG_NAME.search(line)
    ]
    assert found == []
    assert WRONG_NAME.search("pip install 'agentperf[progress]'")
    assert not WRONG_NAME.search("pip install 'agentperf-rs[progress]'")


def test_distribution_is_agentperf_rs_with_the_package_version() -> None:
    assert importlib.metadata.version("agentperf-rs") == ap.__version__
    assert tomllib_name() == "agentperf-rs"


def tomllib_name() -> str:
    """The [project] name in pyproject.toml (no tomllib on 3.10: a line scan suffices)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1]
    m = re.search(r'^name\s*=\s*"([^"]+)"', project, re.M)
    assert m is not None
    return m.group(1)
