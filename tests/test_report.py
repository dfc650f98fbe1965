"""The main job: ``python -m agentperf report`` prints every row of the seed's summary."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import agentperf as ap
from agentperf.report import Block, Row, blocks, main, register, render, run, unregister
from agentperf.report.caching import rows as caching_rows
from agentperf.report.registry import BUILTIN

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
    fields = {f for f in Row.__dataclass_fields__}
    names = {b.name for b in blocks()}
    for r in rows:
        assert set(r) == fields, r
        assert r["section"] in names, r
        assert isinstance(r["metric"], str) and r["metric"], r
        assert isinstance(r["unit"], str) and r["unit"], r
        # Structure, never speed: every figure is a finite number; times, ratios and rates are
        # positive; percentages are at most 100. (Differences and reductions may be negative.)
        for key in ("value", "baseline", "peer"):
            v = r[key]
            if v is None:
                assert key != "value", r
                continue
            assert isinstance(v, float) and math.isfinite(v), (key, r)
            if r["unit"] in ("x", "tasks/s"):
                assert v > 0, (key, r)
            if r["unit"] == "%":
                assert v <= 100.0, (key, r)
        assert all(isinstance(d, float) and math.isfinite(d) for d in r["details"].values()), r
    by = {(r["section"], r["metric"]): r for r in rows}
    assert 0.0 <= by[("caching", "Hit rate (repeated workload)")]["value"] <= 100.0
    assert {r["section"] for r in rows} == set(BUILTIN), "every block of the package ran"
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


@pytest.mark.timeout(240)
def test_tiers_block_sqlite_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second tier's rows with SqliteStore: across two replicas and a restart the store
    makes exactly one agent call per distinct input, where the in-process cache alone makes
    one per process."""
    import agentperf.report.tiers as tiers

    monkeypatch.setattr(tiers, "redis_url", lambda timeout=0.2: None)
    got = {r.metric: r for r in tiers.rows(True)}
    assert set(got) == {
        "L2 hit latency (SqliteStore)",
        "Agent calls, 2 replicas + a restart (SqliteStore)",
    }
    lat = got["L2 hit latency (SqliteStore)"]
    assert (
        lat.section == "tiers" and lat.unit == "ns" and lat.value > 0 and not lat.higher_is_better
    )
    calls = got["Agent calls, 2 replicas + a restart (SqliteStore)"]
    distinct = calls.details["distinct_calls"]
    assert calls.value == distinct
    assert calls.baseline == 3 * distinct


@pytest.mark.timeout(240)
def test_tiers_block_redis_rows_when_a_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentperf.report.tiers as tiers
    from redis_server import RedisServer

    with RedisServer() as srv:
        monkeypatch.setenv("REDIS_URL", srv.url)
        assert tiers.redis_url() == srv.url
        got = {r.metric: r for r in tiers.rows(True)}
    calls = got["Agent calls, 2 replicas + a restart (RedisStore)"]
    assert calls.value == calls.details["distinct_calls"]
    assert calls.peer is not None and calls.peer >= calls.value  # the layer written by hand
    lat = got["L2 hit latency (RedisStore)"]
    assert lat.value > 0 and lat.baseline is not None and "x (" in lat.note
    monkeypatch.delenv("REDIS_URL")


# --- the registry of blocks ------------------------------------------------------------------


def _second_tier_rows(quick: bool) -> Iterator[Row]:
    yield Row("second_tier", "Store hits", 52.0, "%", 0.0, "no store", None, "", "-")


@pytest.fixture
def extra_block() -> Iterator[Block]:
    block = register(Block("second_tier", "Second tier", _second_tier_rows))
    try:
        yield block
    finally:
        unregister("second_tier")


def test_the_package_blocks_come_first_in_order() -> None:
    got = blocks()
    assert [b.name for b in got[: len(BUILTIN)]] == [
        "pooling",
        "caching",
        "batch",
        "traffic",
        "tiers",
    ]
    assert all(callable(b.measure) and b.title for b in got)


def test_a_registered_block_is_measured_rendered_and_exported(
    extra_block: Block, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line iterates the registry: a new block needs no change to it."""
    assert blocks()[-1] is extra_block
    assert [r.metric for r in run(quick=True, only=["second_tier"])] == ["Store hits"]
    assert main(["report", "--quick", "--only", "second_tier", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["schema"] == "agentperf-report-v1" and doc["quick"] is True
    assert [(r["section"], r["metric"]) for r in doc["rows"]] == [("second_tier", "Store hits")]
    assert "measuring second_tier" in captured.err
    assert main(["report", "--only", "second_tier"]) == 0
    out = capsys.readouterr().out
    assert "| Second tier " in out and "Store hits" in out
    assert "no store" in out


def test_the_registry_refuses_duplicates_and_unknown_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValueError, match="'pooling'"):
        register(Block("pooling", "Pooling again", _second_tier_rows))
    with pytest.raises(TypeError, match="Block"):
        register("traffic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nope"):
        run(only=["nope"])
    with pytest.raises(SystemExit) as info:
        main(["report", "--only", "nope"])
    assert info.value.code == 2
    assert "pooling" in capsys.readouterr().err
