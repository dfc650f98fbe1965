"""The main job: ``python -m agentperf report`` prints every row of the seed's summary."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import agentperf as ap
from agentperf.report import Row, caching_rows, render

SEED_ROWS = {
    ("caching", "Hit latency"),
    ("caching", "Speedup (cached)"),
    ("caching", "Hit rate (repeated workload)"),
    ("pooling", "Overhead reduction vs a fresh agent per call"),
    ("pooling", "Allocation reduction (agent construction bytes per call)"),
    ("pooling", "Concurrent access: 10 threads vs 1 (throughput ratio)"),
    ("batch", "Speedup (10 workers)"),
    ("batch", "Speedup (20 workers)"),
    ("batch", "Max throughput"),
}


@pytest.mark.timeout(240)
def test_report_quick_json_has_every_seed_row() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentperf", "report", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "agentperf-report-v1"
    rows = doc["rows"]
    assert SEED_ROWS <= {(r["section"], r["metric"]) for r in rows}
    for r in rows:
        assert set(r) >= {
            "section",
            "metric",
            "value",
            "unit",
            "baseline",
            "baseline_name",
            "peer",
            "peer_name",
            "seed_claim",
            "note",
        }
        assert isinstance(r["value"], float) and r["value"] == r["value"], r
    by = {(r["section"], r["metric"]): r for r in rows}
    assert 0.0 <= by[("caching", "Hit rate (repeated workload)")]["value"] <= 100.0
    for r in rows:
        assert math.isfinite(r["value"]) and r["value"] > 0, r
    assert "measuring" in proc.stderr, "a progress display is shown while it runs"


def test_report_usage_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentperf", "nonsense"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "report" in proc.stderr


@pytest.mark.timeout(240)
def test_report_text_has_the_summary_table_and_the_four_seed_blocks() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentperf", "report", "--quick"],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("| Optimization | Metric")
    for block in (
        "Pool Performance",
        "Cache Performance",
        "Batch Performance",
        "Concurrent Pool Access",
    ):
        assert f"\n{block}\n" in out, block
    assert "Batch (20 concurrent)" in out
    wide = [line for line in out.splitlines() if len(line) > 100]
    assert wide == [], "the report fits a 100-column terminal"


def _row(section: str, metric: str, value: float, unit: str, **kw: Any) -> Row:
    fields: dict[str, Any] = {
        "baseline": value * 3,
        "baseline_name": "a plain-Python baseline with a long descriptive name (and details)",
        "peer": value * 2,
        "peer_name": "some.installed.PeerCache + json/sha256 key, the fastest one found here",
        "seed_claim": "<1 µs (942 ns) claimed by the seed",
        "note": "a long note that explains how the figure was measured " * 4,
    }
    fields.update(kw)
    return Row(section, metric, value, unit, **fields)


@pytest.mark.parametrize("width", [100, 80])
def test_rendered_table_fits_the_width(width: int) -> None:
    """The table was 229 columns wide; every line of it now fits, and every figure shows."""
    rows = [
        _row("pooling", "Allocation reduction (agent construction bytes per call)", 99.9, "%"),
        _row("pooling", "execute overhead over a direct call", 246.0, "ns", peer=None),
        _row("caching", "Speedup (cached)", 1587.3, "x", baseline=None),
        _row("batch", "Max throughput", 963_114.0, "tasks/s"),
    ]
    out = render(rows, width)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width, out
    assert lines[0].startswith("| Optimization | Metric")
    for figure in ("99.9%", "246 ns", "1,587.3x", "963,114", "738 ns"):
        assert figure in out, figure
    words = " ".join(line.strip("|- ") for line in lines).split()
    text = " ".join(w for w in words if w != "|")
    assert "Allocation reduction (agent construction bytes per call)" in text
    assert "some.installed.PeerCache + json/sha256 key" in text


def test_version_flag_prints_the_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentperf", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"agentperf {ap.__version__}"


def test_console_script_prints_the_version() -> None:
    script = pathlib.Path(sys.executable).with_name("agentperf")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ap.__version__ in proc.stdout


def test_quick_hit_rate_uses_the_full_runs_workload() -> None:
    """--quick measured 1,000 requests (81.7 %) beside the full run's 5,000 (95 %)."""
    quick = {r.metric: r for r in caching_rows(True)}["Hit rate (repeated workload)"]
    assert quick.note.startswith("5000 requests over 250 inputs")
    assert quick.baseline is not None and quick.baseline > 90.0, quick
