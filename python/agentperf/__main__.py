"""``python -m agentperf report``: the performance report (also the ``agentperf`` script)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the command line."""
    from .report import main as report_main

    return report_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
