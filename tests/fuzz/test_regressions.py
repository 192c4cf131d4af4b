"""Inputs the fuzzer once crashed on, each kept as a file in tests/fuzz/regressions/<target>/ and
replayed through its target, plus a readable form of each that names the refusal it must now get."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixer.api._envoy import EnvoyRequestError
from mixer.api.envoy_accesslog import message_bags
from mixer.api.envoy_authz import check_attributes
from mixer.proto.envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from mixer.proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest as MixerCheckRequest
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.wire import GLOBAL_WORD_INDEX, WireDecodeError, decode_check_request, decode_report_request
from tests.fuzz.targets import LIMITS, TARGETS

REGRESSIONS = Path(__file__).parent / "regressions"
CASES = sorted(
    (folder.name, path) for folder in REGRESSIONS.iterdir() if folder.is_dir() for path in folder.iterdir()
)


def test_each_regression_folder_is_a_target() -> None:
    assert CASES
    assert {name for name, _ in CASES} <= set(TARGETS)


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_a_crashing_input_is_now_refused_or_accepted(name: str, path: Path) -> None:
    # The target catches only the documented errors: anything else fails the test.
    TARGETS[name].run(path.read_bytes())


@pytest.mark.parametrize("seconds", [2**62, -(2**62), 253_402_300_800, -62_135_596_801])
def test_an_ext_authz_time_outside_datetime_is_invalid_argument(seconds: int) -> None:
    request = CheckRequest()
    request.attributes.request.time.seconds = seconds
    with pytest.raises(EnvoyRequestError, match="out of range") as caught:
        check_attributes(request, limits=LIMITS)
    assert caught.value.code.name == "INVALID_ARGUMENT"


def test_an_ext_authz_time_at_the_edge_of_datetime_is_kept() -> None:
    request = CheckRequest()
    request.attributes.request.time.seconds = 253_402_300_799  # 9999-12-31T23:59:59Z
    assert check_attributes(request, limits=LIMITS)["request.time"].year == 9999  # type: ignore[union-attr]


def test_an_access_log_entry_with_a_time_outside_datetime_is_counted_invalid() -> None:
    message = StreamAccessLogsMessage()
    message.http_logs.log_entry.add().common_properties.start_time.seconds = 2**62
    message.http_logs.log_entry.add().common_properties.start_time.seconds = 1_700_000_000
    kind, bags, invalid = message_bags(message, None, LIMITS)
    assert (kind, len(bags), invalid) == ("http", 1, 1)


@pytest.mark.parametrize("index", [1_000_000_000, -5])
def test_a_timestamp_out_of_range_under_an_unknown_name_is_a_bad_index(index: int) -> None:
    # The value was computed (and overflowed) before its name was looked up; the error path then
    # looked the name up again and raised KeyError instead of WireDecodeError.
    request = MixerCheckRequest()
    request.attributes.timestamps[index].seconds = 2**62
    with pytest.raises(WireDecodeError, match=f"attribute name index {index} out of range"):
        decode_check_request(request.SerializeToString())
    report = ReportRequest()
    report.attributes.add().timestamps[index].seconds = 2**62
    with pytest.raises(WireDecodeError, match=f"attribute name index {index} out of range"):
        decode_report_request(report.SerializeToString())


def test_a_timestamp_out_of_range_under_a_known_name_names_it() -> None:
    request = MixerCheckRequest()
    request.attributes.timestamps[GLOBAL_WORD_INDEX["request.time"]].seconds = 2**62
    with pytest.raises(WireDecodeError, match=r"'request\.time'.* is outside years 1 to 9999"):
        decode_check_request(request.SerializeToString())
