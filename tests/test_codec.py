"""Codecs: JSON round trips, pydantic output types, signed pickles, and decode of untrusted
bytes (a store anyone may have written to) that fails only with CodecError and runs nothing."""

from __future__ import annotations

import dataclasses
import datetime
import math
import pickle
import subprocess
import sys
import threading
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentperf as ap
from agentperf.codec import Codec, CodecError

SECRET = b"0123456789abcdef-test-secret"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


class Answer(pydantic.BaseModel):
    text: str
    score: float
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Custom:
    """A plain object for the pickle codec (module level, so it pickles)."""

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.v == self.v


EXECUTED = threading.Event()


def _mark_executed() -> None:
    EXECUTED.set()


class Exploit:
    """Unpickling this would run code (as a malicious entry in a store would)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark_executed, ())


# -- JsonCodec ----------------------------------------------------------------------------


@given(json_values)
def test_json_values_round_trip(value: Any) -> None:
    codec = ap.JsonCodec()
    assert codec.decode(codec.encode(value)) == value


def test_json_specifics() -> None:
    codec = ap.JsonCodec()
    assert isinstance(codec, Codec)
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]  # tuples come back as lists
    assert codec.decode(codec.encode("héllo ✓ \ud800")) == "héllo ✓ \ud800"
    assert codec.decode(codec.encode(True)) is True
    assert codec.decode(codec.encode(10**40)) == 10**40
    assert math.isinf(codec.decode(codec.encode(float("inf"))))
    assert codec.encode({"a": 1}).startswith(b"AJ\x01")


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        datetime.datetime(2026, 1, 1),
        object(),
        {1: "int key"},
        {"nested": [{None: 1}]},
        b"bytes",
        Custom(1),
    ],
    ids=repr,
)
def test_json_encode_of_other_values_is_codec_error(value: Any) -> None:
    with pytest.raises(CodecError):
        ap.JsonCodec().encode(value)


def test_json_encode_of_a_cycle_is_codec_error() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    with pytest.raises(CodecError):
        ap.JsonCodec().encode(cyc)


MALFORMED = [
    b"",
    b"A",
    b"AJ",
    b"AJ\x02[1]",  # another version
    b"XJ\x01[1]",
    b"AJ\x01",
    b"AJ\x01[1,",  # truncated
    b"AJ\x01\xff\xfe",
    b"AJ\x01" + b"[" * 100_000,  # deep nesting
    b"AJ\x01" + b"9" * 5000,  # past int's digit limit
    b"\x80\x05garbage",
]


@pytest.mark.parametrize("data", MALFORMED, ids=lambda d: repr(d[:12]))
@pytest.mark.parametrize("output_type", [None, Answer, list[Point]], ids=repr)
def test_json_decode_of_malformed_is_codec_error(data: bytes, output_type: Any) -> None:
    with pytest.raises(CodecError):
        ap.JsonCodec(output_type=output_type).decode(data)


@given(st.binary(max_size=64))
def test_json_decode_of_random_bytes_raises_only_codec_error(data: bytes) -> None:
    for codec in (ap.JsonCodec(), ap.JsonCodec(output_type=Answer)):
        for blob in (data, b"AJ\x01" + data):
            try:
                codec.decode(blob)
            except CodecError:
                pass


def test_json_decode_of_not_bytes_is_codec_error() -> None:
    with pytest.raises(CodecError):
        ap.JsonCodec().decode("AJ\x01[1]")  # type: ignore[arg-type]
    assert ap.JsonCodec().decode(bytearray(b"AJ\x01[1]")) == [1]


def test_output_type_model_dataclass_and_list() -> None:
    codec = ap.JsonCodec(output_type=Answer)
    a = Answer(text="yes", score=0.5, tags=["x"])
    back = codec.decode(codec.encode(a))
    assert isinstance(back, Answer) and back == a

    points = ap.JsonCodec(output_type=list[Point])
    assert points.decode(points.encode([Point(1, 2), Point(3, 4)])) == [Point(1, 2), Point(3, 4)]

    tup = ap.JsonCodec(output_type=tuple[int, str])
    assert tup.decode(tup.encode((1, "a"))) == (1, "a")


def test_output_type_wrong_shape_is_codec_error() -> None:
    codec = ap.JsonCodec(output_type=Answer)
    plain = ap.JsonCodec()
    with pytest.raises(CodecError, match="Answer"):
        codec.decode(plain.encode({"text": "no score"}))
    with pytest.raises(CodecError):
        codec.decode(plain.encode([1, 2]))
    with pytest.raises(CodecError):
        ap.JsonCodec(output_type=list[Point]).decode(plain.encode([{"x": "not int", "y": 1}]))


def test_output_type_encode_of_another_type_is_codec_error() -> None:
    with pytest.raises(CodecError):
        ap.JsonCodec(output_type=Answer).encode({"text": "a dict", "score": 1.0})
    with pytest.raises(CodecError):
        ap.JsonCodec(output_type=list[Point]).encode([object()])


def test_output_type_pydantic_cannot_handle_is_type_error() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="output_type"):
        ap.JsonCodec(output_type=Opaque)


def test_missing_pydantic_is_an_import_error_naming_the_extra() -> None:
    code = (
        "import sys; sys.modules['pydantic'] = None\n"
        "import agentperf\n"
        "agentperf.JsonCodec()  # no output_type: no pydantic needed\n"
        "try:\n"
        "    agentperf.JsonCodec(output_type=int)\n"
        "except ImportError as e:\n"
        "    assert 'agentperf-rs[pydantic]' in str(e), e\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# -- PickleCodec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {1, 2, 3},
        (1, "tuple"),
        datetime.datetime(2026, 1, 2, 3, 4),
        Custom([1, {"a": b"bytes"}]),
        {"nested": Custom(Point(1, 2))},
        None,
    ],
    ids=repr,
)
def test_pickle_round_trip(value: Any) -> None:
    codec = ap.PickleCodec(secret=SECRET)
    assert codec.decode(codec.encode(value)) == value


def test_pickle_secret_checks() -> None:
    with pytest.raises(TypeError, match="secret"):
        ap.PickleCodec(secret="a str secret of length")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="secret"):
        ap.PickleCodec(secret=12345678901234567890)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret") as err:
        ap.PickleCodec(secret=b"short-secret")
    assert "short-secret" not in str(err.value)  # the secret is never echoed
    ap.PickleCodec(secret=bytearray(16))
    assert "0123" not in repr(ap.PickleCodec(secret=SECRET))


def test_pickle_signed_with_another_secret_is_never_unpickled() -> None:
    EXECUTED.clear()
    attacker = ap.PickleCodec(secret=b"attacker-secret-16b")
    entry = attacker.encode(Exploit())
    with pytest.raises(CodecError, match="signature"):
        ap.PickleCodec(secret=SECRET).decode(entry)
    assert not EXECUTED.is_set()
    # An unsigned pickle dressed with our prefix is refused too.
    forged = b"AP\x01" + b"\x00" * 32 + pickle.dumps(Exploit())
    with pytest.raises(CodecError):
        ap.PickleCodec(secret=SECRET).decode(forged)
    assert not EXECUTED.is_set()
    # Sanity: the exploit does run when unpickled without the check.
    pickle.loads(pickle.dumps(Exploit()))
    assert EXECUTED.is_set()


def test_pickle_any_flipped_byte_or_truncation_is_codec_error() -> None:
    codec = ap.PickleCodec(secret=SECRET)
    entry = codec.encode({"k": [1, 2, 3]})
    for i in range(len(entry)):
        bad = bytearray(entry)
        bad[i] ^= 0x01
        with pytest.raises(CodecError):
            codec.decode(bytes(bad))
    for n in range(len(entry)):
        with pytest.raises(CodecError):
            codec.decode(entry[:n])
    with pytest.raises(CodecError):
        codec.decode(entry + b"x")


@given(st.binary(max_size=80))
def test_pickle_decode_of_random_bytes_raises_only_codec_error(data: bytes) -> None:
    codec = ap.PickleCodec(secret=SECRET)
    for blob in (data, b"AP\x01" + data):
        with pytest.raises(CodecError):
            codec.decode(blob)


def test_pickle_encode_of_unpicklable_is_codec_error() -> None:
    codec = ap.PickleCodec(secret=SECRET)
    with pytest.raises(CodecError):
        codec.encode(lambda: 1)
    with pytest.raises(CodecError):
        codec.encode(threading.Lock())


def test_pickle_signed_entry_of_a_vanished_class_is_codec_error() -> None:
    codec = ap.PickleCodec(secret=SECRET)
    body = pickle.dumps(Custom(1), protocol=5).replace(b"Custom", b"Vanish")
    import hashlib
    import hmac

    mac = hmac.new(SECRET, b"AP\x01" + body, hashlib.sha256).digest()
    with pytest.raises(CodecError, match="unpickle"):
        codec.decode(b"AP\x01" + mac + body)


def test_codecs_refuse_each_others_entries() -> None:
    j, p = ap.JsonCodec(), ap.PickleCodec(secret=SECRET)
    with pytest.raises(CodecError):
        j.decode(p.encode([1]))
    with pytest.raises(CodecError):
        p.decode(j.encode([1]))
