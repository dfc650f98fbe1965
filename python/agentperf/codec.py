"""Codecs: how a cached output becomes the ``bytes`` a store keeps, and back.

A store is untrusted input (anyone who can write to the Redis server or the file can put
anything there), so ``decode`` of anything it did not make — truncated, of another version,
garbage, or JSON of the wrong shape — raises :class:`CodecError` (a miss for the cache) and
never runs code; nothing is ever unpickled unless its HMAC signature checks out.

Every encoding starts with a 3-byte prefix naming the codec and its format version.

>>> codec = JsonCodec()
>>> codec.decode(codec.encode({"answer": [1, 2.5, "x", None, True]}))
{'answer': [1, 2.5, 'x', None, True]}
>>> codec.decode(codec.encode(("a", "tuple")))     # tuples come back as lists
['a', 'tuple']
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .errors import AgentPerfError

__all__ = ["Codec", "CodecError", "JsonCodec", "PickleCodec"]

_JSON_PREFIX = b"AJ\x01"
_PICKLE_PREFIX = b"AP\x01"
_MAC_SIZE = 32  # HMAC-SHA256
_PICKLE_PROTOCOL = 5  # fixed, so replicas on different Python versions read each other
_MIN_SECRET = 16


class CodecError(AgentPerfError):
    """An output could not be encoded, or stored bytes could not be decoded (treated as a
    miss: the agent runs again)."""


@runtime_checkable
class Codec(Protocol):
    """Turns outputs into ``bytes`` and back; ``decode`` raises only :class:`CodecError`."""

    def encode(self, value: Any, /) -> bytes: ...
    def decode(self, data: bytes, /) -> Any: ...


def _check_json_keys(value: Any) -> None:
    # json.dumps turns int/float/bool/None keys into strings silently: that would not
    # round-trip. Each container is looked at once (a cycle is left to json.dumps to refuse).
    if not isinstance(value, (dict, list, tuple)):
        return
    stack = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        items = v.values() if isinstance(v, dict) else v
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise CodecError(
                        f"JsonCodec: dict key {k!r} is not a str (JSON keys are strings)"
                    )
        stack.extend(i for i in items if isinstance(i, (dict, list, tuple)))


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise CodecError(f"expected bytes from the store, got {type(data).__name__}")


class JsonCodec:
    """JSON, the default codec: safe to decode whatever a store holds.

    Without ``output_type``, values of JSON types round-trip: ``dict`` (with ``str`` keys),
    ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``. A ``tuple`` is encoded as a
    JSON array and so decodes as a ``list`` (give ``output_type=tuple[...]`` to get tuples
    back). Anything else (a ``set``, a ``datetime``, an object, a dict with non-``str`` keys,
    a cycle) raises :class:`CodecError` on encode.

    With ``output_type`` (anything pydantic's ``TypeAdapter`` accepts: a model, a dataclass,
    ``list[Model]``, a ``TypedDict``...), outputs are serialized by pydantic and validated back
    into that type on decode; stored JSON of another shape is a :class:`CodecError`. Needs
    pydantic (``pip install 'agentperf-rs[pydantic]'``), imported only then.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Answer:
    ...     text: str
    ...     score: float
    >>> codec = JsonCodec(output_type=list[Answer])
    >>> codec.decode(codec.encode([Answer("yes", 0.9)]))
    [Answer(text='yes', score=0.9)]
    """

    __slots__ = ("__weakref__", "_adapter", "output_type")

    def __init__(self, output_type: Any = None) -> None:
        self.output_type = output_type
        self._adapter: Any = None
        if output_type is not None:
            try:
                import pydantic
            except ImportError as e:
                raise ImportError(
                    "JsonCodec(output_type=...) needs pydantic: "
                    "pip install 'agentperf-rs[pydantic]'"
                ) from e
            try:
                self._adapter = pydantic.TypeAdapter(output_type)
            except Exception as e:
                raise TypeError(
                    f"output_type: pydantic cannot validate {output_type!r} ({e})"
                ) from e

    def encode(self, value: Any, /) -> bytes:
        """``value`` as versioned JSON bytes; :class:`CodecError` when it is not encodable."""
        if self._adapter is not None:
            try:
                body: bytes = self._adapter.dump_json(value, warnings="error")
            except Exception as e:
                raise CodecError(
                    f"JsonCodec: cannot encode a {type(value).__name__} as "
                    f"{self.output_type!r}: {e}"
                ) from e
            return _JSON_PREFIX + body
        import json  # imported on first use, as the others here: `import agentperf` stays fast

        _check_json_keys(value)
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as e:
            raise CodecError(f"JsonCodec: cannot encode a {type(value).__name__}: {e}") from e
        return _JSON_PREFIX + text.encode("utf-8", "surrogatepass")

    def decode(self, data: bytes, /) -> Any:
        """The value back; :class:`CodecError` for anything this codec did not make."""
        raw = _as_bytes(data)
        if not raw.startswith(_JSON_PREFIX):
            raise CodecError("JsonCodec: not a JsonCodec entry (wrong prefix or version)")
        body = raw[len(_JSON_PREFIX) :]
        if self._adapter is not None:
            try:
                return self._adapter.validate_json(body)
            except Exception as e:
                raise CodecError(
                    f"JsonCodec: stored JSON is not a valid {self.output_type!r}: {e}"
                ) from e
        import json

        try:
            return json.loads(body.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError) as e:
            raise CodecError(f"JsonCodec: stored bytes are not valid JSON: {e}") from e

    def __repr__(self) -> str:
        return f"JsonCodec(output_type={self.output_type!r})"


class PickleCodec:
    """Pickle, for outputs JSON cannot hold, signed so that only entries made with the same
    ``secret`` are ever unpickled.

    ``secret``: ``bytes``, at least 16 (share it between the processes that share the store;
    keep it out of the store). Each entry is ``prefix + HMAC-SHA256(secret, prefix + pickle)
    + pickle``; one whose signature does not match (another secret, tampered, truncated) is a
    :class:`CodecError`, compared in constant time and never unpickled.

    >>> codec = PickleCodec(secret=b"0123456789abcdef")
    >>> codec.decode(codec.encode({1, 2, 3}))
    {1, 2, 3}
    """

    __slots__ = ("__weakref__", "_secret")

    def __init__(self, secret: bytes) -> None:
        if isinstance(secret, str):
            raise TypeError("secret: expected bytes, got a str (encode it, e.g. .encode())")
        if not isinstance(secret, (bytes, bytearray, memoryview)):
            raise TypeError(f"secret: expected bytes, got {type(secret).__name__}")
        secret = bytes(secret)
        if len(secret) < _MIN_SECRET:
            # Never echo the secret itself.
            raise ValueError(
                f"secret: must be at least {_MIN_SECRET} bytes, got {len(secret)} bytes"
            )
        self._secret = secret

    def _mac(self, body: bytes) -> bytes:
        import hashlib
        import hmac

        return hmac.new(self._secret, _PICKLE_PREFIX + body, hashlib.sha256).digest()

    def encode(self, value: Any, /) -> bytes:
        """``value`` pickled and signed; :class:`CodecError` when it cannot be pickled."""
        import pickle

        try:
            body = pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
        except Exception as e:  # PicklingError, TypeError, AttributeError, RecursionError...
            raise CodecError(f"PickleCodec: cannot pickle a {type(value).__name__}: {e}") from e
        return _PICKLE_PREFIX + self._mac(body) + body

    def decode(self, data: bytes, /) -> Any:
        """The value back, if and only if its signature matches; else :class:`CodecError`."""
        raw = _as_bytes(data)
        head = len(_PICKLE_PREFIX)
        if len(raw) < head + _MAC_SIZE or not raw.startswith(_PICKLE_PREFIX):
            raise CodecError("PickleCodec: not a PickleCodec entry (wrong prefix or version)")
        mac, body = raw[head : head + _MAC_SIZE], raw[head + _MAC_SIZE :]
        import hmac
        import pickle

        if not hmac.compare_digest(mac, self._mac(body)):
            raise CodecError("PickleCodec: signature mismatch (another secret, or tampered)")
        try:
            return pickle.loads(body)
        except Exception as e:  # a class renamed or gone since it was stored
            raise CodecError(f"PickleCodec: cannot unpickle the entry: {e}") from e

    def __repr__(self) -> str:
        return "PickleCodec(secret=...)"
