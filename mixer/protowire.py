"""The protobuf wire format written by hand: varints, tags and length-delimited fields.

Building protobuf messages from Python costs microseconds per field; messages that are written on
every call (a CheckResponse, an OTLP span) are written with these instead, and their tests compare
the bytes with protobuf's own serializer.
"""

from __future__ import annotations

__all__ = ["LEN_TAGS", "UINT64_MASK", "field", "varint", "varint_field", "zigzag32"]

#: Negative int32 and int64 values are written as their 64-bit two's complement.
UINT64_MASK = 0xFFFF_FFFF_FFFF_FFFF

_ONE_BYTE = tuple(bytes((i,)) for i in range(128))


def varint(value: int) -> bytes:
    """A non-negative integer as a base-128 varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Tags of length-delimited fields (wire type 2), by field number below 16.
LEN_TAGS = tuple(varint(number << 3 | 2) for number in range(16))
# Tags of varint fields (wire type 0), by field number below 16.
_VARINT_TAGS = tuple(varint(number << 3) for number in range(16))


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or a message) numbered below 16."""
    return LEN_TAGS[number] + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    """A varint field (int32, int64, uint32, bool, enum) numbered below 16; negatives take ten bytes."""
    return _VARINT_TAGS[number] + varint(value & UINT64_MASK)


def zigzag32(value: int) -> int:
    """A sint32 value as its zigzag encoding, ready for :func:`varint`."""
    return ((value << 1) ^ (value >> 31)) & 0xFFFF_FFFF
