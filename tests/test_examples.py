"""Every program in examples/ runs to completion (each checks its own results)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def test_the_six_seed_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {
        "pool_basic",
        "cached_agent",
        "batch_executor",
        "combined",
        "streaming_batch",
        "custom_cache_key",
    } <= names


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: pathlib.Path) -> None:
    env = dict(os.environ, PYTHONDEVMODE="1")
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip(), "an example prints what it shows"
