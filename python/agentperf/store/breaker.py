"""A circuit breaker, so that a dead store does not add its timeout to every call.

After ``failures`` failures in a row the breaker *opens*: calls are refused at once (the store
is skipped) for ``reset_after`` seconds. Then one trial call goes through (*half-open*; the
others are still refused while it runs): success closes the breaker, failure opens it again for
another ``reset_after`` seconds.

>>> t = [0.0]
>>> b = Breaker(failures=2, reset_after=5.0, clock=lambda: t[0])
>>> b.record_failure(); b.record_failure()
>>> b.state, b.allow()
('open', False)
>>> t[0] = 5.0
>>> b.allow(), b.allow()          # one trial, and only one
(True, False)
>>> b.record_success(); b.state
'closed'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

__all__ = ["Breaker"]

BreakerState = Literal["closed", "open", "half-open"]


def _seconds(field: str, value: object) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}: expected seconds as a float, got {value!r}")
    v = float(value)
    if not v >= 0.0 or v == float("inf"):
        raise ValueError(f"{field}: must be finite and >= 0, got {value!r}")
    return v


class Breaker:
    """Counts failures in a row; past ``failures`` it refuses calls for ``reset_after`` seconds.

    ``failures=0`` disables it (it never opens). ``clock`` (default :func:`time.monotonic`) is
    injectable for tests. Thread-safe; a store shares one breaker between its sync and async
    methods.

    Protocol for a guarded call: ``allow()`` first (``False``: skip the call), then exactly one
    of ``record_success()``, ``record_failure()`` or, when the call ended without a verdict
    (cancelled), ``record_abandoned()``.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_consecutive",
        "_lock",
        "_opened_until",
        "_state",
        "_trial_out",
        "failures",
        "reset_after",
        "skipped",
        "times_opened",
    )

    def __init__(
        self,
        failures: int = 5,
        reset_after: float | timedelta = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int):
            raise TypeError(f"failures: expected an int, got {failures!r}")
        if failures < 0:
            raise ValueError(f"failures: must be >= 0, got {failures!r}")
        if not callable(clock):
            raise TypeError(f"clock: expected a callable, got {clock!r}")
        self.failures = failures
        self.reset_after = _seconds("reset_after", reset_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_until = 0.0
        self._trial_out = False
        #: How many times the breaker has opened (for statistics).
        self.times_opened = 0
        #: How many calls it refused while open (each skipped the store).
        self.skipped = 0

    @property
    def state(self) -> BreakerState:
        """``"closed"`` (calls go through), ``"open"`` (skipped) or ``"half-open"``."""
        with self._lock:
            if self._state == "open" and self._clock() >= self._opened_until:
                return "half-open"
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._consecutive

    def allow(self) -> bool:
        """Whether a call may go to the store now (in half-open state, only the trial may)."""
        if self._state == "closed":  # the hot path, without the lock (one attribute read)
            return True
        with self._lock:
            state: BreakerState = self._state  # again, under the lock: it may have closed
            if state == "closed":
                return True
            if state == "open":
                if self._clock() < self._opened_until:
                    self.skipped += 1
                    return False
                self._state = "half-open"
                self._trial_out = False
            if self._trial_out:
                self.skipped += 1
                return False
            self._trial_out = True
            return True

    def record_success(self) -> None:
        """The call reached the store: close the breaker."""
        if self._consecutive == 0 and self._state == "closed":
            return
        with self._lock:
            self._consecutive = 0
            self._state = "closed"
            self._trial_out = False

    def record_failure(self) -> None:
        """The call failed (down, slow, refused): count it; open the breaker at the limit."""
        with self._lock:
            self._consecutive += 1
            if self.failures == 0:
                return
            if self._state == "half-open" or self._consecutive >= self.failures:
                if self._state != "open":
                    self.times_opened += 1
                self._state = "open"
                self._opened_until = self._clock() + self.reset_after
                self._trial_out = False

    def record_abandoned(self) -> None:
        """The call ended with no verdict (cancelled): let another trial through."""
        with self._lock:
            if self._state == "half-open":
                self._trial_out = False

    def reset(self) -> None:
        """Close the breaker and forget past failures."""
        self.record_success()

    def __repr__(self) -> str:
        return (
            f"Breaker(failures={self.failures}, reset_after={self.reset_after}, "
            f"state={self.state!r})"
        )
