from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from mixer.attributes import NanoDuration, ValueType, format_duration, parse_duration, to_jsonable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("300ms", timedelta(milliseconds=300)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2.5s", timedelta(seconds=2.5)),
        ("-2.5s", timedelta(seconds=-2.5)),
        ("1us", timedelta(microseconds=1)),
        ("1µs", timedelta(microseconds=1)),
        ("1500ns", NanoDuration(1500)),
        ("0", timedelta(0)),
        ("+1s", timedelta(seconds=1)),
        ("1m0.5s", timedelta(minutes=1, milliseconds=500)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "ms", "1 s", "--1s", "10", "9999999999h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(microseconds=7), "7µs"),
        (timedelta(microseconds=7250), "7.25ms"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(seconds=-1.5), "-1.5s"),
        # Go's nanosecond resolution, as Mixer's stdio printed response.duration.
        (NanoDuration(13_601_485), "13.601485ms"),
        (NanoDuration(250), "250ns"),
        (NanoDuration(1_500), "1.5µs"),
        (NanoDuration(61_000_000_001), "1m1.000000001s"),
        (NanoDuration(-1_999), "-1.999µs"),
    ],
)
def test_format_duration_matches_go(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


@dataclass
class _Point:
    kind: ValueType
    at: datetime


def test_to_jsonable_covers_every_value_kind() -> None:
    when = datetime(2026, 11, 25, 10, 0, 0, 125000, tzinfo=UTC)
    value = {
        "s": "x",
        "i": 3,
        "t": when,
        "d": timedelta(milliseconds=7.25),
        "ip": ipaddress.ip_address("fd00::12"),
        "b": b"\x00\x01",
        "m": {"k": "v"},
        "set": frozenset({"b", "a"}),
        "list": (1, None),
        "dc": _Point(ValueType.INT64, when),
    }
    assert to_jsonable(value) == {
        "s": "x",
        "i": 3,
        "t": "2026-11-25T10:00:00.125000Z",
        "d": "7.25ms",
        "ip": "fd00::12",
        "b": "AAE=",
        "m": {"k": "v"},
        "set": ["a", "b"],
        "list": [1, None],
        "dc": {"kind": "INT64", "at": "2026-11-25T10:00:00.125000Z"},
    }


def test_nano_durations_compare_hash_and_pickle_by_their_nanoseconds() -> None:
    import pickle

    value = NanoDuration(13_601_485)
    assert value != timedelta(microseconds=13_601)
    assert timedelta(microseconds=13_601) < value < timedelta(microseconds=13_602)
    assert NanoDuration(5_000) == timedelta(microseconds=5)
    assert hash(NanoDuration(5_000)) == hash(timedelta(microseconds=5))
    assert pickle.loads(pickle.dumps(value)) == value
    assert to_jsonable(value) == "13.601485ms"
