"""The OpenTelemetry exporter: observable instruments over the registry.

``opentelemetry-api`` is imported only here, when :func:`instrument` runs (extra
``agentperf-rs[otel]``). Counters are observable counters, gauges observable up-down
counters (counts that add up across objects, as OpenTelemetry's connection-pool
conventions have them): each callback reads the live objects of its kind at every
collection, so a collected object is gone from the next one.

OpenTelemetry's API has no observable histogram, so the two histograms are synchronous
``Histogram`` instruments with agentperf's bucket bounds as advice, brought up to date at
each collection (in the callback of ``agentperf.pool.max`` / ``agentperf.batch.concurrency``)
from the Rust histograms: what each object observed since the last collection is recorded
bucket by bucket. Bucket counts and the count are exact; each recorded value is its bucket's
midpoint (0 for the first bucket, which holds the acquires that did not wait), so the sum is
exact to the bucket's width. Like any synchronous instrument's, a histogram's series stays
in the export after its object is collected.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .._agentperf import __version__
from ._registry import BOUNDS, METRICS, Metric, live, read_kind

__all__ = ["OtelInstruments", "instrument"]


def _import() -> Any:
    try:
        import opentelemetry.metrics
    except ImportError as e:
        raise ImportError(
            "ap.metrics.instrument_otel() needs opentelemetry-api: pip install 'agentperf-rs[otel]'"
        ) from e
    return opentelemetry.metrics


# A representative value per bucket: 0 for the first, the midpoint of the others, twice the
# last bound for +Inf (or the mean the sum leaves for it, when larger).
_REPS = [0.0] + [(lo + hi) / 2 for lo, hi in itertools.pairwise(BOUNDS)]
_LAST = BOUNDS[-1]


class _Replay:
    """Records into a synchronous histogram what each object's Rust histogram gained since
    the previous collection."""

    def __init__(self, hist: Any, kind: str, snapshot: Callable[[Any], tuple[list[int], float]]):
        self.hist = hist
        self.kind = kind
        self.snapshot = snapshot
        # id(obj) -> (weak ref, counts, sum) as of the last collection.
        self.seen: dict[int, tuple[weakref.ref[Any], list[int], float]] = {}
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            alive: set[int] = set()
            for name, objs in live(self.kind).items():
                attrs = {"name": name}
                for obj in objs:
                    key = id(obj)
                    alive.add(key)
                    counts, sum_s = self.snapshot(obj)
                    prev = self.seen.get(key)
                    if prev is None or prev[0]() is not obj:
                        old, old_sum = [0] * len(counts), 0.0
                    else:
                        old, old_sum = prev[1], prev[2]
                    self.seen[key] = (weakref.ref(obj), counts, sum_s)
                    self._record(counts, old, sum_s - old_sum, attrs)
            for key in [k for k in self.seen if k not in alive]:
                del self.seen[key]

    def _record(
        self, counts: list[int], old: list[int], dsum: float, attrs: dict[str, str]
    ) -> None:
        record = self.hist.record
        finite = 0.0
        for i, (n, o) in enumerate(zip(counts[:-1], old[:-1], strict=True)):
            d = n - o
            if d > 0:
                v = _REPS[i]
                finite += d * v
                for _ in range(d):
                    record(v, attrs)
        d = counts[-1] - old[-1]
        if d > 0:
            v = max(2 * _LAST, (dsum - finite) / d)
            for _ in range(d):
                record(v, attrs)


class OtelInstruments:
    """The instruments :func:`instrument` created, by metric name (``instruments[name]``)."""

    def __init__(self, meter: Any, instruments: dict[str, Any]) -> None:
        self.meter = meter
        """The ``opentelemetry.metrics.Meter`` (``agentperf``) they belong to."""
        self.instruments = instruments
        """Metric name -> instrument."""


def _callback(
    otel: Any, m: Metric, before: Callable[[], None] | None
) -> Callable[[Any], Iterable[Any]]:
    Observation = otel.Observation

    def observe(_options: Any) -> Iterable[Any]:
        if before is not None:
            before()
        out = []
        for name, values in read_kind(m.source).items():
            v = values[m.name]
            if isinstance(v, dict):
                for st in m.states:
                    out.append(Observation(v.get(st, 0), {"name": name, "state": st}))
            else:
                out.append(Observation(v, {"name": name}))
        return out

    return observe


_lock = threading.Lock()
_done: weakref.WeakKeyDictionary[Any, OtelInstruments] = weakref.WeakKeyDictionary()


def instrument(meter_provider: Any = None) -> OtelInstruments:
    """Create the instruments on ``meter_provider`` (default: the global provider) once per
    provider; see the module docstring."""
    otel = _import()
    provider = otel.get_meter_provider() if meter_provider is None else meter_provider
    if not callable(getattr(provider, "get_meter", None)):
        from .._config import show

        raise TypeError(
            f"meter_provider={show(meter_provider)}: expected an OpenTelemetry MeterProvider "
            "or None"
        )
    with _lock:
        try:
            got = _done.get(provider)
        except TypeError:  # not weakly referenceable: no memo
            got = None
        if got is not None:
            return got
        meter = provider.get_meter("agentperf", __version__)
        instruments: dict[str, Any] = {}
        replays: dict[str, _Replay] = {}
        for m in METRICS:
            if m.kind == "histogram":
                h = meter.create_histogram(
                    m.name,
                    unit=m.unit,
                    description=m.description,
                    explicit_bucket_boundaries_advisory=list(BOUNDS),
                )
                instruments[m.name] = h
                snap = (
                    (lambda p: p._wait_histogram())
                    if m.source == "pool"
                    else (lambda ex: ex._item_histogram())
                )
                replays[m.source] = _Replay(h, m.source, snap)
        for m in METRICS:
            if m.kind == "histogram":
                continue
            before = None
            if m.name in ("agentperf.pool.max", "agentperf.batch.concurrency"):
                before = replays[m.source]
            cb = _callback(otel, m, before)
            create = (
                meter.create_observable_counter
                if m.kind == "counter"
                else meter.create_observable_up_down_counter
            )
            instruments[m.name] = create(
                m.name, callbacks=[cb], unit=m.unit, description=m.description
            )
        got = OtelInstruments(meter, instruments)
        try:
            _done[provider] = got
        except TypeError:
            pass
        return got
