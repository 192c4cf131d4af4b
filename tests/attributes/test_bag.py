from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.attributes import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeInfo,
    AttributeManifest,
    AttributeMatch,
    AttributeValue,
    Condition,
    TrackingBag,
    ValueType,
    conforms,
    infer_value_type,
)


def test_bag_wraps_without_copying() -> None:
    values: dict[str, object] = {"a": 1}
    bag = AttributeBag(values)  # type: ignore[arg-type]
    values["b"] = 2
    assert bag.get("b") == 2
    assert "b" in bag
    assert len(bag) == 2


def test_get_and_map_value() -> None:
    bag = AttributeBag({"request.headers": {"x-user": "jason"}, "response.code": 200})
    assert bag.get("response.code") == 200
    assert bag.get("missing") is None
    assert bag.get_map_value("request.headers", "x-user") == "jason"
    assert bag.get_map_value("request.headers", "x-other") is None
    assert bag.get_map_value("source.labels", "app") is None


def test_map_value_of_non_map_is_type_error() -> None:
    bag = AttributeBag({"response.code": 200})
    with pytest.raises(TypeError, match="not a string map"):
        bag.get_map_value("response.code", "k")
    with pytest.raises(TypeError, match="not a string map"):
        bag.tracking().get_map_value("response.code", "k")


def test_tracking_records_each_read_once_with_condition() -> None:
    bag = AttributeBag({"destination.service.name": "web", "request.headers": {"x-user": "jason"}}).tracking()
    bag.get("destination.service.name")
    bag.get("destination.service.name")
    bag.get("source.principal")
    bag.get_map_value("request.headers", "x-user")
    bag.get_map_value("request.headers", "x-missing")
    bag.get_map_value("source.labels", "app")
    assert bag.referenced() == [
        AttributeMatch("destination.service.name", Condition.EXACT),
        AttributeMatch("request.headers", Condition.ABSENCE, "x-missing"),
        AttributeMatch("request.headers", Condition.EXACT, "x-user"),
        AttributeMatch("source.labels", Condition.ABSENCE),
        AttributeMatch("source.principal", Condition.ABSENCE),
    ]
    bag.clear_references()
    assert bag.referenced() == []


def test_plain_bag_does_not_track_and_tracking_is_idempotent() -> None:
    tracking = AttributeBag({"a": 1}).tracking()
    assert tracking.tracking() is tracking
    tracking.get("a")
    assert [m.name for m in tracking.referenced()] == ["a"]


def test_to_dict_copies_maps_and_equality() -> None:
    inner = {"k": "v"}
    bag = AttributeBag({"m": inner, "n": 1})
    out = bag.to_dict()
    assert out == {"m": {"k": "v"}, "n": 1}
    assert out["m"] is not inner
    assert bag == AttributeBag({"n": 1, "m": {"k": "v"}})
    assert bag != AttributeBag({"n": 2, "m": {"k": "v"}})


def test_with_overrides_leaves_original() -> None:
    bag = AttributeBag({"a": 1})
    other = bag.with_overrides({"a": 2, "b": 3})
    assert bag.get("a") == 1
    assert other.get("a") == 2
    assert other.get("b") == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s", ValueType.STRING),
        (1, ValueType.INT64),
        (True, ValueType.BOOL),
        (1.5, ValueType.DOUBLE),
        (datetime(2026, 1, 1, tzinfo=UTC), ValueType.TIMESTAMP),
        (timedelta(seconds=1), ValueType.DURATION),
        (ipaddress.ip_address("10.0.0.1"), ValueType.IP_ADDRESS),
        (ipaddress.ip_address("fd00::1"), ValueType.IP_ADDRESS),
        (b"\x00", ValueType.BYTES),
        ({"a": "b"}, ValueType.STRING_MAP),
    ],
)
def test_infer_value_type(value: object, expected: ValueType) -> None:
    assert infer_value_type(value) is expected
    assert conforms(value, expected)


def test_infer_rejects_naive_datetime_and_unknown_types() -> None:
    with pytest.raises(TypeError, match="timezone-aware"):
        infer_value_type(datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="list"):
        infer_value_type([1])


def test_string_like_types_conform_to_str() -> None:
    for vt in (ValueType.EMAIL_ADDRESS, ValueType.URI, ValueType.DNS_NAME, ValueType.STRING):
        assert vt.is_string_like
        assert conforms("x", vt)
    assert not ValueType.INT64.is_string_like
    assert not conforms(1, ValueType.STRING)
    assert not conforms(True, ValueType.INT64)
    assert not conforms(object(), ValueType.INT64)


def test_istio_manifest_vocabulary() -> None:
    assert ISTIO_MANIFEST["source.ip"] is ValueType.IP_ADDRESS
    assert ISTIO_MANIFEST["request.headers"] is ValueType.STRING_MAP
    assert ISTIO_MANIFEST["response.duration"] is ValueType.DURATION
    assert ISTIO_MANIFEST["connection.mtls"] is ValueType.BOOL
    assert ISTIO_MANIFEST["destination.service.host"] is ValueType.STRING
    assert ISTIO_MANIFEST["request.time"] is ValueType.TIMESTAMP
    assert "destination.service.host" in ISTIO_MANIFEST
    assert "source.service.host" not in ISTIO_MANIFEST


def test_manifest_merge_and_conflict() -> None:
    extra = AttributeManifest([AttributeInfo("custom.ratio", ValueType.DOUBLE, "a ratio")])
    merged = ISTIO_MANIFEST.merged(extra)
    assert merged["custom.ratio"] is ValueType.DOUBLE
    assert merged.info("custom.ratio").description == "a ratio"
    assert len(merged) == len(ISTIO_MANIFEST) + 1
    with pytest.raises(ValueError, match=r"'source\.ip' declared as IP_ADDRESS and as STRING"):
        ISTIO_MANIFEST.merged(AttributeManifest.from_types({"source.ip": ValueType.STRING}))


Read = tuple[str, str | None]
_reads = st.lists(
    st.tuples(st.sampled_from(["a", "b", "m", "z"]), st.none() | st.sampled_from(["k", "x", ""])), max_size=8
)


@settings(max_examples=300)
@given(_reads, _reads)
def test_referenced_is_sorted_reads_whatever_was_read_before(first: list[Read], second: list[Read]) -> None:
    values: dict[str, AttributeValue] = {"a": "1", "m": {"k": "v"}, "z": 3}
    for reads in (first, second, first):
        bag = TrackingBag(values)
        expected: dict[tuple[str, str | None], Condition] = {}
        for name, key in reads:
            if key is None or name != "m":
                found = bag.get(name)
                expected[(name, None)] = Condition.ABSENCE if found is None else Condition.EXACT
            else:
                item = bag.get_map_value(name, key)
                expected[(name, key)] = Condition.ABSENCE if item is None else Condition.EXACT
        want = sorted(
            (AttributeMatch(name, cond, key) for (name, key), cond in expected.items()),
            key=lambda m: (m.name, m.map_key is not None, m.map_key or ""),
        )
        got = bag.referenced()
        assert got == want
        # Each call hands out a list of its own: a caller's change stays with that caller.
        got.append(AttributeMatch("extra", Condition.EXACT))
        assert bag.referenced() == want
