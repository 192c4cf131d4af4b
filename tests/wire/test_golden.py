"""The messages Istio's own protos wrote: decode them exactly, and write the same content back."""

from __future__ import annotations

import filecmp
from datetime import timedelta
from typing import Any

import pytest

from mixer.attributes import AttributeMatch, Condition
from mixer.decision import CheckOutcome, QuotaOutcome, QuotaRequest
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest, CheckResponse
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.status import Code, Status
from mixer.wire import (
    ReportEncoding,
    build_check_response,
    decode_check_request,
    decode_referenced_attributes,
    decode_report_request,
    encode_check_request,
    encode_report_request,
)
from tests.shared_data import shared_path
from tests.wire._golden import GOLDEN, expected_bag, golden_bytes, golden_json, typed_bag


def test_copies_match_the_shared_golden_files() -> None:
    # The copies in tests/ are the reference the other tests read; this keeps them equal to the
    # originals.
    shared_golden = shared_path("wire", "golden")
    names = sorted(p.name for p in shared_golden.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(shared_golden, GOLDEN, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert len(match) == len(names)


# --- CheckRequest ----------------------------------------------------------------------------


def test_check_request_decodes_exactly() -> None:
    expected = golden_json("check_request")
    decoded = decode_check_request(golden_bytes("check_request"))
    assert typed_bag(decoded.bag.to_dict()) == expected_bag(expected["attributes"])
    assert decoded.deduplication_id == expected["deduplication_id"]
    assert decoded.global_word_count == expected["global_word_count"]
    assert decoded.quotas == {
        name: QuotaRequest(q["amount"], q["best_effort"]) for name, q in expected["quotas"].items()
    }


def test_check_request_reencodes_to_the_same_content() -> None:
    decoded = decode_check_request(golden_bytes("check_request"))
    request = encode_check_request(
        decoded.bag, deduplication_id=decoded.deduplication_id, quotas=decoded.quotas
    )
    again = decode_check_request(request.SerializeToString())
    assert again.bag == decoded.bag
    assert typed_bag(again.bag.to_dict()) == typed_bag(decoded.bag.to_dict())
    assert again.quotas == decoded.quotas
    assert again.deduplication_id == decoded.deduplication_id
    assert again.global_word_count == 222
    # Same words in the message dictionary, whatever their order: nothing global was spelled out.
    golden = CheckRequest.FromString(golden_bytes("check_request"))
    assert sorted(request.attributes.words) == sorted(golden.attributes.words)


# --- ReportRequest ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("report_delta", ReportEncoding.DELTA_ENCODING),
        ("report_independent", ReportEncoding.INDEPENDENT_ENCODING),
    ],
)
def test_report_decodes_to_the_listed_records(name: str, encoding: ReportEncoding) -> None:
    expected = golden_json(name)
    message = ReportRequest.FromString(golden_bytes(name))
    assert message.repeated_attributes_semantics == encoding.value
    bags = decode_report_request(golden_bytes(name))
    assert [typed_bag(bag.to_dict()) for bag in bags] == [expected_bag(r) for r in expected["records"]]


@pytest.mark.parametrize("use_default_words", [True, False])
@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("report_delta", ReportEncoding.DELTA_ENCODING),
        ("report_independent", ReportEncoding.INDEPENDENT_ENCODING),
    ],
)
def test_report_reencodes_to_the_same_records(
    name: str, encoding: ReportEncoding, use_default_words: bool
) -> None:
    bags = decode_report_request(golden_bytes(name))
    request = encode_report_request(bags, encoding, use_default_words=use_default_words)
    assert request.repeated_attributes_semantics == encoding.value
    assert decode_report_request(request.SerializeToString()) == bags


def test_report_delta_elements_hold_only_changes() -> None:
    bags = decode_report_request(golden_bytes("report_delta"))
    request = encode_report_request(bags, ReportEncoding.DELTA_ENCODING, use_default_words=False)
    golden = ReportRequest.FromString(golden_bytes("report_delta"))
    sizes = [len(e.strings) + len(e.int64s) + len(e.string_maps) for e in request.attributes]
    golden_sizes = [len(e.strings) + len(e.int64s) + len(e.string_maps) for e in golden.attributes]
    assert sizes == golden_sizes == [3, 1, 2]


# --- CheckResponse ---------------------------------------------------------------------------


def _response_fields(response: CheckResponse) -> dict[str, Any]:
    """A CheckResponse in the golden JSON's form, referenced attributes decoded to names."""
    precondition = response.precondition
    referenced: list[dict[str, str]] = []
    for match in decode_referenced_attributes(precondition.referenced_attributes):
        entry = {"name": match.name}
        if match.map_key is not None:
            entry["map_key"] = match.map_key
        entry["condition"] = match.condition.name
        referenced.append(entry)
    quotas: dict[str, Any] = {}
    for name, quota in response.quotas.items():
        assert quota.valid_duration.nanos == 0
        assert not quota.HasField("status")
        assert not quota.HasField("referenced_attributes")
        quotas[name] = {
            "granted_amount": quota.granted_amount,
            "valid_duration_seconds": quota.valid_duration.seconds,
        }
    assert precondition.valid_duration.nanos == 0
    assert not precondition.HasField("route_directive")
    return {
        "message": response.DESCRIPTOR.full_name,
        "precondition": {
            "status": {"code": precondition.status.code, "message": precondition.status.message},
            "valid_duration_seconds": precondition.valid_duration.seconds,
            "valid_use_count": precondition.valid_use_count,
            "referenced_attributes": referenced,
        },
        "quotas": quotas,
    }


def _golden_response_as_built() -> CheckResponse:
    outcome = CheckOutcome(
        Status(Code.PERMISSION_DENIED, "deny-handler: not allowed"),
        timedelta(seconds=5),
        1000,
        referenced=[
            AttributeMatch("destination.service.name", Condition.EXACT),
            AttributeMatch("request.headers", Condition.EXACT, "x-user"),
            AttributeMatch("source.principal", Condition.ABSENCE),
        ],
        quotas={"requestcount": QuotaOutcome(1, timedelta(seconds=60))},
    )
    return build_check_response(outcome)


def test_check_response_decodes_exactly() -> None:
    response = CheckResponse.FromString(golden_bytes("check_response"))
    assert _response_fields(response) == golden_json("check_response")


def test_check_response_built_from_the_same_content_has_the_same_fields() -> None:
    built = _golden_response_as_built()
    again = CheckResponse.FromString(built.SerializeToString())
    assert _response_fields(again) == golden_json("check_response")
    assert again == CheckResponse.FromString(golden_bytes("check_response"))
