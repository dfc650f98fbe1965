"""Why a batch stopped before its input ran out."""

from __future__ import annotations

import enum

__all__ = ["Stop"]


class Stop(enum.Enum):
    """The first reason a run was stopped early; later ones do not replace it."""

    TIMEOUT = "timeout"
    """The batch ``timeout`` passed: running calls fail with ``BatchTimeoutError``."""
    FAIL_FAST = "fail_fast"
    """An item failed under ``ErrorPolicy.FAIL_FAST``: the rest is cancelled."""
    CLOSED = "closed"
    """The consumer left (a stream closed or dropped, ``aexecute`` cancelled)."""
    FATAL = "fatal"
    """The input iterable or an ``on_progress`` callback raised: the batch raises it."""
