"""A row of the report: the stable ``--json`` schema (``agentperf-report-v1``)."""

from __future__ import annotations

import dataclasses

__all__ = ["Row"]


@dataclasses.dataclass
class Row:
    """One measured row. Field names are the stable ``--json`` schema."""

    section: str
    """The name of the block that measured it: ``pooling``, ``caching``, ``batch``, ..."""
    metric: str
    """The seed's metric name (or a row this project adds)."""
    value: float
    """agentperf's figure, in ``unit``."""
    unit: str
    baseline: float | None
    """The plain-Python equivalent's figure, in ``unit``."""
    baseline_name: str
    peer: float | None
    """The best installed peer's figure, in ``unit`` (``None``: no peer installed/applicable)."""
    peer_name: str
    seed_claim: str
    """What the Go seed's README claims for this row."""
    note: str = ""
    higher_is_better: bool = True
    details: dict[str, float] = dataclasses.field(default_factory=dict)
    """Raw measurements behind the row (names ending in their unit: ``_ns``, ``_ms``, ...)."""
