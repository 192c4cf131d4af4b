"""mixer.client against a test double of the Mixer server.

:class:`MixerServerDouble` is not the server: it is a grpc.aio server on a free 127.0.0.1 port,
running in its own thread and event loop, that registers raw-bytes handlers under the two method
paths, decodes what arrives with our codec (``mixer.wire``), records it, and answers with
``build_check_response`` of a canned :class:`CheckOutcome`. It lives here so both client test
modules can use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest

from mixer.attributes import AttributeMatch, AttributeValue, Condition
from mixer.client import (
    CHECK_METHOD,
    REPORT_METHOD,
    CheckAnswer,
    MixerCallError,
    MixerClient,
    MixerResponseError,
    RouteDirectiveAnswer,
    SyncMixerClient,
    decode_check_response,
)
from mixer.decision import (
    CheckOutcome,
    HeaderOperationKind,
    HeaderOperationResult,
    QuotaOutcome,
    QuotaRequest,
)
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest, ReportResponse
from mixer.status import OK, Code, Status
from mixer.wire import (
    DecodedCheck,
    ReportEncoding,
    WireDecodeError,
    build_check_response,
    decode_check_request,
    decode_report_request,
)

ALLOW = CheckOutcome(OK, timedelta(minutes=1), 10000)

# --- the test double ----------------------------------------------------------------------------


class MixerServerDouble:
    """A stand-in Mixer server that records decoded requests and answers with canned outcomes."""

    def __init__(self) -> None:
        self.checks: list[DecodedCheck] = []
        #: One list of decoded bags per ReportRequest, and the raw request beside it.
        self.reports: list[list[dict[str, AttributeValue]]] = []
        self.report_requests: list[ReportRequest] = []
        #: The Check answer: an outcome, or a function of the decoded request.
        self.outcome: CheckOutcome | Callable[[DecodedCheck], CheckOutcome] = ALLOW
        self.direct_response_code = 0
        self.direct_response_body = ""
        #: Sent instead of an encoded outcome when set (a malformed answer).
        self.raw_check_response: bytes | None = None
        #: (code, details) to fail the method's calls with.
        self.check_error: tuple[grpc.StatusCode, str] | None = None
        self.report_error: tuple[grpc.StatusCode, str] | None = None
        #: Seconds each handler waits before answering.
        self.delay = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mixer-double", daemon=True)
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        # request_deserializer/response_serializer None: the handlers see and return raw bytes,
        # as the real server's do.
        handler = grpc.method_handlers_generic_handler(
            "istio.mixer.v1.Mixer",
            {
                "Check": grpc.unary_unary_rpc_method_handler(self._check),
                "Report": grpc.unary_unary_rpc_method_handler(self._report),
            },
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def _check(self, request: bytes, context: Any) -> bytes:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.check_error is not None:
            await context.abort(*self.check_error)
        try:
            decoded = decode_check_request(request)
        except WireDecodeError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        self.checks.append(decoded)
        if self.raw_check_response is not None:
            return self.raw_check_response
        outcome = self.outcome(decoded) if callable(self.outcome) else self.outcome
        response = build_check_response(
            outcome,
            direct_response_code=self.direct_response_code,
            direct_response_body=self.direct_response_body,
        )
        return response.SerializeToString()

    async def _report(self, request: bytes, context: Any) -> bytes:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.report_error is not None:
            await context.abort(*self.report_error)
        self.reports.append([bag.to_dict() for bag in decode_report_request(request)])
        self.report_requests.append(ReportRequest.FromString(request))
        return ReportResponse().SerializeToString()


def unused_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def mixer_double() -> Iterator[MixerServerDouble]:
    server = MixerServerDouble()
    server.start()
    yield server
    server.stop()


# --- data -----------------------------------------------------------------------------------------

EVERY_TYPE: dict[str, AttributeValue] = {
    "request.path": "/reviews/1",
    "custom.word": "not-in-the-dictionary",
    "response.code": 503,
    "custom.ratio": 0.25,
    "connection.mtls": True,
    "request.time": datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC),
    "response.duration": timedelta(milliseconds=7, microseconds=250),
    "source.ip": ipaddress.ip_address("10.0.0.1"),
    "destination.ip": ipaddress.ip_address("2001:db8::1"),
    "request.headers": {"x-user": "jason", ":authority": "reviews"},
}

DENY = CheckOutcome(
    status=Status(Code.PERMISSION_DENIED, "denier.istio-system: not allowed"),
    valid_duration=timedelta(seconds=5),
    valid_use_count=1000,
    referenced=[
        AttributeMatch("source.labels", Condition.EXACT, "app"),
        AttributeMatch("request.headers", Condition.EXACT, "x-custom-key"),
        AttributeMatch("source.namespace", Condition.ABSENCE),
        AttributeMatch("destination.service.host", Condition.EXACT),
    ],
    request_header_operations=[HeaderOperationResult("x-plan", "gold")],
    response_header_operations=[
        HeaderOperationResult("x-trace", "", HeaderOperationKind.REMOVE),
        HeaderOperationResult("x-why", "denied", HeaderOperationKind.APPEND),
    ],
)

QUOTAS = CheckOutcome(
    status=OK,
    valid_duration=timedelta(seconds=30),
    valid_use_count=200,
    quotas={
        "requestcount": QuotaOutcome(
            granted_amount=3,
            valid_duration=timedelta(seconds=1, milliseconds=500),
            referenced=[AttributeMatch("source.uid", Condition.EXACT)],
        ),
        "bytes": QuotaOutcome(
            granted_amount=0,
            valid_duration=timedelta(0),
            status=Status(Code.RESOURCE_EXHAUSTED, "quota exhausted"),
        ),
    },
)


# --- async client ---------------------------------------------------------------------------------


async def test_check_sends_every_type_and_decodes_the_answer(mixer_double: MixerServerDouble) -> None:
    mixer_double.outcome = DENY
    async with MixerClient(mixer_double.address) as client:
        answer = await client.check(EVERY_TYPE)

    (received,) = mixer_double.checks
    assert received.bag.to_dict() == EVERY_TYPE
    assert received.quotas == {}
    assert received.deduplication_id == ""
    assert answer == CheckAnswer(
        status=DENY.status,
        valid_duration=timedelta(seconds=5),
        valid_use_count=1000,
        referenced=DENY.referenced,
        route_directive=RouteDirectiveAnswer(
            DENY.request_header_operations, DENY.response_header_operations, 0, ""
        ),
    )
    assert answer.code is Code.PERMISSION_DENIED
    assert answer.message == "denier.istio-system: not allowed"
    assert not answer.allowed


async def test_check_sends_quotas_and_dedup_and_decodes_quota_answers(
    mixer_double: MixerServerDouble,
) -> None:
    mixer_double.outcome = QUOTAS
    async with MixerClient(mixer_double.address) as client:
        answer = await client.check(
            {"source.uid": "kubernetes://a"},
            quotas={"requestcount": QuotaRequest(5, best_effort=True), "bytes": QuotaRequest(100)},
            deduplication_id="dedup-1",
        )

    (received,) = mixer_double.checks
    assert received.deduplication_id == "dedup-1"
    assert received.quotas == {
        "requestcount": QuotaRequest(5, best_effort=True),
        "bytes": QuotaRequest(100, best_effort=False),
    }
    assert answer.allowed
    assert answer.route_directive is None
    assert answer.quotas == QUOTAS.quotas


async def test_route_directive_with_a_direct_response(mixer_double: MixerServerDouble) -> None:
    mixer_double.outcome = ALLOW
    mixer_double.direct_response_code = 302
    mixer_double.direct_response_body = "see elsewhere"
    async with MixerClient(mixer_double.address) as client:
        answer = await client.check({})
    assert answer.route_directive == RouteDirectiveAnswer([], [], 302, "see elsewhere")


async def test_report_bags_decode_back_exactly(mixer_double: MixerServerDouble) -> None:
    second = {**EVERY_TYPE, "response.code": 200, "request.headers": {"x-user": "kim"}}
    async with MixerClient(mixer_double.address) as client:
        await client.report([EVERY_TYPE, second])
        await client.report([EVERY_TYPE, second], encoding=ReportEncoding.DELTA_ENCODING)

    assert mixer_double.reports == [[EVERY_TYPE, second], [EVERY_TYPE, second]]
    independent, delta = mixer_double.report_requests
    assert independent.repeated_attributes_semantics == ReportRequest.INDEPENDENT_ENCODING
    assert delta.repeated_attributes_semantics == ReportRequest.DELTA_ENCODING


async def test_report_failure_raises_with_code_and_details(mixer_double: MixerServerDouble) -> None:
    mixer_double.report_error = (grpc.StatusCode.UNKNOWN, "prometheus: buffer full")
    async with MixerClient(mixer_double.address) as client:
        with pytest.raises(MixerCallError) as caught:
            await client.report([{"request.path": "/"}])
    assert caught.value.code is Code.UNKNOWN
    assert caught.value.details == "prometheus: buffer full"
    assert caught.value.method == "Report"
    assert not caught.value.unreachable


async def test_check_rpc_error_raises(mixer_double: MixerServerDouble) -> None:
    mixer_double.check_error = (grpc.StatusCode.INTERNAL, "inconsistent global dictionary")
    async with MixerClient(mixer_double.address) as client:
        with pytest.raises(MixerCallError) as caught:
            await client.check({})
    assert (caught.value.code, caught.value.details) == (Code.INTERNAL, "inconsistent global dictionary")


async def test_timeout_is_deadline_exceeded(mixer_double: MixerServerDouble) -> None:
    mixer_double.delay = 2.0
    async with MixerClient(mixer_double.address, timeout=0.2) as client:
        with pytest.raises(MixerCallError) as check_error:
            await client.check({})
        with pytest.raises(MixerCallError) as report_error:
            await client.report([{}])
        # A call's own timeout overrides the client's.
        mixer_double.delay = 0.3
        answer = await client.check({}, timeout=5)
    assert check_error.value.code is Code.DEADLINE_EXCEEDED
    assert report_error.value.code is Code.DEADLINE_EXCEEDED
    assert answer.allowed


async def test_unreachable_server_is_unavailable() -> None:
    target = f"127.0.0.1:{unused_port()}"
    async with MixerClient(target, timeout=2) as client:
        with pytest.raises(MixerCallError) as caught:
            await client.check({})
    assert caught.value.code is Code.UNAVAILABLE
    assert caught.value.unreachable
    assert caught.value.target == target
    assert target in str(caught.value)


async def test_malformed_answer_is_a_response_error(mixer_double: MixerServerDouble) -> None:
    bad = CheckResponse()
    bad.precondition.referenced_attributes.attribute_matches.add(name=-3, condition=2)
    mixer_double.raw_check_response = bad.SerializeToString()
    async with MixerClient(mixer_double.address) as client:
        with pytest.raises(MixerResponseError) as caught:
            await client.check({})
    assert caught.value.code is Code.INTERNAL
    assert "out of range" in caught.value.details


async def test_unencodable_value_raises_before_sending(mixer_double: MixerServerDouble) -> None:
    async with MixerClient(mixer_double.address) as client:
        with pytest.raises(TypeError, match=r"request\.path"):
            await client.check({"request.path": 5})
    assert mixer_double.checks == []


async def test_close_is_idempotent(mixer_double: MixerServerDouble) -> None:
    client = MixerClient(mixer_double.address)
    await client.close()  # never opened
    assert (await client.check({})).allowed
    await client.close()
    await client.close()


async def test_many_concurrent_calls_share_one_channel(mixer_double: MixerServerDouble) -> None:
    async with MixerClient(mixer_double.address) as client:
        answers = await asyncio.gather(*(client.check({"request.size": n}) for n in range(20)))
    assert all(a.allowed for a in answers)
    assert sorted(c.bag.to_dict()["request.size"] for c in mixer_double.checks) == list(range(20))  # type: ignore[type-var]


# --- blocking client ------------------------------------------------------------------------------


def test_sync_client_check_and_report(mixer_double: MixerServerDouble) -> None:
    mixer_double.outcome = QUOTAS
    with SyncMixerClient(mixer_double.address) as client:
        answer = client.check(EVERY_TYPE, quotas={"requestcount": QuotaRequest(5)}, deduplication_id="d")
        client.report([EVERY_TYPE])
    assert mixer_double.checks[0].bag.to_dict() == EVERY_TYPE
    assert mixer_double.checks[0].deduplication_id == "d"
    assert answer.quotas == QUOTAS.quotas
    assert mixer_double.reports == [[EVERY_TYPE]]


def test_sync_client_timeout_and_errors(mixer_double: MixerServerDouble) -> None:
    with SyncMixerClient(mixer_double.address, timeout=0.2) as client:
        mixer_double.delay = 2.0
        with pytest.raises(MixerCallError) as timed_out:
            client.check({})
        mixer_double.delay = 0
        mixer_double.report_error = (grpc.StatusCode.UNAVAILABLE, "overloaded")
        with pytest.raises(MixerCallError) as failed:
            client.report([{}])
    assert timed_out.value.code is Code.DEADLINE_EXCEEDED
    assert (failed.value.code, failed.value.details) == (Code.UNAVAILABLE, "overloaded")


def test_sync_client_unreachable() -> None:
    with (
        SyncMixerClient(f"127.0.0.1:{unused_port()}", timeout=2) as client,
        pytest.raises(MixerCallError) as caught,
    ):
        client.check({})
    assert caught.value.unreachable


def test_sync_client_sends_the_method_paths(mixer_double: MixerServerDouble) -> None:
    # The paths the real server registers; a typo here would be UNIMPLEMENTED, not a decode error.
    assert (CHECK_METHOD, REPORT_METHOD) == ("/istio.mixer.v1.Mixer/Check", "/istio.mixer.v1.Mixer/Report")
    channel = grpc.insecure_channel(mixer_double.address)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/istio.mixer.v1.Mixer/Nope")(b"", timeout=5)
    finally:
        channel.close()
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


# --- decoding without a server --------------------------------------------------------------------


def _answer_of(outcome: CheckOutcome, **kwargs: Any) -> CheckAnswer:
    return decode_check_response(
        CheckResponse.FromString(build_check_response(outcome, **kwargs).SerializeToString())
    )


def test_decode_keeps_details_and_unknown_codes() -> None:
    response = CheckResponse()
    response.precondition.status.code = 99
    response.precondition.status.message = "from the future"
    response.precondition.status.details.add(type_url="type.googleapis.com/x.Y", value=b"\x01")
    answer = decode_check_response(response)
    assert answer.status == Status(Code.UNKNOWN, "(code 99) from the future")
    assert [(d.type_url, d.value) for d in answer.details] == [("type.googleapis.com/x.Y", b"\x01")]
    assert answer.to_json()["status"]["details"] == [{"type_url": "type.googleapis.com/x.Y", "value": "AQ=="}]


def test_decode_rejects_an_unknown_header_operation() -> None:
    response = CheckResponse()
    response.precondition.route_directive.request_header_operations.add(name="x", operation=7)
    with pytest.raises(WireDecodeError, match="unknown operation 7"):
        decode_check_response(response)


#: What `mixer check` prints, and CheckAnswer.to_json() gives, for the DENY outcome.
DENY_JSON: dict[str, Any] = {
    "status": {
        "code": "PERMISSION_DENIED",
        "code_number": 7,
        "message": "denier.istio-system: not allowed",
    },
    "valid_duration": "5s",
    "valid_use_count": 1000,
    "referenced_attributes": [
        {"name": "source.labels", "condition": "EXACT", "map_key": "app"},
        {"name": "request.headers", "condition": "EXACT", "map_key": "x-custom-key"},
        {"name": "source.namespace", "condition": "ABSENCE", "map_key": None},
        {"name": "destination.service.host", "condition": "EXACT", "map_key": None},
    ],
    "route_directive": {
        "request_header_operations": [{"name": "x-plan", "value": "gold", "operation": "REPLACE"}],
        "response_header_operations": [
            {"name": "x-trace", "value": "", "operation": "REMOVE"},
            {"name": "x-why", "value": "denied", "operation": "APPEND"},
        ],
        "direct_response_code": 0,
        "direct_response_body": "",
    },
    "quotas": {},
}


def test_to_json_shape() -> None:
    answer = _answer_of(DENY)
    assert answer.to_json() == DENY_JSON


def test_quota_answers_to_json() -> None:
    quotas: Mapping[str, Any] = _answer_of(QUOTAS).to_json()["quotas"]
    assert list(quotas) == ["bytes", "requestcount"]
    assert quotas == {
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
