"""The blocks of the report, in the order the report measures and prints them.

A block is one module of this package (``pooling``, ``caching``, ``batch``, ``traffic``,
``tiers``) that defines ``BLOCK``: its name (the ``section`` of its rows), a title, and a
function that measures its rows. Adding a block means adding a module and its name to
``BUILTIN``; code outside the package can :func:`register` one too. The command line iterates
:func:`blocks`.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable, Iterable, Sequence

from .row import Row

__all__ = ["BUILTIN", "Block", "blocks", "register", "run", "unregister"]

BUILTIN: tuple[str, ...] = ("pooling", "caching", "batch", "traffic", "tiers")
"""The package's own blocks, each a module of ``agentperf.report`` defining ``BLOCK``."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of the report.

    ``measure(quick)`` yields the block's rows (``quick``: a short run, noisier figures);
    every row's ``section`` is ``name``.
    """

    name: str
    title: str
    measure: Callable[[bool], Iterable[Row]]


_lock = threading.Lock()
_registered: dict[str, Block] = {}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    own = {}
    for name in BUILTIN:  # imported outside the lock: a module may use this registry
        block = importlib.import_module(f"{__package__}.{name}").BLOCK
        if not isinstance(block, Block) or block.name != name:
            raise RuntimeError(f"agentperf.report.{name}.BLOCK is not Block({name!r}, ...)")
        own[name] = block
    with _lock:
        if not _loaded:
            # First: register() loads them before it adds a block.
            _registered.update({**own, **_registered})
            _loaded = True


def blocks() -> list[Block]:
    """Every block, the package's own first, then the registered ones in their order."""
    _load_builtin()
    with _lock:
        return list(_registered.values())


def register(block: Block) -> Block:
    """Add ``block`` after the others; ``ValueError`` if a block of that name exists."""
    if not isinstance(block, Block):
        raise TypeError(f"block={block!r}: expected an agentperf.report.Block")
    _load_builtin()
    with _lock:
        if block.name in _registered:
            raise ValueError(f"block name={block.name!r}: a block of that name exists")
        _registered[block.name] = block
    return block


def unregister(name: str) -> None:
    """Remove a registered block (``KeyError`` if there is none of that name)."""
    _load_builtin()
    with _lock:
        del _registered[name]


def run(
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
) -> list[Row]:
    """Measure every block (or those named in ``only``, in the report's order).

    ``progress`` receives a line as each block starts and as each row is measured.
    """
    from .render import fmt

    chosen = blocks()
    if only is not None:
        unknown = sorted(set(only) - {b.name for b in chosen})
        if unknown:
            names = ", ".join(b.name for b in chosen)
            raise ValueError(f"only={list(only)!r}: no block named {unknown}; blocks: {names}")
        chosen = [b for b in chosen if b.name in only]
    rows: list[Row] = []
    for block in chosen:
        if progress:
            progress(f"measuring {block.name} ...")
        for row in block.measure(quick):
            rows.append(row)
            if progress:
                progress(f"  {row.metric}: {fmt(row.value, row.unit)}")
    return rows
