"""Make (or check) the golden Envoy messages in tests/envoy/golden with Envoy's real stubs.

Runs only where ``xds-protos`` is installed, which must not be the project's environment
(xds-protos overwrites opentelemetry-proto's modules)::

    python3 -m venv /tmp/xds-venv && /tmp/xds-venv/bin/pip install xds-protos
    /tmp/xds-venv/bin/python tests/envoy/make_golden.py --check tests/envoy/golden
    /tmp/xds-venv/bin/python tests/envoy/make_golden.py tests/envoy/golden

Writes, for each message below, ``NAME.bin`` (serialized by the real stubs) and ``NAME.json``
(its JSON form, proto field names), and ``descriptors.json``: every field (number, type, label,
message or enum type) and enum value of the Envoy messages the three services exchange, which
the test suite compares with our own protos. ``--check`` rewrites nothing: it exits 1 naming every
file whose content differs from what this script makes (messages compared as messages, since
map order in the bytes is not fixed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from envoy.service.accesslog.v3 import als_pb2  # type: ignore[import-not-found]
from envoy.service.auth.v3 import external_auth_pb2  # type: ignore[import-not-found]
from envoy.service.ratelimit.v3 import rls_pb2  # type: ignore[import-not-found]
from google.protobuf import descriptor, json_format

CHECK_REQUEST: dict[str, Any] = {
    "attributes": {
        "source": {
            "address": {"socket_address": {"address": "10.44.0.7", "port_value": 51234}},
            "principal": "spiffe://cluster.local/ns/default/sa/productpage",
        },
        "destination": {
            "address": {"socket_address": {"address": "10.44.1.9", "port_value": 9080}},
            "principal": "spiffe://cluster.local/ns/default/sa/reviews",
        },
        "request": {
            "time": "2026-11-25T10:00:00Z",
            "http": {
                "id": "6241385818455453743",
                "method": "GET",
                "headers": {
                    "user-agent": "curl/8.5.0",
                    ":path": "/reviews/0?verbose=1",
                    ":authority": "reviews:9080",
                    ":method": "GET",
                    "x-api-key": "free-demo-key",
                    "x-request-id": "1f2e3d4c-0000-4000-8000-000000000001",
                },
                "path": "/reviews/0?verbose=1",
                "host": "reviews:9080",
                "scheme": "http",
                "protocol": "HTTP/1.1",
            },
        },
        "context_extensions": {"operation": "list", "api": "reviews-api"},
    }
}

CHECK_RESPONSE_OK: dict[str, Any] = {
    "status": {},
    "ok_response": {"headers": [{"header": {"key": "x-plan", "value": "free"}}]},
    "dynamic_metadata": {"plan": "free", "subject": "demo-app"},
}

CHECK_RESPONSE_429: dict[str, Any] = {
    "status": {"code": 8, "message": "quota exceeded"},
    "denied_response": {
        "status": {"code": "TooManyRequests"},
        "headers": [
            {"header": {"key": "retry-after", "value": "17"}},
            {"header": {"key": "ratelimit-policy", "value": '"free-minute";q=10;w=60'}},
            {"header": {"key": "ratelimit", "value": '"free-minute";r=0;t=17'}},
        ],
        "body": "quota exceeded for plan free",
    },
}

RLS_REQUEST: dict[str, Any] = {
    "domain": "mesh",
    "descriptors": [
        {"entries": [{"key": "plan", "value": "free"}, {"key": "api_key", "value": "free-demo-key"}]},
        {
            "entries": [
                {"key": "destination_cluster", "value": "outbound|9080||reviews.default.svc.cluster.local"}
            ]
        },
    ],
    "hits_addend": 1,
}

RLS_RESPONSE: dict[str, Any] = {
    "overall_code": "OVER_LIMIT",
    "statuses": [
        {
            "code": "OVER_LIMIT",
            "current_limit": {"requests_per_unit": 10, "unit": "MINUTE"},
            "duration_until_reset": "17s",
        },
        {"code": "OK"},
    ],
    "response_headers_to_add": [{"key": "retry-after", "value": "17"}],
}

ALS_HTTP_MESSAGE: dict[str, Any] = {
    "identifier": {
        "node": {
            "id": "sidecar~10.44.0.7~productpage-v1-abc.default~default.svc.cluster.local",
            "cluster": "productpage",
        },
        "log_name": "mesh-als",
    },
    "http_logs": {
        "log_entry": [
            {
                "common_properties": {
                    "downstream_remote_address": {
                        "socket_address": {"address": "10.44.0.7", "port_value": 51234}
                    },
                    "start_time": "2026-11-25T10:00:00Z",
                    "time_to_last_downstream_tx_byte": "0.012s",
                    "upstream_remote_address": {
                        "socket_address": {"address": "10.44.1.9", "port_value": 9080}
                    },
                    "upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local",
                    "response_flags": {},
                },
                "protocol_version": "HTTP11",
                "request": {
                    "request_method": "GET",
                    "scheme": "http",
                    "authority": "reviews:9080",
                    "path": "/reviews/0",
                    "user_agent": "curl/8.5.0",
                    "request_id": "1f2e3d4c-0000-4000-8000-000000000001",
                    "request_headers_bytes": "210",
                },
                "response": {
                    "response_code": 200,
                    "response_headers_bytes": "150",
                    "response_body_bytes": "295",
                },
            }
        ]
    },
}

ALS_TCP_MESSAGE: dict[str, Any] = {
    "identifier": {"log_name": "mesh-als"},
    "tcp_logs": {
        "log_entry": [
            {
                "common_properties": {
                    "downstream_remote_address": {"socket_address": {"address": "10.44.0.8"}},
                    "upstream_cluster": "outbound|3306||mysql.default.svc.cluster.local",
                },
                "connection_properties": {"received_bytes": "80", "sent_bytes": "1200"},
            }
        ]
    },
}

GOLDEN: dict[str, tuple[Any, dict[str, Any]]] = {
    "authz_check_request": (external_auth_pb2.CheckRequest, CHECK_REQUEST),
    "authz_check_response_ok": (external_auth_pb2.CheckResponse, CHECK_RESPONSE_OK),
    "authz_check_response_429": (external_auth_pb2.CheckResponse, CHECK_RESPONSE_429),
    "rls_request": (rls_pb2.RateLimitRequest, RLS_REQUEST),
    "rls_response": (rls_pb2.RateLimitResponse, RLS_RESPONSE),
    "als_http_message": (als_pb2.StreamAccessLogsMessage, ALS_HTTP_MESSAGE),
    "als_tcp_message": (als_pb2.StreamAccessLogsMessage, ALS_TCP_MESSAGE),
}

#: The messages the services exchange; descriptors.json covers every Envoy message they reach.
ROOTS = (
    external_auth_pb2.CheckRequest,
    external_auth_pb2.CheckResponse,
    rls_pb2.RateLimitRequest,
    rls_pb2.RateLimitResponse,
    als_pb2.StreamAccessLogsMessage,
    als_pb2.StreamAccessLogsResponse,
)
SERVICES = (
    external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"],
    rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"],
    als_pb2.DESCRIPTOR.services_by_name["AccessLogService"],
)
_TYPE_NAMES = {
    value: name[len("TYPE_") :]
    for name, value in vars(descriptor.FieldDescriptor).items()
    if name.startswith("TYPE_")
}


def build(message_type: Any, content: dict[str, Any]) -> Any:
    return json_format.ParseDict(content, message_type())


def to_json(message: Any) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2) + "\n"


def descriptors() -> dict[str, Any]:
    """Fields and enum values of every envoy.* message reachable from ROOTS, and the services."""
    messages: dict[str, Any] = {}
    enums: dict[str, dict[str, int]] = {}
    pending = [root.DESCRIPTOR for root in ROOTS]
    while pending:
        msg = pending.pop()
        if msg.full_name in messages or not msg.full_name.startswith("envoy."):
            continue
        fields: dict[str, Any] = {}
        for field in msg.fields:
            type_name = ""
            if field.message_type is not None:
                type_name = field.message_type.full_name
                pending.append(field.message_type)
            elif field.enum_type is not None:
                type_name = field.enum_type.full_name
                enums[type_name] = {value.name: value.number for value in field.enum_type.values}
            fields[field.name] = {
                "number": field.number,
                "type": _TYPE_NAMES[field.type],
                "repeated": field.is_repeated,
                "type_name": type_name,
                "oneof": field.containing_oneof.name if field.containing_oneof is not None else "",
            }
        messages[msg.full_name] = fields
    services = {
        service.full_name: {
            method.name: {
                "input": method.input_type.full_name,
                "output": method.output_type.full_name,
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for method in service.methods
        }
        for service in SERVICES
    }
    return {
        "messages": dict(sorted(messages.items())),
        "enums": dict(sorted(enums.items())),
        "services": services,
    }


def descriptors_text() -> str:
    return json.dumps(descriptors(), indent=1, sort_keys=True) + "\n"


def check(directory: Path) -> list[str]:
    """Files in ``directory`` whose content differs from what :func:`write` would make."""
    stale: list[str] = []
    for name, (message_type, content) in GOLDEN.items():
        expected = build(message_type, content)
        bin_path, json_path = directory / f"{name}.bin", directory / f"{name}.json"
        if not bin_path.exists() or message_type.FromString(bin_path.read_bytes()) != expected:
            stale.append(bin_path.name)
        if not json_path.exists() or json.loads(json_path.read_text("utf-8")) != json.loads(
            to_json(expected)
        ):
            stale.append(json_path.name)
    path = directory / "descriptors.json"
    if not path.exists() or json.loads(path.read_text("utf-8")) != json.loads(descriptors_text()):
        stale.append(path.name)
    return stale


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (message_type, content) in GOLDEN.items():
        message = build(message_type, content)
        (directory / f"{name}.bin").write_bytes(message.SerializeToString(deterministic=True))
        (directory / f"{name}.json").write_text(to_json(message), "utf-8")
    (directory / "descriptors.json").write_text(descriptors_text(), "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.directory)
        for name in stale:
            print(f"differs from the real stubs' output: {name}", file=sys.stderr)
        return 1 if stale else 0
    write(args.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
