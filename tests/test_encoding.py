"""The shared line encoder: its bytes equal the json module's line, cached texts are bounded.

Log lines are checked on both paths: the compiled field encoder (mixer/_cline.pyx, which the
install builds) and the Python preparation with orjson (``mixer.encoding.cline`` set to None).
"""

from __future__ import annotations

import gc
import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer import _cline, encoding
from mixer.attributes import NanoDuration, format_duration
from mixer.encoding import Level, LineEncoder, TextForms, format_time, time_bytes
from mixer.redact import FieldRedaction, RedactMode
from mixer.templates import LogEntryInstance, MetricInstance

NOW = datetime(2026, 12, 7, 4, 30, 1, 123456, tzinfo=UTC)

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from([None, UTC])
) | st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(timezone(timedelta(hours=5, minutes=30))),
)
values: st.SearchStrategy[Any] = st.one_of(
    texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    times,
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
    st.integers(min_value=-(10**12), max_value=10**12).map(NanoDuration),
    st.ip_addresses(),
    st.dictionaries(texts, texts, max_size=4),
    st.dictionaries(texts, st.integers() | st.floats(), max_size=2),
    st.binary(max_size=12),
    st.none(),
)
fields = st.dictionaries(
    texts | st.sampled_from(["level", "time", "instance", "value", "a", "b"]), values, max_size=12
)


def _encoders() -> list[LineEncoder]:
    return [
        LineEncoder(lambda: NOW),
        LineEncoder(lambda: NOW, as_json=False),
        LineEncoder(lambda: NOW, output_level=Level.WARNING, metric_level=Level.ERROR),
        LineEncoder(lambda: NOW, redact=FieldRedaction(fields=("value", "level", "a", "")), as_json=True),
        LineEncoder(lambda: NOW, redact=FieldRedaction(fields=("a", "b"), mode=RedactMode.DROP)),
    ]


PATHS = {"compiled": _cline, "python": None}


@pytest.fixture(params=sorted(PATHS))
def line_path(request: pytest.FixtureRequest) -> Any:
    saved = encoding.cline
    encoding.cline = PATHS[request.param]
    yield
    encoding.cline = saved


@pytest.mark.usefixtures("line_path")
@settings(max_examples=600, deadline=None)
@given(
    variables=fields,
    timestamp=st.none() | times,
    severity=st.sampled_from([None, "info", "warning", "ERROR", "odd"]),
    name=texts,
)
def test_log_lines_equal_the_json_module(
    variables: dict[str, Any], timestamp: datetime | None, severity: str | None, name: str
) -> None:
    for encoder in _encoders():
        entry = LogEntryInstance(name, variables=variables, timestamp=timestamp, severity=severity)
        reference = encoder.encode_reference(entry)
        line = encoder.encode_bytes(entry)
        assert line == (None if reference is None else reference.encode())
        # The second encoding of the same entry comes from the shared lines and is the same.
        assert encoder.encode_bytes(entry) == line


# Any text, lone surrogates included, in keys, values and nested maps.
any_texts = st.text(max_size=20)
odd_values = st.one_of(
    values,
    any_texts,
    st.dictionaries(any_texts, any_texts, max_size=3),
    st.dictionaries(st.integers(), any_texts, max_size=2),
    st.sampled_from(['\x00\x1f\x7f"\\\b\f\n\r\t', "caf\u00e9 \u2028 \U0001f600"]),
)


@settings(max_examples=600, deadline=None)
@given(
    variables=st.dictionaries(
        any_texts | st.sampled_from(["level", "time", "instance"]), odd_values, max_size=8
    ),
    timestamp=st.none() | times,
)
def test_the_compiled_and_python_paths_write_the_same_line(
    variables: dict[str, Any], timestamp: datetime | None
) -> None:
    lines = []
    for path in (_cline, None):
        encoding.cline = path
        try:
            entry = LogEntryInstance("accesslog", variables=variables, timestamp=timestamp)
            lines.append([encoder.encode_bytes(entry) for encoder in _encoders()])
        finally:
            encoding.cline = _cline
    assert lines[0] == lines[1]


def test_the_compiled_path_writes_the_common_fields_and_leaves_the_rest() -> None:
    # What it writes itself: no fallback for an Istio access log entry's kinds of values.
    istio = {
        "b": "text",
        "a": 7,
        "c": True,
        "d": 1.5,
        "e": NOW,
        "f": timedelta(milliseconds=3),
        "g": ipaddress.ip_address("10.0.0.1"),
        "h": {"k": "v"},
        "i": None,
        "level": "dropped",
    }
    body = _cline.fields(istio)
    assert body == (
        b'{"a":7,"b":"text","c":true,"d":1.5,"e":"2026-12-07T04:30:01.123456Z","f":"3ms",'
        b'"g":"10.0.0.1","h":{"k":"v"}}'
    )
    # What it leaves to Python: a lone surrogate, other types, keys that are not str.
    assert _cline.fields({"a": "x\ud800"}) is None
    assert _cline.fields({"a": b"bytes"}) is None
    assert _cline.fields({"a": {"k": 1}}) is None
    assert _cline.fields({1: "a"}) is None  # type: ignore[dict-item]
    assert _cline.time_text(NOW) == b"2026-12-07T04:30:01.123456Z"
    assert _cline.time_text(NOW.astimezone(timezone(timedelta(hours=1)))) is None


@settings(max_examples=300, deadline=None)
@given(dimensions=fields, value=values, name=texts)
def test_metric_lines_equal_the_json_module(dimensions: dict[str, Any], value: Any, name: str) -> None:
    for encoder in _encoders():
        metric = MetricInstance(name, value=value, dimensions=dimensions)
        reference = encoder.encode_reference(metric)
        assert encoder.encode_bytes(metric) == (None if reference is None else reference.encode())


def test_a_lone_surrogate_is_replaced_not_lost() -> None:
    encoder = LineEncoder(lambda: NOW)
    entry = LogEntryInstance("a", variables={"path": "/x\ud800y"}, timestamp=NOW)
    reference = encoder.encode_reference(entry)
    assert reference is not None
    line = encoder.encode_bytes(entry)
    assert line == reference.encode("utf-8", "replace")
    assert b'"path":"/x?y"' in (line or b"")


def test_an_istio_access_log_line() -> None:
    entry = LogEntryInstance(
        "accesslog.instance.istio-system",
        severity="Info",
        timestamp=NOW,
        variables={
            "responseCode": 200,
            "latency": NanoDuration(12_345_678),
            "sourceIp": ipaddress.ip_address("10.0.0.7"),
            "requestSize": 0,
            "protocol": "http",
            "mtls": True,
            "path": 'a "quoted" \\ path\n',
            "absent": None,
        },
    )
    line = LineEncoder(lambda: NOW).encode_bytes(entry)
    assert line == (
        b'{"level":"info","time":"2026-12-07T04:30:01.123456Z","instance":"accesslog.instance.istio-system",'
        b'"latency":"12.345678ms","mtls":true,"path":"a \\"quoted\\" \\\\ path\\n","protocol":"http",'
        b'"requestSize":0,"responseCode":200,"sourceIp":"10.0.0.7"}'
    )


def test_text_forms_are_bounded_and_counted() -> None:
    forms = TextForms(max_entries=8)
    durations = [timedelta(milliseconds=i) for i in range(1, 21)]
    assert [forms.text(d) for d in durations] == [format_duration(d) for d in durations]
    assert forms.resets == 2
    assert all(len(cache) <= 8 for cache in forms._caches.values())
    before = forms.hits
    assert forms.text(durations[-1]) == "20ms"
    assert forms.hits == before + 1
    # Times are formatted each time (unique per request), never cached.
    assert forms.text(NOW) == format_time(NOW) == "2026-12-07T04:30:01.123456Z"
    assert forms.text(timedelta(milliseconds=1500)) == "1.5s"
    assert forms.text(ipaddress.ip_address("::1")) == "::1"


@settings(max_examples=300, deadline=None)
@given(
    moment=times
    | st.datetimes(
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-3)), timezone(timedelta(0), "Z")])
    )
)
def test_time_bytes_are_format_time_on_both_paths(moment: datetime) -> None:
    expected = format_time(moment).encode()
    for path in (_cline, None):
        encoding.cline = path
        try:
            assert time_bytes(moment) == expected
        finally:
            encoding.cline = _cline


def test_a_line_only_one_encoder_can_ask_for_is_not_cached() -> None:
    # Settings of their own (a severity name no other test uses), so other encoders do not count.
    levels = {"only-here": Level.WARNING}
    entry = LogEntryInstance("accesslog", variables={"a": "1"}, timestamp=NOW)
    alone = LineEncoder(lambda: NOW, severity_levels=levels)
    cached = len(encoding.shared_lines.cache)
    hits = encoding.shared_lines.hits
    line = alone.encode_bytes(entry)
    assert alone.encode_bytes(entry) == line
    assert len(encoding.shared_lines.cache) == cached
    assert encoding.shared_lines.hits == hits
    # A second encoder with the same settings: the line is kept and the second one reuses it.
    second = LineEncoder(lambda: NOW, severity_levels=levels)
    first_line = alone.encode_bytes(entry)
    assert second.encode_bytes(entry) == first_line == line
    assert encoding.shared_lines.hits == hits + 1
    # Once the second is gone, the first is alone again.
    del second
    gc.collect()
    hits = encoding.shared_lines.hits
    fresh = LogEntryInstance("accesslog", variables={"a": "2"}, timestamp=NOW)
    alone.encode_bytes(fresh)
    alone.encode_bytes(fresh)
    assert encoding.shared_lines.hits == hits
