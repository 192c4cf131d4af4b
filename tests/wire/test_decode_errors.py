"""Every way a request can be malformed, and the message each one gets."""

from __future__ import annotations

import copy
import ipaddress
import pickle
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mixer.attributes import AttributeManifest, NanoDuration, ValueType, nanoseconds_of
from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest, ReferencedAttributes
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.wire import (
    GLOBAL_WORD_INDEX,
    FrozenStringMap,
    GlobalDictionaryMismatch,
    WireDecodeError,
    decode_attributes,
    decode_check_request,
    decode_referenced_attributes,
    decode_report_request,
)

HOST = GLOBAL_WORD_INDEX["request.host"]
HEADERS = GLOBAL_WORD_INDEX["request.headers"]
SOURCE_IP = GLOBAL_WORD_INDEX["source.ip"]
REQUEST_TIME = GLOBAL_WORD_INDEX["request.time"]
RESPONSE_DURATION = GLOBAL_WORD_INDEX["response.duration"]
GET = GLOBAL_WORD_INDEX["GET"]


def _words(*words: str) -> CompressedAttributes:
    return CompressedAttributes(words=list(words))


def _fails(msg: CompressedAttributes, message: str, **kwargs: int) -> None:
    with pytest.raises(WireDecodeError) as info:
        decode_attributes(msg, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


# --- indices ---------------------------------------------------------------------------------


def test_negative_name_index_beyond_the_message_words() -> None:
    msg = _words("a", "b", "c")
    msg.strings[-7] = GET
    _fails(msg, "attribute name index -7 out of range: message has 3 words")


def test_name_index_beyond_the_global_dictionary() -> None:
    msg = _words()
    msg.int64s[222] = 1
    _fails(msg, "attribute name index 222 out of range: global dictionary has 222 words")


@pytest.mark.parametrize("field", ["int64s", "doubles", "bools", "bytes"])
def test_name_index_checked_in_every_typed_map(field: str) -> None:
    msg = _words("x")
    getattr(msg, field)[-2] = {"int64s": 1, "doubles": 1.0, "bools": True, "bytes": b"1"}[field]
    _fails(msg, "attribute name index -2 out of range: message has 1 words")


def test_name_index_checked_for_message_valued_maps() -> None:
    msg = _words()
    msg.timestamps[-1].seconds = 1
    _fails(msg, "attribute name index -1 out of range: message has 0 words")
    msg = _words()
    msg.durations[300].seconds = 1
    _fails(msg, "attribute name index 300 out of range: global dictionary has 222 words")
    msg = _words()
    msg.string_maps[-5].entries[GET] = GET
    _fails(msg, "attribute name index -5 out of range: message has 0 words")


def test_string_value_index_out_of_range() -> None:
    msg = _words("only")
    msg.strings[HOST] = -2
    _fails(msg, "string value of attribute 'request.host' index -2 out of range: message has 1 words")


def test_string_map_key_and_value_out_of_range() -> None:
    msg = _words("x-user")
    msg.string_maps[HEADERS].entries[-1] = 5000
    _fails(
        msg,
        "string map value of attribute 'request.headers' index 5000 out of range: "
        "global dictionary has 222 words",
    )
    msg = _words("x-user")
    msg.string_maps[HEADERS].entries[-9] = -1
    _fails(msg, "string map key of attribute 'request.headers' index -9 out of range: message has 1 words")


def test_words_override_resolves_against_the_given_list() -> None:
    msg = _words("ignored")
    msg.strings[-1] = -2
    assert decode_attributes(msg, words=["request.id", "abc"]) == {"request.id": "abc"}
    _fails(msg, "string value of attribute 'ignored' index -2 out of range: message has 1 words")


def test_the_same_name_twice_is_refused() -> None:
    msg = _words("request.host")
    msg.strings[HOST] = GET
    msg.strings[-1] = GET
    _fails(msg, "attribute 'request.host' appears more than once in one message")
    msg = _words()
    msg.strings[HOST] = GET
    msg.int64s[HOST] = 3
    _fails(msg, "attribute 'request.host' appears more than once in one message")


# --- values ----------------------------------------------------------------------------------


def test_timestamp_with_bad_nanos() -> None:
    msg = _words()
    msg.timestamps[REQUEST_TIME].CopyFrom(Timestamp(seconds=5, nanos=-1))
    _fails(msg, "timestamp attribute 'request.time' (5s) has nanos -1 outside [0, 999999999]")
    msg.timestamps[REQUEST_TIME].CopyFrom(Timestamp(seconds=5, nanos=1_000_000_000))
    _fails(msg, "timestamp attribute 'request.time' (5s) has nanos 1000000000 outside [0, 999999999]")


@pytest.mark.parametrize("seconds", [253402300800, -62135596801, 2**62, -(2**62)])
def test_timestamp_outside_the_datetime_range(seconds: int) -> None:
    msg = _words()
    msg.timestamps[REQUEST_TIME].seconds = seconds
    _fails(msg, f"timestamp attribute 'request.time' ({seconds}s) is outside years 1 to 9999")


def test_timestamp_range_edges_decode() -> None:
    msg = _words()
    msg.timestamps[REQUEST_TIME].CopyFrom(Timestamp(seconds=253402300799, nanos=999_999_999))
    assert decode_attributes(msg)["request.time"] == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    msg.timestamps[REQUEST_TIME].CopyFrom(Timestamp(seconds=-62135596800))
    assert decode_attributes(msg)["request.time"] == datetime(1, 1, 1, tzinfo=UTC)


def test_timestamps_are_utc_and_truncated_to_microseconds() -> None:
    msg = _words()
    msg.timestamps[REQUEST_TIME].CopyFrom(Timestamp(seconds=0, nanos=1999))
    value = decode_attributes(msg)["request.time"]
    assert value == datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (
            315_576_000_001,
            0,
            "duration attribute 'response.duration' (315576000001s) is outside +-10000 years",
        ),
        (
            -315_576_000_001,
            0,
            "duration attribute 'response.duration' (-315576000001s) is outside +-10000 years",
        ),
        (1, 1_000_000_000, "duration attribute 'response.duration' has nanos 1000000000 outside +-999999999"),
        (
            -1,
            -1_000_000_000,
            "duration attribute 'response.duration' has nanos -1000000000 outside +-999999999",
        ),
        (1, -5, "duration attribute 'response.duration' has seconds and nanos of different signs"),
        (-1, 5, "duration attribute 'response.duration' has seconds and nanos of different signs"),
    ],
)
def test_bad_durations(seconds: int, nanos: int, message: str) -> None:
    msg = _words()
    msg.durations[RESPONSE_DURATION].CopyFrom(Duration(seconds=seconds, nanos=nanos))
    _fails(msg, message)


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (0, 7_250_000, timedelta(microseconds=7250)),
        (-1, -500_000_000, timedelta(seconds=-1.5)),
        (0, -1_999, NanoDuration(-1_999)),
        (0, 1_999, NanoDuration(1_999)),
        (315_576_000_000, 999_999_999, NanoDuration(315_576_000_000 * 10**9 + 999_999_999)),
        (-315_576_000_000, 0, timedelta(seconds=-315_576_000_000)),
    ],
)
def test_durations_keep_their_nanoseconds(seconds: int, nanos: int, expected: timedelta) -> None:
    msg = _words()
    msg.durations[RESPONSE_DURATION].CopyFrom(Duration(seconds=seconds, nanos=nanos))
    decoded = decode_attributes(msg)["response.duration"]
    assert isinstance(decoded, timedelta)
    assert nanoseconds_of(decoded) == seconds * 10**9 + nanos
    assert decoded == expected


@pytest.mark.parametrize("length", [0, 3, 5, 15, 17])
def test_ip_address_of_the_wrong_length(length: int) -> None:
    msg = _words()
    msg.bytes[SOURCE_IP] = bytes(length)
    _fails(msg, f"IP address attribute 'source.ip' has {length} bytes: expected 4 or 16")


def test_ip_addresses_and_plain_bytes() -> None:
    msg = _words("blob")
    msg.bytes[SOURCE_IP] = bytes([10, 0, 0, 1])
    msg.bytes[GLOBAL_WORD_INDEX["destination.ip"]] = ipaddress.IPv6Address("fd00::1").packed
    msg.bytes[-1] = bytes([1, 2, 3, 4])
    assert decode_attributes(msg) == {
        "source.ip": ipaddress.IPv4Address("10.0.0.1"),
        "destination.ip": ipaddress.IPv6Address("fd00::1"),
        "blob": bytes([1, 2, 3, 4]),
    }


def test_manifest_decides_which_bytes_are_addresses() -> None:
    msg = _words("peer")
    msg.bytes[-1] = bytes([10, 0, 0, 1])
    msg.bytes[SOURCE_IP] = bytes(5)
    manifest = AttributeManifest.from_types({"peer": ValueType.IP_ADDRESS})
    assert decode_attributes(msg, manifest) == {
        "peer": ipaddress.IPv4Address("10.0.0.1"),
        "source.ip": bytes(5),
    }
    assert decode_attributes(msg, {"peer": ValueType.IP_ADDRESS})["peer"] == ipaddress.IPv4Address("10.0.0.1")
    _fails_with_manifest = {"source.ip": ValueType.IP_ADDRESS}
    with pytest.raises(WireDecodeError, match=r"'source\.ip' has 5 bytes"):
        decode_attributes(msg, _fails_with_manifest)


def test_string_maps_are_read_only_and_compare_as_dicts() -> None:
    msg = _words("x-user", "jason")
    msg.string_maps[HEADERS].entries[-1] = -2
    value = decode_attributes(msg)["request.headers"]
    assert isinstance(value, Mapping)
    assert value == {"x-user": "jason"}
    assert value == {"x-user": "jason"}
    assert len(value) == 1
    assert "x-user" in value
    assert list(value) == ["x-user"]
    assert value.get("missing") is None
    assert isinstance(value, FrozenStringMap)
    with pytest.raises(TypeError, match="decoded string maps are read-only"):
        value["x-user"] = "other"
    with pytest.raises(TypeError, match="read-only"):
        value.update({"a": "b"})
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.deepcopy(value) is value


# --- limits ----------------------------------------------------------------------------------


def test_max_attributes() -> None:
    msg = _words()
    for index in range(5):
        msg.int64s[index] = index
    assert len(decode_attributes(msg, max_attributes=5)) == 5
    _fails(msg, "message has 5 attributes: exceeds max_attributes (4)", max_attributes=4)


def test_max_string_length_bounds_words_and_bytes() -> None:
    msg = _words("abcd")
    msg.strings[HOST] = -1
    assert decode_attributes(msg, max_string_length=4) == {"request.host": "abcd"}
    _fails(msg, "message word of 4 characters exceeds max_string_length (3)", max_string_length=3)
    msg = _words("blob")
    msg.bytes[-1] = b"12345"
    _fails(msg, "bytes attribute 'blob' of 5 bytes exceeds max_string_length (4)", max_string_length=4)


def test_max_map_entries() -> None:
    msg = _words()
    msg.string_maps[HEADERS].entries.update({1: 2, 3: 4, 5: 6})
    assert len(decode_attributes(msg, max_map_entries=3)["request.headers"]) == 3  # type: ignore[arg-type]
    _fails(
        msg,
        "string map attribute 'request.headers' has 3 entries: exceeds max_map_entries (2)",
        max_map_entries=2,
    )


def test_check_request_limits_apply_to_its_own_strings() -> None:
    request = CheckRequest(deduplication_id="x" * 10)
    with pytest.raises(
        WireDecodeError, match=r"deduplication_id of 10 characters exceeds max_string_length \(9\)"
    ):
        decode_check_request(request, max_string_length=9)
    request = CheckRequest()
    request.quotas["q" * 10].amount = 1
    with pytest.raises(WireDecodeError, match=r"quota name of 10 characters exceeds max_string_length"):
        decode_check_request(request.SerializeToString(), max_string_length=9)


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\x0a\x05abc", b"\xff", b"\x12\x03\x08"])
def test_malformed_protobuf(data: bytes) -> None:
    with pytest.raises(WireDecodeError, match=r"^malformed istio\.mixer\.v1\.CheckRequest: "):
        decode_check_request(data)
    with pytest.raises(WireDecodeError, match=r"^malformed istio\.mixer\.v1\.ReportRequest: "):
        decode_report_request(data)


def test_invalid_utf8_is_a_decode_error() -> None:
    # CompressedAttributes.words[0] = b"\xff\xfe" inside CheckRequest.attributes.
    data = b"\x0a\x04\x0a\x02\xff\xfe"
    with pytest.raises(WireDecodeError, match="malformed"):
        decode_check_request(data)


def test_buffers_other_than_bytes_decode() -> None:
    data = CheckRequest(deduplication_id="d").SerializeToString()
    assert decode_check_request(bytearray(data)).deduplication_id == "d"
    assert decode_check_request(memoryview(data)).deduplication_id == "d"


def test_global_word_count_checked_before_attributes() -> None:
    request = CheckRequest(global_word_count=300)
    request.attributes.strings[-1] = -1  # would be an index error too
    with pytest.raises(GlobalDictionaryMismatch, match="mixer knows 222 words, caller knows 300"):
        decode_check_request(request.SerializeToString())
    report = ReportRequest(global_word_count=223)
    with pytest.raises(GlobalDictionaryMismatch):
        decode_report_request(report.SerializeToString())


def test_fewer_global_words_still_resolve_against_the_full_list() -> None:
    request = CheckRequest(global_word_count=10)
    request.attributes.strings[HOST] = GET
    assert decode_check_request(request).bag.to_dict() == {"request.host": "GET"}


def test_report_errors_name_the_element() -> None:
    report = ReportRequest(
        default_words=["a"], repeated_attributes_semantics=ReportRequest.INDEPENDENT_ENCODING
    )
    report.attributes.add().strings[HOST] = -1
    report.attributes.add().strings[HOST] = -2
    with pytest.raises(WireDecodeError) as info:
        decode_report_request(report.SerializeToString())
    assert str(info.value) == (
        "report element 1: string value of attribute 'request.host' index -2 out of range: message has 1 words"
    )


def test_report_with_unknown_semantics() -> None:
    report = ReportRequest()
    report.attributes.add()
    data = report.SerializeToString() + b"\x20\x07"  # field 4 = 7
    with pytest.raises(WireDecodeError, match="unknown repeated_attributes_semantics 7"):
        decode_report_request(data)


def test_report_delta_bounds_the_accumulated_bag() -> None:
    report = ReportRequest(repeated_attributes_semantics=ReportRequest.DELTA_ENCODING)
    report.attributes.add().int64s.update({1: 1, 2: 2})
    report.attributes.add().int64s.update({3: 3, 4: 4})
    assert len(decode_report_request(report, max_attributes=4)[1]) == 4
    with pytest.raises(WireDecodeError) as info:
        decode_report_request(report, max_attributes=3)
    assert str(info.value) == "report element 1: accumulated bag has 4 attributes: exceeds max_attributes (3)"


def test_report_element_words_take_precedence_over_default_words() -> None:
    report = ReportRequest(
        default_words=["default"], repeated_attributes_semantics=ReportRequest.INDEPENDENT_ENCODING
    )
    report.attributes.add().strings[HOST] = -1
    own = report.attributes.add(words=["own"])
    own.strings[HOST] = -1
    bags = decode_report_request(report)
    assert [bag.get("request.host") for bag in bags] == ["default", "own"]


def test_empty_report() -> None:
    assert decode_report_request(b"") == []


# --- referenced attributes -------------------------------------------------------------------


def test_referenced_attributes_errors() -> None:
    msg = ReferencedAttributes(words=["a"])
    msg.attribute_matches.add(name=-2, condition=ReferencedAttributes.EXACT)
    with pytest.raises(WireDecodeError) as info:
        decode_referenced_attributes(msg)
    assert str(info.value) == "referenced attribute name index -2 out of range: message has 1 words"

    msg = ReferencedAttributes()
    msg.attribute_matches.add(name=HEADERS, condition=ReferencedAttributes.EXACT, map_key=999)
    with pytest.raises(WireDecodeError) as info:
        decode_referenced_attributes(msg)
    assert str(info.value) == (
        "map key of referenced attribute 'request.headers' index 999 out of range: global dictionary has 222 words"
    )

    data = ReferencedAttributes.AttributeMatch(name=HOST).SerializeToString() + b"\x10\x09"
    msg = ReferencedAttributes()
    msg.attribute_matches.add().MergeFromString(data)
    with pytest.raises(
        WireDecodeError, match=r"referenced attribute 'request\.host' has unknown condition 9"
    ):
        decode_referenced_attributes(msg)
