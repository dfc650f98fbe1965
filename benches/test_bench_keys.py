"""`ap.hash_key` against the usual Python key: SHA-256 of sorted-keys JSON, same process.

Run: .venv/bin/python -m pytest benches/test_bench_keys.py --benchmark-only \
         --benchmark-columns=median,ops,rounds --benchmark-sort=name
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

import agentperf as ap

EXAMPLE = {"task": "summarize", "instruction": "be brief", "context": {"user": "u1", "n": 3}}
LARGER: dict[str, Any] = {
    "messages": [{"role": "user", "content": f"message {i} " * 8} for i in range(20)],
    "params": {"temperature": 0.2, "max_tokens": 256, "stop": ["\n\n", "END"]},
    "tools": [f"tool_{i}" for i in range(10)],
}


def json_sha256(x: Any) -> str:
    return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", ["example", "larger"])
def test_hash_key(benchmark: Any, name: str) -> None:
    x = EXAMPLE if name == "example" else LARGER
    benchmark.group = f"keys-{name}"
    assert len(benchmark(ap.hash_key, x)) == 64


@pytest.mark.parametrize("name", ["example", "larger"])
def test_json_sha256(benchmark: Any, name: str) -> None:
    x = EXAMPLE if name == "example" else LARGER
    benchmark.group = f"keys-{name}"
    assert len(benchmark(json_sha256, x)) == 64
