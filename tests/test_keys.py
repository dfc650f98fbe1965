"""`ap.hash_key`: the structural key encoder (API.md "Keys", docs/keys.md).

`_ref_encode` below is an independent Python model of the encoding; the Rust encoder must give
byte-identical digests on generated nested inputs.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import threading
import uuid
import zoneinfo
from typing import Any, NamedTuple

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentperf as ap
from agentperf import hash_key

# --------------------------------------------------------------------------- reference model

_VERSION = b"agentperf-key-v1"


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n == 0:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _text(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return _leb(len(b)) + b


def _cls(obj: object) -> bytes:
    t = type(obj)
    return _text(f"{t.__module__}.{t.__qualname__}")


class _Unsupported(TypeError):
    pass


def _delta(d: datetime.timedelta | None) -> bytes:
    return b"N" if d is None else b"V" + struct.pack("<iII", d.days, d.seconds, d.microseconds)


def _clock(t: datetime.time | datetime.datetime) -> bytes:
    fields = (t.hour, t.minute, t.second, t.microsecond, t.fold)
    return struct.pack("<BBBIB", *fields) + _delta(t.utcoffset())


def _everyday(obj: Any) -> bytes | None:
    """The stdlib types with tags of their own (exact types only), or None."""
    t = type(obj)
    if t is datetime.datetime:
        return b"W" + struct.pack("<HBB", obj.year, obj.month, obj.day) + _clock(obj)
    if t is datetime.date:
        return b"Y" + struct.pack("<HBB", obj.year, obj.month, obj.day)
    if t is datetime.time:
        return b"H" + _clock(obj)
    if t is datetime.timedelta:
        return _delta(obj)
    if t is uuid.UUID:
        return b"G" + obj.bytes
    if t is decimal.Decimal:
        sign, digits, exp = obj.as_tuple()
        tail = _ref_encode(exp) if isinstance(exp, int) else exp.encode()
        return b"X" + bytes([sign]) + _leb(len(digits)) + bytes(48 + d for d in digits) + tail
    return None


def _ref_encode(obj: Any) -> bytes:
    """The encoding of docs/keys.md, written plainly (recursive, no limits, no cycle checks)."""
    if obj is None:
        return b"N"
    if obj is True:
        return b"T"
    if obj is False:
        return b"F"
    everyday = _everyday(obj)
    if everyday is not None:
        return everyday
    if isinstance(obj, enum.Enum):
        if isinstance(obj._name_, str):
            return b"K" + _cls(obj) + _text(obj._name_)
        return b"Q" + _cls(obj) + _ref_encode(obj._value_)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)
        out = b"C" + _cls(obj) + _leb(len(fields))
        for f in fields:
            out += _text(f.name) + _ref_encode(getattr(obj, f.name))
        return out
    if isinstance(obj, type):
        raise _Unsupported(obj.__qualname__)
    if callable(getattr(obj, "model_dump", None)):
        try:
            return b"P" + _cls(obj) + _ref_encode(obj.model_dump())
        except _Unsupported:
            return b"J" + _cls(obj) + _ref_encode(obj.model_dump(mode="json"))
    if isinstance(obj, int):
        n = int(obj)
        k = ((n if n >= 0 else ~n).bit_length() + 8) // 8
        return b"I" + _leb(k) + n.to_bytes(k, "little", signed=True)
    if isinstance(obj, float):
        bits = (
            0x7FF8000000000000
            if math.isnan(obj)
            else struct.unpack("<Q", struct.pack("<d", obj))[0]
        )
        return b"D" + struct.pack("<Q", bits)
    if isinstance(obj, str):
        return b"S" + _text(obj)
    if isinstance(obj, (bytes, bytearray)):
        return b"B" + _leb(len(obj)) + bytes(obj)
    if isinstance(obj, list):
        return b"L" + _leb(len(obj)) + b"".join(_ref_encode(x) for x in obj)
    if isinstance(obj, tuple):
        return b"U" + _leb(len(obj)) + b"".join(_ref_encode(x) for x in obj)
    if isinstance(obj, dict):
        entries = sorted(_ref_encode(k) + _ref_encode(v) for k, v in obj.items())
        return b"M" + _leb(len(entries)) + b"".join(entries)
    if isinstance(obj, (set, frozenset)):
        members = sorted(_ref_encode(m) for m in obj)
        return b"E" + _leb(len(members)) + b"".join(members)
    raise _Unsupported(type(obj).__name__)


def _ref_key(obj: Any) -> str:
    return hashlib.sha256(_VERSION + _ref_encode(obj)).hexdigest()


# --------------------------------------------------------------------------- fixtures


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Shade(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Perm(enum.Flag):
    R = 4
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Pair:
    x: int
    y: int


@dataclasses.dataclass
class Node:
    name: str
    children: list[Any] = dataclasses.field(default_factory=list)


class Query(pydantic.BaseModel):
    text: str
    top_k: int = 3


class Query2(pydantic.BaseModel):
    text: str
    top_k: int = 3


UTC = datetime.timezone.utc
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


class Booking(pydantic.BaseModel):
    when: datetime.datetime
    day: datetime.date
    at: datetime.time
    length: datetime.timedelta
    id: uuid.UUID
    price: decimal.Decimal


class Fetch(pydantic.BaseModel):
    url: pydantic.HttpUrl
    when: datetime.datetime
    note: str = ""


class FrozenFetch(pydantic.BaseModel, frozen=True):
    url: pydantic.HttpUrl
    note: str = ""


class Loose(pydantic.BaseModel):
    value: Any


class MyDateTime(datetime.datetime):
    pass


BOOKING = Booking(
    when="2024-05-17T13:45:30.5Z",
    day="2024-05-17",
    at="13:45:30",
    length=90,
    id="12345678-1234-5678-1234-567812345678",
    price="19.90",
)
FETCH = Fetch(url="https://example.com/a?q=1", when="2024-05-17T13:45:30+02:00")


class PointNT(NamedTuple):
    x: int
    y: int


class MyInt(int):
    def __eq__(self, other: object) -> bool:
        raise AssertionError("hash_key must not call __eq__")

    __hash__ = int.__hash__


class MyStr(str):
    pass


class WeirdList(list[Any]):
    def __iter__(self) -> Any:
        raise AssertionError("hash_key reads lists structurally")

    def __len__(self) -> int:
        return 99


EXAMPLE = {"task": "summarize", "instruction": "be brief", "context": {"user": "u1", "n": 3}}

# Pinned once; any change to the encoding must change the version tag and these values.
GOLDEN: list[tuple[Any, str]] = [
    (None, "253475889d4d057acc8ea871712cdebb52bd7f872c4632fcef435764ba41e9f5"),
    (True, "c1ee61eaa18374193aea176519b719775118cdb92077a2bd476ad5706e615b15"),
    (False, "bb2420e56e074c8220c0227a0b23b65d132bd523827497abcf84ad08f2cb378f"),
    (0, "d25d3bf3c7164c7ea5c053ca6c17c12461ef5a24f27e8f828791463645eb2138"),
    (-1, "a2980baae169ea7eed42b1ef4155e29705d40ecb09598b53eda90aab9f82d221"),
    (2**100, "5266ff13f14c130bd4fd7798b68ebbbb7d4ad3e80978a0718c4b82368fdcfd70"),
    (1.5, "451c2aefd622e3834ab796135252106ba71bb332ab169fb9062dcb4cc4d101a4"),
    (float("nan"), "73665a10fcd55c936de0b58cbd81329bf3f2fe84aba7d241ccdacbac6041ac21"),
    (-0.0, "71fd521834e1ddd0d12bc52bf831490dae4bc212612ea4f548f17f57c15d42a5"),
    ("", "a39cbc46e84d7f3b5f56e8b3c07cc8177f1ae7aaed5518f484d4255411e1a2d3"),
    ("héllo ✓", "1b6412107cf947d4ea9b5578b74f86a16cbcd5b50a58ea350b15ae5f4a686e12"),
    (b"\x00\xff", "9e6e168af1c407ce03e7bb9ba69a579428aa34488454598c3d6ead970a4ad035"),
    ([1, "a"], "b8c38ceb4dcaffd195d7d40bb5d34048c0731e8fcec6b7449f5d89e0e87d4f60"),
    ((1, "a"), "cebb1295457462cc4bc26086b43e918c8ae2c3066be41ecdfadd1bed42903dcd"),
    ({"b": 1, "a": [None]}, "77737dcef2d0cfcaa864489b04a97266864d80cc70ed4f145b3db02d6c56eebd"),
    ({1, 2, 3}, "7277d7512449ec20b051e1219fe417c16a4bea896593dcdcda5e91a25b84d516"),
    (Color.RED, "c0371127cfa2a757375ee90541621adf3e167498a125213a28d5098dbd3c80a9"),
    (Point(1, 2), "9e54b47e62b45c1cb078f325083f4e8c4b00c7e15e45a683ac1e262b53d3b2e1"),
    (EXAMPLE, "b470673f774a6b11852617d35ebe4cc0995469e5666c37d6a2a7fb94d06ba2aa"),
    # Everyday types (issue 10 point 6); pinned when they were added.
    (
        datetime.datetime(2024, 5, 17, 13, 45, 30, 123456),
        "71a169ed019d2b8e42ac97f6410c7e65a589f2e5f9a12c1c23b982961093c418",
    ),
    (
        datetime.datetime(2024, 5, 17, 13, 45, 30, tzinfo=PLUS2),
        "f2157004e534c95a060a27d2f6d8c0c0ce97910d9006c4579caa659992304843",
    ),
    (
        datetime.datetime(2024, 10, 27, 2, 30, fold=1),
        "6db0b9033fa424a7e5cd95c31837a492d62e9882cf67832cc17820e22a0e75a1",
    ),
    (
        datetime.date(2024, 5, 17),
        "dbab77e80687c4910fd4106f81c531bbcc39d42fd8dda49236f57c356660dddb",
    ),
    (
        datetime.time(13, 45, 30, 5),
        "ca97e993e62a774eee934fceb977b9e3a5392d52be1c63b193f0ab2243852ebf",
    ),
    (
        datetime.time(13, 45, tzinfo=UTC),
        "af8fd255bbea8b0ec9b4bc5906a39ef4c1f0861206fe13471b265591c9171d6b",
    ),
    (
        datetime.timedelta(days=-1, seconds=5, microseconds=7),
        "5553e36a393579c9aa43de9b312a5693cd477ad3528fef72ca31323243af4715",
    ),
    (
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "fdfeaeca8623ca63d54489ce9a92a1246f9fcf17087079ec7c6035e7021e9356",
    ),
    (decimal.Decimal("19.90"), "da3202f3ce432c2fae444407b208c813e38fe41be09ffe1e88e3ae68cfc75df7"),
    (
        decimal.Decimal("-Infinity"),
        "1eb8fe4ec2636db35bc51eba00764f18bc650b48e54a2c7fa1f049102777f035",
    ),
    (decimal.Decimal("NaN"), "47d6b58c2c8730dfbdf287d78511e21f2952e1f65881178a1e0b5a0ce9c09e06"),
    (decimal.Decimal("-1E+30"), "9f455f3c31c77853cb4220257512282e3f293961be96564363deb49749973fa9"),
    (BOOKING, "55c0e7ad383bda24384572a119f41a0a8605db7b8348602790c6dbd44d42e6d5"),
    (FETCH, "d4ca4f7e13b944aa4d10fa83f9e4b6a546235de19cddcca1c20af806310f1d33"),
]


# --------------------------------------------------------------------------- the contract


def test_key_is_64_lowercase_hex() -> None:
    k = hash_key(EXAMPLE)
    assert len(k) == 64
    assert k == k.lower()
    int(k, 16)
    assert ap.hash_key is hash_key


@pytest.mark.parametrize(("obj", "digest"), GOLDEN, ids=[repr(o)[:30] for o, _ in GOLDEN])
def test_golden_digests(obj: Any, digest: str) -> None:
    assert hash_key(obj) == digest
    assert _ref_key(obj) == digest


def test_version_tag_is_hashed_first() -> None:
    assert hash_key(None) == hashlib.sha256(b"agentperf-key-v1N").hexdigest()


DIFFERENT: list[tuple[Any, Any]] = [
    (1, 1.0),
    (1, True),
    (1, "1"),
    (1.0, True),
    (0, False),
    (0, None),
    ("", None),
    ("", b""),
    ("1", b"1"),
    (["ab", "c"], ["a", "bc"]),
    (("ab", "c"), ("a", "bc")),
    ({"ab": "c"}, {"a": "bc"}),
    ([1, 2], (1, 2)),
    ([], ()),
    ([], {}),
    (set(), {}),
    (set(), []),
    ([[]], [[], []]),
    ([[1], 2], [[1, 2]]),
    ({"a": 1}, [("a", 1)]),
    ({"a": 1}, {"a": 1.0}),
    ({1: "a"}, {"1": "a"}),
    (0.0, -0.0),
    (math.inf, -math.inf),
    (Color.RED, 1),
    (Color.RED, Shade.RED),
    (Color.RED, Color.GREEN),
    (Color.RED, "RED"),
    (Level.LOW, 1),
    (Point(1, 2), Pair(1, 2)),
    (Point(1, 2), Point(2, 1)),
    (Point(1, 2), (1, 2)),
    (Point(1, 2), {"x": 1, "y": 2}),
    (2**63, -(2**63)),
    (2**63 - 1, 2**63),
    (255, -1),
    (128, -128),
    ("\ud800", "\ufffd"),
    ("\ud800", ""),
    ("a\udc80", "a"),
    (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
    (decimal.Decimal("0"), decimal.Decimal("-0")),
    (decimal.Decimal("NaN"), decimal.Decimal("sNaN")),
    (decimal.Decimal("NaN"), decimal.Decimal("-NaN")),
    (decimal.Decimal("1"), 1),
    (decimal.Decimal("1.5"), 1.5),
    (decimal.Decimal("1.5"), "1.5"),
    (decimal.Decimal("1E+2"), decimal.Decimal("100")),
    (datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 1, tzinfo=UTC)),
    (
        datetime.datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime.datetime(2024, 1, 1, 14, tzinfo=PLUS2),
    ),
    (
        datetime.datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime.datetime(2024, 1, 1, 12, tzinfo=PLUS2),
    ),
    (datetime.datetime(2024, 1, 1, fold=1), datetime.datetime(2024, 1, 1)),
    (datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1)),
    (datetime.datetime(2024, 1, 1), "2024-01-01T00:00:00"),
    (datetime.datetime(2024, 1, 1, 0, 0, 0, 1), datetime.datetime(2024, 1, 1, 0, 0, 1)),
    (datetime.time(1), datetime.timedelta(hours=1)),
    (datetime.time(1), datetime.time(1, tzinfo=UTC)),
    (datetime.time(1, fold=1), datetime.time(1)),
    (datetime.timedelta(0), 0),
    (datetime.timedelta(seconds=1), datetime.timedelta(microseconds=1)),
    (datetime.timedelta(days=-1), datetime.timedelta(days=1)),
    (uuid.UUID(int=1), uuid.UUID(int=2)),
    (uuid.UUID(int=1), str(uuid.UUID(int=1))),
    (uuid.UUID(int=1), uuid.UUID(int=1).bytes),
    (uuid.UUID(int=1), 1),
    (Loose(value="https://a.example/"), Loose(value=pydantic.HttpUrl("https://a.example/"))),
    (Loose(value=datetime.date(2024, 1, 1)), Loose(value="2024-01-01")),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT, ids=[f"{a!r}|{b!r}"[:40] for a, b in DIFFERENT])
def test_different_values_have_different_keys(a: Any, b: Any) -> None:
    assert hash_key(a) != hash_key(b)


SAME: list[tuple[Any, Any]] = [
    ({1, 2, 3}, frozenset({3, 2, 1})),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    (b"xy", bytearray(b"xy")),
    (float("nan"), -float("nan")),
    (float("nan"), struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]),
    (collections.OrderedDict([("b", 1), ("a", 2)]), {"a": 2, "b": 1}),
    (collections.defaultdict(list, {"a": [1]}), {"a": [1]}),
    (PointNT(1, 2), (1, 2)),
    (MyInt(7), 7),
    (MyStr("s"), "s"),
    (WeirdList([1, 2]), [1, 2]),
    (2**64, 2**64),
    (Point(1, 2), Point(1, 2)),
    (Query(text="q"), Query(text="q", top_k=3)),
    (
        datetime.datetime(2024, 1, 1, tzinfo=UTC),
        datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC")),
    ),
    (datetime.datetime(2024, 5, 17, 13, 45, 30, 500000, tzinfo=UTC), BOOKING.when),
    (datetime.timedelta(days=1), datetime.timedelta(hours=24)),
    (decimal.Decimal("1.50"), decimal.Decimal((0, (1, 5, 0), -2))),
    (uuid.UUID(int=7), uuid.UUID(bytes=uuid.UUID(int=7).bytes)),
    (Fetch(url="https://example.com/a?q=1", when=FETCH.when), FETCH),
]


@pytest.mark.parametrize(("a", "b"), SAME, ids=[f"{a!r}|{b!r}"[:40] for a, b in SAME])
def test_equal_structures_have_equal_keys(a: Any, b: Any) -> None:
    assert hash_key(a) == hash_key(b)
    assert hash_key(a) == _ref_key(b)


def test_ints_of_every_size_agree_with_the_reference() -> None:
    values = [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**31, 2**63 - 1, 2**63, -(2**63)]
    values += [-(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 2**1000 + 7, -(2**1000)]
    for n in values:
        assert hash_key(n) == _ref_key(n), n


def test_enum_members_are_enums_first() -> None:
    assert hash_key(Level.LOW) == _ref_key(Level.LOW) != hash_key(1)
    both = Perm.R | Perm.W
    assert hash_key(both) == _ref_key(both)
    assert hash_key(both) != hash_key(Perm.R)
    if sys.version_info >= (3, 11):
        s = enum.StrEnum("S", {"A": "a"})
        assert hash_key(s.A) != hash_key("a")


def test_dataclass_fields_in_declaration_order_and_nested() -> None:
    tree = Node("root", [Node("a"), Node("b", [Point(1, 2)])])
    assert hash_key(tree) == _ref_key(tree)
    assert hash_key(tree) != hash_key(Node("root", [Node("b", [Point(1, 2)]), Node("a")]))


def test_pydantic_models_by_class_and_dump() -> None:
    q = Query(text="hello", top_k=5)
    assert hash_key(q) == _ref_key(q)
    assert hash_key(q) != hash_key(Query2(text="hello", top_k=5))
    assert hash_key(q) != hash_key(q.model_dump())
    assert hash_key({"q": q}) == hash_key({"q": Query(top_k=5, text="hello")})


# --------------------------------------------------------------------------- everyday types


def _key_of(encoding: bytes) -> str:
    return hashlib.sha256(_VERSION + encoding).hexdigest()


def test_everyday_types_have_tags_of_their_own() -> None:
    """datetime, date, time, timedelta, UUID, Decimal: each has a tag and a fixed layout."""
    dt = datetime.datetime(2024, 5, 17, 13, 45, 30, 123456, tzinfo=PLUS2)
    assert hash_key(dt) == _key_of(
        b"W\xe8\x07\x05\x11\x0d\x2d\x1e" + (123456).to_bytes(4, "little") + b"\x00"
        b"V\x00\x00\x00\x00" + (7200).to_bytes(4, "little") + b"\x00\x00\x00\x00"
    )
    assert hash_key(datetime.date(2024, 5, 17)) == _key_of(b"Y\xe8\x07\x05\x11")
    assert hash_key(uuid.UUID(int=1)) == _key_of(b"G" + bytes(15) + b"\x01")
    assert hash_key(decimal.Decimal("-1.50")) == _key_of(b"X\x01\x03150I\x01\xfe")
    assert hash_key(decimal.Decimal("sNaN")) == _key_of(b"X\x00\x00N")
    for obj in (dt, datetime.time(23, 59, 59, 999999, tzinfo=UTC), datetime.timedelta.min):
        assert hash_key(obj) == _ref_key(obj)


def test_aware_datetimes_key_by_wall_time_and_utcoffset() -> None:
    """Not by the tzinfo object: timezone.utc, ZoneInfo("UTC") and pydantic's parsed "Z" agree;
    the same instant at another offset, or a naive datetime, does not."""
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    first = datetime.datetime(2024, 10, 27, 2, 30, tzinfo=paris)  # the repeated hour: +02:00
    second = first.replace(fold=1)  # +01:00
    assert first.utcoffset() != second.utcoffset()
    assert hash_key(first) != hash_key(second)
    fixed = datetime.datetime(2024, 10, 27, 2, 30, tzinfo=datetime.timezone(first.utcoffset()))
    assert hash_key(first) == hash_key(fixed)
    assert hash_key(first) == _ref_key(first) and hash_key(second) == _ref_key(second)
    sub_minute = datetime.timezone(datetime.timedelta(seconds=-30, microseconds=5))
    odd = datetime.datetime(2024, 1, 1, tzinfo=sub_minute)
    assert hash_key(odd) == _ref_key(odd) != hash_key(odd.replace(tzinfo=None))


def test_a_tzinfo_that_fails_raises_its_error() -> None:
    class Broken(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
            raise LookupError("no such zone")

    with pytest.raises(LookupError, match="no such zone"):
        hash_key({"when": datetime.datetime(2024, 1, 1, tzinfo=Broken())})
    assert hash_key(EXAMPLE) == _ref_key(EXAMPLE)


def test_pydantic_models_with_everyday_fields_use_the_python_dump() -> None:
    """The first release raised TypeError here (model_dump() returns datetime, UUID, Decimal)."""
    assert hash_key(BOOKING) == _ref_key(BOOKING)
    assert _ref_encode(BOOKING).startswith(b"P")
    assert hash_key(BOOKING) == _key_of(b"P" + _cls(BOOKING) + _ref_encode(BOOKING.model_dump()))
    for field, other in [
        ("when", BOOKING.when.replace(microsecond=0)),
        ("day", datetime.date(2024, 5, 18)),
        ("at", datetime.time(13, 45, 31)),
        ("length", datetime.timedelta(seconds=91)),
        ("id", uuid.UUID(int=0)),
        ("price", decimal.Decimal("19.9")),
    ]:
        changed = BOOKING.model_copy(update={field: other})
        assert hash_key(changed) != hash_key(BOOKING), field
    assert hash_key(BOOKING) == hash_key(Booking.model_validate_json(BOOKING.model_dump_json()))


def test_a_model_with_an_unsupported_field_is_keyed_by_its_json_dump() -> None:
    """HttpUrl is no type hash_key knows: the model is encoded by model_dump(mode="json"),
    under its own tag, so it never collides with a model whose fields hold those strings."""
    assert hash_key(FETCH) == _key_of(
        b"J" + _cls(FETCH) + _ref_encode(FETCH.model_dump(mode="json"))
    )
    assert hash_key(FETCH) == _ref_key(FETCH)
    other = FETCH.model_copy(update={"url": pydantic.HttpUrl("https://example.com/b")})
    assert hash_key(other) != hash_key(FETCH)
    assert hash_key({"req": FETCH, "n": 1}) == _ref_key({"req": FETCH, "n": 1})


def test_the_json_dump_is_asked_for_only_when_needed() -> None:
    calls: list[dict[str, Any]] = []

    class Spy(pydantic.BaseModel):
        value: Any

        def model_dump(self, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
            calls.append(kwargs)
            return super().model_dump(**kwargs)

    hash_key(Spy(value=[datetime.date(2024, 1, 1), uuid.UUID(int=3), decimal.Decimal(1)]))
    assert calls == [{}]
    calls.clear()
    spy = Spy(value=[1, pydantic.HttpUrl("https://a.example/")])
    key = hash_key(spy)
    assert calls == [{}, {"mode": "json"}]
    assert key == _ref_key(spy)


def test_the_fallback_rewinds_inside_sets_dicts_and_large_values() -> None:
    big = "x" * 5000
    models = frozenset(FrozenFetch(url=f"https://h{i}.example/", note=big) for i in range(3))
    for obj in (
        models,
        {"a": [big, FrozenFetch(url="https://a.example/", note=big)], "b": {1, 2}},
        [big.encode(), Loose(value=[big, {"k": pydantic.HttpUrl("https://z.example/")}])],
        Loose(value=Loose(value=pydantic.AnyUrl("s3://bucket/key"))),
        pydantic.RootModel[pydantic.HttpUrl]("https://root.example/"),  # the dump is the Url
        pydantic.RootModel[list[Any]]([big, pydantic.HttpUrl("https://r.example/"), {"x": 2}]),
    ):
        assert hash_key(obj) == _ref_key(obj)
        assert hash_key(obj) == hash_key(obj)


def test_the_innermost_model_falls_back() -> None:
    class Outer:
        """Not pydantic: its model_dump() takes no mode and returns a pydantic model."""

        def model_dump(self) -> dict[str, Any]:
            return {"inner": FETCH, "when": BOOKING.when}

    assert hash_key(Outer()) == _ref_key(Outer())
    assert _ref_encode(Outer()).startswith(b"P")


def test_a_model_without_a_json_dump_raises_the_type_error() -> None:
    class Duck:
        def model_dump(self) -> dict[str, Any]:
            return {"x": [1j]}

    with pytest.raises(TypeError, match="key_generator") as info:
        hash_key({"d": Duck()})
    assert "complex" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)  # model_dump(mode="json") was refused
    with pytest.raises(TypeError, match="'object'"):
        hash_key(Loose(value=object()))  # pydantic cannot dump it as JSON either
    assert hash_key(EXAMPLE) == _ref_key(EXAMPLE)


def test_subclasses_of_everyday_types_are_not_read_as_their_base() -> None:
    """A subclass (pandas.Timestamp, pendulum) may carry more than its base's fields."""
    with pytest.raises(TypeError, match="MyDateTime"):
        hash_key(MyDateTime(2024, 1, 1))
    inside = Loose(value=MyDateTime(2024, 1, 1))
    json_form = b"J" + _cls(inside) + _ref_encode({"value": "2024-01-01T00:00:00"})
    assert hash_key(inside) == _ref_key(inside) == _key_of(json_form)


def test_large_payloads_streamed_or_buffered_agree() -> None:
    big = bytes(range(256)) * 40
    text = "ü" * 5000
    for obj in ([big, text, 1], {"k": big, text: 2}, {big, text}, big, text):
        assert hash_key(obj) == _ref_key(obj)


# --------------------------------------------------------------------------- stability


_SEED_INPUTS = (
    "[EXAMPLE, {'x', 'y', 'zz', 'a', 'bb'}, {f'k{i}': i for i in range(50)},"
    " frozenset(str(i) for i in range(100)), {('a', 1): {'b', 'c'}}]"
)


def test_same_keys_in_other_processes_and_hash_seeds() -> None:
    inputs = eval(_SEED_INPUTS, {"EXAMPLE": EXAMPLE})
    here = [hash_key(x) for x in inputs]
    code = (
        "import agentperf as ap\n"
        f"EXAMPLE = {EXAMPLE!r}\n"
        f"for x in {_SEED_INPUTS}: print(ap.hash_key(x))\n"
    )
    for seed in ("0", "1", "4242", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == here, seed


# --------------------------------------------------------------------------- failures


def test_cycles_raise_value_error() -> None:
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {}
    d["self"] = d
    n = Node("n")
    n.children.append(n)
    deep: list[Any] = []
    deep.append([[{"back": deep}]])
    for obj in (a, d, n, deep, [a], {"x": (d,)}):
        with pytest.raises(ValueError, match="cycle"):
            hash_key(obj)


def test_shared_references_are_not_cycles() -> None:
    shared = [1, 2]
    assert hash_key([shared, shared, {"a": shared}]) == hash_key([[1, 2], [1, 2], {"a": [1, 2]}])


def _nest(depth: int, kind: str = "list") -> Any:
    x: Any = None
    for _ in range(depth):
        x = {"k": x} if kind == "dict" else (x,) if kind == "tuple" else [x]
    return x


@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
def test_depth_limit_is_256_containers(kind: str) -> None:
    assert hash_key(_nest(256, kind)) == _ref_key(_nest(256, kind))
    with pytest.raises(ValueError, match="256"):
        hash_key(_nest(257, kind))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stack_kib", [None, 64])
def test_deep_input_in_a_thread_with_a_small_stack(stack_kib: int | None) -> None:
    results: list[object] = []

    def run() -> None:
        for kind in ("list", "dict", "tuple"):
            try:
                hash_key(_nest(1000, kind))
            except ValueError as e:
                results.append(e)
        results.append(hash_key(_nest(256)))

    old = threading.stack_size()
    if stack_kib is not None:
        threading.stack_size(stack_kib * 1024)
    try:
        t = threading.Thread(target=run)
        t.start()
    finally:
        threading.stack_size(old)
    t.join()
    assert len(results) == 4
    assert all(isinstance(e, ValueError) for e in results[:3])
    assert results[3] == _ref_key(_nest(256))


UNSUPPORTED: list[Any] = [
    object(),
    MyDateTime(2024, 1, 1),
    1 + 2j,
    memoryview(b"x"),
    len,
    int,
    Query,
    Point,
    range(3),
    [1, {"a": range(2)}],
]


@pytest.mark.parametrize("obj", UNSUPPORTED, ids=[type(o).__name__ for o in UNSUPPORTED])
def test_unsupported_types_raise_type_error_naming_them(obj: Any) -> None:
    with pytest.raises(TypeError, match="key_generator") as info:
        hash_key(obj)
    inner = obj[1]["a"] if isinstance(obj, list) else obj
    name = inner.__qualname__ if isinstance(inner, type) else type(inner).__qualname__
    assert name in str(info.value)


def test_errors_leave_no_state_behind() -> None:
    for bad in ([1j], _nest(300), {"x": {1, 2, object()}}, Loose(value=object())):
        with pytest.raises((TypeError, ValueError)):
            hash_key(bad)
        assert hash_key(EXAMPLE) == _ref_key(EXAMPLE)


def test_a_container_mutated_while_hashed_raises_runtime_error() -> None:
    outer: dict[str, Any] = {}

    class Grows:
        def model_dump(self) -> dict[str, int]:
            outer["added"] = 1
            return {}

    outer["a"] = Grows()
    with pytest.raises(RuntimeError, match="changed size"):
        hash_key(outer)

    items: list[Any] = []

    class Shrinks:
        def model_dump(self) -> int:
            items.clear()
            return 0

    items.extend([Shrinks(), 1, 2])
    with pytest.raises(RuntimeError, match="changed size"):
        hash_key(items)


def test_reentrant_model_dump() -> None:
    class Keyed:
        def model_dump(self) -> str:
            return hash_key({"inner": [1, 2]})

    k = hash_key([Keyed(), {"a": Keyed()}])
    assert k == _ref_key([Keyed(), {"a": Keyed()}])


def test_model_dump_exceptions_propagate() -> None:
    class Broken:
        def model_dump(self) -> None:
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        hash_key({"x": Broken()})


_EXIT_SCRIPT = """
import dataclasses, datetime, sys, threading, time
import agentperf as ap

def slow():
    time.sleep(0.0005)  # releases the GIL: wakes up during finalization

@dataclasses.dataclass
class D:
    x: int

class L(list):
    def __getattr__(self, name):
        slow()
        raise AttributeError(name)

class Zone(datetime.tzinfo):
    def utcoffset(self, dt):
        slow()
        return datetime.timedelta(hours=1)

class Dumps:
    def model_dump(self):
        slow()
        return 1

via = sys.argv[1]
if via == "property":  # a dataclass field read through a property
    obj = D(1)
    D.x = property(lambda self: slow() or 1)
elif via == "getattr":  # looking for model_dump on an object with __getattr__
    obj = [L([1])]
elif via == "utcoffset":
    obj = datetime.datetime(2024, 1, 1, tzinfo=Zone())
else:
    obj = {"m": Dumps()}

def loop():
    while True:
        ap.hash_key(obj)

for _ in range(4):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.1)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("via", ["property", "getattr", "utcoffset", "model_dump"])
def test_exit_with_daemon_threads_inside_the_key_walks_user_code(via: str) -> None:
    """CPython <= 3.13 ends such threads with pthread_exit at exit; user code reached by the
    key walk (a property, __getattr__, a tzinfo, model_dump) is behind the ucall guard, so the
    process exits 0 instead of aborting."""
    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", _EXIT_SCRIPT, via], capture_output=True, text=True, timeout=30
        )
        assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
        assert "Fatal Python error" not in p.stderr and "panicked" not in p.stderr, p.stderr


@pytest.mark.timeout(60)
def test_threads_agree() -> None:
    inputs = [EXAMPLE, _nest(50, "dict"), {str(i): list(range(i)) for i in range(30)}]
    want = [hash_key(x) for x in inputs]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(300):
                assert [hash_key(x) for x in inputs] == want
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- properties

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "x\udfff", "\udbff\udc00"])
    | st.binary(max_size=12)
    | st.sampled_from([Color.RED, Color.GREEN, Shade.RED, Level.LOW, Perm.R | Perm.W])
    | st.datetimes(
        timezones=st.none()
        | st.builds(
            datetime.timezone,
            st.timedeltas(-datetime.timedelta(hours=23), datetime.timedelta(hours=23)),
        )
    )
    | st.dates()
    | st.times(timezones=st.none() | st.just(UTC))
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("-NaN"), decimal.Decimal("-0")])
)
_hashables = st.recursive(
    _scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=6,
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(_hashables, inner, max_size=5)
        | st.sets(_hashables, max_size=5)
        | st.frozensets(_hashables, max_size=5)
        | st.builds(Point, st.integers(), st.integers())
        | st.builds(Node, st.text(max_size=5), st.lists(inner, max_size=3))
        | st.builds(Query, text=st.text(max_size=8), top_k=st.integers(0, 10))
    ),
    max_leaves=25,
)


@given(_values)
def test_rust_agrees_with_the_python_reference(obj: Any) -> None:
    assert hash_key(obj) == _ref_key(obj)


@given(st.dictionaries(_hashables, _values, max_size=8), st.randoms(use_true_random=False))
def test_dict_insertion_order_never_matters(d: dict[Any, Any], rnd: random.Random) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert hash_key(dict(items)) == hash_key(d)


@given(st.lists(_hashables, max_size=10), st.randoms(use_true_random=False))
def test_set_order_never_matters(members: list[Any], rnd: random.Random) -> None:
    original = set(members)  # equal members (0, False, 0.0) collapse here, once
    shuffled = list(original)
    rnd.shuffle(shuffled)
    assert hash_key(original) == hash_key(frozenset(shuffled)) == hash_key(set(shuffled))


@given(_values, _values)
def test_distinct_encodings_give_distinct_keys(a: Any, b: Any) -> None:
    assert (hash_key(a) == hash_key(b)) == (_ref_encode(a) == _ref_encode(b))


def test_json_baseline_is_not_structural() -> None:
    """Why a structural encoder: the JSON approach conflates values the key keeps apart."""
    js = lambda x: hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()  # noqa: E731
    assert js([1, 2]) == js((1, 2))
    assert hash_key([1, 2]) != hash_key((1, 2))
