"""`ap.hash_key` against the usual Python key: SHA-256 of sorted-keys JSON, same process.

Run: .venv/bin/python -m pytest benches/test_bench_keys.py --benchmark-only \
         --benchmark-columns=median,ops,rounds --benchmark-sort=name
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import uuid
from typing import Any

import pydantic
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


def _run(benchmark: Any, fn: Any, name: str) -> str:
    # Many calls a round: one call is too short for the timer to resolve on its own.
    x = EXAMPLE if name == "example" else LARGER
    benchmark.group = f"keys-{name}"
    n = 500 if name == "example" else 50
    return benchmark.pedantic(fn, args=(x,), iterations=n, rounds=300, warmup_rounds=5)


@pytest.mark.parametrize("name", ["example", "larger"])
def test_hash_key(benchmark: Any, name: str) -> None:
    assert len(_run(benchmark, ap.hash_key, name)) == 64


@pytest.mark.parametrize("name", ["example", "larger"])
def test_json_sha256(benchmark: Any, name: str) -> None:
    assert len(_run(benchmark, json_sha256, name)) == 64


class Request(pydantic.BaseModel):
    """A request model with the everyday field types (keyed by its Python-mode dump)."""

    prompt: str
    user: uuid.UUID
    sent: datetime.datetime
    budget: decimal.Decimal


class Fetch(Request):
    """The same with an HttpUrl (keyed by its ``model_dump(mode="json")``)."""

    url: pydantic.HttpUrl


_FIELDS: dict[str, Any] = {
    "prompt": "summarize the attached report",
    "user": "12345678-1234-5678-1234-567812345678",
    "sent": "2024-05-17T13:45:30Z",
    "budget": "0.25",
}
MODELS = {"model": Request(**_FIELDS), "model-url": Fetch(**_FIELDS, url="https://example.com/r")}


def dump_json_sha256(m: pydantic.BaseModel) -> str:
    return hashlib.sha256(m.model_dump_json().encode()).hexdigest()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fn", [ap.hash_key, dump_json_sha256], ids=["hash_key", "dump_json"])
def test_model_keys(benchmark: Any, name: str, fn: Any) -> None:
    benchmark.group = f"keys-{name}"
    out = benchmark.pedantic(fn, args=(MODELS[name],), iterations=100, rounds=100, warmup_rounds=5)
    assert len(out) == 64
