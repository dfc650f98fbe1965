"""agentperf: an agent pool, a result cache and a batch executor for AI agents, in Rust.

>>> import agentperf as ap
>>> len(ap.hash_key({"task": "summarize"}))
64

See the README for the tour; ``python -m agentperf report`` measures it on this machine.
"""

from __future__ import annotations

import atexit as _atexit
import os as _os

from . import _agentperf
from ._agentperf import hash_key
from .agent import Agent, AgentAdapter
from .batch import (
    BatchError,
    BatchExecutor,
    BatchExecutorStats,
    BatchItem,
    BatchResult,
    BatchStats,
)
from .cache import Cache, CachedAgent, CachedFunction, CacheStats, cached
from .codec import JsonCodec, PickleCodec
from .config import BatchConfig, CacheConfig, ErrorPolicy, PoolConfig
from .errors import AgentPerfError, BatchTimeoutError, PoolClosedError, PoolTimeoutError
from .pool import AgentPool, PoolStats
from .semaphore import Semaphore
from .store import RedisStore, SqliteStore

__version__: str = _agentperf.__version__

__all__ = [
    "Agent",
    "AgentAdapter",
    "AgentPerfError",
    "AgentPool",
    "BatchConfig",
    "BatchError",
    "BatchExecutor",
    "BatchExecutorStats",
    "BatchItem",
    "BatchResult",
    "BatchStats",
    "BatchTimeoutError",
    "Cache",
    "CacheConfig",
    "CacheStats",
    "CachedAgent",
    "CachedFunction",
    "ErrorPolicy",
    "JsonCodec",
    "PickleCodec",
    "PoolClosedError",
    "PoolConfig",
    "PoolStats",
    "PoolTimeoutError",
    "RedisStore",
    "Semaphore",
    "SqliteStore",
    "__version__",
    "cached",
    "hash_key",
]

# The shared cleanup thread survives neither fork nor exit on its own.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(
        before=_agentperf._before_fork,
        after_in_parent=_agentperf._after_fork_parent,
        after_in_child=_agentperf._after_fork_child,
    )
_atexit.register(_agentperf._shutdown)
