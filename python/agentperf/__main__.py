"""``python -m agentperf report``: the performance report (also the ``agentperf`` script).

The command line lives in :mod:`agentperf.report.cli`; this module only runs it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the command line (``argv``: ``sys.argv[1:]`` by default)."""
    from .report.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
