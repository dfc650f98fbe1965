"""The performance report: the seed's "Performance Metrics Summary", measured here."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    """``agentperf report [--quick] [--json]``."""
    parser = argparse.ArgumentParser(prog="agentperf")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="measure the pool, cache and batch on this machine")
    rep.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    rep.add_argument("--json", action="store_true", help="machine-readable output")
    parser.parse_args(argv)
    print("agentperf report: no rows yet")
    return 0
