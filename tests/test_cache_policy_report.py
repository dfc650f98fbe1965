"""The report's cache policy row."""

from __future__ import annotations

import pytest

from agentperf.report.caching import POLICY, _policy_row


@pytest.mark.timeout(60)
def test_the_report_row_compares_tinylfu_with_lru_on_one_trace() -> None:
    row = _policy_row()
    assert row.section == "caching" and row.metric == POLICY and row.unit == "%"
    assert row.baseline is not None
    # The same trace: W-TinyLFU keeps more of a Zipf trace than LRU (0.59 vs 0.51 at 1M).
    assert 0.0 < row.baseline < row.value <= 100.0
    assert "200,000 requests" in row.note
