"""The encoder's choices and refusals, referenced attributes and CheckResponse building."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.attributes import AttributeBag, AttributeMatch, AttributeValue, Condition, ValueType
from mixer.decision import (
    DEFAULT_VALID_DURATION,
    DEFAULT_VALID_USE_COUNT,
    CheckOutcome,
    HeaderOperationKind,
    HeaderOperationResult,
    QuotaOutcome,
)
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse, HeaderOperation, ReferencedAttributes
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.status import OK, Code, Status
from mixer.wire import (
    GLOBAL_WORD_INDEX,
    GLOBAL_WORDS,
    ReportEncoding,
    build_check_response,
    decode_referenced_attributes,
    decode_report_request,
    duration_of,
    encode_attributes,
    encode_referenced_attributes,
    encode_report_request,
    timestamp_of,
)

# --- attributes ------------------------------------------------------------------------------


def test_global_words_are_indices_and_others_message_words() -> None:
    msg = encode_attributes({"request.method": "GET", "custom.name": "custom-value", "other": "custom-value"})
    assert msg.strings[GLOBAL_WORD_INDEX["request.method"]] == GLOBAL_WORD_INDEX["GET"]
    assert list(msg.words) == ["custom.name", "custom-value", "other"]
    assert msg.strings[-1] == -2
    assert msg.strings[-3] == -2


def test_quoted_global_words_are_matched_verbatim() -> None:
    msg = encode_attributes({"a": "'200'", "b": "200", "c": '"-"', "d": "-"}, {})
    assert list(msg.words) == ["a", "b", "c", "d", "-"]
    assert msg.strings[-1] == GLOBAL_WORD_INDEX["'200'"] == 94
    assert msg.strings[-2] == GLOBAL_WORD_INDEX["200"] != 94
    assert msg.strings[-3] == GLOBAL_WORD_INDEX['"-"'] == 218
    assert msg.strings[-4] == -5


def test_typed_strings_stay_strings() -> None:
    manifest = {"mail": ValueType.EMAIL_ADDRESS, "site": ValueType.URI, "host": ValueType.DNS_NAME}
    msg = encode_attributes({"mail": "a@b.c", "site": "http://x", "host": "x.y"}, manifest)
    assert len(msg.strings) == 3


def test_values_are_checked_against_the_manifest() -> None:
    with pytest.raises(TypeError, match=r"attribute 'response\.code' is declared INT64, got str"):
        encode_attributes({"response.code": "200"})
    with pytest.raises(TypeError, match=r"attribute 'source\.ip' is declared IP_ADDRESS, got int"):
        encode_attributes({"source.ip": 5})
    with pytest.raises(ValueError, match=r"'source\.ip': 'nope' is not an IP address"):
        encode_attributes({"source.ip": "nope"})
    assert encode_attributes({"source.ip": b"\x0a\x00\x00\x01"}).bytes[0] == b"\x0a\x00\x00\x01"


def test_values_of_no_attribute_type_are_refused() -> None:
    with pytest.raises(TypeError, match="attribute 'x': list is not an attribute value type"):
        encode_attributes({"x": [1]}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="string map attribute 'x' has a non-string key or value"):
        encode_attributes({"x": {"a": 1}}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="timezone-aware"):
        encode_attributes({"x": datetime(2020, 1, 1)}, {})
    with pytest.raises(ValueError, match=r"(?i)out of range"):
        encode_attributes({"x": 2**63}, {})


def test_timestamps_and_durations() -> None:
    assert timestamp_of(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == Timestamp(seconds=1, nanos=5000)
    assert timestamp_of(datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)) == Timestamp(
        seconds=-1, nanos=500_000_000
    )
    east = timezone(timedelta(hours=2))
    assert timestamp_of(datetime(1970, 1, 1, 2, tzinfo=east)) == Timestamp()
    assert duration_of(timedelta(seconds=-1.5)) == Duration(seconds=-1, nanos=-500_000_000)
    assert duration_of(timedelta(microseconds=-1)) == Duration(nanos=-1000)
    assert duration_of(timedelta(days=1, microseconds=3)) == Duration(seconds=86400, nanos=3000)
    assert duration_of(timedelta(days=3_652_500)) == Duration(seconds=315_576_000_000)
    with pytest.raises(ValueError, match=r"outside google\.protobuf\.Duration's \+-10000 years"):
        duration_of(timedelta(days=3_652_500, seconds=1))


def test_attribute_bags_are_accepted() -> None:
    bag = AttributeBag({"request.method": "GET", "request.headers": {"a": "b"}})
    msg = encode_attributes(bag)
    assert len(msg.strings) == 1
    assert len(msg.string_maps) == 1


# --- reports ---------------------------------------------------------------------------------


def test_delta_encoding_sends_changes_only() -> None:
    bags: list[dict[str, AttributeValue]] = [
        {"request.method": "GET", "response.code": 200, "request.headers": {"a": "b"}},
        {"request.method": "GET", "response.code": 200, "request.headers": {"a": "b"}, "x": True},
        {"request.method": "GET", "response.code": 500, "request.headers": {"a": "c"}, "x": True},
    ]
    request = encode_report_request(bags, ReportEncoding.DELTA_ENCODING, manifest={})
    assert request.repeated_attributes_semantics == ReportRequest.DELTA_ENCODING
    elements = request.attributes
    assert (len(elements[0].strings), len(elements[0].int64s), len(elements[0].string_maps)) == (1, 1, 1)
    assert (len(elements[1].strings), len(elements[1].int64s), len(elements[1].bools)) == (0, 0, 1)
    assert (len(elements[2].int64s), len(elements[2].string_maps), len(elements[2].bools)) == (1, 1, 0)
    assert [b.to_dict() for b in decode_report_request(request, {})] == bags


def test_delta_encoding_resends_a_value_whose_type_changed() -> None:
    request = encode_report_request(
        [{"x": 1}, {"x": True}, {"x": 1.0}], ReportEncoding.DELTA_ENCODING, manifest={}
    )
    decoded = [bag.get("x") for bag in decode_report_request(request, {})]
    assert [type(v) for v in decoded] == [int, bool, float]


def test_delta_encoding_cannot_remove() -> None:
    with pytest.raises(ValueError, match=r"bag 1 lacks \['b'\]: DELTA_ENCODING cannot express a removal"):
        encode_report_request([{"a": 1, "b": 2}, {"a": 1}], ReportEncoding.DELTA_ENCODING, manifest={})
    # Independent encoding has no such limit.
    request = encode_report_request([{"a": 1, "b": 2}, {"a": 1}], manifest={})
    assert [b.to_dict() for b in decode_report_request(request, {})] == [{"a": 1, "b": 2}, {"a": 1}]


def test_default_words_are_shared() -> None:
    request = encode_report_request([{"custom": "v1"}, {"custom": "v2"}], use_default_words=True, manifest={})
    assert list(request.default_words) == ["custom", "v1", "v2"]
    assert request.global_word_count == len(GLOBAL_WORDS)
    request = encode_report_request(
        [{"custom": "v1"}, {"custom": "v2"}], use_default_words=False, manifest={}
    )
    assert not request.default_words
    assert [list(e.words) for e in request.attributes] == [["custom", "v1"], ["custom", "v2"]]


# --- referenced attributes -------------------------------------------------------------------


def test_referenced_attributes_use_global_indices_where_possible() -> None:
    matches = [
        AttributeMatch("destination.service.name", Condition.EXACT),
        AttributeMatch("request.headers", Condition.EXACT, "x-user"),
        AttributeMatch("custom.attr", Condition.ABSENCE),
        AttributeMatch("request.headers", Condition.ABSENCE, ":authority"),
    ]
    msg = encode_referenced_attributes(matches)
    assert list(msg.words) == ["x-user", "custom.attr"]
    wire = [(m.name, m.condition, m.map_key) for m in msg.attribute_matches]
    assert wire == [
        (GLOBAL_WORD_INDEX["destination.service.name"], ReferencedAttributes.EXACT, 0),
        (GLOBAL_WORD_INDEX["request.headers"], ReferencedAttributes.EXACT, -1),
        (-2, ReferencedAttributes.ABSENCE, 0),
        (GLOBAL_WORD_INDEX["request.headers"], ReferencedAttributes.ABSENCE, GLOBAL_WORD_INDEX[":authority"]),
    ]
    assert decode_referenced_attributes(ReferencedAttributes.FromString(msg.SerializeToString())) == matches


def test_a_map_key_that_is_global_word_zero_is_sent_as_a_message_word() -> None:
    # map_key 0 means "no key" to a proxy, so global word 0 cannot be a key's index.
    match = AttributeMatch("request.headers", Condition.EXACT, GLOBAL_WORDS[0])
    msg = encode_referenced_attributes([match])
    assert msg.attribute_matches[0].map_key == -1
    assert list(msg.words) == [GLOBAL_WORDS[0]]
    assert decode_referenced_attributes(msg) == [match]
    # As a name, index 0 is fine.
    msg = encode_referenced_attributes([AttributeMatch(GLOBAL_WORDS[0], Condition.EXACT)])
    assert msg.attribute_matches[0].name == 0
    assert not msg.words


@settings(deadline=None)
@given(
    st.lists(
        st.builds(
            AttributeMatch,
            st.one_of(st.sampled_from(GLOBAL_WORDS), st.text()),
            st.sampled_from(Condition),
            st.one_of(st.none(), st.sampled_from(GLOBAL_WORDS), st.text(min_size=1)),
        ),
        max_size=8,
    )
)
def test_referenced_attributes_round_trip(matches: list[AttributeMatch]) -> None:
    msg = encode_referenced_attributes(matches)
    assert decode_referenced_attributes(ReferencedAttributes.FromString(msg.SerializeToString())) == matches


# --- CheckResponse ---------------------------------------------------------------------------


def test_default_response_allows_for_a_minute_and_ten_thousand_uses() -> None:
    response = build_check_response(CheckOutcome(OK, DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT))
    assert response.precondition.HasField("status")
    assert response.precondition.status.code == 0
    assert response.precondition.valid_duration == Duration(seconds=60)
    assert response.precondition.valid_use_count == 10000 == DEFAULT_VALID_USE_COUNT
    assert timedelta(minutes=1) == DEFAULT_VALID_DURATION
    assert not response.precondition.HasField("referenced_attributes")
    assert not response.precondition.HasField("route_directive")
    assert not response.quotas


def test_route_directive_and_details() -> None:
    detail = AnyProto(type_url="type.googleapis.com/x", value=b"1")
    outcome = CheckOutcome(
        Status(Code.UNAUTHENTICATED, "no token"),
        timedelta(seconds=5),
        10,
        request_header_operations=[HeaderOperationResult("x-user", "jason")],
        response_header_operations=[
            HeaderOperationResult("x-trace", "", HeaderOperationKind.REMOVE),
            HeaderOperationResult("set-cookie", "a=b", HeaderOperationKind.APPEND),
        ],
    )
    response = build_check_response(
        outcome,
        details=[detail],
        direct_response_code=302,
        direct_response_body="moved",
    )
    precondition = CheckResponse.FromString(response.SerializeToString()).precondition
    assert precondition.status.code == Code.UNAUTHENTICATED
    assert list(precondition.status.details) == [detail]
    route = precondition.route_directive
    assert [(op.name, op.value, op.operation) for op in route.request_header_operations] == [
        ("x-user", "jason", HeaderOperation.REPLACE)
    ]
    assert [(op.name, op.operation) for op in route.response_header_operations] == [
        ("x-trace", HeaderOperation.REMOVE),
        ("set-cookie", HeaderOperation.APPEND),
    ]
    assert (route.direct_response_code, route.direct_response_body) == (302, "moved")


def test_quota_results() -> None:
    outcome = CheckOutcome(
        OK,
        DEFAULT_VALID_DURATION,
        DEFAULT_VALID_USE_COUNT,
        quotas={
            "granted": QuotaOutcome(5, timedelta(seconds=10)),
            "refused": QuotaOutcome(0, timedelta(minutes=1), Status(Code.RESOURCE_EXHAUSTED, "over")),
            "tracked": QuotaOutcome(1, referenced=[AttributeMatch("custom", Condition.EXACT)]),
        },
    )
    response = build_check_response(outcome)
    quotas = CheckResponse.FromString(response.SerializeToString()).quotas
    assert quotas["granted"].granted_amount == 5
    assert quotas["granted"].valid_duration == Duration(seconds=10)
    assert not quotas["granted"].HasField("status")
    assert quotas["refused"].status.code == Code.RESOURCE_EXHAUSTED
    assert quotas["refused"].status.message == "over"
    assert decode_referenced_attributes(quotas["tracked"].referenced_attributes) == [
        AttributeMatch("custom", Condition.EXACT)
    ]
    assert quotas["tracked"].valid_duration == Duration(seconds=60)


def test_ip_objects_travel_as_packed_bytes() -> None:
    msg = encode_attributes(
        {"source.ip": ipaddress.ip_address("::1"), "x": ipaddress.ip_address("1.2.3.4")},
        {"source.ip": ValueType.IP_ADDRESS},
    )
    assert msg.bytes[0] == bytes(15) + b"\x01"
    assert msg.bytes[-1] == b"\x01\x02\x03\x04"
