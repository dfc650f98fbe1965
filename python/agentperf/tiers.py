"""The second tier of a :class:`~agentperf.CachedAgent`: a store shared by processes.

``CachedAgent(agent, store=..., codec=..., lease=...)`` builds the store-backed variant
(:mod:`agentperf.cache_tiers`) around a :class:`Tier` of this module; without a store nothing
here is imported and the in-process path is as before.

The flow of a call: the in-process tier (Rust) looks up and single-flights the key, so one
caller per process reaches :meth:`Tier.fill`. That caller reads the store (an L2 hit fills
the in-process tier for the entry's remaining TTL); on a miss it takes the store's lease, reads
the store again (another process may have written meanwhile), runs the agent while the lease
is renewed in the background, writes the value with its TTL in one command and releases the
lease. Callers of other processes wait for that value (``wait_value``); when a dead leader's
lease runs out, one of them takes over.

Stored bytes are ``header + codec bytes``. The header (``b"AT\\x01"`` and the entry's absolute
expiry, wall-clock seconds as a big-endian double; ``inf`` when it never expires) tells the
remaining TTL from a plain ``GET``/``MGET``; the store's own expiry (Redis ``PX``, SQLite's
column) stays authoritative. Anything read from the store is untrusted: a bad header or bytes
the codec refuses are a miss, counted in ``store_errors``, never an exception.
"""

from __future__ import annotations

import math
import struct
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _control, _lifecycle
from ._agentperf import CacheStats, _Fill, hash_key
from ._renewal import RENEWER, arenewing
from .codec import CodecError, JsonCodec
from .store import StoreError, new_owner

if TYPE_CHECKING:
    from .agent import AgentAdapter
    from .cache_tiers import StoreCachedAgent
    from .codec import Codec
    from .config import CacheConfig
    from .store import Store

__all__ = ["Tier", "pack", "unpack"]

_HEAD = b"AT\x01"
_HEAD_LEN = len(_HEAD) + 8
_EXPIRY = struct.Struct(">d")
_INF = math.inf
# A follower gives up waiting (and runs the agent itself) after this many rounds of
# ``wait_value``, each as long as a lease: only a leader stuck for that long gets there.
_MAX_ROUNDS = 1000


def pack(blob: bytes, ttl: float | None, now: float | None = None) -> bytes:
    """``blob`` with the header telling its absolute expiry (``ttl`` seconds from now)."""
    expires = _INF if ttl is None else (time.time() if now is None else now) + ttl
    return _HEAD + _EXPIRY.pack(expires) + blob


def unpack(raw: bytes, now: float) -> tuple[bytes, float] | None:
    """``(codec bytes, seconds left)``, or ``None`` when ``raw`` has no valid header or has
    expired by this host's clock."""
    if len(raw) < _HEAD_LEN or raw[:3] != _HEAD:
        return None
    (expires,) = _EXPIRY.unpack_from(raw, 3)
    left = expires - now
    if not left > 0.0:  # expired, or NaN
        return None
    return raw[_HEAD_LEN:], left


class Tier:
    """A cached agent's second tier: its store, codec, lease length and counters."""

    __slots__ = (
        "__weakref__",
        "_acall",
        "_call",
        "_keyfn",
        "_lock",
        "_warned",
        "codec",
        "errors",
        "hits",
        "lease",
        "misses",
        "store",
        "ttl",
    )

    def __init__(self, cfg: CacheConfig, adapter: AgentAdapter) -> None:
        assert cfg.store is not None
        self.store: Store = cfg.store
        self.codec: Codec = cfg.codec if cfg.codec is not None else JsonCodec()
        self.ttl = cfg.ttl
        self.lease = cfg.lease
        self._keyfn = cfg.key_generator
        self._call = adapter.call
        self._acall = adapter.acall
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._warned = False
        _TIERS.add(self)

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork.
        self._lock = threading.Lock()

    # -- counters ---------------------------------------------------------------------------

    def count(self, hits: int = 0, misses: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.errors += errors

    def stats(self, base: CacheStats) -> CacheStats:
        with self._lock:
            return base._with_store(self.hits, self.misses, self.errors)

    # -- helpers ----------------------------------------------------------------------------

    def digest(self, input: Any, key: Any = None) -> str:
        if self._keyfn is None:
            return hash_key(input)
        return hash_key(self._keyfn(input) if key is None else key)

    def decode(self, raw: bytes | None, now: float, bad: list[bool]) -> tuple[Any, float] | None:
        """An entry's output and the seconds to keep it in process, or ``None`` (a miss).
        Bytes that are not a valid entry count in ``store_errors``, once per call (``bad``
        remembers it)."""
        if raw is None:
            return None
        if len(raw) < _HEAD_LEN or raw[:3] != _HEAD:
            self._bad(bad)
            return None
        (expires,) = _EXPIRY.unpack_from(raw, 3)
        left = expires - now
        if left != left:  # NaN: no valid entry has it
            self._bad(bad)
            return None
        if left <= 0.0:  # expired by this host's clock (the store's expiry lags or skews)
            return None
        try:
            value = self.codec.decode(raw[_HEAD_LEN:])
        except Exception:  # CodecError, or a user's codec raising something else
            self._bad(bad)
            return None
        ttl = self.ttl
        return value, (left if ttl is None or left < ttl else ttl)

    def _bad(self, bad: list[bool]) -> None:
        if not bad:
            bad.append(True)
            self.count(errors=1)

    def encode(self, value: Any) -> bytes | None:
        try:
            blob = self.codec.encode(value)
            if not isinstance(blob, bytes):
                raise CodecError(f"{self.codec!r}.encode returned {type(blob).__name__}")
        except Exception as e:
            self.count(errors=1)
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"CachedAgent: {self.codec!r} cannot encode a {type(value).__name__} "
                    f"({e}); such outputs are returned but not stored in the store "
                    "(counted in stats().store_errors)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None
        return pack(blob, self.ttl)

    def _hit(self, got: tuple[Any, float], no_store: bool) -> _Fill:
        self.count(hits=1)
        value, left = got
        return _Fill(value, left, not no_store, True)

    # -- sync -------------------------------------------------------------------------------

    def fill(self, input: Any) -> _Fill:
        """The in-process leader's call: the store's entry, or the agent's output."""
        refresh, no_store = _control.current()
        digest = self.digest(input)
        store = self.store
        bad: list[bool] = []
        if not refresh:
            try:
                raw = store.get(digest)
            except StoreError:
                self.count(misses=1, errors=1)
                return _Fill(self._call(input), None, True, False)
            got = self.decode(raw, time.time(), bad)
            if got is not None:
                return self._hit(got, no_store)
        self.count(misses=1)
        return self._lead(input, digest, refresh, no_store, bad)

    def _lead(
        self, input: Any, digest: str, refresh: bool, no_store: bool, bad: list[bool]
    ) -> _Fill:
        store, lease = self.store, self.lease
        owner = new_owner()
        for _ in range(_MAX_ROUNDS):
            try:
                took = store.try_lease(digest, owner, lease)
                if not took:
                    raw = store.wait_value(digest, lease)
            except StoreError:
                self.count(errors=1)
                return _Fill(self._call(input), None, True, False)
            if took:
                return self._run_leased(input, digest, owner, refresh, no_store, bad)
            if raw is not None:
                got = self.decode(raw, time.time(), bad)
                if got is not None:
                    self.count(hits=1, misses=-1)
                    return _Fill(got[0], got[1], not no_store, True)
                break  # an unreadable entry (counted): do not spin on it
            # None: the lease went without a value (dead leader, or it gave up): take it.
        return _Fill(self._call(input), None, True, False)

    def _run_leased(
        self, input: Any, digest: str, owner: str, refresh: bool, no_store: bool, bad: list[bool]
    ) -> _Fill:
        store = self.store
        released = False
        have = False
        value: Any = None
        try:
            if not refresh:
                got = self.decode(store.get(digest), time.time(), bad)
                if got is not None:  # written between our miss and our lease
                    self.count(hits=1, misses=-1)
                    return _Fill(got[0], got[1], not no_store, True)
            with RENEWER.renewing(store, digest, owner, self.lease):
                value = self._call(input)
            have = True
            if not no_store:
                data = self.encode(value)
                if data is not None:
                    store.set(digest, data, self.ttl)
            store.release(digest, owner)
            released = True
            return _Fill(value, None, True, False)
        except StoreError:
            self.count(errors=1)
            return _Fill(value if have else self._call(input), None, True, False)
        finally:
            if not released:
                try:
                    store.release(digest, owner)
                except StoreError:
                    pass

    # -- async ------------------------------------------------------------------------------

    async def afill(self, input: Any, key: Any) -> _Fill:
        """:meth:`fill` on the event loop (the store's async twins)."""
        refresh, no_store = _control.current()
        digest = self.digest(input, key)
        store = self.store
        bad: list[bool] = []
        if not refresh:
            try:
                raw = await store.aget(digest)
            except StoreError:
                self.count(misses=1, errors=1)
                return _Fill(await self._acall(input), None, True, False)
            got = self.decode(raw, time.time(), bad)
            if got is not None:
                return self._hit(got, no_store)
        self.count(misses=1)
        store, lease = self.store, self.lease
        owner = new_owner()
        for _ in range(_MAX_ROUNDS):
            try:
                took = await store.atry_lease(digest, owner, lease)
                if not took:
                    raw = await store.await_value(digest, lease)
            except StoreError:
                self.count(errors=1)
                return _Fill(await self._acall(input), None, True, False)
            if took:
                return await self._arun_leased(input, digest, owner, refresh, no_store, bad)
            if raw is not None:
                got = self.decode(raw, time.time(), bad)
                if got is not None:
                    self.count(hits=1, misses=-1)
                    return _Fill(got[0], got[1], not no_store, True)
                break
        return _Fill(await self._acall(input), None, True, False)

    async def _arun_leased(
        self, input: Any, digest: str, owner: str, refresh: bool, no_store: bool, bad: list[bool]
    ) -> _Fill:
        store = self.store
        released = False
        have = False
        value: Any = None
        try:
            if not refresh:
                got = self.decode(await store.aget(digest), time.time(), bad)
                if got is not None:
                    self.count(hits=1, misses=-1)
                    return _Fill(got[0], got[1], not no_store, True)
            async with arenewing(store, digest, owner, self.lease):
                value = await self._acall(input)
            have = True
            if not no_store:
                data = self.encode(value)
                if data is not None:
                    await store.aset(digest, data, self.ttl)
            await store.arelease(digest, owner)
            released = True
            return _Fill(value, None, True, False)
        except StoreError:
            self.count(errors=1)
            return _Fill(value if have else await self._acall(input), None, True, False)
        finally:
            if not released:
                try:
                    await store.arelease(digest, owner)
                except BaseException:  # cancelled while releasing: the lease runs out
                    pass

    # -- bulk -------------------------------------------------------------------------------

    async def aprefetch(self, agent: StoreCachedAgent, items: Sequence[Any]) -> None:
        """Look ``items`` up in the store in one pipelined round trip and fill the in-process
        tier with what is there (a batch's read-ahead). Failures are counted, never raised."""
        refresh, no_store = _control.current()
        if refresh or no_store or not items:
            return
        # An input whose key cannot be made is left out: its own call raises, as without
        # the read-ahead (the batch records it as that item's failure).
        keyfn = self._keyfn
        todo: list[tuple[Any, Any, str]] = []
        for x in items:
            try:
                k = None if keyfn is None else keyfn(x)
                todo.append((x, k, self.digest(x, k)))
            except Exception:
                continue
        if not todo:
            return
        try:
            raws = await self.store.aget_many([d for _, _, d in todo])
        except StoreError:
            self.count(errors=1)
            return
        now = time.time()
        for (x, k, _), raw in zip(todo, raws, strict=True):
            got = self.decode(raw, now, [True])  # the call counts it, once
            if got is None:
                continue
            try:
                agent._put(x, k, got[0], got[1])
            except Exception:  # closed meanwhile, a weigher that refuses it, a bad key
                continue
            self.count(hits=1)

    # -- invalidation -----------------------------------------------------------------------

    def delete(self, digest: str) -> bool:
        try:
            return bool(self.store.delete(digest))
        except StoreError:
            self.count(errors=1)
            return False

    def clear(self) -> None:
        try:
            self.store.clear()
        except StoreError:
            self.count(errors=1)


_TIERS: weakref.WeakSet[Tier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tier in list(_TIERS):
        tier._after_fork_in_child()


_lifecycle.at_fork(after_in_child=_after_fork_in_child)
