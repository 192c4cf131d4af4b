"""The compiled span encoder against the pure-Python path: the same bytes, routes and errors.

Each property encodes one instance twice, once with ``mixer.spans.otlp.cspan`` set to the compiled
module and once with it set to None (``span_from_instance`` then ``encode_span``), and compares the
records or the errors' types and messages. Instances are drawn from values the instance builder
hands out and from values it should not (whitespace, zeros, W3C context, other time zones, times
before the epoch or past fixed64, subclasses of scalar types, surrogates, numbers past int64).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mixer.delivery import Record
from mixer.spans import InvalidSpan, otlp
from mixer.spans import _cspan as compiled
from mixer.spans.otlp import encode_instance
from mixer.templates import TraceSpanInstance

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


class _Text(str):
    """A str subclass: the compiled path leaves these to Python."""


class _Code(enum.IntEnum):
    OK = 200
    UNAVAILABLE = 503


@contextmanager
def _encoder(module: Any) -> Iterator[None]:
    saved = otlp.cspan
    otlp.cspan = module
    try:
        yield
    finally:
        otlp.cspan = saved


def _outcome(encode: Callable[[], Record]) -> tuple[Any, ...]:
    try:
        record = encode()
    except Exception as exc:  # the error's type and message are what is compared
        return ("error", type(exc), str(exc))
    return ("record", record.payload, record.route, record.key)


def _both(instance: TraceSpanInstance) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    with _encoder(compiled):
        fast = _outcome(lambda: encode_instance(instance))
    with _encoder(None):
        pure = _outcome(lambda: encode_instance(instance))
    return fast, pure


_HEX = "0123456789abcdefABCDEF"


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_HEX, min_size=size, max_size=size)


_good_trace = st.one_of(_hex(16), _hex(32))
_ids = st.one_of(
    _hex(16),
    _hex(32),
    st.just("0" * 16),
    st.just("0" * 32),
    _hex(16).map(lambda text: f"  {text}\t"),
    st.text(max_size=34),
    st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
    _hex(16).map(_Text),
    st.none(),
    st.integers(),
)
_zones = st.sampled_from([UTC, None, timezone(timedelta(hours=2)), timezone(timedelta(0), "Z")])
_recent = st.builds(
    lambda micros: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros),
    st.integers(min_value=0, max_value=10**12),
)
# Any time, and times near now in every zone (the same wall time in another zone is another instant).
_moments = st.one_of(
    st.builds(
        lambda moment, zone: moment.replace(tzinfo=zone),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        _zones,
    ),
    st.builds(lambda moment, zone: moment.replace(tzinfo=zone), _recent, _zones),
)
_addresses = st.sampled_from([None, "10.0.0.7", "0.0.0.0", "::", "fe80::1", "192.168.1.200"]).map(
    lambda text: ipaddress.ip_address(text) if text else None
)
_text = st.one_of(st.text(max_size=20), st.just(" reviews-v2 "), st.none(), st.just(_Text("sub")))
_numbers = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=2**70),
    st.booleans(),
    st.sampled_from(list(_Code)),
    st.just("200"),
)
_tag_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " 503 ", "https://example.com/a", "/reviews/1", "caf\u00e9", "bad \ud800"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(max_size=8),
    _addresses,
    _moments,
    st.timedeltas(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    st.just(_Text("subclass")),
    st.sampled_from(list(_Code)),
)
_tag_names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "http.url",
            "http.method",
            "http.status_code",
            "user_agent",
            "traceparent",
            "tracestate",
            "guid:x-request-id",
            "rpc.system",
        ]
    ),
)
_tags = st.one_of(
    st.dictionaries(_tag_names, _tag_values, max_size=8),
    st.none(),
    st.just({"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01", "http.method": "GET"}),
    st.just({"tracestate": "vendor=1"}),
    st.just({7: "a key that is no str"}),
)


# Tag names and values that keep an instance on the compiled path (the W3C context tags only empty).
_plain_tag_names = _tag_names.filter(lambda name: name not in ("traceparent", "tracestate"))
_plain_tag_values = _tag_values.filter(lambda value: type(value) is not _Text)


@st.composite
def istio_instances(draw: st.DrawFn) -> TraceSpanInstance:
    """What Istio's tracespan config builds from a proxy's B3 headers."""
    start = draw(_recent)
    return TraceSpanInstance(
        name="tracespan.istio-system",
        trace_id=draw(_good_trace.filter(lambda text: text.strip("0") != "")),
        span_id=draw(_hex(16).filter(lambda text: text.strip("0") != "")),
        parent_span_id=draw(st.one_of(st.just(""), _hex(16).filter(lambda text: text.strip("0") != ""))),
        span_name=draw(st.one_of(st.just(""), st.text(min_size=1, max_size=40))),
        start_time=start,
        end_time=start + timedelta(microseconds=draw(st.integers(min_value=0, max_value=10**8))),
        span_tags=draw(st.dictionaries(_plain_tag_names, _plain_tag_values, max_size=8)),
        http_status_code=draw(st.sampled_from([0, 200, 404, 503])),
        client_span=draw(st.booleans()),
        rewrite_client_span_id=draw(st.booleans()),
        source_name=draw(st.text(max_size=12)),
        destination_name=draw(st.text(max_size=12)),
        source_ip=draw(_addresses),
        destination_ip=draw(_addresses),
        request_size=draw(st.integers(min_value=0, max_value=2**40)),
        request_total_size=draw(st.integers(min_value=0, max_value=2**40)),
        response_size=draw(st.integers(min_value=0, max_value=2**40)),
        response_total_size=draw(st.integers(min_value=0, max_value=2**40)),
        api_protocol=draw(st.sampled_from(["", "http", "grpc", "tcp"])),
    )


# Every field and what it may hold, well-formed or not.
_WILD: dict[str, st.SearchStrategy[Any]] = {
    "trace_id": _ids,
    "span_id": _ids,
    "parent_span_id": _ids,
    "span_name": _text,
    "start_time": st.one_of(_moments, st.none()),
    "end_time": st.one_of(_moments, st.none()),
    "span_tags": _tags,
    "http_status_code": _numbers,
    "client_span": st.one_of(st.booleans(), st.none(), st.just("false")),
    "rewrite_client_span_id": st.one_of(st.booleans(), st.none()),
    "source_name": _text,
    "destination_name": _text,
    "source_ip": _addresses,
    "destination_ip": _addresses,
    "request_size": _numbers,
    "request_total_size": _numbers,
    "response_size": _numbers,
    "response_total_size": _numbers,
    "api_protocol": st.one_of(st.sampled_from(["HTTP", " grpc ", "GRPC"]), _text),
}


@st.composite
def instances(draw: st.DrawFn) -> TraceSpanInstance:
    """An Istio instance with up to four of its fields replaced by anything they may hold."""
    instance = draw(istio_instances())
    for name in draw(st.lists(st.sampled_from(sorted(_WILD)), max_size=4, unique=True)):
        setattr(instance, name, draw(_WILD[name]))
    return instance


@SETTINGS
@given(instances())
def test_any_instance_gives_the_same_record_or_the_same_error(instance: TraceSpanInstance) -> None:
    fast, pure = _both(instance)
    assert fast == pure


@SETTINGS
@given(instances())
def test_the_compiled_encoder_answers_only_for_instances_python_encodes(instance: TraceSpanInstance) -> None:
    answer = compiled.encode(instance)
    with _encoder(None):
        pure = _outcome(lambda: encode_instance(instance))
    if answer is not None:
        assert pure[0] == "record"
        assert answer[0] == pure[1]


@SETTINGS
@given(istio_instances())
def test_istio_instances_take_the_compiled_path_and_protobuf_reads_them(instance: TraceSpanInstance) -> None:
    answer = compiled.encode(instance)
    # Well-formed B3 instances never fall back: the fast path is the path they take.
    assert answer is not None
    fast, pure = _both(instance)
    assert fast == pure
    span = Span.FromString(answer[0])
    assert instance.trace_id is not None
    assert instance.span_name is not None
    assert span.trace_id.hex().lstrip("0") == instance.trace_id.lower().lstrip("0")
    assert span.name == (instance.span_name.strip() or "unknown")


def test_the_instance_errors_are_the_pure_python_ones() -> None:
    start = datetime(2026, 12, 7, tzinfo=UTC)
    reversed_times = TraceSpanInstance(
        name="t", trace_id="a" * 32, span_id="b" * 16, start_time=start, end_time=start - timedelta(seconds=1)
    )
    assert compiled.encode(reversed_times) is None
    with pytest.raises(InvalidSpan, match="end_time is before start_time"):
        encode_instance(reversed_times)
    zero_id = TraceSpanInstance(name="t", trace_id="0" * 32, span_id="b" * 16, start_time=start)
    assert compiled.encode(zero_id) is None
    with pytest.raises(InvalidSpan, match="all zeros"):
        encode_instance(zero_id)


def test_a_w3c_traceparent_is_read_by_the_python_path() -> None:
    instance = TraceSpanInstance(
        name="t",
        span_tags={"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-00"},
        start_time=datetime(2026, 12, 7, tzinfo=UTC),
    )
    assert compiled.encode(instance) is None
    span = Span.FromString(encode_instance(instance).payload)
    assert span.trace_id == bytes.fromhex("c" * 32)
    assert span.flags & 0xFF == 0  # the traceparent's flags, not the B3 default (sampled)
