"""The hand-written CheckResponse (``encode_check_response``) is protobuf's own serialization of
``build_check_response``'s message: byte for byte with at most one quota (a map's entries may be
written in another order), and the same message when parsed back in every case."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.cache import cache_stats
from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult, QuotaOutcome
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.status import Code, Status
from mixer.values import AttributeMatch, Condition, NanoDuration
from mixer.wire import GLOBAL_WORDS, build_check_response, encode_check_response, encode_check_response_python
from mixer.wire._check import _quota_results, _referenced_bytes, compiled_encoder

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
statuses = st.builds(Status, st.sampled_from(list(Code)), texts)
durations = st.one_of(
    st.just(timedelta(0)),
    st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=400)),
    st.integers(min_value=-(10**12), max_value=10**12).map(lambda us: timedelta(microseconds=us)),
)
names = st.one_of(st.sampled_from(GLOBAL_WORDS[:40]), texts)
matches = st.lists(
    st.builds(AttributeMatch, names, st.sampled_from(list(Condition)), st.none() | names), max_size=5
)
operations = st.lists(
    st.builds(HeaderOperationResult, texts, texts, st.sampled_from(list(HeaderOperationKind))), max_size=3
)
quota_outcomes = st.builds(
    QuotaOutcome,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    durations,
    statuses,
    matches,
)


@st.composite
def outcomes(draw: st.DrawFn, max_quotas: int = 3) -> CheckOutcome:
    return CheckOutcome(
        status=draw(statuses),
        valid_duration=draw(durations),
        valid_use_count=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        referenced=draw(matches),
        request_header_operations=draw(operations),
        response_header_operations=draw(operations),
        quotas=draw(st.dictionaries(texts, quota_outcomes, max_size=max_quotas)),
    )


def _details(count: int) -> list[AnyProto]:
    packed = []
    for i in range(count):
        detail = AnyProto()
        detail.Pack(Duration(seconds=i + 1))
        packed.append(detail)
    return packed


@settings(max_examples=500, deadline=None)
@given(
    outcome=outcomes(max_quotas=1),
    details=st.integers(min_value=0, max_value=2),
    code=st.integers(min_value=0, max_value=599),
    body=texts,
)
def test_the_bytes_are_protobufs(outcome: CheckOutcome, details: int, code: int, body: str) -> None:
    kwargs = {"details": _details(details), "direct_response_code": code, "direct_response_body": body}
    reference = build_check_response(outcome, **kwargs).SerializeToString()  # type: ignore[arg-type]
    assert encode_check_response(outcome, **kwargs) == reference  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(outcome=outcomes())
def test_several_quotas_read_back_as_the_same_message(outcome: CheckOutcome) -> None:
    parsed = CheckResponse.FromString(encode_check_response(outcome))
    assert parsed == build_check_response(outcome)


def test_a_duration_out_of_range_is_refused_as_the_message_refuses_it() -> None:
    outcome = CheckOutcome(Status(), timedelta(days=999_999_999), 1)
    with pytest.raises(ValueError, match=r"outside google\.protobuf\.Duration") as reference:
        build_check_response(outcome)
    with pytest.raises(ValueError) as ours:
        encode_check_response(outcome)
    assert str(ours.value) == str(reference.value)


@settings(max_examples=200, deadline=None)
@given(outcome=outcomes(max_quotas=1))
def test_an_answer_repeated_from_the_cache_is_still_protobufs(outcome: CheckOutcome) -> None:
    reference = build_check_response(outcome).SerializeToString()
    assert encode_check_response(outcome) == reference
    assert encode_check_response(outcome) == reference


def test_referenced_attributes_are_written_once_per_list_and_told_apart_by_condition() -> None:
    cache = next(stats for name, stats in cache_stats().items() if name.endswith("referenced attributes"))
    exact = [
        AttributeMatch("source.ip", Condition.EXACT),
        AttributeMatch("request.headers", Condition.EXACT, "x-b"),
    ]
    absent = [
        AttributeMatch("source.ip", Condition.ABSENCE),
        AttributeMatch("request.headers", Condition.EXACT, "x-b"),
    ]
    answers: dict[str, bytes] = {}
    for _ in range(3):
        for name, referenced in (("exact", exact), ("absent", absent)):
            outcome = CheckOutcome(Status(), timedelta(seconds=5), 3, referenced=list(referenced))
            answer = encode_check_response(outcome)
            assert answer == build_check_response(outcome).SerializeToString()
            assert answers.setdefault(name, answer) == answer
    assert answers["exact"] != answers["absent"]
    after = next(stats for name, stats in cache_stats().items() if name.endswith("referenced attributes"))
    assert after.hits - cache.hits >= 4


# -- the compiled writer ----------------------------------------------------------------------------

wide_durations = st.one_of(
    durations,
    st.integers(min_value=-(10**19), max_value=10**19).map(NanoDuration),
    st.sampled_from(
        [
            timedelta(seconds=315_576_000_000),
            timedelta(seconds=315_576_000_000, microseconds=1),
            timedelta(seconds=315_576_000_001),
            -timedelta(seconds=315_576_000_000, microseconds=999_999),
            -timedelta(seconds=315_576_000_001),
            timedelta.max,
            timedelta.min,
            timedelta(microseconds=-1),
        ]
    ),
)


def _answer_or_error(encode: Callable[[CheckOutcome], bytes], outcome: CheckOutcome) -> object:
    try:
        return encode(outcome)
    except (ValueError, UnicodeError) as exc:
        return (type(exc), str(exc))


def test_the_install_built_the_compiled_writer() -> None:
    # Every machine that runs the suite has a C compiler: the install must have built it.
    assert compiled_encoder is not None


@settings(max_examples=500, deadline=None)
@given(
    outcome=outcomes(),
    duration=wide_durations,
    message=st.text(max_size=6),
    uses=st.integers(min_value=-(2**70), max_value=2**70) | st.booleans(),
)
def test_the_compiled_writer_writes_what_python_writes(
    outcome: CheckOutcome, duration: timedelta, message: str, uses: int
) -> None:
    # Lone surrogates, durations past Duration's range, nanosecond durations and use counts past
    # int64 included: the compiled writer writes the answer or leaves it to Python, never another.
    outcome = dataclasses.replace(
        outcome, status=Status(outcome.status.code, message), valid_duration=duration, valid_use_count=uses
    )
    assert compiled_encoder is not None
    python = _answer_or_error(encode_check_response_python, outcome)
    assert _answer_or_error(encode_check_response, outcome) == python
    try:
        head = compiled_encoder.precondition(outcome, _referenced_bytes)
    except UnicodeError:
        assert isinstance(python, tuple)
        return
    if head is not None:
        assert isinstance(python, bytes)
        assert python.startswith(head)
        assert python[len(head) :] == (_quota_results(outcome) if outcome.quotas else b"")
    else:
        # Only what it may leave: a duration that is not an exact timedelta or is out of range,
        # a use count past int64 or a bool.
        left = (
            type(duration) is not timedelta
            or abs(duration) > timedelta(seconds=315_576_000_000, microseconds=999_999)
            or isinstance(uses, bool)
            or not -(2**63) <= uses < 2**63
        )
        assert left


def test_the_compiled_writer_is_the_one_answers_are_written_with() -> None:
    outcome = CheckOutcome(
        Status(),
        timedelta(seconds=5),
        3,
        referenced=[AttributeMatch("source.ip", Condition.EXACT)],
        response_header_operations=[HeaderOperationResult("RateLimit", '"per_minute";r=3;t=42')],
    )
    assert compiled_encoder is not None
    head = compiled_encoder.precondition(outcome, _referenced_bytes)
    assert head is not None
    assert encode_check_response(outcome) == head == encode_check_response_python(outcome)
