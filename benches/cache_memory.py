"""Rust-side bytes per entry of ap.Cache and ap.CachedAgent (RSS delta, Python objects excluded).

    .venv/bin/python benches/cache_memory.py [N]

Keys and values are created first (their memory is not counted); then they are inserted and
the growth of the resident set is divided by N. Str keys up to 21 bytes are stored inline.
"""

from __future__ import annotations

import gc
import sys

import psutil

import agentperf as ap


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    keys = [f"user:{i}:profile" for i in range(n)]  # 15-20 bytes: inline
    value = object()
    before = rss()
    c = ap.Cache(max_size=n, ttl=600.0)
    for k in keys:
        c.set(k, value)
    after = rss()
    print(f"ap.Cache, {n} str keys, ttl: {(after - before) / n:.1f} bytes/entry (Rust side)")
    c.close()
    del c
    inputs = list(range(n))
    before = rss()
    agent = ap.CachedAgent(lambda x: value, max_size=n, ttl=600.0)
    for x in inputs:
        agent.execute(x)
    after = rss()
    print(f"ap.CachedAgent, {n} digest keys: {(after - before) / n:.1f} bytes/entry (Rust side)")


if __name__ == "__main__":
    main()
