"""docs/quotas.md, section "nginx": its nginx excerpts are deploy/nginx/nginx.conf's own lines, and its
JSON examples are what the endpoints and the syslog input accept and answer."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mixer.api import ServiceLimits
from mixer.api.http_check import check_answer_json, parse_check_body, parse_report_body
from mixer.api.syslog import access_log_attributes
from mixer.attributes import ISTIO_MANIFEST
from mixer.decision import CheckOutcome, HeaderOperationResult, RateLimitInfo
from mixer.status import Code, Status
from tests.server.support import MIXER_SCRIPT, ServerProcess, launcher

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quotas.md"
CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
_BLOCK = re.compile(
    r"(?:^<!-- (?P<marker>[^\n]*) -->\n)?^```(?P<lang>nginx|json)\n(?P<body>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def section() -> str:
    text = DOC.read_text("utf-8")
    start = text.index("\n## nginx\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


BLOCKS = [(m.group("lang"), m.group("marker"), m.group("body")) for m in _BLOCK.finditer(section())]
NGINX = [body for lang, _, body in BLOCKS if lang == "nginx"]


def json_block(marker: str) -> object:
    [body] = [body for lang, m, body in BLOCKS if lang == "json" and m == marker]
    return json.loads(body)


def stripped(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_the_section_has_its_examples() -> None:
    assert len(NGINX) >= 5
    assert sum(lang == "json" for lang, _, _ in BLOCKS) == 4
    # Every JSON block says what it is an example of.
    assert all(marker for lang, marker, _ in BLOCKS if lang == "json")


@pytest.mark.parametrize("excerpt", NGINX, ids=[f"block{i}" for i in range(len(NGINX))])
def test_nginx_excerpts_are_the_deploy_configs_own_lines(excerpt: str) -> None:
    lines = stripped(excerpt)
    conf = stripped(CONF.read_text("utf-8"))
    starts = [i for i, line in enumerate(conf) if line == lines[0]]
    assert any(conf[i : i + len(lines)] == lines for i in starts), (
        f"not in deploy/nginx/nginx.conf:\n{excerpt}"
    )


def test_the_check_request_example_is_accepted() -> None:
    bag, quotas, dedup = parse_check_body(
        json_block("request: POST /v1/check"), ISTIO_MANIFEST, ServiceLimits()
    )
    assert bag.get("request.api_key") == "demo-free-key"
    assert quotas["requestcount"].amount == 1
    assert dedup == "a1b2"


def test_the_report_request_example_is_accepted() -> None:
    [bag] = parse_report_body(json_block("request: POST /v1/report"), ISTIO_MANIFEST, ServiceLimits())
    assert bag.get("response.duration") == timedelta(milliseconds=12)


def test_the_syslog_record_example_maps_without_loss() -> None:
    record = json_block("syslog: record")
    assert isinstance(record, dict)
    values, invalid = access_log_attributes(record, ServiceLimits())
    assert invalid == 0
    assert values["response.code"] == 429
    assert values["destination.service.name"] == "shop"


def test_the_check_answer_example_has_the_answers_shape() -> None:
    documented = json_block("answer: POST /v1/check")
    assert isinstance(documented, dict)
    real = check_answer_json(
        CheckOutcome(
            status=Status(Code.RESOURCE_EXHAUSTED, "exceeded"),
            valid_duration=timedelta(0),
            valid_use_count=1,
            response_header_operations=[HeaderOperationResult("RateLimit", '"per_minute";r=0;t=42')],
            rate_limits=(RateLimitInfo("per_minute", 10, 0, 41.2, 60.0, retry_after=41.2),),
        )
    )
    assert set(documented) == set(real)
    assert set(documented["status"]) == set(real["status"])
    assert set(documented["route_directive"]) == set(real["route_directive"])
    assert set(documented["rate_limits"][0]) == set(real["rate_limits"][0])
    assert documented["http_status"] == real["http_status"] == 429


# -- the requests, sent to the server the doc names: the embedded default -----------------------------


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with launcher(tmp_path_factory.mktemp("quotas-doc")) as launch:
        yield launch.start(command=[str(MIXER_SCRIPT)])


def _post(server: ServerProcess, path: str, body: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.http_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def test_the_check_request_is_allowed_by_the_embedded_default(embedded_server: ServerProcess) -> None:
    status, answer = _post(embedded_server, "/v1/check", json_block("request: POST /v1/check"))
    assert status == 200
    assert answer["status"]["code"] == "OK", answer
    assert answer["http_status"] == 200
    assert answer["quotas"]["requestcount"]["granted_amount"] == 1


def test_the_report_request_is_accepted_by_the_embedded_default(embedded_server: ServerProcess) -> None:
    status, answer = _post(embedded_server, "/v1/report", json_block("request: POST /v1/report"))
    assert (status, answer) == (202, {"status": "OK", "records": 1})
