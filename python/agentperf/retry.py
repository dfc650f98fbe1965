"""Retries: :class:`RetryPolicy` (when and how long to wait) and :class:`RetryingAgent`.

The schedule is a pure function of the retry number, the error and the time spent
(:meth:`RetryPolicy.next_delay`), so it is testable without sleeping; the agent only sleeps
and calls again.

>>> import agentperf as ap
>>> policy = ap.RetryPolicy(attempts=4, backoff=0.5, max_backoff=1.5, jitter=False)
>>> [policy.delay(n) for n in (1, 2, 3)]
[0.5, 1.0, 1.5]
>>> failures = [ConnectionError("reset"), TimeoutError("slow")]
>>> def flaky(x):
...     if failures:
...         raise failures.pop(0)
...     return x * 2
>>> agent = ap.RetryingAgent(flaky, ap.RetryPolicy(backoff=0.0))
>>> agent.execute(21), agent.stats().retries
(42, 2)
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import _config as v
from . import _meter
from .agent import adapt

__all__ = ["RetryPolicy", "RetryStats", "RetryingAgent"]

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] | None


class _Uniform(Protocol):
    def uniform(self, a: float, b: float, /) -> float: ...


def _retry_on(value: Any) -> tuple[type[Exception], ...] | Callable[[Exception], bool] | None:
    if value is None:
        return None
    if isinstance(value, type):
        value = (value,)
    elif isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        for t in value:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(
                    f"retry_on={v.show(value)}: expected exception types, got {v.show(t)}"
                )
            if not issubclass(t, Exception):
                raise ValueError(
                    f"retry_on={v.show(value)}: {t.__name__} is not an Exception subclass; "
                    "cancellation and other BaseExceptions are never retried"
                )
        return value
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise TypeError(
        f"retry_on={v.show(value)}: expected None, an exception type, a tuple of them or a "
        f"predicate exc -> bool, got {type(value).__name__}"
    )


def _non_negative(field: str, value: Any) -> float:
    if value is None:
        raise TypeError(f"{field}=None: expected a non-negative number of seconds")
    s = v.wait(field, value)
    assert s is not None
    return s


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When to retry an agent call and how long to wait first.

    ``attempts`` counts the first call (``attempts=1`` never retries). ``retry_on=None``
    retries transient errors: timeouts, connection errors (also those of openai, anthropic,
    httpx, aiohttp and requests, recognised without importing them) and HTTP statuses 408,
    409, 425, 429, 500, 502, 503 and 504; an exception type, a tuple of them, or a predicate
    ``exc -> bool`` replaces that rule (a predicate that raises lets its error propagate, with
    the agent's error as its ``__context__``). Cancellation and other ``BaseException``\\ s are
    never retried.

    The delay before retry *n* (n = 1, 2, ...) is ``min(max_backoff, backoff * 2 ** (n - 1))``,
    drawn uniformly from [0, that] when ``jitter`` ("full jitter"). When the error carries a
    retry hint (``retry-after-ms``, or ``retry-after`` in seconds or as an HTTP date) and
    ``respect_retry_after``, the delay is at least the hint, even above ``max_backoff``.
    ``max_elapsed`` bounds the time from the first call to the start of the last retry: a
    retry that would start later is not made (so it also bounds a server's long hint).
    Durations are seconds (a ``timedelta`` is accepted).

    >>> RetryPolicy(attempts=3, backoff=1.0, jitter=False).delay(2)
    2.0
    """

    attempts: int = 5
    """Agent calls at most, the first one included."""
    backoff: float = 0.5
    """Seconds before the first retry (before jitter); doubled for each retry after it."""
    max_backoff: float = 30.0
    """Cap on the exponential backoff (a server's retry hint may exceed it)."""
    jitter: bool = True
    """Draw each delay uniformly from [0, backoff] so callers that failed together spread."""
    retry_on: RetryOn = None
    """Which errors are retried: ``None`` (transient ones), exception types, or a predicate."""
    max_elapsed: float | None = None
    """Seconds from the first call after which no retry starts; ``None``: no bound."""
    respect_retry_after: bool = True
    """Wait at least as long as the error's ``Retry-After`` / ``retry-after-ms`` hint."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "attempts", v.integer("attempts", self.attempts, minimum=1))
        set_(self, "backoff", _non_negative("backoff", self.backoff))
        set_(self, "max_backoff", v.seconds("max_backoff", self.max_backoff, allow_none=False))
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"max_backoff={v.show(self.max_backoff)}: must be >= backoff ({self.backoff})"
            )
        set_(self, "jitter", v.boolean("jitter", self.jitter))
        set_(self, "retry_on", _retry_on(self.retry_on))
        elapsed = v.seconds("max_elapsed", self.max_elapsed)
        set_(self, "max_elapsed", None if elapsed == math.inf else elapsed)
        set_(
            self,
            "respect_retry_after",
            v.boolean("respect_retry_after", self.respect_retry_after),
        )

    def retryable(self, exc: BaseException, /) -> bool:
        """Whether ``exc`` is worth a retry under ``retry_on`` (never for a ``BaseException``
        that is not an ``Exception``, such as cancellation)."""
        if not isinstance(exc, Exception):
            return False
        rule = self.retry_on
        if rule is None:
            from . import _http  # on failures only: keeps email.utils out of `import agentperf`

            return _http.is_transient(exc)
        if isinstance(rule, tuple):
            return isinstance(exc, rule)
        return bool(rule(exc))

    def delay(
        self, n: int, exc: BaseException | None = None, /, *, rng: _Uniform | None = None
    ) -> float:
        """Seconds to wait before retry ``n`` (1 for the first retry) after error ``exc``.

        Exponential backoff capped at ``max_backoff``, jittered when ``jitter`` (drawn with
        ``rng.uniform``, default the ``random`` module), raised to the error's retry hint
        when ``respect_retry_after``. Pure but for the draw.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={v.show(n)}: the retry number must be an int >= 1")
        try:
            cap = min(self.max_backoff, math.ldexp(self.backoff, min(n - 1, 4096)))
        except OverflowError:
            cap = self.max_backoff
        d = (rng if rng is not None else random).uniform(0.0, cap) if self.jitter else cap
        if exc is not None and self.respect_retry_after:
            from . import _http

            hint = _http.retry_after(exc)
            if hint is not None and hint > d:
                d = hint
        return d

    def next_delay(
        self,
        n: int,
        exc: BaseException,
        elapsed: float,
        /,
        *,
        rng: _Uniform | None = None,
    ) -> float | None:
        """The wait before retry ``n`` after ``exc``, ``elapsed`` seconds after the first
        call started; ``None`` when no retry is to be made (attempts used up, an error not
        retried, or a retry that would start past ``max_elapsed``)."""
        if n >= self.attempts or not self.retryable(exc):
            return None
        d = self.delay(n, exc, rng=rng)
        if not math.isfinite(d):
            return None  # an unbounded backoff that has overflowed: that retry never starts
        limit = self.max_elapsed
        if limit is not None and elapsed + d > limit:
            return None
        return d


@dataclasses.dataclass(frozen=True)
class RetryStats:
    """Counts of a :class:`RetryingAgent` since it was made.

    ``calls`` counts ``execute``/``aexecute`` calls started, ``attempts`` the agent calls they
    made (retries included), ``retries`` the attempts after a first one. ``successes`` counts
    calls that returned, ``failures`` calls that raised an ``Exception`` (retries used up, an
    error not retried, or ``max_elapsed`` reached); the rest of ``calls`` are in progress or
    were ended by cancellation or another ``BaseException``.
    """

    calls: int
    attempts: int
    retries: int
    successes: int
    failures: int


class RetryingAgent:
    """An agent that retries its calls according to a :class:`RetryPolicy`.

    ``RetryingAgent(agent, policy)`` or ``RetryingAgent(agent, attempts=3, ...)`` (the fields
    of :class:`RetryPolicy`); ``policy=None`` uses ``RetryPolicy()``. ``execute`` sleeps with
    ``time.sleep`` between attempts; ``aexecute`` with ``asyncio.sleep``, so cancelling it
    while it waits raises ``CancelledError`` and makes no further call. When no retry is left
    the last attempt's exception is raised unchanged (the same object). Each attempt's
    exception is raised by the agent outside any handler of the previous one, so none is
    chained to an earlier attempt's; the traceback of an exception that is retried is cleared,
    so an agent that raises one stored exception object again does not grow its traceback
    by every attempt. Inside a batch run each agent call is reported to the run's meter
    (``BatchStats.attempts``).

    It composes with the other wrappers: ``CachedAgent(RetryingAgent(agent))`` retries only
    cache misses; ``RetryingAgent(pool)`` leases an agent from the pool for every attempt.

    >>> import agentperf as ap
    >>> tries = []
    >>> def shaky(x):
    ...     tries.append(x)
    ...     if len(tries) < 3:
    ...         raise TimeoutError("slow backend")
    ...     return x
    >>> ap.RetryingAgent(shaky, attempts=3, backoff=0.0).execute("hi"), len(tries)
    ('hi', 3)
    """

    __slots__ = (
        "__weakref__",
        "_acall",
        "_attempts",
        "_call",
        "_calls",
        "_failures",
        "_lock",
        "_retries",
        "_rng",
        "_successes",
        "agent",
        "policy",
    )

    agent: Any
    """The wrapped agent, as given."""
    policy: RetryPolicy
    """The policy in force."""

    def __init__(self, agent: Any, /, policy: RetryPolicy | None = None, **overrides: Any):
        if policy is None:
            policy = RetryPolicy(**overrides)
        elif not isinstance(policy, RetryPolicy):
            raise TypeError(f"policy={v.show(policy)}: expected a RetryPolicy or None")
        elif overrides:
            policy = dataclasses.replace(policy, **overrides)
        adapter = adapt(agent)
        self.agent = agent
        self.policy = policy
        self._call = adapter.call
        self._acall = adapter.acall
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._calls = self._attempts = self._retries = self._successes = self._failures = 0

    def _begin(self) -> float:
        with self._lock:
            self._calls += 1
            self._attempts += 1
        return time.monotonic()

    def _again(self) -> None:
        with self._lock:
            self._attempts += 1
            self._retries += 1
        _meter.attempt()  # one agent call more than whoever called this agent counts

    def _ok(self) -> None:
        with self._lock:
            self._successes += 1

    def _failed(self) -> None:
        with self._lock:
            self._failures += 1

    def _wait(self, n: int, exc: Exception, start: float) -> float | None:
        """The delay before retry ``n``, or ``None`` (then the failure is counted)."""
        try:
            d = self.policy.next_delay(n, exc, time.monotonic() - start, rng=self._rng)
        except BaseException:
            self._failed()
            raise
        if d is None:
            self._failed()
        else:
            exc.__traceback__ = None  # retried: nobody sees it again (unless it is re-raised)
        return d

    def execute(self, input: Any, /) -> Any:
        """Call the agent on ``input``, retrying per the policy (sleeps between attempts)."""
        call = self._call
        start = self._begin()
        n = 0
        while True:
            try:
                out = call(input)
            except Exception as exc:
                n += 1
                d = self._wait(n, exc, start)
                if d is None:
                    raise
            else:
                self._ok()
                return out
            # Outside the handler: the next attempt's error is not chained to this one.
            if d > 0.0:
                time.sleep(d)
            self._again()

    async def aexecute(self, input: Any, /) -> Any:
        """Call the agent on ``input`` without blocking the loop, retrying per the policy.

        Cancelled while it waits before a retry, it raises ``CancelledError`` at once and
        makes no further call.
        """
        acall = self._acall
        start = self._begin()
        n = 0
        while True:
            try:
                out = await acall(input)
            except Exception as exc:
                n += 1
                d = self._wait(n, exc, start)
                if d is None:
                    raise
            else:
                self._ok()
                return out
            await asyncio.sleep(d)
            self._again()

    def stats(self) -> RetryStats:
        """A snapshot of the counts (see :class:`RetryStats`)."""
        with self._lock:
            return RetryStats(
                self._calls, self._attempts, self._retries, self._successes, self._failures
            )

    def __repr__(self) -> str:
        return f"RetryingAgent({self.agent!r}, {self.policy!r})"
