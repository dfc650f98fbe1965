"""``agentperf report [--quick] [--json] [--only BLOCK ...]``, and ``agentperf --version``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from typing import Any

from .registry import blocks, run
from .render import render, render_blocks
from .row import Row

__all__ = ["SCHEMA", "main", "to_json"]

SCHEMA = "agentperf-report-v1"
"""The ``schema`` field of the ``--json`` document."""


def to_json(rows: list[Row], quick: bool) -> dict[str, Any]:
    """The ``--json`` document: the schema name, the run's settings and the rows."""
    return {
        "schema": SCHEMA,
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="agentperf")
    parser.add_argument("--version", action="version", version=f"agentperf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="measure the pool, cache and batch on this machine")
    rep.add_argument("--quick", action="store_true", help="a short run (seconds; noisier figures)")
    rep.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    rep.add_argument(
        "--only",
        action="append",
        metavar="BLOCK",
        choices=[b.name for b in blocks()],
        help="measure only this block (repeatable): " + ", ".join(b.name for b in blocks()),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = run(quick=args.quick, progress=progress, only=args.only)
    if args.json:
        print(json.dumps(to_json(rows, args.quick), indent=2))
    else:
        print(render(rows))
        print()
        print(render_blocks(rows))
    return 0
