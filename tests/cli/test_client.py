"""`mixer check` and `mixer report` through mixer.cli.main, against the Mixer server test double."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from mixer.cli import build_parser, main
from mixer.decision import CheckOutcome, QuotaRequest
from mixer.status import OK, Code, Status
from tests.cli.test_client_api import DENY, DENY_JSON, QUOTAS, MixerServerDouble, unused_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@pytest.fixture
def server() -> Iterator[MixerServerDouble]:
    double = MixerServerDouble()
    double.start()
    yield double
    double.stop()


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_every_flag_type_arrives_typed(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "check", "--server", server.address,
        "-s", "request.path=/a=b",
        "-s", "source.ip=10.1.2.3",
        "-i", "response.code=503",
        "-d", "custom.ratio=0.5",
        "-b", "connection.mtls=true",
        "-t", "request.time=2026-11-25T10:00:00.5Z",
        "-u", "response.duration=7.25ms",
        "--ip", "destination.ip=2001:db8::1",
        "-m", "request.headers=x-user:jason;accept:*/*",
    ])  # fmt: skip
    assert code == 0
    (received,) = server.checks
    values = received.bag.to_dict()
    assert values == {
        "request.path": "/a=b",
        # A string flag for an attribute the manifest types IP_ADDRESS goes as address bytes.
        "source.ip": ipaddress.ip_address("10.1.2.3"),
        "response.code": 503,
        "custom.ratio": 0.5,
        "connection.mtls": True,
        "request.time": datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC),
        "response.duration": timedelta(microseconds=7250),
        "destination.ip": ipaddress.ip_address("2001:db8::1"),
        "request.headers": {"x-user": "jason", "accept": "*/*"},
    }
    assert [type(values[name]) for name in ("response.code", "custom.ratio", "connection.mtls")] == [
        int,
        float,
        bool,
    ]
    (answer,) = _lines(capsys.readouterr().out)
    assert answer["status"] == {"code": "OK", "code_number": 0, "message": ""}
    assert answer["valid_duration"] == "1m0s"
    assert answer["valid_use_count"] == 10000


def test_quotas_and_dedup_arrive(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    server.outcome = QUOTAS
    code = main([
        "check", "--server", server.address, "-s", "source.uid=u1",
        "--quota", "requestcount=5,best_effort", "--quota", "bytes=100", "--dedup", "retry-7",
    ])  # fmt: skip
    assert code == 0
    (received,) = server.checks
    assert received.deduplication_id == "retry-7"
    assert received.quotas == {"requestcount": QuotaRequest(5, True), "bytes": QuotaRequest(100, False)}
    (answer,) = _lines(capsys.readouterr().out)
    assert answer["quotas"] == {
        "bytes": {
            "granted_amount": 0,
            "valid_duration": "0s",
            "status": {"code": "RESOURCE_EXHAUSTED", "code_number": 8, "message": "quota exhausted"},
            "referenced_attributes": [],
        },
        "requestcount": {
            "granted_amount": 3,
            "valid_duration": "1.5s",
            "status": {"code": "OK", "code_number": 0, "message": ""},
            "referenced_attributes": [{"name": "source.uid", "condition": "EXACT", "map_key": None}],
        },
    }
    assert answer["route_directive"] is None


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("bytes", "want NAME=AMOUNT"),
        ("=5", "want NAME=AMOUNT"),
        ("bytes=many", "not an integer"),
        ("bytes=-1", "must not be negative"),
        ("bytes=5,eventually", "only ',best_effort'"),
    ],
)
def test_bad_quota_flag_is_a_usage_error(
    flag: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check", "--quota", flag])
    assert caught.value.code == 2
    assert fragment in capsys.readouterr().err


def test_same_quota_twice_is_an_error(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--server", server.address, "--quota", "a=1", "--quota", "a=2"]) == 1
    assert "--quota a given twice" in capsys.readouterr().err
    assert server.checks == []


def test_denial_is_printed_and_exits_0(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    server.outcome = DENY
    assert main(["check", "--server", server.address, "-s", "source.namespace=x"]) == 0
    (answer,) = _lines(capsys.readouterr().out)
    assert answer == DENY_JSON


def test_fail_on_deny_exits_3(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    server.outcome = DENY
    assert main(["check", "--server", server.address, "--fail-on-deny"]) == 3
    assert _lines(capsys.readouterr().out)[0]["status"]["code"] == "PERMISSION_DENIED"
    server.outcome = CheckOutcome(OK, timedelta(seconds=1), 1)
    assert main(["check", "--server", server.address, "--fail-on-deny"]) == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_repeat_sends_n_and_summarises(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str], concurrency: int
) -> None:
    calls = 0

    def every_third_denied(_: object) -> CheckOutcome:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            return CheckOutcome(Status(Code.PERMISSION_DENIED, "no"), timedelta(seconds=1), 1)
        return CheckOutcome(OK, timedelta(seconds=1), 1)

    server.outcome = every_third_denied
    code = main([
        "check", "--server", server.address, "-s", "request.path=/x", "--dedup", "same",
        "--repeat", "9", "--concurrency", str(concurrency),
    ])  # fmt: skip
    assert code == 0
    assert len(server.checks) == 9
    assert {c.deduplication_id for c in server.checks} == {"same"}
    *answers, last = _lines(capsys.readouterr().out)
    assert len(answers) == 9
    assert sorted(a["status"]["code"] for a in answers) == ["OK"] * 6 + ["PERMISSION_DENIED"] * 3
    summary = last["summary"]
    assert summary["requests"] == 9
    assert summary["concurrency"] == concurrency
    assert summary["by_status"] == {"OK": 6, "PERMISSION_DENIED": 3}
    assert summary["call_errors"] == {}
    latency = summary["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert set(latency) == {"min", "p50", "p99", "max", "mean"}
    assert summary["elapsed_s"] >= 0


def test_without_dedup_every_call_is_a_new_request(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    # One shared (empty) id would make the server replay the first quota answer to every call.
    code = main(
        ["check", "--server", server.address, "--quota", "requestcount=1", "--repeat", "5", "--quiet"]
    )
    assert code == 0
    ids = [c.deduplication_id for c in server.checks]
    assert len(ids) == 5
    assert all(ids)
    assert len(set(ids)) == 5
    capsys.readouterr()


def test_repeat_quiet_prints_only_the_summary(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    server.outcome = DENY
    assert main(["check", "--server", server.address, "--repeat", "3", "--quiet", "--fail-on-deny"]) == 3
    (only,) = _lines(capsys.readouterr().out)
    assert only["summary"]["by_status"] == {"PERMISSION_DENIED": 3}


def test_single_call_prints_no_summary(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--server", server.address]) == 0
    (only,) = _lines(capsys.readouterr().out)
    assert "summary" not in only


@pytest.mark.parametrize("command", ["check", "report"])
def test_unreachable_server_exits_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{unused_port()}"
    assert main([command, "--server", target, "--timeout", "2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"cannot reach mixer at {target}: ")


def test_unreachable_with_repeat_counts_errors(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{unused_port()}"
    assert main(["check", "--server", target, "--timeout", "2", "--repeat", "2", "--fail-on-deny"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("cannot reach mixer") == 2
    (summary,) = _lines(captured.out)
    assert summary["summary"]["call_errors"] == {"UNAVAILABLE": 2}
    assert summary["summary"]["by_status"] == {}


def test_timeout_is_deadline_exceeded(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    server.delay = 2.0
    assert main(["check", "--server", server.address, "--timeout", "0.2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mixer at {server.address}: Check failed: DEADLINE_EXCEEDED: ")
    assert main(["report", "--server", server.address, "--timeout", "0.2"]) == 2
    assert "Report failed: DEADLINE_EXCEEDED" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "nan"])
def test_bad_timeout_is_a_usage_error(timeout: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check", "--timeout", timeout])
    assert caught.value.code == 2


def test_report_bag_decodes_back_exactly(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "report", "--server", server.address,
        "-s", "destination.service.host=reviews.default.svc.cluster.local",
        "-s", "context.reporter.kind=inbound",
        "-i", "response.code=200",
        "-d", "custom.ratio=1.5",
        "-b", "connection.mtls=false",
        "-t", "request.time=2026-01-02T03:04:05+02:00",
        "-u", "response.duration=1h30m",
        "--ip", "source.ip=192.168.0.9",
        "-m", "request.headers=x-request-id:abc;user-agent:curl/8",
    ])  # fmt: skip
    assert code == 0
    assert _lines(capsys.readouterr().out) == [{"status": "OK"}]
    assert server.reports == [
        [
            {
                "destination.service.host": "reviews.default.svc.cluster.local",
                "context.reporter.kind": "inbound",
                "response.code": 200,
                "custom.ratio": 1.5,
                "connection.mtls": False,
                "request.time": datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC),
                "response.duration": timedelta(hours=1, minutes=30),
                "source.ip": ipaddress.ip_address("192.168.0.9"),
                "request.headers": {"x-request-id": "abc", "user-agent": "curl/8"},
            }
        ]
    ]


@pytest.mark.parametrize("encoding", ["independent", "delta"])
def test_report_count_sends_identical_bags_in_one_request(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    bag = {"request.path": "/a", "request.size": 12}
    code = main([
        "report", "--server", server.address, "-s", "request.path=/a", "-i", "request.size=12",
        "--count", "3", "--encoding", encoding,
    ])  # fmt: skip
    assert code == 0
    assert server.reports == [[bag, bag, bag]]
    (request,) = server.report_requests
    assert request.repeated_attributes_semantics == (1 if encoding == "independent" else 0)
    assert capsys.readouterr().out.strip() == '{"status": "OK"}'


def test_report_repeat_sends_n_requests(
    server: MixerServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--server", server.address, "--repeat", "4", "--concurrency", "2"]) == 0
    assert len(server.reports) == 4
    *answers, last = _lines(capsys.readouterr().out)
    assert answers == [{"status": "OK"}] * 4
    assert last["summary"]["by_status"] == {"OK": 4}


def test_report_failure_exits_2(server: MixerServerDouble, capsys: pytest.CaptureFixture[str]) -> None:
    server.report_error = (grpc.StatusCode.UNKNOWN, "stdio: disk full")
    assert main(["report", "--server", server.address]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"mixer at {server.address}: Report failed: UNKNOWN: stdio: disk full"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-i", "request.size=big"], "invalid int64 'big'"),
        (["-s", "novalue"], "want name=value"),
        (["-i", "request.path=5"], "'request.path' is declared STRING"),
        (["-s", "source.ip=not-an-ip"], "not an IP address"),
    ],
)
@pytest.mark.parametrize("command", ["check", "report"])
def test_bad_attribute_exits_1_without_sending(
    server: MixerServerDouble,
    capsys: pytest.CaptureFixture[str],
    command: str,
    argv: list[str],
    fragment: str,
) -> None:
    assert main([command, "--server", server.address, *argv]) == 1
    assert fragment in capsys.readouterr().err
    assert server.checks == []
    assert server.reports == []


def test_default_server_and_timeout() -> None:
    args = build_parser().parse_args(["check"])
    assert (args.server, args.timeout, args.repeat, args.concurrency) == ("127.0.0.1:9091", 5.0, 1, 1)


def _documented_commands() -> list[list[str]]:
    commands: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for operator in ("|", ">"):
                if operator in words:
                    words = words[: words.index(operator)]
            # `serve` runs until stopped and `--version` exits: tests/cli/test_doc_examples.py runs those.
            if words[:1] == ["mixer"] and words[1:2] not in (["serve"], ["--version"]):
                commands.append(words[1:])
    return commands


def test_documented_commands_parse() -> None:
    commands = _documented_commands()
    assert {argv[0] for argv in commands} >= {"version", "eval", "validate", "adapters", "check", "report"}
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)
