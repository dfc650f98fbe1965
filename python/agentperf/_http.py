"""What an exception says about an HTTP call: its status, its retry hint, whether it is transient.

The common clients are recognised by shape and by class name, never imported: openai and
anthropic (``exc.status_code``, ``exc.response.headers``), httpx (``exc.response``), requests
(``exc.response.status_code``) and aiohttp (``exc.status``, ``exc.headers``).

>>> class Limited(Exception):
...     status_code = 429
...     headers = {"Retry-After": "2"}
>>> status_of(Limited()), retry_after(Limited())
(429, 2.0)
"""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["OVERLOAD_STATUSES", "TRANSIENT_STATUSES", "is_overload", "is_transient"]
__all__ += ["retry_after", "status_of"]

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth a retry: timeouts, conflicts, too early, rate limits, server errors."""
OVERLOAD_STATUSES = frozenset({429, 503})
"""HTTP statuses that say the backend has too much work."""

# (top-level module, class name) of the clients' connection and timeout errors.
_TRANSIENT_CLASSES = frozenset(
    {
        ("openai", "APIConnectionError"),
        ("openai", "APITimeoutError"),
        ("anthropic", "APIConnectionError"),
        ("anthropic", "APITimeoutError"),
        ("httpx", "TransportError"),
        ("aiohttp", "ClientConnectionError"),
        ("aiohttp", "ServerTimeoutError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    }
)


# On Python 3.10 asyncio.TimeoutError (raised by asyncio.wait_for) is not a TimeoutError.
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)


def _status(obj: Any, name: str) -> int | None:
    try:
        v = getattr(obj, name, None)
    except Exception:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
        return v
    return None


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, or ``None``.

    Read from ``exc.status_code``, ``exc.status``, then ``exc.response.status_code`` /
    ``.status`` (the openai, anthropic, httpx, requests and aiohttp shapes).
    """
    for name in ("status_code", "status"):
        s = _status(exc, name)
        if s is not None:
            return s
    try:
        resp = getattr(exc, "response", None)
    except Exception:
        return None
    if resp is None:
        return None
    for name in ("status_code", "status"):
        s = _status(resp, name)
        if s is not None:
            return s
    return None


def _header(headers: Any, name: str) -> str | None:
    """A header's value from any mapping of headers, case-insensitively."""
    try:
        v = headers.get(name)
        if v is None and isinstance(headers, dict):
            for k, val in headers.items():
                if isinstance(k, str) and k.lower() == name:
                    v = val
                    break
    except Exception:
        return None
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    return v if isinstance(v, str) else None


def _headers_of(exc: BaseException) -> Iterable[Any]:
    try:
        resp = getattr(exc, "response", None)
        if resp is not None:
            h = getattr(resp, "headers", None)
            if h is not None:
                yield h
        h = getattr(exc, "headers", None)
        if h is not None:
            yield h
    except Exception:
        return


def _seconds(text: str, scale: float) -> float | None:
    try:
        v = float(text.strip()) * scale
    except ValueError:
        return None
    if math.isnan(v) or math.isinf(v):
        return None
    return max(0.0, v)


def _http_date(text: str) -> float | None:
    import email.utils  # rare, and ~5 ms to import: not at `import agentperf`

    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked the client to wait, or ``None`` when it gave no usable hint.

    ``retry-after-ms`` wins over ``retry-after``; ``retry-after`` is seconds or an HTTP date.
    Looked up in ``exc.response.headers``, then ``exc.headers``.
    """
    for headers in _headers_of(exc):
        ms = _header(headers, "retry-after-ms")
        if ms is not None:
            v = _seconds(ms, 0.001)
            if v is not None:
                return v
        ra = _header(headers, "retry-after")
        if ra is not None:
            v = _seconds(ra, 1.0)
            if v is None:
                v = _http_date(ra)
            if v is not None:
                return v
    return None


def _named(exc: BaseException) -> bool:
    for cls in type(exc).__mro__:
        root = cls.__module__.partition(".")[0]
        if (root, cls.__name__) in _TRANSIENT_CLASSES:
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may succeed: timeouts, connection errors, transient HTTP statuses."""
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, (*_TIMEOUTS, ConnectionError)) or _named(exc):
        return True
    s = status_of(exc)
    return s is not None and s in TRANSIENT_STATUSES


def is_overload(exc: BaseException) -> bool:
    """Whether the backend says it is overloaded: status 429 or 503, or a timeout."""
    if isinstance(exc, _TIMEOUTS):
        return True
    s = status_of(exc)
    return s is not None and s in OVERLOAD_STATUSES
