"""JSON values to typed attributes by manifest: every type, every error, and a round trip."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixer.api import ServiceLimits
from mixer.api._json_attributes import AttributeConversionError, attributes_from_json, check_limits
from mixer.attributes import ISTIO_MANIFEST, AttributeManifest, ValueType, to_jsonable

LIMITS = ServiceLimits()
TYPES = AttributeManifest.from_types(
    {
        "s": ValueType.STRING,
        "email": ValueType.EMAIL_ADDRESS,
        "i": ValueType.INT64,
        "d": ValueType.DOUBLE,
        "b": ValueType.BOOL,
        "t": ValueType.TIMESTAMP,
        "ip": ValueType.IP_ADDRESS,
        "dur": ValueType.DURATION,
        "m": ValueType.STRING_MAP,
        "raw": ValueType.BYTES,
        "odd": ValueType.VALUE_TYPE_UNSPECIFIED,
    }
)


def convert(data: Any, limits: ServiceLimits = LIMITS) -> dict[str, Any]:
    return attributes_from_json(data, TYPES, limits)


def error(data: Any, limits: ServiceLimits = LIMITS) -> str:
    with pytest.raises(AttributeConversionError) as info:
        convert(data, limits)
    return str(info.value)


def test_every_type_converts_from_its_json_form() -> None:
    values = convert(
        {
            "s": "text",
            "email": "a@example.com",
            "i": 42,
            "d": 2.5,
            "b": True,
            "t": "2024-05-06T07:08:09.250Z",
            "ip": "10.0.0.1",
            "dur": "1m30s",
            "m": {"x-api-key": "k", ":authority": "shop"},
            "raw": "AAEC",
        }
    )
    assert values == {
        "s": "text",
        "email": "a@example.com",
        "i": 42,
        "d": 2.5,
        "b": True,
        "t": datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC),
        "ip": ipaddress.IPv4Address("10.0.0.1"),
        "dur": timedelta(minutes=1, seconds=30),
        "m": {"x-api-key": "k", ":authority": "shop"},
        "raw": b"\x00\x01\x02",
    }


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("i", "-17", -17),
        ("i", 200.0, 200),
        ("d", 3, 3.0),
        ("d", "0.25", 0.25),
        ("t", 0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("t", "2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("dur", 0.5, timedelta(milliseconds=500)),
        ("ip", "::1", ipaddress.IPv6Address("::1")),
    ],
)
def test_lenient_forms(name: str, raw: Any, expected: Any) -> None:
    assert convert({name: raw}) == {name: expected}


def test_a_timestamp_keeps_its_zone() -> None:
    value = convert({"t": "2024-05-06T09:08:09+02:00"})["t"]
    assert value.utcoffset() == timedelta(hours=2)
    assert value.tzinfo == timezone(timedelta(hours=2))


def test_null_leaves_the_attribute_out() -> None:
    assert convert({"s": None, "i": 1}) == {"i": 1}


def test_unknown_attributes_are_all_named() -> None:
    message = error({"zeta": 1, "s": "ok", "alpha": 2})
    assert "unknown attributes (not in the attribute manifest): 'alpha', 'zeta'" in message


def test_many_unknown_attributes_are_counted_not_all_listed() -> None:
    message = error({f"x{i:02d}": 1 for i in range(15)})
    assert "'x09'" in message
    assert "'x10'" not in message
    assert "and 5 more" in message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"s": 5}, "s (STRING): want a string, got a number"),
        ({"i": True}, "i (INT64): want an integer, got a boolean"),
        ({"i": 1.5}, "i (INT64): want an integer, got a number"),
        ({"i": "12abc"}, "i (INT64): want an integer, got a string"),
        ({"i": 2**63}, "i (INT64): integer outside the int64 range"),
        ({"d": "fast"}, "d (DOUBLE): want a number, got the string 'fast'"),
        ({"d": math.inf}, "d (DOUBLE): want a finite number"),
        ({"d": False}, "d (DOUBLE): want a number, got a boolean"),
        ({"b": "true"}, "b (BOOL): want true or false, got a string"),
        ({"t": "2024-05-06T07:08:09"}, "t (TIMESTAMP): timestamp '2024-05-06T07:08:09' has no zone"),
        ({"t": "yesterday"}, "t (TIMESTAMP): 'yesterday' is not an RFC 3339 timestamp"),
        ({"t": 1e300}, "t (TIMESTAMP): seconds since the epoch out of range"),
        ({"ip": "10.0.0.256"}, "ip (IP_ADDRESS): '10.0.0.256' is not an IP address"),
        ({"dur": "5 minutes"}, "dur (DURATION): invalid duration '5 minutes'"),
        ({"dur": math.nan}, "dur (DURATION): want a finite number of seconds"),
        ({"m": ["a"]}, "m (STRING_MAP): want an object of strings, got an array"),
        ({"m": {"k": 1}}, "m (STRING_MAP): key 'k': want a string, got a number"),
        ({"raw": "not base64!"}, "raw (BYTES): want base64 text"),
        ({"odd": "x"}, "odd (VALUE_TYPE_UNSPECIFIED): the manifest gives this attribute no value type"),
    ],
)
def test_a_value_of_the_wrong_shape_is_named_with_its_type(data: dict[str, Any], fragment: str) -> None:
    message = error(data)
    assert message.startswith("attributes: ")
    assert fragment in message


def test_every_bad_value_is_reported_at_once() -> None:
    message = error({"s": 1, "i": "x", "b": 0})
    assert "s (STRING)" in message
    assert "i (INT64)" in message
    assert "b (BOOL)" in message


def test_not_an_object() -> None:
    assert "want an object of attribute name to value, got an array" in error([1, 2])


def test_where_names_the_object() -> None:
    with pytest.raises(AttributeConversionError, match=r"^records\[3\]: s \(STRING\)"):
        attributes_from_json({"s": 1}, TYPES, LIMITS, where="records[3]")


def test_decoding_limits_apply() -> None:
    small = ServiceLimits(max_attributes=2, max_string_length=4, max_map_entries=1)
    assert "3 attributes is over the limit of 2" in error({"s": "a", "i": 1, "b": True}, small)
    assert "string of 5 characters is over the limit of 4" in error({"s": "abcde"}, small)
    assert "2 entries is over the limit of 1" in error({"m": {"a": "1", "b": "2"}}, small)
    assert "key 'abcde'" in error({"m": {"abcde": "1"}}, small)


def test_check_limits_holds_adapter_values_to_the_same_bounds() -> None:
    small = ServiceLimits(max_attributes=2, max_string_length=4, max_map_entries=1)
    check_limits({"s": "abcd", "m": {"a": "b"}}, small, where="request")
    with pytest.raises(AttributeConversionError, match=r"^request: s: string of 5 characters"):
        check_limits({"s": "abcde"}, small, where="request")
    with pytest.raises(AttributeConversionError, match="2 entries is over the limit of 1"):
        check_limits({"m": {"a": "1", "b": "2"}}, small, where="request")
    with pytest.raises(AttributeConversionError, match="3 attributes"):
        check_limits({"a": 1, "b": 2, "c": 3}, small, where="request")


class _Text(str):
    """A str subclass: the slow path takes it, as _string does."""


_map_text = st.text(max_size=6) | st.text(max_size=6).map(_Text)
_map_item = _map_text | st.integers() | st.none() | st.binary(max_size=3)


@settings(max_examples=300)
@given(
    st.dictionaries(_map_text | st.integers(), _map_item, max_size=4), st.integers(0, 5), st.integers(0, 5)
)
@example({"ok": "too long"}, 1, 2)
@example({"too long": "ok"}, 1, 2)
@example({"ok": 1}, 1, 2)
@example({1: "ok"}, 1, 2)
def test_check_limits_on_a_map_says_what_the_entry_by_entry_check_says(
    entries: dict[object, object], max_entries: int, longest: int
) -> None:
    limits = ServiceLimits(max_attributes=4, max_string_length=longest, max_map_entries=max_entries)
    expected: str | None = None
    if len(entries) > max_entries:
        expected = f"{len(entries)} entries is over the limit of {max_entries}"
    else:
        for key, item in entries.items():
            bad = [v for v in (key, item) if not isinstance(v, str) or len(v) > longest]
            if bad:
                expected = f"key {str(key)!r}: "
                break
    for given_map in (entries, MappingProxyType(entries)):
        if expected is None:
            check_limits({"m": given_map}, limits, where="request")  # type: ignore[dict-item]
        else:
            with pytest.raises(AttributeConversionError, match=re.escape(expected)):
                check_limits({"m": given_map}, limits, where="request")  # type: ignore[dict-item]


def test_the_istio_vocabulary_converts() -> None:
    values = attributes_from_json(
        {
            "source.ip": "10.1.2.3",
            "request.headers": {"x-api-key": "demo-free-key"},
            "response.code": 429,
            "response.duration": "12ms",
            "request.time": "2024-01-01T00:00:00Z",
        },
        ISTIO_MANIFEST,
        LIMITS,
    )
    assert values["response.duration"] == timedelta(milliseconds=12)
    assert values["source.ip"] == ipaddress.ip_address("10.1.2.3")


_TEXT = st.text(max_size=20)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "s": _TEXT,
    "i": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "d": st.floats(allow_nan=False, allow_infinity=False),
    "b": st.booleans(),
    "t": st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    "ip": st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    "dur": st.timedeltas(min_value=timedelta(days=-10000), max_value=timedelta(days=10000)),
    "m": st.dictionaries(_TEXT, _TEXT, max_size=5),
    "raw": st.binary(max_size=20),
}


@given(st.fixed_dictionaries({}, optional=_VALUES))
def test_what_to_jsonable_writes_converts_back(values: dict[str, Any]) -> None:
    # The JSON form the server writes (e.g. in access logs) is one it reads back unchanged.
    text = json.dumps(to_jsonable(values))
    assert convert(json.loads(text)) == values
