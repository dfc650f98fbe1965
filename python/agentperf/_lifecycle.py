"""Process events in one place: the package's only ``os.register_at_fork`` and ``atexit`` hook.

Parts with state that a fork or the interpreter's exit must see to (the pools' leases, the
cleanup thread, long-lived helper threads) register callbacks with :func:`at_fork` instead of
calling ``os.register_at_fork`` themselves. Around a fork:

- ``before`` callbacks run in the reverse order of registration (as ``os.register_at_fork``
  runs them), then the Rust core takes its locks (the cleanup thread's, ``rust/src/lifecycle.rs``)
  so the child never inherits one held;
- after the fork, the Rust core first releases them (in the child: restarts the cleanup
  thread), then ``after_in_parent`` / ``after_in_child`` callbacks run in the order of
  registration.

A callback that raises is logged (logger ``agentperf``) and the others still run.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable

from . import _agentperf

__all__ = ["at_fork"]

_log = logging.getLogger("agentperf")

_before: list[Callable[[], object]] = []
_after_in_parent: list[Callable[[], object]] = []
_after_in_child: list[Callable[[], object]] = []


def at_fork(
    *,
    before: Callable[[], object] | None = None,
    after_in_parent: Callable[[], object] | None = None,
    after_in_child: Callable[[], object] | None = None,
) -> None:
    """Run these around every ``os.fork()`` of the process (see the module docstring).

    ``before`` runs in the forking thread with the GIL, before the Rust core takes its fork
    locks; ``after_in_child`` runs in the child's only thread, with the cleanup thread already
    restarted. Register at import time; there is no unregistering.
    """
    for name, f in (
        ("before", before),
        ("after_in_parent", after_in_parent),
        ("after_in_child", after_in_child),
    ):
        if f is not None and not callable(f):
            raise TypeError(f"{name}={f!r}: expected a callable or None")
    if before is not None:
        _before.append(before)
    if after_in_parent is not None:
        _after_in_parent.append(after_in_parent)
    if after_in_child is not None:
        _after_in_child.append(after_in_child)


def _run(callbacks: list[Callable[[], object]], when: str) -> None:
    for f in callbacks:
        try:
            f()
        except Exception:
            _log.exception("agentperf: %s-fork callback %r failed", when, f)


def _before_fork() -> None:
    try:
        _run(_before[::-1], "before")
    finally:
        _agentperf._before_fork()


def _after_fork_parent() -> None:
    _agentperf._after_fork_parent()
    _run(list(_after_in_parent), "after")


def _after_fork_child() -> None:
    _agentperf._after_fork_child()
    _run(list(_after_in_child), "after")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_parent,
        after_in_child=_after_fork_child,
    )
# The shared cleanup thread stops at exit (waits at most two seconds for a round).
atexit.register(_agentperf._shutdown)
