"""Property tests: what the encoder writes, the decoder reads back; garbage never crashes."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mixer.attributes import AttributeBag, AttributeValue, ValueType
from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest
from mixer.wire import (
    GLOBAL_WORDS,
    GlobalDictionaryMismatch,
    ReportEncoding,
    WireDecodeError,
    decode_attributes,
    decode_check_request,
    decode_report_request,
    encode_attributes,
    encode_check_request,
    encode_report_request,
)
from tests.wire._golden import golden_bytes

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

_MAX_DURATION = timedelta(seconds=315_576_000_000, microseconds=999_999)

words = st.one_of(st.sampled_from(GLOBAL_WORDS), st.text(max_size=20))
names = st.one_of(st.sampled_from(GLOBAL_WORDS), st.text(min_size=1, max_size=20))
timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    # Other offsets decode as the same instant in UTC; kept clear of the range edges so that
    # the instant itself stays within years 1 to 9999.
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        ),
    ),
)
_IP = (ipaddress.IPv4Address, ipaddress.IPv6Address)
ip_addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))

# Each entry: (value strategy, whether the manifest must type the name IP_ADDRESS).
values: st.SearchStrategy[AttributeValue] = st.one_of(
    words,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    timestamps,
    st.timedeltas(min_value=-_MAX_DURATION, max_value=_MAX_DURATION),
    ip_addresses,
    st.dictionaries(words, words, max_size=5),
    st.binary(max_size=20),
)
bags = st.dictionaries(names, values, max_size=12)


def manifest_for(*bags: Mapping[str, AttributeValue]) -> dict[str, ValueType]:
    """Type as IP_ADDRESS exactly the names that hold addresses; nothing else is typed."""
    return {
        name: ValueType.IP_ADDRESS for bag in bags for name, value in bag.items() if isinstance(value, _IP)
    }


def normalized(bag: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """A bag in a form where equal means "decodes the same": NaN equals NaN, maps are dicts, and
    every value carries its type (True, 1 and 1.0 are different attributes)."""
    out: dict[str, Any] = {}
    for name, value in bag.items():
        if isinstance(value, float) and math.isnan(value):
            out[name] = (float, "nan")
        elif isinstance(value, Mapping):
            out[name] = ("map", dict(value))
        elif isinstance(value, datetime):
            out[name] = (datetime, value.astimezone(UTC))
        else:
            out[name] = (type(value), value)
    return out


@SETTINGS
@given(bags)
def test_attributes_round_trip(bag: dict[str, AttributeValue]) -> None:
    manifest = manifest_for(bag)
    msg = encode_attributes(bag, manifest)
    decoded = decode_attributes(CompressedAttributes.FromString(msg.SerializeToString()), manifest)
    assert normalized(decoded) == normalized(bag)
    for value in decoded.values():
        if isinstance(value, datetime):
            assert value.tzinfo is UTC
    # Words the global dictionary has are never spelled out in the message.
    assert not set(msg.words) & set(GLOBAL_WORDS)
    assert len(set(msg.words)) == len(msg.words)


@SETTINGS
@given(
    bags,
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=8), st.tuples(st.integers(0, 2**40), st.booleans())),
)
def test_check_request_round_trips(
    bag: dict[str, AttributeValue], dedup: str, quotas: dict[str, tuple[int, bool]]
) -> None:
    manifest = manifest_for(bag)
    request = encode_check_request(bag, deduplication_id=dedup, quotas=quotas, manifest=manifest)
    decoded = decode_check_request(request.SerializeToString(), manifest)
    assert normalized(decoded.bag.to_dict()) == normalized(bag)
    assert decoded.deduplication_id == dedup
    assert {name: (q.amount, q.best_effort) for name, q in decoded.quotas.items()} == quotas


@st.composite
def delta_batches(draw: st.DrawFn) -> list[dict[str, AttributeValue]]:
    """Bags each of which keeps every name of the one before (what delta encoding can express)."""
    batch = [draw(bags)]
    for _ in range(draw(st.integers(0, 4))):
        batch.append({**batch[-1], **draw(bags)})
    return batch


@SETTINGS
@given(delta_batches(), st.sampled_from(ReportEncoding), st.booleans())
def test_reports_round_trip(
    batch: list[dict[str, AttributeValue]], encoding: ReportEncoding, use_default_words: bool
) -> None:
    manifest = manifest_for(*batch)
    # A name that holds an address in one bag and something else in another cannot be typed.
    assume(all(isinstance(v, _IP) for bag in batch for n, v in bag.items() if n in manifest))
    request = encode_report_request(batch, encoding, use_default_words=use_default_words, manifest=manifest)
    if use_default_words:
        assert all(not element.words for element in request.attributes)
    decoded = decode_report_request(request.SerializeToString(), manifest)
    assert [normalized(bag.to_dict()) for bag in decoded] == [normalized(bag) for bag in batch]


@SETTINGS
@given(st.lists(bags, max_size=4), st.booleans())
def test_independent_reports_round_trip_any_bags(
    batch: list[dict[str, AttributeValue]], shared: bool
) -> None:
    request = encode_report_request(
        batch, ReportEncoding.INDEPENDENT_ENCODING, use_default_words=shared, manifest={}
    )
    decoded = decode_report_request(request.SerializeToString(), {})
    assert [normalized(bag.to_dict()) for bag in decoded] == [
        # With no manifest typing them, addresses travel and come back as their raw bytes.
        normalized({n: v.packed if isinstance(v, _IP) else v for n, v in bag.items()})
        for bag in batch
    ]


# --- garbage in ------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes) -> None:
    for decode in (decode_check_request, decode_report_request):
        try:
            result = decode(data)
        except (WireDecodeError, GlobalDictionaryMismatch):
            continue
        if isinstance(result, list):
            for bag in result:
                assert isinstance(bag, AttributeBag)
                bag.to_dict()
        else:
            result.bag.to_dict()


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_wire_errors(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(deadline=None, max_examples=500)
@given(
    st.sampled_from(["check_request", "report_delta", "report_independent"]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_corrupted_golden_messages_decode_or_raise_wire_errors(
    name: str, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(golden_bytes(name))
    for position, byte in edits:
        data[position % len(data)] = byte
    _decodes_or_refuses(bytes(data))


index_values = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@st.composite
def indexed_messages(draw: st.DrawFn) -> CompressedAttributes:
    msg = CompressedAttributes(words=draw(st.lists(st.text(max_size=3), max_size=4)))
    small = st.one_of(st.integers(-6, 225), index_values)
    msg.strings.update(draw(st.dictionaries(small, small, max_size=3)))
    msg.int64s.update(draw(st.dictionaries(small, st.integers(0, 5), max_size=2)))
    for key in draw(st.lists(small, max_size=2)):
        msg.string_maps[key].entries.update(draw(st.dictionaries(small, small, max_size=3)))
    return msg


@SETTINGS
@given(indexed_messages())
def test_indices_out_of_range_are_refused(msg: CompressedAttributes) -> None:
    count = len(msg.words)
    indices = [*msg.strings, *msg.strings.values(), *msg.int64s, *msg.string_maps]
    for string_map in msg.string_maps.values():
        indices += [*string_map.entries, *string_map.entries.values()]
    if not all(-count <= index < len(GLOBAL_WORDS) for index in indices):
        with pytest.raises(WireDecodeError, match="out of range"):
            decode_attributes(msg)
        return
    names = [
        GLOBAL_WORDS[index] if index >= 0 else msg.words[-index - 1]
        for index in [*msg.strings, *msg.int64s, *msg.string_maps]
    ]
    if len(set(names)) < len(names):
        with pytest.raises(WireDecodeError, match="appears more than once in one message"):
            decode_attributes(msg)
        return
    decoded = decode_attributes(msg)
    assert sorted(decoded) == sorted(names)
    for value in decoded.values():
        if isinstance(value, Mapping):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def test_check_request_with_every_value_type_uses_the_manifest() -> None:
    bag: dict[str, AttributeValue] = {
        "source.ip": ipaddress.IPv4Address("10.1.2.3"),
        "destination.ip": "fd00::1",  # text is accepted for an IP_ADDRESS attribute
        "request.headers": {":path": "/", "x-custom": "v"},
        "request.time": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "response.duration": timedelta(milliseconds=12),
        "response.code": 200,
        "connection.mtls": False,
        "custom.ratio": 0.25,
        "custom.blob": b"\x00\x01",
        "request.method": "GET",
    }
    request = encode_check_request(bag)
    assert request.global_word_count == len(GLOBAL_WORDS)
    assert isinstance(request, CheckRequest)
    decoded = decode_check_request(request.SerializeToString()).bag.to_dict()
    assert decoded == {**bag, "destination.ip": ipaddress.IPv6Address("fd00::1")}
