"""The store-backed variant of :class:`~agentperf.CachedAgent`, chosen at construction by
``CachedAgent(agent, store=...)``: the same Rust hit path, with :class:`~agentperf.tiers.Tier`
(the store) between the in-process tier and the agent."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _lifecycle
from ._agentperf import CacheStats, Flight
from .cache import CachedAgent, _Leading
from .tiers import Tier

if TYPE_CHECKING:
    from .agent import AgentAdapter
    from .config import CacheConfig
    from .store import Store

__all__ = ["StoreCachedAgent", "make_tier", "tiered_class"]


class StoreCachedAgent(CachedAgent[Any, Any]):
    """A :class:`~agentperf.CachedAgent` with a second tier (chosen by ``CachedAgent(...,
    store=...)``; not made directly). The in-process hit path is the same Rust call."""

    _tier: Tier

    async def aexecute(self, input: Any, /) -> Any:
        """As :meth:`CachedAgent.aexecute`, with the store between the in-process tier and
        the agent."""
        keyfn = self._keyfn
        key = None if keyfn is None else keyfn(input)
        tier = self._tier
        while True:
            got = self._alookup(input, key)
            if type(got) is not Flight:
                return got
            if got.leader:
                with _Leading(got):
                    fill = await tier.afill(input, key)
                got.succeed(fill)
                return fill.value
            try:
                await got.future
            except BaseException:
                got.withdraw()
                raise
            done, value = got.outcome()
            if done:
                return value

    def invalidate(self, input: Any, /) -> bool:
        """Remove the entry for ``input`` from both tiers; ``True`` if one was removed."""
        keyfn = self._keyfn
        key = None if keyfn is None else keyfn(input)
        here = self._invalidate(input, key)
        there = self._tier.delete(self._tier.digest(input, key))
        return here or there

    def invalidate_all(self) -> None:
        """Remove every entry here and this namespace's entries from the store."""
        super().invalidate_all()
        self._tier.clear()

    def stats(self) -> CacheStats:
        """:class:`CacheStats` with ``store_hits``, ``store_misses`` and ``store_errors``."""
        return self._tier.stats(super().stats())

    @property
    def store(self) -> Store:
        """The second tier (the store is the caller's: :meth:`close` leaves it open)."""
        return self._tier.store

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"CachedAgent({self.agent!r}, max_size={cfg.max_size}, ttl={cfg.ttl}, "
            f"store={cfg.store!r})"
        )


def tiered_class(cls: type[Any]) -> type[Any]:
    """The store-backed variant of ``cls`` (``CachedAgent`` or a user's subclass of it)."""
    if issubclass(cls, StoreCachedAgent):
        return cls
    if cls is CachedAgent:
        return StoreCachedAgent
    with _VARIANTS_LOCK:
        made = _VARIANTS.get(cls)
        if made is None:
            made = _VARIANTS[cls] = type(cls.__name__, (StoreCachedAgent, cls), {})
        return made


_VARIANTS: dict[type[Any], type[Any]] = {}
_VARIANTS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _VARIANTS_LOCK
    _VARIANTS_LOCK = threading.Lock()


_lifecycle.at_fork(after_in_child=_after_fork_in_child)


def make_tier(cfg: CacheConfig, adapter: AgentAdapter) -> tuple[Tier, Callable[[Any], Any]]:
    """The tier and the call the Rust core runs for a leader."""
    tier = Tier(cfg, adapter)
    return tier, tier.fill
