"""Type stubs of the Rust extension ``agentperf._agentperf``."""

from typing import Final

__version__: Final[str]

class AgentPerfError(Exception): ...
class PoolClosedError(AgentPerfError): ...
class PoolTimeoutError(AgentPerfError, TimeoutError): ...
class BatchTimeoutError(AgentPerfError, TimeoutError): ...

def hash_key(obj: object, /) -> str:
    """The SHA-256 hex digest (64 lowercase hex chars) of ``obj``'s canonical encoding.

    The encoding (``docs/keys.md``, version ``agentperf-key-v1``) is type-tagged and
    length-prefixed, computed in Rust by walking ``obj`` directly. Supported: ``None``,
    ``bool``, ``int`` (any size), ``float`` (by IEEE-754 bits; every NaN alike, ``-0.0`` differs
    from ``0.0``), ``str``, ``bytes``/``bytearray``, ``list``, ``tuple``, ``dict`` (insertion
    order ignored), ``set``/``frozenset`` (equal to each other), dataclass instances, enum
    members and objects with ``model_dump()`` (pydantic); subclasses of the built-ins encode as
    their base type. ``1``, ``1.0``, ``True`` and ``"1"`` all differ; so do a list and a tuple.
    Stable across processes, runs and ``PYTHONHASHSEED``.

    >>> hash_key({"b": 1, "a": 2}) == hash_key({"a": 2, "b": 1})
    True
    >>> hash_key([1, 2]) == hash_key((1, 2))
    False

    Raises ``TypeError`` (naming the type) for anything else: pass a ``key_generator`` to key
    such inputs. Raises ``ValueError`` for a cycle or more than 256 levels of nested
    containers, and ``RuntimeError`` if a container changes size while it is hashed.
    """

def _before_fork() -> None: ...
def _after_fork_parent() -> None: ...
def _after_fork_child() -> None: ...
def _shutdown() -> None: ...
def _cleanup_thread_state() -> tuple[bool, int]: ...
