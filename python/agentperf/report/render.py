"""Rendering: the summary table (at most 100 columns wide) and the seed's four text blocks."""

from __future__ import annotations

import textwrap

from .batch import speedup_metric
from .caching import SPEEDUP
from .pooling import CONCURRENT, FRESH_VS_POOLED
from .registry import blocks
from .row import Row

__all__ = ["WIDTH", "fmt", "render", "render_blocks"]


def fmt(v: float | None, unit: str) -> str:
    """A figure in its unit, as the table shows it (``-`` for none)."""
    if v is None:
        return "-"
    if unit == "ns":
        return f"{v / 1000:.2f} µs" if v >= 1000 else f"{v:.0f} ns"
    if unit == "x":
        return f"{v:,.1f}x"
    if unit == "%":
        return f"{v:.1f}%"
    if unit == "ratio":
        return f"{v:.2f}x"
    if unit == "req/item":
        return f"{v:.2f} req/item"
    return f"{v:,.0f} {unit}"


WIDTH = 100
"""The rendered report fits a terminal this wide."""


def _table(head: list[str], body: list[list[str]], width: int) -> list[str]:
    """A pipe table at most ``width`` columns wide; columns narrow where wrapping costs least.

    A row whose cells wrap takes several lines; each row's first line holds its figures.
    A line of dashes separates the rows.
    """
    cols = list(zip(head, *body, strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    floors = [max(len(w) for c in col for w in (c.split() or [""])) for col in cols]
    overhead = 3 * len(head) + 1

    rows = [head, *body]

    def height(ws: list[int]) -> int:
        """Lines of the table's rows at these widths (a row is as tall as its tallest cell)."""
        return sum(max(len(textwrap.wrap(c, w)) for c, w in zip(r, ws, strict=True)) for r in rows)

    # Narrow, one character at a time, the column that adds fewest lines (the widest on ties).
    while sum(widths) + overhead > width:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break

        def cost(i: int) -> tuple[int, int]:
            return height([w - (j == i) for j, w in enumerate(widths)]), -widths[i]

        widths[min(shrinkable, key=cost)] -= 1

    def lines(cells: list[str]) -> list[str]:
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths, strict=True)]
        return [
            "| "
            + " | ".join(
                (wc[k] if k < len(wc) else "").ljust(w)
                for wc, w in zip(wrapped, widths, strict=True)
            )
            + " |"
            for k in range(max(len(wc) for wc in wrapped))
        ]

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [*lines(head), sep]
    for b in body:
        out += lines(b)
        out.append(sep)
    return out


def _compared(v: float | None, unit: str, name: str) -> str:
    """A baseline or peer cell: the figure, with the name only when it is an ideal."""
    if v is None:
        return "-"
    return f"{fmt(v, unit)} (ideal)" if name.startswith("ideal") else fmt(v, unit)


def _legend(r: Row) -> str:
    """What the row is compared with, and its note, for the lines under the table."""
    parts = []
    if r.baseline is not None and r.baseline_name and r.baseline_name != "ideal":
        parts.append(f"plain Python = {r.baseline_name}")
    if r.peer_name:
        parts.append(f"best peer = {r.peer_name}" if r.peer is not None else r.peer_name)
    if r.note:
        parts.append(r.note)
    return "; ".join(parts)


def render(rows: list[Row], width: int = WIDTH) -> str:
    """The rows as the seed's summary table, with baseline, peer and claim columns.

    Every line fits in ``width`` columns: long cells wrap onto the next lines of their row,
    and what each row is compared with is listed under the table.
    """
    titles = {b.name: b.title for b in blocks()}
    head = ["Optimization", "Metric", "agentperf", "plain Python", "best peer", "seed claims"]
    body = []
    last = ""
    for r in rows:
        body.append(
            [
                titles.get(r.section, r.section.capitalize()) if r.section != last else "",
                r.metric,
                fmt(r.value, r.unit),
                _compared(r.baseline, r.unit, r.baseline_name),
                _compared(r.peer, r.unit, r.peer_name),
                r.seed_claim,
            ]
        )
        last = r.section
    out = _table(head, body, width)
    notes = [
        textwrap.fill(f"- {r.metric}: {legend}", width, subsequent_indent="  ")
        for r in rows
        if (legend := _legend(r))
    ]
    return "\n".join(out + (["", *notes] if notes else []))


def render_blocks(rows: list[Row]) -> str:
    """The seed's four benchmark blocks, in its own shape, from the rows' raw figures."""
    by = {r.metric: r.details for r in rows}
    out: list[str] = []
    pool = by.get(FRESH_VS_POOLED)
    if pool:
        f, p = pool["fresh_ns"], pool["pooled_ns"]
        out += [
            "Pool Performance",
            f"  Non-pooled: {f:>12,.0f} ns/op",
            f"  Pooled:     {p:>12,.0f} ns/op",
            f"  Improvement: {100 * (1 - p / f):.1f}% faster",
        ]
    cache = by.get(SPEEDUP)
    if cache:
        u, c = cache["uncached_ns"], cache["cached_ns"]
        out += [
            "Cache Performance",
            f"  Uncached: {u:>12,.0f} ns/op",
            f"  Cached:   {c:>12,.0f} ns/op",
            f"  Improvement: {100 * (1 - c / u):.2f}% faster ({u / c:,.0f}x speedup)",
        ]
    for workers in (10, 20):
        b = by.get(speedup_metric(workers))
        if b:
            if workers == 10:
                out += [
                    "Batch Performance",
                    f"  Serial ({b['tasks']:.0f} tasks): {b['serial_ms']:>8,.0f} ms",
                ]
            out += [
                f"  Batch ({workers} concurrent): {b['batch_ms']:>6,.0f} ms  "
                f"Speedup: {b['serial_ms'] / b['batch_ms']:.2f}x"
            ]
    conc = by.get(CONCURRENT)
    if conc:
        one, ten = conc["one_thread_ns_per_op"], conc["ten_threads_ns_per_op"]
        out += [
            "Concurrent Pool Access",
            f"  1 thread:   {one:>12,.0f} ns/op",
            f"  10 threads: {ten:>12,.0f} ns/op ({one / ten:.1f}x better throughput)",
        ]
    return "\n".join(out)
