"""``with`` and ``async with`` for every class that holds resources and has ``close()``."""

from __future__ import annotations

from typing import Any, TypeVar

_T = TypeVar("_T", bound="Closeable")


class Closeable:
    """Mixin: both context-manager forms call ``close()`` on exit (closing twice is harmless)."""

    __slots__ = ()

    def close(self) -> None:
        """Release the resources; implemented by the class."""
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: _T) -> _T:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
