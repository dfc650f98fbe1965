"""Every program in examples/ runs to completion (each checks its own results)."""

from __future__ import annotations

import ast
import os
import pathlib
import re
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


def _quick_start_snippet() -> str:
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the quick start has one Python snippet"
    return blocks[0]


@pytest.mark.timeout(60)
def test_readme_quick_start_snippet_runs_and_uses_what_it_builds() -> None:
    """The snippet built a `pool` it never used (and named an undefined `MyClient`)."""
    code = _quick_start_snippet()
    tree = ast.parse(code)
    assigned = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    used = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    assert assigned - used == set(), "every name the snippet builds is used"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "an answer to" in proc.stdout


def test_readme_quick_start_is_two_commands() -> None:
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [line.split("#")[0].strip() for line in shell.splitlines()]
    assert [c for c in commands if c] == ["make report", "make test"]
