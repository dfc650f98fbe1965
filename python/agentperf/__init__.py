"""agentperf: an agent pool, a result cache and a batch executor for AI agents, in Rust.

>>> import agentperf as ap
>>> len(ap.hash_key({"task": "summarize"}))
64

See the README for the tour; ``python -m agentperf report`` measures it on this machine.
"""

from __future__ import annotations

from . import _agentperf, metrics
from ._agentperf import hash_key
from ._control import cache_control
from .adaptive import AdaptiveConcurrency, AdaptiveStats
from .agent import Agent, AgentAdapter
from .batch import (
    BatchError,
    BatchExecutor,
    BatchExecutorStats,
    BatchItem,
    BatchResult,
    BatchStats,
    RayBackend,
)
from .cache import Cache, CachedAgent, CachedFunction, CacheStats, cached
from .codec import CodecError, JsonCodec, PickleCodec
from .config import BatchConfig, CacheConfig, ErrorPolicy, PoolConfig
from .errors import AgentPerfError, BatchTimeoutError, PoolClosedError, PoolTimeoutError
from .limiter import RateLimitedAgent, RateLimiter, RateLimiterStats
from .pool import AgentPool, PoolStats
from .retry import RetryingAgent, RetryPolicy, RetryStats
from .semaphore import Semaphore
from .store import RedisStore, SqliteStore, StoreError

__version__: str = _agentperf.__version__

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveStats",
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
    "CodecError",
    "ErrorPolicy",
    "JsonCodec",
    "PickleCodec",
    "PoolClosedError",
    "PoolConfig",
    "PoolStats",
    "PoolTimeoutError",
    "RateLimitedAgent",
    "RateLimiter",
    "RateLimiterStats",
    "RayBackend",
    "RedisStore",
    "RetryPolicy",
    "RetryStats",
    "RetryingAgent",
    "Semaphore",
    "SqliteStore",
    "StoreError",
    "__version__",
    "cache_control",
    "cached",
    "hash_key",
    "metrics",
]

# The package's one fork and exit hook (parts register with it): see `_lifecycle`.
from . import _lifecycle  # noqa: F401
