"""Reports decoded a slice at a time, and the bound on bags per Report."""

from __future__ import annotations

import time

import pytest

from mixer.attributes import AttributeValue
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.status import Code
from mixer.wire import (
    GLOBAL_WORD_COUNT,
    ReportEncoding,
    ReportReader,
    ReportTooLarge,
    WireDecodeError,
    count_entries,
    decode_report_request,
    encode_report_request,
)


def bags(n: int) -> list[dict[str, AttributeValue]]:
    # Every third bag has a long string so elements take both length encodings (1 and 2+ bytes).
    return [
        {
            "request.id": f"r{i}",
            "response.code": 200 + i % 5,
            "request.path": "/" + "p" * (200 * (i % 3 == 0)),
        }
        for i in range(n)
    ]


def read_all(data: bytes, slice_size: int) -> list[dict[str, AttributeValue]]:
    reader = ReportReader(data)
    while not reader.scan(slice_size):
        pass
    out: list[dict[str, AttributeValue]] = []
    while not reader.done:
        out += [bag.to_dict() for bag in reader.read(slice_size)]
    return out


@pytest.mark.parametrize("encoding", list(ReportEncoding))
@pytest.mark.parametrize("slice_size", [1, 7, 1000])
def test_slices_decode_what_the_whole_message_does(encoding: ReportEncoding, slice_size: int) -> None:
    request = encode_report_request(bags(50), encoding)
    whole = [bag.to_dict() for bag in decode_report_request(request)]
    assert read_all(request.SerializeToString(), slice_size) == whole
    assert len(whole) == 50


def test_header_fields_anywhere_in_the_bytes() -> None:
    request = encode_report_request(bags(6))
    elements = ReportRequest(attributes=request.attributes).SerializeToString()
    header = ReportRequest(
        default_words=request.default_words,
        global_word_count=request.global_word_count,
        repeated_attributes_semantics=request.repeated_attributes_semantics,
    ).SerializeToString()
    expected = [bag.to_dict() for bag in decode_report_request(request)]
    # Protobuf concatenation: the header after the elements, or between them, means the same.
    assert read_all(elements + header, 2) == expected
    half = ReportRequest(attributes=request.attributes[:3]).SerializeToString()
    rest = ReportRequest(attributes=request.attributes[3:]).SerializeToString()
    assert read_all(half + header + rest, 2) == expected


def test_more_bags_than_the_bound_is_resource_exhausted() -> None:
    data = encode_report_request(bags(11)).SerializeToString()
    assert len(decode_report_request(data, max_records=11)) == 11
    with pytest.raises(ReportTooLarge) as info:
        decode_report_request(data, max_records=10)
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert "more than 10 records" in str(info.value)
    with pytest.raises(ReportTooLarge):
        decode_report_request(ReportRequest.FromString(data), max_records=10)


def test_an_oversized_report_is_refused_after_scanning_only_the_bound() -> None:
    one = encode_report_request([{"request.id": "x"}])
    request = ReportRequest(global_word_count=GLOBAL_WORD_COUNT)
    request.default_words.extend(one.default_words)
    element = one.attributes[0].SerializeToString()
    # 450,000 tiny elements (~4 MB): parsing them all took seconds; the refusal must not.
    data = request.SerializeToString() + (b"\x0a" + bytes([len(element)]) + element) * 450_000
    reader = ReportReader(data, max_records=1000)
    started = time.perf_counter()
    with pytest.raises(ReportTooLarge):
        reader.scan(len(data))
    assert time.perf_counter() - started < 1.0
    assert reader.records == 1000


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # truncated varint
        b"\x0a\x05ab",  # element longer than the message
        b"\x0b",  # group wire type
        b"\x0d\x00",  # fixed32 field 1 cut short
    ],
)
def test_malformed_framing_is_invalid_argument(data: bytes) -> None:
    with pytest.raises(WireDecodeError) as info:
        decode_report_request(data)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert str(info.value).startswith("malformed istio.mixer.v1.ReportRequest")


def test_a_malformed_element_is_found_when_read() -> None:
    good = encode_report_request(bags(3)).SerializeToString()
    with pytest.raises(WireDecodeError, match="malformed"):
        decode_report_request(good + b"\x0a\x02\xff\xff")


def test_count_entries_stops_past_the_limit() -> None:
    entry = b"\x0a\x02\x08\x01"  # field 1 (an entry) holding one varint field
    container = b"\x12" + bytes([len(entry) * 3]) + entry * 3  # field 2 (http_logs)
    identifier = b"\x0a\x00"  # field 1 at the top level is not a container
    data = identifier + container + container
    assert count_entries(data, {2, 3}, 100) == 6
    assert count_entries(data, {2, 3}, 4) == 5
    assert count_entries(data, {3}, 100) == 0
    with pytest.raises(WireDecodeError, match="malformed"):
        count_entries(b"\x12\x09\x0a", {2}, 10)
