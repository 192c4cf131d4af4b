"""Rebuild the seed corpus in tests/fuzz/corpus/<target> from the suite's own test inputs.

    python -m tests.fuzz.make_corpus

Seeds: the golden messages (tests/wire/golden, tests/envoy/golden), the expression cases
(tests/expr/cases.py), the YAML configs (deploy/config and the examples of docs/config.md), and
hand-written HTTP requests shaped as the nginx and JSON clients send them. Each seed is named by
the SHA-1 of its bytes, as libFuzzer names corpus files, so a rebuild is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable

from tests.fuzz.run import CORPUS, REPO


def _golden(folder: str, *names: str) -> list[bytes]:
    return [(REPO / "tests" / folder / "golden" / f"{name}.bin").read_bytes() for name in names]


def _expressions() -> list[bytes]:
    from tests.expr.cases import CASES

    return [case.text.encode("utf-8") for case in CASES]


def _configs() -> list[bytes]:
    from tests.config.doc_examples import DOCS, examples

    # fanout/ and istio-1.4/v1.1/ hold the same documents: one copy of each is enough.
    files = sorted((REPO / "deploy" / "config" / "fanout").glob("*.yaml"))
    files += sorted((REPO / "deploy" / "config" / "istio-1.4" / "legacy").glob("*.yaml"))
    # One seed per document: the fuzzer's time goes into mutating documents, not re-parsing files.
    seeds = [
        document.strip().encode("utf-8") + b"\n"
        for path in files
        for document in re.split(r"^---\s*$", path.read_text("utf-8"), flags=re.MULTILINE)
        if "kind:" in document
    ]
    seeds += [example.text.encode("utf-8") for example in examples(DOCS / "config.md")]
    return seeds


def _http() -> list[bytes]:
    auth = [
        "Host: shop.example.com\nX-Original-URI: /items?api_key=demo-free-key&page=2\n"
        "X-Original-Method: GET\nUser-Agent: curl/8.5\nX-Real-IP: 203.0.113.9",
        "Host: a\nX-Forwarded-For: 198.51.100.1, 10.0.0.2\nX-Api-Key: k\nX-Request-ID: r-1\n"
        "X-Forwarded-Proto: https\nReferer: https://example.com/\nCookie: a=1\nCookie: b=2",
        "X-Original-URI: /#frag?x=1\nX-Real-IP: 2001:db8::7",
    ]
    check = [
        {
            "attributes": {
                "request.api_key": "demo-free-key",
                "request.method": "GET",
                "request.path": "/items",
                "request.headers": {"user-agent": "curl"},
                "request.time": "2024-05-06T07:08:09Z",
                "response.duration": "15ms",
                "source.ip": "10.0.0.1",
                "request.size": 10,
                "connection.mtls": True,
            },
            "quotas": {"requestcount": {"amount": 1, "best_effort": False}},
            "deduplication_id": "d-1",
        },
        {"attributes": {}},
    ]
    report = [
        {
            "records": [
                {
                    "context.protocol": "http",
                    "request.path": "/items",
                    "response.code": 200,
                    "response.duration": 0.015,
                    "request.time": 1714979289,
                    "destination.ip": "2001:db8::1",
                },
                {"request.headers": {"x": "y"}, "request.size": 1.0},
            ]
        }
    ]
    return (
        [b"A" + text.encode("latin-1") for text in auth]
        + [b"C" + json.dumps(body).encode() for body in check]
        + [b"R" + json.dumps(body).encode() for body in report]
    )


SEEDS = {
    "mixer_check": lambda: _golden("wire", "check_request"),
    "mixer_report": lambda: _golden("wire", "report_delta", "report_independent"),
    "envoy_authz": lambda: _golden("envoy", "authz_check_request"),
    "envoy_ratelimit": lambda: _golden("envoy", "rls_request"),
    "envoy_accesslog": lambda: _golden("envoy", "als_http_message", "als_tcp_message"),
    "expression": _expressions,
    "config": _configs,
    "http_check": _http,
}


def write(target: str, seeds: Iterable[bytes]) -> int:
    folder = CORPUS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = 0
    for seed in seeds:
        path = folder / hashlib.sha1(seed).hexdigest()  # a name, as libFuzzer's
        if not path.exists():
            path.write_bytes(seed)
            count += 1
    return count


def main() -> None:
    for target, seeds in SEEDS.items():
        print(f"{target}: {write(target, seeds())} seeds")


if __name__ == "__main__":
    main()
