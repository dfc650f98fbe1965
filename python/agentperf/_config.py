"""Validation helpers shared by the configuration classes: every error names field and value.

The one place values are checked: the Rust bindings of the pool receive what these helpers
returned and check nothing again (they only convert). The semaphore's sync ``acquire`` is
all Rust and applies the same rules there (``rust/src/args.rs``); ``tests/test_config_fuzz.py``
holds both to them.
"""

from __future__ import annotations

import datetime
import math
from typing import Any


def show(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for an error message: shortened, and never raising itself."""
    try:
        r = repr(value)
    except Exception:
        return f"<{type(value).__name__} object (repr failed)>"
    return r if len(r) <= limit else f"{r[: limit - 5]}...{r[-2:]}"


def _number(field: str, value: Any, expected: str) -> float:
    """Seconds as a float from an int, a float or a ``timedelta`` (a ``bool`` is refused)."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}={show(value)}: expected {expected}, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{field}={show(value)}: is too large") from None


def seconds(field: str, value: Any, *, allow_none: bool = True) -> float | None:
    """A duration in seconds from a float, int or ``timedelta``; ``None`` means no limit.

    Raises ``TypeError`` for other types and ``ValueError`` unless the value is positive
    (``math.inf`` is accepted and means no limit, like ``None``).
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{field}=None: expected a positive number of seconds")
    v = _number(field, value, "a number of seconds or a timedelta")
    if math.isnan(v) or v <= 0:
        raise ValueError(f"{field}={show(value)}: must be a positive number of seconds")
    return v


MAX_SECONDS = 2.0**64
"""Durations from here up (``math.inf`` aside) do not fit the Rust cores' ``Duration``."""


def fits(field: str, value: float | None) -> float | None:
    """A validated duration that the Rust cores can hold: ``None``, ``math.inf`` (no limit) or
    below :data:`MAX_SECONDS`; else ``ValueError``."""
    if value is not None and value >= MAX_SECONDS and not math.isinf(value):
        raise ValueError(f"{field}={show(value)}: is too large")
    return value


def wait(field: str, value: Any) -> float | None:
    """A wait limit in seconds: ``None`` (or ``math.inf``) waits forever, ``0`` does not wait;
    ``timedelta`` ok."""
    if value is None:
        return None
    v = _number(field, value, "a number of seconds, a timedelta or None")
    if math.isnan(v) or v < 0:
        raise ValueError(f"{field}={show(value)}: must be a non-negative number of seconds or None")
    return fits(field, v)


def integer(field: str, value: Any, *, minimum: int) -> int:
    """An ``int`` (not a ``bool``) no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}={show(value)}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{field}={show(value)}: must be >= {minimum}")
    return int(value)


def boolean(field: str, value: Any) -> bool:
    """A real ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{field}={show(value)}: expected a bool, got {type(value).__name__}")
    return value


def optional_callable(field: str, value: Any) -> Any:
    """``None`` or a callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{field}={show(value)}: expected a callable or None")
    return value


def cache_policy(value: Any) -> str:
    """A cache eviction policy name: ``"lru"`` or ``"tinylfu"``."""
    if not isinstance(value, str):
        raise TypeError(f"policy={show(value)}: expected 'lru' or 'tinylfu'")
    if value not in ("lru", "tinylfu"):
        raise ValueError(f"policy={show(value)}: must be 'lru' or 'tinylfu'")
    return value


NAME_MAX = 128
"""Longest ``name=`` of a pool, cache, executor, semaphore or limiter."""
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/-")


def name(value: Any, field: str = "name") -> str | None:
    """``None`` or an object's metrics name: 1 to :data:`NAME_MAX` characters of
    ``A-Za-z0-9_.:/-``, so it is a label value and a key part that breaks nothing."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{field}={show(value)}: expected a str or None, got {type(value).__name__}"
        )
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(f"{field}={show(value)}: must be 1 to {NAME_MAX} characters long")
    if not _NAME_CHARS.issuperset(value):
        raise ValueError(
            f"{field}={show(value)}: may hold only letters, digits and the characters _ . : / -"
        )
    return str(value)
