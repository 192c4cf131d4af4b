"""/v1/auth, /v1/check and /v1/report in process: decisions, headers, and every error path."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from mixer.api import ServiceLimits
from mixer.api.http_check import (
    AUTH_PATH,
    CHECK_PATH,
    REPORT_PATH,
    HttpRefusal,
    auth_attributes,
    auth_response_headers,
)
from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult
from mixer.runtime import build_runtime
from mixer.server import RuntimeHolder
from mixer.status import Code, Status
from tests.http.support import Served, plans_runtime, serve
from tests.runtime.support import config, fq, handler, instance, registry, rule
from tests.server.support import read_json_lines

KEY = {"X-API-Key": "key-tiny"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    runtime = await plans_runtime(tmp_path / "reports.jsonl")
    async with serve(runtime, limits=ServiceLimits(max_map_entries=40, max_string_length=4096)) as s:
        s.output = tmp_path / "reports.jsonl"
        yield s


async def body_of(response: Any) -> dict[str, Any]:
    data = await response.json()
    assert isinstance(data, dict)
    return data


# -- /v1/auth --------------------------------------------------------------------------------------


async def test_auth_allows_and_returns_the_plan_for_nginx_to_copy(served: Served) -> None:
    response = await served.client.get(
        AUTH_PATH, headers={**KEY, "X-Original-URI": "/items?id=3", "X-Original-Method": "POST"}
    )
    assert response.status == 200
    headers = response.headers
    assert headers["X-Mixer-Code"] == "OK"
    assert headers["x-mixer-plan"] == "tiny"
    assert headers["x-mixer-subject"] == "alice"
    assert headers["x-added"] == "yes"
    assert headers.getall("x-appended") == ["one", "two"]
    assert "x-removed" not in headers
    # A header operation never overrides what the HTTP layer owns.
    assert headers["Content-Length"] != "5"
    assert headers["x-path"] == "/items"
    assert headers["RateLimit-Policy"] == '"per_hour";q=2;w=3600'
    assert headers["RateLimit"].startswith('"per_hour";r=1;')
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert await body_of(response) == {"status": {"code": "OK", "code_number": 0, "message": ""}}
    assert served.count("Auth", "OK") == 1


async def test_auth_reads_the_key_from_the_original_query(served: Served) -> None:
    response = await served.client.get(AUTH_PATH, headers={"X-Original-URI": "/x?api_key=key-tiny"})
    assert response.status == 200
    assert response.headers["x-mixer-plan"] == "tiny"


async def test_auth_denials_map_to_http_statuses(served: Served) -> None:
    unknown = await served.client.get(AUTH_PATH, headers={"X-API-Key": "nope", "X-Original-URI": "/"})
    assert unknown.status == 401
    assert unknown.headers["X-Mixer-Code"] == "UNAUTHENTICATED"
    assert "x-mixer-plan" not in unknown.headers
    # Request header operations are for an upstream request that a denial never makes.
    assert "x-added" not in unknown.headers
    assert (await body_of(unknown))["status"]["message"].endswith("unknown API key")

    missing = await served.client.get(AUTH_PATH, headers={"X-Original-URI": "/"})
    assert missing.status == 401

    blocked = await served.client.get(AUTH_PATH, headers={**KEY, "X-Original-URI": "/blocked"})
    assert blocked.status == 403
    assert blocked.headers["X-Mixer-Code"] == "PERMISSION_DENIED"
    assert (await body_of(blocked))["status"]["message"] == "denyall.istio-system:not on the guest list"
    # A denied request spent nothing: the plan check runs after the denier passed.
    assert (await served.client.get(AUTH_PATH, headers=KEY)).status == 200
    assert (await served.client.get(AUTH_PATH, headers=KEY)).status == 200

    limited = await served.client.get(AUTH_PATH, headers=KEY)
    assert limited.status == 429
    assert limited.headers["X-Mixer-Code"] == "RESOURCE_EXHAUSTED"
    assert 1700 <= int(limited.headers["Retry-After"]) <= 1800
    assert limited.headers["RateLimit"].startswith('"per_hour";r=0;')
    assert "per_hour" in (await body_of(limited))["status"]["message"]
    # Answered checks are OK calls whatever they decided, as for gRPC.
    assert served.count("Auth", "OK") == 6


async def test_auth_without_a_plan_rule_match(served: Served) -> None:
    response = await served.client.get(AUTH_PATH, headers={"X-Original-URI": "/free"})
    assert response.status == 200
    assert "x-mixer-plan" not in response.headers


async def test_auth_refuses_too_many_headers(served: Served) -> None:
    headers = {f"X-Filler-{i}": "x" for i in range(50)}
    response = await served.client.get(AUTH_PATH, headers=headers)
    assert response.status == 431
    error = (await body_of(response))["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert "over the limit of 40" in error["message"]
    assert served.decode_errors("Auth") == 1
    assert served.count("Auth", "INVALID_ARGUMENT") == 1


async def test_auth_refuses_a_bad_client_address(served: Served) -> None:
    response = await served.client.get(AUTH_PATH, headers={**KEY, "X-Real-IP": "not-an-ip"})
    assert response.status == 400
    assert "X-Real-IP: 'not-an-ip' is not an IP address" in (await body_of(response))["error"]["message"]


async def test_auth_refuses_a_value_over_the_string_limit(served: Served) -> None:
    response = await served.client.get(AUTH_PATH, headers={**KEY, "X-Original-URI": "/" + "a" * 5000})
    assert response.status == 400
    message = (await body_of(response))["error"]["message"]
    assert "'x-original-uri': string of 5001 characters is over the limit of 4096" in message


# -- auth attributes and headers, as functions -----------------------------------------------------

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def attributes(headers: dict[str, str] | CIMultiDict[str], peer: str | None = "10.9.9.9") -> dict[str, Any]:
    return auth_attributes(CIMultiDict(headers), "GET", peer, ServiceLimits(max_map_entries=5), now=NOW)


def test_auth_attributes_from_an_nginx_subrequest() -> None:
    values = attributes(
        {
            "X-Original-URI": "/shop/items?id=3&id=4&api_key=from-query&empty=",
            "X-Original-Method": "DELETE",
            "Host": "shop.example",
            "X-API-Key": "from-header",
            "X-Real-IP": " 192.0.2.7 ",
        }
    )
    assert values["request.path"] == "/shop/items?id=3&id=4&api_key=from-query&empty="
    assert values["request.url_path"] == "/shop/items"
    # The first of a repeated parameter wins; blank values are kept.
    assert values["request.query_params"] == {"id": "3", "api_key": "from-query", "empty": ""}
    assert values["request.method"] == "DELETE"
    assert values["request.host"] == "shop.example"
    assert values["request.api_key"] == "from-header"
    assert values["source.ip"] == ipaddress.ip_address("192.0.2.7")
    assert values["context.protocol"] == "http"
    assert values["request.time"] == NOW
    assert values["request.headers"]["x-original-method"] == "DELETE"


def test_auth_attributes_of_a_bare_request() -> None:
    values = attributes({"User-Agent": "curl/8", "X-Request-ID": "r1", "X-Forwarded-Proto": "https"})
    assert values["request.method"] == "GET"
    assert values["source.ip"] == ipaddress.ip_address("10.9.9.9")
    assert values["request.useragent"] == "curl/8"
    assert values["request.id"] == "r1"
    assert values["request.scheme"] == "https"
    for absent in ("request.path", "request.url_path", "request.query_params", "request.api_key"):
        assert absent not in values
    assert "source.ip" not in attributes({}, peer=None)
    assert "source.ip" not in attributes({}, peer="/run/nginx.sock")


def test_repeated_headers_join_and_the_last_forwarded_hop_is_trusted() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("X-Forwarded-For", "6.6.6.6, 10.0.0.1")
    headers.add("x-forwarded-for", "192.0.2.9")
    headers.add("Accept", "text/html")
    values = attributes(headers)
    assert values["request.headers"]["x-forwarded-for"] == "6.6.6.6, 10.0.0.1, 192.0.2.9"
    # The client may have sent any address first; the last one is what our proxy saw.
    assert values["source.ip"] == ipaddress.ip_address("192.0.2.9")
    assert values["request.headers"]["accept"] == "text/html"


def test_auth_attributes_refusals() -> None:
    with pytest.raises(HttpRefusal) as too_many:
        attributes({f"h{i}": "x" for i in range(6)})
    assert too_many.value.status == 431
    with pytest.raises(HttpRefusal, match="more than 5 query parameters") as query:
        attributes({"X-Original-URI": "/?" + "&".join(f"p{i}=1" for i in range(6))})
    assert query.value.status == 400
    with pytest.raises(HttpRefusal, match="X-Forwarded-For: 'nope' is not an IP address"):
        attributes({"X-Forwarded-For": "1.2.3.4, nope"})


def test_auth_response_headers_never_pass_control_characters_or_removes() -> None:
    outcome = CheckOutcome(
        status=Status(Code.OK),
        valid_duration=timedelta(0),
        valid_use_count=1,
        request_header_operations=[
            HeaderOperationResult("x-ok", "fine"),
            HeaderOperationResult("x-split", "a\r\nSet-Cookie: evil=1"),
            HeaderOperationResult("bad name", "v"),
            HeaderOperationResult("x-gone", "", HeaderOperationKind.REMOVE),
            HeaderOperationResult("X-Mixer-Code", "OK-forged"),
            HeaderOperationResult("transfer-encoding", "chunked"),
        ],
        response_header_operations=[HeaderOperationResult("x-ok", "replaced")],
    )
    headers = auth_response_headers(outcome)
    assert dict(headers) == {"X-Mixer-Code": "OK", "Cache-Control": "no-store", "x-ok": "replaced"}


# -- /v1/check -------------------------------------------------------------------------------------


async def test_json_check_answers_in_the_body(served: Served) -> None:
    body = {
        "attributes": {
            "request.api_key": "key-tiny",
            "request.url_path": "/items",
            "source.ip": "10.0.0.1",
            "request.time": "2024-05-06T07:08:09Z",
        },
        "quotas": {"unconfigured": {"amount": 3, "best_effort": True}},
        "deduplication_id": "d-1",
    }
    response = await served.client.post(CHECK_PATH, json=body)
    assert response.status == 200
    answer = await body_of(response)
    assert answer["status"] == {"code": "OK", "code_number": 0, "message": ""}
    assert answer["http_status"] == 200
    assert answer["headers"] == {"x-mixer-plan": "tiny", "x-mixer-subject": "alice"}
    assert answer["valid_duration"] == "0s"
    assert answer["valid_use_count"] == 1
    assert {"name": "request.api_key", "condition": "EXACT", "map_key": None} in answer[
        "referenced_attributes"
    ]
    request_ops = answer["route_directive"]["request_header_operations"]
    assert request_ops[0] == {"name": "x-mixer-plan", "value": "tiny", "operation": "REPLACE"}
    [limit] = answer["rate_limits"]
    assert limit["name"] == "per_hour"
    assert limit["limit"] == 2
    assert limit["remaining"] == 1
    assert limit["window"] == 3600.0
    assert limit["retry_after"] is None
    # A quota no rule configures is granted the amount asked, valid for a minute.
    assert answer["quotas"]["unconfigured"]["granted_amount"] == 3
    assert answer["quotas"]["unconfigured"]["valid_duration"] == "1m0s"

    # The same deduplication id within a second: the same answer, nothing spent.
    again = await body_of(await served.client.post(CHECK_PATH, json=body))
    assert again["rate_limits"][0]["remaining"] == 1


async def test_json_check_denial_is_still_http_200(served: Served) -> None:
    response = await served.client.post(CHECK_PATH, json={"attributes": {"request.api_key": "nope"}})
    assert response.status == 200
    answer = await body_of(response)
    assert answer["status"]["code"] == "UNAUTHENTICATED"
    assert answer["status"]["code_number"] == 16
    assert answer["http_status"] == 401
    assert answer["headers"] == {}
    assert served.count("Check", "OK") == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "the body is not JSON"),
        (b'{"attributes": {"response.code": NaN}}', "NaN is not a JSON number"),
        (b"[" * 50_000, "nested too deeply"),
        (b"\xff\xfe\xfa", "the body is not JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b'{"attributes": {}, "extra": 1}', "unknown keys ['extra']"),
        (
            b'{"attributes": {"no.such": 1, "nor.this": 2}}',
            "unknown attributes (not in the attribute manifest): 'no.such', 'nor.this'",
        ),
        (b'{"attributes": {"response.code": "two hundred"}}', "response.code (INT64): want an integer"),
        (b'{"attributes": {"source.ip": "10.0.0"}}', "source.ip (IP_ADDRESS): '10.0.0' is not an IP address"),
        (b'{"attributes": [], "quotas": {}}', "want an object of attribute name to value"),
        (b'{"quotas": []}', "quotas must be an object"),
        (b'{"quotas": {"q": 1}}', "quotas['q'] must be an object"),
        (b'{"quotas": {"q": {"amount": -1}}}', "quotas['q'].amount must be a non-negative integer"),
        (b'{"quotas": {"q": {"amount": true}}}', "quotas['q'].amount must be a non-negative integer"),
        (b'{"quotas": {"q": {"best_effort": "yes"}}}', "quotas['q'].best_effort must be true or false"),
        (b'{"quotas": {"q": {"amont": 1}}}', "quotas['q']: unknown keys ['amont']"),
        (b'{"deduplication_id": 7}', "deduplication_id must be a string"),
    ],
)
async def test_json_check_refuses_malformed_input(served: Served, body: bytes, fragment: str) -> None:
    response = await served.client.post(CHECK_PATH, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = (await body_of(response))["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["code_number"] == 3
    assert fragment in error["message"]
    assert served.decode_errors("Check") == 1
    assert served.count("Check", "INVALID_ARGUMENT") == 1


async def test_json_check_refuses_a_body_over_the_size_limit(served: Served) -> None:
    big = json.dumps({"attributes": {"request.path": "x" * 70_000}}).encode()
    response = await served.client.post(CHECK_PATH, data=big)
    assert response.status == 413
    assert (await body_of(response))["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert served.count("Check", "RESOURCE_EXHAUSTED") == 1


async def test_only_post_checks(served: Served) -> None:
    assert (await served.client.get(CHECK_PATH)).status == 405
    assert (await served.client.get(REPORT_PATH)).status == 405


# -- /v1/report ------------------------------------------------------------------------------------


async def test_json_report_hands_records_to_the_handlers(served: Served) -> None:
    output = served.output
    assert output is not None
    records = [
        {"response.code": 200, "request.path": "/a", "source.ip": "10.0.0.1"},
        {"response.code": 429, "request.path": "/b", "source.ip": "::1"},
    ]
    response = await served.client.post(REPORT_PATH, json={"records": records})
    assert response.status == 202
    assert await body_of(response) == {"status": "OK", "records": 2}
    for _ in range(100):
        lines = read_json_lines(output)
        if len(lines) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(line["code"], line["path"], line["source"]) for line in lines] == [
        (200, "/a", "10.0.0.1"),
        (429, "/b", "::1"),
    ]
    assert served.count("Report", "OK") == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"records": {}}, "records must be an array"),
        ({"record": []}, "the body must be a JSON object {'records': [...]}"),
        ({"records": [{}, {"response.code": "x"}]}, "records[1]: response.code (INT64)"),
        ({"records": [{"bogus.name": 1}]}, "records[0]: unknown attributes"),
    ],
)
async def test_json_report_refuses_malformed_input(served: Served, body: Any, fragment: str) -> None:
    response = await served.client.post(REPORT_PATH, json=body)
    assert response.status == 400
    assert fragment in (await body_of(response))["error"]["message"]
    assert served.count("Report", "INVALID_ARGUMENT") == 1


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "the body is not JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b'{"records": [], "more": 1}', "the body must be a JSON object"),
        (b'{"records": [{}, {}]', "the body is not JSON"),
        (b'{"records": [{} {}]}', "the body is not JSON"),
        (b'{"records": [{}]} x', "extra data"),
        (b'{"records": [{"response.code": NaN}]}', "NaN is not a JSON number"),
        (b'{"records": [{"a": 1]}', "the body is not JSON"),
        (b'{"records": 3}', "records must be an array"),
        (b'{"records": [' + b"[" * 20_000 + b"]", "nested too deeply"),
    ],
)
async def test_json_report_refuses_malformed_bytes(served: Served, raw: bytes, fragment: str) -> None:
    response = await served.client.post(REPORT_PATH, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert fragment in (await body_of(response))["error"]["message"]


async def test_json_report_accepts_any_json_spacing(served: Served) -> None:
    raw = b' \n{ "records" :\t[ { "response.code" : 200 } ,\r\n{ } ] }\n '
    response = await served.client.post(REPORT_PATH, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 202
    assert await body_of(response) == {"status": "OK", "records": 2}


async def test_json_report_over_the_record_bound_is_413(tmp_path: Path) -> None:
    runtime = await plans_runtime(tmp_path / "reports.jsonl")
    async with serve(runtime, limits=ServiceLimits(max_report_records=100)) as served:
        accepted = await served.client.post(REPORT_PATH, json={"records": [{}] * 100})
        assert accepted.status == 202
        refused = await served.client.post(REPORT_PATH, json={"records": [{}] * 101})
        assert refused.status == 413
        error = (await body_of(refused))["error"]
        assert error["code"] == "RESOURCE_EXHAUSTED"
        assert "more than 100 records" in error["message"]
        assert served.count("Report", "RESOURCE_EXHAUSTED") == 1
        assert served.count("Report", "OK") == 1


async def test_json_report_of_an_overloaded_handler_is_unavailable() -> None:
    runtime = build_runtime(
        config(
            [handler("h", overloaded=True)],
            [instance("m", "metric", value="1")],
            [rule("r", None, (fq("h"), [fq("m")]))],
        ),
        registry(),
    )
    await runtime.start()
    async with serve(runtime) as served:
        response = await served.client.post(REPORT_PATH, json={"records": [{"response.code": 200}]})
        assert response.status == 503
        error = (await body_of(response))["error"]
        assert error["code"] == "UNAVAILABLE"
        assert "handler overloaded: h.istio-system" in error["message"]
        assert served.count("Report", "UNAVAILABLE") == 1


# -- overload, not ready, failures -----------------------------------------------------------------


async def test_every_route_is_refused_when_the_process_is_full(served: Served) -> None:
    served.admission.in_flight = served.admission.limit
    try:
        for method, path, name in (
            ("GET", AUTH_PATH, "Auth"),
            ("POST", CHECK_PATH, "Check"),
            ("POST", REPORT_PATH, "Report"),
        ):
            response = await served.client.request(method, path, json={})
            assert response.status == 503
            assert (await body_of(response))["error"]["code"] == "UNAVAILABLE"
            assert "--max-concurrent-requests" in (await body_of(response))["error"]["message"]
            assert served.count(name, "UNAVAILABLE") == 1
    finally:
        served.admission.in_flight = 0
    assert (await served.client.get(AUTH_PATH, headers=KEY)).status == 200
    assert served.service.in_flight == 0


async def test_nothing_is_served_before_the_first_config() -> None:
    async with serve(None) as served:
        for method, path in (("GET", AUTH_PATH), ("POST", CHECK_PATH), ("POST", REPORT_PATH)):
            response = await served.client.request(
                method,
                path,
                json={"attributes": {}, "records": []} if path == CHECK_PATH else {"records": []},
            )
            assert response.status == 503
            assert "no config has loaded yet" in (await body_of(response))["error"]["message"]
        assert served.admission.in_flight == 0


class _Exploding:
    """A holder whose runtime fails in a way the runtime itself never does."""

    def acquire(self) -> Any:
        return self

    def release(self, runtime: Any) -> None:
        pass

    async def check(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")


async def test_an_unexpected_failure_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    holder = cast(RuntimeHolder, _Exploding())
    async with serve(None, holder_ref=lambda: holder) as served:
        response = await served.client.get(AUTH_PATH)
        assert response.status == 500
        assert (await body_of(response))["error"]["code"] == "INTERNAL"
        assert served.count("Auth", "INTERNAL") == 1
        assert served.admission.in_flight == 0
    assert "GET /v1/auth failed unexpectedly" in caplog.text


@given(st.text(max_size=12))
def test_a_header_value_passes_when_it_has_no_control_character_but_tab(value: str) -> None:
    outcome = CheckOutcome(
        status=Status(Code.OK),
        valid_duration=timedelta(0),
        valid_use_count=1,
        response_header_operations=[HeaderOperationResult("x-value", value)],
    )
    passes = not any((ch < " " and ch != "\t") or ch == "\x7f" for ch in value)
    assert ("x-value" in auth_response_headers(outcome)) is passes
