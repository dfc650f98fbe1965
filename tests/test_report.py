"""The main job: ``python -m agentperf report`` prints every row of the seed's summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
    assert by[("batch", "Speedup (10 workers)")]["value"] > 1.0
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
