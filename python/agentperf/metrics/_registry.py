"""The weak registry of live named objects, and what each kind of object reports.

An object given ``name=`` registers here when it is built (:func:`register`); the registry
holds it weakly, so an object collected disappears from the next read. :func:`read` turns
every live object into :class:`Reading` s, one per metric and label set, from the objects'
``stats()`` and their Rust histograms: atomics only, no lock a hot path holds (the registry's
own lock guards the table of weak references and is never held while an object is read).

Two live objects of one kind with one name are reported as one: their values are added
(counters, gauges and histogram buckets alike), so a name is a label value with a fixed
meaning even when an object is rebuilt before the old one is collected.

Nothing here imports ``prometheus_client`` or ``opentelemetry``: the exporters
(``_prometheus``, ``_otel``) translate :func:`read`'s output.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .. import _lifecycle
from .._agentperf import _Histogram

__all__ = ["BOUNDS", "METRICS", "Metric", "Reading", "live", "read", "register"]

KINDS = ("pool", "cache", "batch", "limiter", "semaphore")

BOUNDS: tuple[float, ...] = tuple(_Histogram.bounds())
"""The histograms' finite bucket bounds in seconds (upper, inclusive); then ``+Inf``."""

_lock = threading.Lock()
_objects: dict[str, dict[int, weakref.ref[Any]]] = {k: {} for k in KINDS}


def register(kind: str, obj: Any) -> None:
    """Keep ``obj`` (of ``kind``, with a ``name``) in the registry while it lives."""
    key = id(obj)
    table = _objects[kind]

    def gone(_ref: weakref.ref[Any], key: int = key, table: dict[int, Any] = table) -> None:
        with _lock:
            if table.get(key) is _ref:
                del table[key]

    ref = weakref.ref(obj, gone)
    with _lock:
        table[key] = ref


def live(kind: str) -> dict[str, list[Any]]:
    """The live registered objects of ``kind`` by name (those not collected yet)."""
    with _lock:
        refs = list(_objects[kind].values())
    out: dict[str, list[Any]] = {}
    for r in refs:
        obj = r()
        if obj is not None:
            out.setdefault(obj.name, []).append(obj)
    return out


def _reinit_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


_lifecycle.at_fork(after_in_child=_reinit_after_fork)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One exported metric, in OpenTelemetry form.

    ``kind`` is ``"counter"`` (monotonic), ``"gauge"`` (a value now, up or down) or
    ``"histogram"``; ``unit`` is UCUM (``"s"`` for seconds); ``states`` the values of the
    ``state`` label, if it has one.
    """

    name: str
    kind: str
    unit: str
    description: str
    source: str
    """The kind of object it is read from (``"pool"``, ``"cache"``, ...)."""
    states: tuple[str, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """Dots as underscores, seconds ending ``_seconds``, counters ending ``_total``."""
        n = self.name.replace(".", "_")
        if self.unit == "s":
            n += "_seconds"
        if self.kind == "counter":
            n += "_total"
        return n


def _m(
    name: str, kind: str, unit: str, source: str, desc: str, states: tuple[str, ...] = ()
) -> Metric:
    return Metric(name, kind, unit, desc, source, states)


METRICS: tuple[Metric, ...] = (
    _m("agentperf.pool.agents", "gauge", "{agent}", "pool",
       "Agents alive in the pool, by state: idle or used (leased).", ("idle", "used")),
    _m("agentperf.pool.max", "gauge", "{agent}", "pool", "The pool's max_size."),
    _m("agentperf.pool.pending_requests", "gauge", "{request}", "pool",
       "Callers waiting for an agent now."),
    _m("agentperf.pool.created", "counter", "{agent}", "pool", "Agents created."),
    _m("agentperf.pool.destroyed", "counter", "{agent}", "pool",
       "Agents destroyed, for any reason."),
    _m("agentperf.pool.timeouts", "counter", "{request}", "pool",
       "Acquires that timed out (PoolTimeoutError)."),
    _m("agentperf.pool.wait_time", "histogram", "s", "pool",
       "Time to acquire an agent: one observation per acquire, 0 s when one was free."),
    _m("agentperf.cache.hits", "counter", "{lookup}", "cache",
       "Lookups served without running the agent."),
    _m("agentperf.cache.misses", "counter", "{lookup}", "cache", "Lookups that found nothing."),
    _m("agentperf.cache.coalesced", "counter", "{lookup}", "cache",
       "Callers served by another caller's in-flight call."),
    _m("agentperf.cache.evictions", "counter", "{entry}", "cache",
       "Live entries removed to make room."),
    _m("agentperf.cache.expirations", "counter", "{entry}", "cache", "Expired entries removed."),
    _m("agentperf.cache.size", "gauge", "{entry}", "cache",
       "Entries held (expired ones not yet swept included)."),
    _m("agentperf.cache.store_hits", "counter", "{lookup}", "cache",
       "L1 misses served by the shared store (L2)."),
    _m("agentperf.cache.store_misses", "counter", "{lookup}", "cache",
       "L1 misses the shared store did not have either."),
    _m("agentperf.cache.store_errors", "counter", "{error}", "cache",
       "Store operations that failed or timed out (the call went on without the store)."),
    _m("agentperf.batch.items", "counter", "{item}", "batch",
       "Items finished, by state: success, failure or cancelled.",
       ("success", "failure", "cancelled")),
    _m("agentperf.batch.attempts", "counter", "{call}", "batch",
       "Agent calls made, retries included."),
    _m("agentperf.batch.throttled_time", "counter", "s", "batch",
       "Seconds items spent waiting for rate limits, summed over items."),
    _m("agentperf.batch.concurrency", "gauge", "{call}", "batch",
       "The concurrency limit in force (max_concurrency, or the adaptive limit now)."),
    _m("agentperf.batch.item_duration", "histogram", "s", "batch",
       "Duration of each finished item's agent call (retries and waits included)."),
    _m("agentperf.limiter.granted", "counter", "{unit}", "limiter",
       "Units of cost granted."),
    _m("agentperf.limiter.wait_time", "counter", "s", "limiter",
       "Seconds acquisitions waited, summed."),
    _m("agentperf.limiter.paused_time", "counter", "s", "limiter",
       "Wall-clock seconds the limiter was paused (after rate-limit answers)."),
    _m("agentperf.semaphore.permits", "gauge", "{permit}", "semaphore",
       "The semaphore's permits."),
    _m("agentperf.semaphore.available", "gauge", "{permit}", "semaphore", "Permits free now."),
    _m("agentperf.semaphore.waiting", "gauge", "{request}", "semaphore",
       "Callers waiting for a permit now."),
)  # fmt: skip
"""Every exported metric, in the order of API.md's list."""


@dataclasses.dataclass
class Reading:
    """The value of one metric for one object name (and state): a number, or for a
    histogram ``(counts per bucket, sum_s)`` with :data:`BOUNDS`."""

    metric: Metric
    name: str
    state: str | None
    value: float | tuple[list[int], float]


def _get(stats: Any, field: str) -> float:
    # getattr with a default: fields another part adds (the store tier's) read as 0 until then.
    v = getattr(stats, field, 0)
    return 0 if v is None else v


def _add_hist(
    a: tuple[list[int], float] | None, b: tuple[list[int], float]
) -> tuple[list[int], float]:
    if a is None:
        return list(b[0]), b[1]
    return [x + y for x, y in zip(a[0], b[0], strict=True)], a[1] + b[1]


# What each kind reports: metric name -> value(s) of one object. A dict per state for
# labelled metrics.
def _pool(p: Any) -> dict[str, Any]:
    s = p.stats()
    return {
        "agentperf.pool.agents": {"idle": s.idle_count, "used": s.active_count},
        "agentperf.pool.max": s.max_size,
        "agentperf.pool.pending_requests": s.waiting,
        "agentperf.pool.created": s.created,
        "agentperf.pool.destroyed": s.destroyed,
        "agentperf.pool.timeouts": s.timeouts,
        "agentperf.pool.wait_time": p._wait_histogram(),
    }


def _cache(c: Any) -> dict[str, Any]:
    s = c.stats()
    return {
        "agentperf.cache.hits": s.hits,
        "agentperf.cache.misses": s.misses,
        "agentperf.cache.coalesced": _get(s, "coalesced"),
        "agentperf.cache.evictions": s.evictions,
        "agentperf.cache.expirations": s.expirations,
        "agentperf.cache.size": s.size,
        "agentperf.cache.store_hits": _get(s, "store_hits"),
        "agentperf.cache.store_misses": _get(s, "store_misses"),
        "agentperf.cache.store_errors": _get(s, "store_errors"),
    }


def _batch(ex: Any) -> dict[str, Any]:
    s = ex.stats()
    return {
        "agentperf.batch.items": {
            "success": s.success_tasks,
            "failure": s.failed_tasks,
            "cancelled": s.cancelled_tasks,
        },
        "agentperf.batch.attempts": s.attempts,
        "agentperf.batch.throttled_time": s.throttled_s,
        "agentperf.batch.concurrency": s.concurrency,
        "agentperf.batch.item_duration": ex._item_histogram(),
    }


def _limiter(lim: Any) -> dict[str, Any]:
    s = lim.stats()
    return {
        "agentperf.limiter.granted": s.granted,
        "agentperf.limiter.wait_time": s.wait_s,
        "agentperf.limiter.paused_time": s.paused_s,
    }


def _semaphore(sem: Any) -> dict[str, Any]:
    return {
        "agentperf.semaphore.permits": sem.permits,
        "agentperf.semaphore.available": sem.available,
        "agentperf.semaphore.waiting": sem.waiting,
    }


_READERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "pool": _pool,
    "cache": _cache,
    "batch": _batch,
    "limiter": _limiter,
    "semaphore": _semaphore,
}


def read_kind(kind: str) -> dict[str, dict[str, Any]]:
    """``{name: {metric name: value}}`` for the live objects of ``kind``, same-name objects
    added together."""
    out: dict[str, dict[str, Any]] = {}
    reader = _READERS[kind]
    for name, objs in live(kind).items():
        acc: dict[str, Any] = {}
        for obj in objs:
            for metric, value in reader(obj).items():
                prev = acc.get(metric)
                if isinstance(value, dict):
                    d = prev if prev is not None else {}
                    for st, x in value.items():
                        d[st] = d.get(st, 0) + x
                    acc[metric] = d
                elif isinstance(value, tuple):
                    acc[metric] = _add_hist(prev, value)
                else:
                    acc[metric] = (prev or 0) + value
        out[name] = acc
    return out


def read() -> Iterator[Reading]:
    """Every metric of every live named object, in :data:`METRICS` order."""
    by_kind = {k: read_kind(k) for k in KINDS}
    for m in METRICS:
        for name, values in sorted(by_kind[m.source].items()):
            v = values[m.name]
            if isinstance(v, dict):
                for st in m.states:
                    yield Reading(m, name, st, v.get(st, 0))
            else:
                yield Reading(m, name, None, v)
