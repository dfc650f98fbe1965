"""A custom cache key: cache by what matters, ignore the rest of the input.

Run: python examples/custom_cache_key.py
"""

from __future__ import annotations

import dataclasses

import agentperf as ap


@dataclasses.dataclass(frozen=True)
class AgentInput:
    task: str
    instruction: str
    request_id: str  # differs on every call, irrelevant to the answer


def answer(inp: AgentInput) -> str:
    return f"{inp.task}: {inp.instruction}"


def main() -> None:
    # Default keys hash the whole input structurally (dataclasses included) ...
    with ap.CachedAgent(answer, max_size=100) as by_everything:
        by_everything.execute(AgentInput("summarize", "be brief", "r1"))
        by_everything.execute(AgentInput("summarize", "be brief", "r2"))
        assert by_everything.stats().misses == 2

    # ... a key_generator picks the fields that decide the answer.
    config = ap.CacheConfig(key_generator=lambda inp: f"{inp.task}:{inp.instruction}")
    with ap.CachedAgent(answer, config) as by_task:
        by_task.execute(AgentInput("summarize", "be brief", "r1"))
        by_task.execute(AgentInput("summarize", "be brief", "r2"))
        s = by_task.stats()
        print(
            f"key {by_task.cache_key(AgentInput('summarize', 'be brief', 'x'))!r}: "
            f"hits {s.hits}, misses {s.misses}"
        )
        assert (s.hits, s.misses) == (1, 1)


if __name__ == "__main__":
    main()
