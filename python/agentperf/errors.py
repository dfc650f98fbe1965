"""The package's exceptions (declared once, in the Rust extension, and re-exported here).

* :class:`AgentPerfError` — base of agentperf's own errors.
* :class:`PoolClosedError` — acquire or execute on a closed pool.
* :class:`PoolTimeoutError` — no agent became free in time (also a ``TimeoutError``).
* :class:`BatchTimeoutError` — the batch's timeout stopped this item (also a ``TimeoutError``).

Exceptions raised by an agent reach the caller unchanged.
"""

from __future__ import annotations

from ._agentperf import AgentPerfError, BatchTimeoutError, PoolClosedError, PoolTimeoutError

__all__ = ["AgentPerfError", "BatchTimeoutError", "PoolClosedError", "PoolTimeoutError"]
