"""The compiled decoder against the pure-Python one: the same bags, the same errors, for any input.

Each property decodes one input twice, once with ``mixer.wire._fast.cdecode`` set to the compiled
module and once with it set to None (the pure-Python path), and compares the outcomes
(tests/wire/_equivalence.py): every bag's names, value types and values, or the error's type and
message. Inputs are requests built from
arbitrary protos (indices in and out of range, values at and past their limits, small limits) and
arbitrary mutations of the golden messages.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.attributes import ISTIO_MANIFEST, AttributeBag, ValueType
from mixer.proto.istio.mixer.v1.attributes_pb2 import CompressedAttributes
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.wire import (
    GLOBAL_WORD_COUNT,
    GLOBAL_WORD_INDEX,
    ReportReader,
    decode_check_request,
    decode_report_request,
)
from mixer.wire import _cdecode as compiled
from tests.wire._equivalence import both, decoder
from tests.wire._golden import GOLDEN

SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def _read_in_slices(
    data: bytes, manifest: Mapping[str, ValueType], limits: dict[str, int], slice_: int
) -> object:
    reader = ReportReader(data, manifest, max_records=limits["max_records"], **_attribute_limits(limits))
    while not reader.scan(slice_):
        pass
    bags: list[AttributeBag] = []
    while not reader.done:
        bags += reader.read(slice_)
    return bags


def _attribute_limits(limits: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in limits.items() if k != "max_records"}


def _assert_same_report(data: bytes, limits: dict[str, int], slice_: int) -> None:
    manifest = REPORT_MANIFEST
    fast, pure = both(lambda: decode_report_request(data, manifest, **limits))
    assert fast == pure
    fast, pure = both(lambda: _read_in_slices(data, manifest, limits, slice_))
    assert fast == pure


def _assert_same_check(data: bytes, limits: dict[str, int]) -> None:
    fast, pure = both(lambda: decode_check_request(data, CHECK_MANIFEST, **_attribute_limits(limits)))
    assert fast == pure


# Reports decode against Istio's manifest (the precomputed IP names), Checks against a plain dict
# (names looked up per attribute): both say source.ip and destination.ip are IP addresses.
REPORT_MANIFEST = ISTIO_MANIFEST
CHECK_MANIFEST = {"source.ip": ValueType.IP_ADDRESS, "destination.ip": ValueType.IP_ADDRESS}

# --- requests built from protos ----------------------------------------------------------------

_IP_INDICES = [GLOBAL_WORD_INDEX["source.ip"], GLOBAL_WORD_INDEX["destination.ip"]]
int32s = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Mostly valid indices (global, or the message's -1, -2, ...), sometimes any int32.
indices = st.one_of(
    st.integers(min_value=0, max_value=GLOBAL_WORD_COUNT - 1),
    st.integers(min_value=-4, max_value=-1),
    st.sampled_from(_IP_INDICES),
    st.integers(min_value=GLOBAL_WORD_COUNT - 2, max_value=GLOBAL_WORD_COUNT + 2),
    int32s,
)
seconds = st.one_of(
    st.integers(min_value=-62_135_596_801, max_value=253_402_300_800),
    st.integers(min_value=-315_576_000_001, max_value=315_576_000_001),
    st.sampled_from([-62_135_596_800, 253_402_300_799, 0, -1, 315_576_000_000]),
    int64s,
)
nanos = st.one_of(
    st.integers(min_value=0, max_value=999_999_999), st.sampled_from([0, 1000, 999_999_000]), int32s
)
raw_bytes = st.one_of(st.binary(max_size=20), st.sampled_from([b"\x0a\x00\x00\x01", bytes(16), b"\x01" * 5]))
text = st.one_of(st.text(max_size=8), st.sampled_from(["", "x" * 40, "source.ip", "\u00e9\U0001f600"]))


@st.composite
def compressed_attributes(draw: st.DrawFn) -> CompressedAttributes:
    msg = CompressedAttributes()
    msg.words.extend(draw(st.lists(text, max_size=4)))
    for k, v in draw(st.dictionaries(indices, indices, max_size=6)).items():
        msg.strings[k] = v
    for k, i in draw(st.dictionaries(indices, int64s, max_size=3)).items():
        msg.int64s[k] = i
    for k, d in draw(st.dictionaries(indices, st.floats(), max_size=2)).items():
        msg.doubles[k] = d
    for k, b in draw(st.dictionaries(indices, st.booleans(), max_size=2)).items():
        msg.bools[k] = b
    for k, (s, n) in draw(st.dictionaries(indices, st.tuples(seconds, nanos), max_size=2)).items():
        msg.timestamps[k].seconds = s
        msg.timestamps[k].nanos = n
    for k, (s, n) in draw(st.dictionaries(indices, st.tuples(seconds, nanos), max_size=2)).items():
        msg.durations[k].seconds = s
        msg.durations[k].nanos = n
    for k, raw in draw(st.dictionaries(indices, raw_bytes, max_size=3)).items():
        msg.bytes[k] = raw
    for k, entries in draw(
        st.dictionaries(indices, st.dictionaries(indices, indices, max_size=4), max_size=2)
    ).items():
        msg.string_maps[k].SetInParent()
        for key, value in entries.items():
            msg.string_maps[k].entries[key] = value
    return msg


limits = st.fixed_dictionaries(
    {
        "max_records": st.sampled_from([0, 1, 3, 100]),
        "max_attributes": st.sampled_from([-1, 0, 5, 12, 1000]),
        "max_string_length": st.sampled_from([-1, 0, 4, 16, 1000]),
        "max_map_entries": st.sampled_from([-1, 0, 2, 1000]),
    }
)
word_counts = st.one_of(st.just(GLOBAL_WORD_COUNT), st.integers(min_value=0, max_value=GLOBAL_WORD_COUNT + 1))


@st.composite
def report_requests(draw: st.DrawFn) -> ReportRequest:
    request = ReportRequest()
    request.attributes.extend(draw(st.lists(compressed_attributes(), max_size=5)))
    request.default_words.extend(draw(st.lists(text, max_size=4)))
    request.global_word_count = draw(word_counts)
    request.repeated_attributes_semantics = draw(st.sampled_from([0, 1, 0, 1, 2, -1]))  # type: ignore[assignment]
    return request


@st.composite
def check_requests(draw: st.DrawFn) -> CheckRequest:
    request = CheckRequest()
    if draw(st.booleans()):
        request.attributes.CopyFrom(draw(compressed_attributes()))
    request.global_word_count = draw(word_counts)
    request.deduplication_id = draw(text)
    for name, (amount, best_effort) in draw(
        st.dictionaries(text, st.tuples(int64s, st.booleans()), max_size=3)
    ).items():
        request.quotas[name].amount = amount
        request.quotas[name].best_effort = best_effort
    return request


@SETTINGS
@given(report_requests(), limits, st.integers(min_value=1, max_value=4))
def test_reports_built_from_protos_decode_the_same(
    request: ReportRequest, limits: dict[str, int], slice_: int
) -> None:
    _assert_same_report(request.SerializeToString(), limits, slice_)


@SETTINGS
@given(check_requests(), limits)
def test_checks_built_from_protos_decode_the_same(request: CheckRequest, limits: dict[str, int]) -> None:
    _assert_same_check(request.SerializeToString(), limits)


# --- mutated golden messages -------------------------------------------------------------------

GOLDEN_MESSAGES = {path.name: path.read_bytes() for path in sorted(GOLDEN.glob("*.bin"))}
_DEFAULTS = {
    "max_records": 10_000,
    "max_attributes": 1000,
    "max_string_length": 256 * 1024,
    "max_map_entries": 1000,
}


@st.composite
def mutated_golden(draw: st.DrawFn) -> bytes:
    data = bytearray(GOLDEN_MESSAGES[draw(st.sampled_from(sorted(GOLDEN_MESSAGES)))])
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        size = len(data)
        at = draw(st.integers(min_value=0, max_value=size))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        if op in ("flip", "set") and at < size:
            if op == "flip":
                data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
            else:
                data[at] = draw(st.sampled_from([0x00, 0x01, 0x08, 0x0A, 0x12, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=40))]
    return bytes(data)


@SETTINGS
@given(mutated_golden(), st.one_of(st.just(_DEFAULTS), limits), st.integers(min_value=1, max_value=4))
def test_mutated_golden_messages_decode_the_same(data: bytes, limits: dict[str, int], slice_: int) -> None:
    _assert_same_report(data, limits, slice_)
    _assert_same_check(data, limits)


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_the_same(data: bytes) -> None:
    _assert_same_report(data, _DEFAULTS, 2)
    _assert_same_check(data, _DEFAULTS)


# --- examples the properties might take long to find -------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x0a\x04\x12\x02\x08\x01" * 2, id="one name index twice"),
        pytest.param(b"\x0a\x06\x12\x04\x08\x02\x08\x04", id="map key sent twice in one entry"),
        pytest.param(b"\x0a\x08\x12\x02\x08\x02\x12\x02\x08\x02", id="map entry sent twice"),
        pytest.param(b"\x0a\x03\x0a\x01\xff", id="word not UTF-8"),
        pytest.param(b"\x0a\x03\x0a\x01\x80", id="word cut UTF-8"),
        pytest.param(b"\x0a\x05\x0a\x03\xed\xa0\x80", id="word a UTF-8 surrogate"),
        pytest.param(b"\x0a\x02\x0b\x0c", id="group"),
        pytest.param(b"\x8a\x00\x00", id="element under an overlong tag"),
        pytest.param(b"\x0a\x0b\x18" + b"\xff" * 9 + b"\x01", id="unknown ten-byte varint"),
        pytest.param(b"\x0a\x0c\x18" + b"\xff" * 10 + b"\x01", id="eleven-byte varint"),
        pytest.param(
            b"\x0a\x0c\x32\x0a\x08\x02\x12\x06\x08\x01\x12\x02\x10\x05", id="timestamp sent twice, merged"
        ),
        pytest.param(b"\x0a\x02\x42\x00", id="empty bytes entry"),
        pytest.param(b"\x20\x05\x0a\x00", id="unknown semantics"),
        pytest.param(b"\x18\xff\xff\xff\xff\x0f", id="global word count past the dictionary"),
    ],
)
def test_edge_cases_decode_the_same(data: bytes) -> None:
    _assert_same_report(data, _DEFAULTS, 1)
    _assert_same_check(data, _DEFAULTS)


def test_the_fast_path_decodes_istio_requests_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without this the properties would also hold if the compiled path always handed back.
    calls: list[object] = []

    def no_pure_python(*args: object) -> object:
        calls.append(args)
        raise AssertionError("the pure-Python path decoded attributes")

    monkeypatch.setattr("mixer.wire._decode._decode_values", no_pure_python)
    with decoder(compiled):
        delta = decode_report_request(GOLDEN_MESSAGES["report_delta.bin"])
        independent = decode_report_request(GOLDEN_MESSAGES["report_independent.bin"])
        check = decode_check_request(GOLDEN_MESSAGES["check_request.bin"])
    assert len(delta) > 1
    assert len(independent) > 1
    assert len(check.bag) > 0
    assert calls == []


def test_ip_addresses_come_from_the_shared_cache() -> None:
    request = CompressedAttributes()
    request.bytes[GLOBAL_WORD_INDEX["source.ip"]] = bytes([10, 1, 2, 3])
    data = CheckRequest(attributes=request).SerializeToString()
    with decoder(compiled):
        first = decode_check_request(data).bag.get("source.ip")
        second = decode_check_request(data).bag.get("source.ip")
    assert first == ipaddress.IPv4Address("10.1.2.3")
    assert first is second
