"""The executor's checks of what it is given: options, inputs, limits, where it is called."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import Any

from .._config import boolean, optional_callable, show

__all__ = ["check_inputs", "check_progress", "cluster_unsafe", "limits", "refuse_in_loop"]


def check_progress(progress: Any, on_progress: Any) -> bool:
    show_bar = boolean("progress", progress)
    optional_callable("on_progress", on_progress)
    if show_bar:
        try:
            importlib.import_module("tqdm")
        except ImportError:
            raise ImportError(
                "progress=True needs tqdm: install the extra with "
                "pip install 'agentperf-rs[progress]' (or pip install tqdm)"
            ) from None
    return show_bar


def refuse_in_loop(name: str, instead: str) -> None:
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            f"BatchExecutor.{name}() blocks, and an event loop is running in this thread: "
            f"use {instead} instead"
        )


def check_inputs(inputs: object, method: str) -> None:
    """Refuse the iterables that are almost always one input passed by mistake."""
    if isinstance(inputs, (str, bytes, bytearray, memoryview)):
        kind = type(inputs).__name__
        raise TypeError(
            f"inputs={show(inputs)}: a {kind} is one input, not a batch of inputs (iterating "
            f"it would run the agent once per character or byte); pass a list: "
            f"ex.{method}([x])"
        )
    if isinstance(inputs, Mapping):
        kind = type(inputs).__name__
        raise TypeError(
            f"inputs={show(inputs)}: a {kind} is ambiguous as a batch (its keys, its values or "
            f"itself as one input?); pass a list: ex.{method}(list(d.values())), "
            f"ex.{method}(list(d.items())) or ex.{method}([d])"
        )


def limits(value: Any) -> list[Any]:
    """``rate_limit=``: one limiter, one ``(limiter, cost)`` pair, or a list of them."""
    if value is None:
        return []
    from ..limiter import RateLimiter

    def one(v: Any) -> Any:
        if isinstance(v, RateLimiter):
            return v
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], RateLimiter):
            if not callable(v[1]):
                raise TypeError(f"rate_limit={show(value)}: a pair's cost must be callable")
            return v
        raise TypeError(
            f"rate_limit={show(value)}: expected a RateLimiter, a (RateLimiter, cost) pair "
            "or a list of them"
        )

    if isinstance(value, list):
        return [one(v) for v in value]
    return [one(value)]


def cluster_unsafe(limits: list[Any]) -> list[Any]:
    """The limiters of ``limits`` kept in one process (not in a store): under Ray each actor
    would let the whole limit through."""
    from ..store.limiter import ClusterRateLimiter

    out = []
    for v in limits:
        lim = v[0] if isinstance(v, tuple) else v
        if not isinstance(lim, ClusterRateLimiter):
            out.append(lim)
    return out
