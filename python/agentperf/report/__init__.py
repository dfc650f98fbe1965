"""The performance report: the seed's "Performance Metrics Summary", measured on this machine.

``python -m agentperf report`` measures every block of the report with a simulated agent,
each row next to its plain-Python baseline and the best peer that is installed; ``--quick``
shortens every measurement, ``--json`` prints the rows as a document with stable field names
(schema ``agentperf-report-v1``, see :class:`Row`).

The package: :mod:`.row` (the schema), :mod:`.measure` (timers and simulated agents shared by
the blocks), one module per block (:mod:`.pooling`, :mod:`.caching`, :mod:`.batch`, each with
its baselines and peers), :mod:`.registry` (the blocks in order, :func:`register` for more,
:func:`run`), :mod:`.render` (the table and the seed's text blocks) and :mod:`.cli`.
"""

from __future__ import annotations

from .cli import main, to_json
from .registry import Block, blocks, register, run, unregister
from .render import render, render_blocks
from .row import Row

__all__ = [
    "Block",
    "Row",
    "blocks",
    "main",
    "register",
    "render",
    "render_blocks",
    "run",
    "to_json",
    "unregister",
]
