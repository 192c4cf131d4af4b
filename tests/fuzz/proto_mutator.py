"""A structure-aware mutator for the protobuf targets.

Byte-level mutation of a serialized message mostly breaks the framing, and protobuf's parser is C
code that gives no coverage feedback, so flipping bytes rarely reaches the interesting values
(a timestamp of 2**62 seconds, an index of -7, a 300-character header). This mutator parses the
input as the target's message, changes one to four fields (set, add, clear) to values chosen from
per-type boundary lists, and serializes it again; a share of the calls still uses libFuzzer's own
byte mutations, so malformed framing stays covered.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

_F = FieldDescriptor
_INT_RANGES: dict[int, tuple[int, int]] = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_INTERESTING_INTS = (
    *range(-8, 9),
    100,
    255,
    256,
    1000,
    65535,
    999_999_999,
    1_000_000_000,
    253_402_300_799,  # 9999-12-31T23:59:59Z
    253_402_300_800,
    -62_135_596_800,  # 0001-01-01T00:00:00Z
    -62_135_596_801,
    2**31 - 1,
    -(2**31),
    2**32 - 1,
    2**53,
    2**62,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
)
_INTERESTING_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"))
_INTERESTING_STRINGS = (
    "",
    "a",
    "x" * 257,
    "é" * 200,
    "\x00",
    "\r\n",
    "10.0.0.1",
    "[::1]",
    "::ffff:10.0.0.1",
    "not-an-ip",
    "/path?key=v&api_key=k&a=&a=2",
    "?",
    "%zz",
    "x-api-key",
    "content-type",
    "application/grpc+proto",
    "user-agent",
    "request.headers",
    "source.ip",
    "destination.port",
    "inbound",
    "outbound",
    "2024-05-06T07:08:09Z",
    "15ms",
    "spiffe://cluster.local/ns/default/sa/web",
)
_INTERESTING_BYTES = (b"", b"\x0a\x00\x00\x01", b"\x00" * 16, b"\x01\x02\x03", b"\xff" * 5, b"x" * 300)


def _int_value(field: FieldDescriptor, rng: random.Random) -> int:
    low, high = _INT_RANGES[field.type]
    if rng.random() < 0.2:
        return rng.randint(low, high)
    candidates: list[int] = [v for v in _INTERESTING_INTS if low <= v <= high]
    return rng.choice(candidates)


def _string_value(rng: random.Random) -> str:
    if rng.random() < 0.2:
        alphabet = "abcxyz0123456789.-_/:?&=[] %\u00e9\U0001f600"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    return rng.choice(_INTERESTING_STRINGS)


def _scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.type
    if kind in _INT_RANGES:
        return _int_value(field, rng)
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        value = rng.choice(_INTERESTING_FLOATS) if rng.random() < 0.8 else rng.uniform(-1e6, 1e6)
        if kind == _F.TYPE_FLOAT and abs(value) > 3e38 and value == value and abs(value) != float("inf"):
            return 3e38
        return value
    if kind == _F.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == _F.TYPE_STRING:
        return _string_value(rng)
    if kind == _F.TYPE_BYTES:
        if rng.random() < 0.3:
            return rng.randbytes(rng.randint(0, 20))
        return rng.choice(_INTERESTING_BYTES)
    if kind == _F.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        # Open enums keep unknown numbers: a peer built from a newer proto sends them.
        return rng.choice(numbers) if rng.random() < 0.8 else rng.randint(-2, 40)
    raise AssertionError(f"unhandled field type {kind}")  # pragma: no cover


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def mutate_message(message: Message, rng: random.Random, depth: int = 0) -> None:
    """Change one field somewhere in ``message`` (recursing into sub-messages)."""
    fields: list[Any] = list(message.DESCRIPTOR.fields)
    if not fields:
        return
    field: FieldDescriptor = rng.choice(fields)
    if rng.random() < 0.1:
        message.ClearField(field.name)
        return
    container: Any = getattr(message, field.name)
    if field.message_type is not None and _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        keys = list(container)
        key = rng.choice(keys) if keys and rng.random() < 0.5 else _scalar(key_field, rng)
        if value_field.type == _F.TYPE_MESSAGE:
            mutate_message(container[key], rng, depth + 1)
        else:
            container[key] = _scalar(value_field, rng)
        return
    if field.type == _F.TYPE_MESSAGE:
        if _is_repeated(field):
            if len(container) and rng.random() < 0.6:
                target = container[rng.randrange(len(container))]
            elif len(container) and rng.random() < 0.3:
                target = container.add()
                target.CopyFrom(container[rng.randrange(len(container) - 1)])
            else:
                target = container.add()
        else:
            target = container
        if depth < 12:
            mutate_message(target, rng, depth + 1)
        elif not _is_repeated(field):
            target.SetInParent()
        return
    if _is_repeated(field):
        if len(container) and rng.random() < 0.5:
            container[rng.randrange(len(container))] = _scalar(field, rng)
        else:
            container.append(_scalar(field, rng))
        return
    setattr(message, field.name, _scalar(field, rng))


def mutate_bytes(data: bytes, max_size: int, rng: random.Random) -> bytes:
    """A byte-level change: flip, overwrite, insert, delete or truncate (the framing's share)."""
    out = bytearray(data)
    choice = rng.randrange(5)
    if not out or choice == 2:
        out.insert(rng.randint(0, len(out)), rng.randrange(256))
    elif choice == 0:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        out[rng.randrange(len(out))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif choice == 3:
        start = rng.randrange(len(out))
        del out[start : start + rng.randint(1, 8)]
    else:
        del out[rng.randrange(len(out)) :]
    return bytes(out[:max_size])


def make_mutator(message_type: type[Message]) -> Callable[[bytes, int, int], bytes]:
    """A libFuzzer custom mutator for inputs that are serialized ``message_type``."""

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.25:
            return mutate_bytes(data, max_size, rng)
        message = message_type()
        try:
            message.ParseFromString(data)
        except DecodeError:
            message = message_type()
        for _ in range(rng.randint(1, 4)):
            mutate_message(message, rng)
        out = message.SerializeToString()
        return out if len(out) <= max_size else mutate_bytes(data, max_size, rng)

    return mutator
