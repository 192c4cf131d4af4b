"""The hand-written Span encoding is byte for byte protobuf's own (``encode_span_reference``)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mixer.spans import SpanData
from mixer.spans.otlp import encode_span, encode_span_reference

_ids = st.one_of(st.just(b""), st.binary(min_size=8, max_size=8))
_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
_times = st.one_of(st.just(0), st.integers(min_value=0, max_value=2**64 - 1))


@st.composite
def spans(draw: st.DrawFn, times: st.SearchStrategy[int] = _times) -> SpanData:
    tags: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), _scalars, max_size=5))
    return SpanData(
        trace_id=draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16))),
        span_id=draw(_ids),
        parent_span_id=draw(_ids),
        name=draw(st.text(max_size=30)),
        client=draw(st.booleans()),
        start_ns=draw(times),
        end_ns=draw(times),
        trace_flags=draw(st.integers(min_value=0, max_value=0xFFFF)),
        trace_state=draw(st.text(max_size=20)),
        http_status_code=draw(st.one_of(st.none(), st.integers(min_value=100, max_value=599))),
        local_service=draw(st.text(max_size=10)),
        peer_service=draw(st.text(max_size=10)),
        local_ip=draw(st.one_of(st.none(), st.just(ipaddress.ip_address("10.0.0.1")))),
        peer_ip=draw(st.one_of(st.none(), st.just(ipaddress.ip_address("fe80::1")))),
        request_size=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2**40))),
        response_size=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2**40))),
        api_protocol=draw(st.sampled_from(["", "http", "grpc"])),
        tags=tags,
    )


@settings(max_examples=400)
@given(spans())
def test_the_span_bytes_are_protobufs(span: SpanData) -> None:
    encoded = encode_span(span)
    assert encoded == encode_span_reference(span)
    # And protobuf reads them back as the same span.
    parsed = Span.FromString(encoded)
    assert parsed.trace_id == span.trace_id_128
    assert parsed.start_time_unix_nano == span.start_ns


@given(spans(times=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64))))
def test_times_out_of_range_are_refused_as_protobuf_refuses_them(span: SpanData) -> None:
    with pytest.raises(ValueError) as reference:
        encode_span_reference(span)
    with pytest.raises(ValueError) as ours:
        encode_span(span)
    assert str(ours.value) == str(reference.value)


def test_a_surrogate_in_the_name_becomes_a_replacement_as_in_the_reference() -> None:
    span = SpanData(b"\x01" * 16, b"\x02" * 8, b"", "bad \ud800 name", False, 1, 2, http_status_code=503)
    assert encode_span(span) == encode_span_reference(span)
    assert Span.FromString(encode_span(span)).status.code == Span().status.STATUS_CODE_ERROR
