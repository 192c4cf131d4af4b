"""Our Envoy protos against the real stubs: golden messages and the real descriptors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from mixer.api import envoy_accesslog, envoy_authz, envoy_ratelimit
from mixer.proto.envoy.config.core.v3 import address_pb2, base_pb2
from mixer.proto.envoy.data.accesslog.v3 import accesslog_pb2
from mixer.proto.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from mixer.proto.envoy.service.accesslog.v3 import als_pb2
from mixer.proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from mixer.proto.envoy.service.ratelimit.v3 import rls_pb2
from mixer.proto.envoy.type.v3 import http_status_pb2
from tests.envoy.support import GOLDEN, as_json, golden_bytes, golden_json
from tests.shared_data import shared_path

MODULES = (
    address_pb2,
    base_pb2,
    http_status_pb2,
    attribute_context_pb2,
    external_auth_pb2,
    ratelimit_pb2,
    rls_pb2,
    accesslog_pb2,
    als_pb2,
)
GOLDEN_TYPES: dict[str, type[Message]] = {
    "authz_check_request": external_auth_pb2.CheckRequest,
    "authz_check_response_ok": external_auth_pb2.CheckResponse,
    "authz_check_response_429": external_auth_pb2.CheckResponse,
    "rls_request": rls_pb2.RateLimitRequest,
    "rls_response": rls_pb2.RateLimitResponse,
    "als_http_message": als_pb2.StreamAccessLogsMessage,
    "als_tcp_message": als_pb2.StreamAccessLogsMessage,
}
REAL: dict[str, Any] = json.loads((GOLDEN / "descriptors.json").read_text("utf-8"))
_TYPE_NAMES = {
    value: name[len("TYPE_") :]
    for name, value in vars(pb_descriptor.FieldDescriptor).items()
    if name.startswith("TYPE_")
}


def unknown_field_count(message: Message) -> int:
    """Unknown fields in ``message`` and every message inside it."""
    count = len(UnknownFieldSet(message))
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values() if field.message_type.fields_by_name["value"].message_type else []
            count += sum(unknown_field_count(item) for item in items)
        elif field.is_repeated:
            count += sum(unknown_field_count(item) for item in value)
        else:
            count += unknown_field_count(value)
    return count


@pytest.mark.parametrize("name", sorted(GOLDEN_TYPES))
def test_golden_messages_decode_to_exactly_their_json(name: str) -> None:
    message = GOLDEN_TYPES[name].FromString(golden_bytes(name))
    assert as_json(message) == golden_json(name)
    # Every field the real stubs wrote is one we declare (nothing parsed as unknown).
    assert unknown_field_count(message) == 0


@pytest.mark.parametrize("name", sorted(GOLDEN_TYPES))
def test_golden_messages_survive_a_round_trip(name: str) -> None:
    message = GOLDEN_TYPES[name].FromString(golden_bytes(name))
    again = GOLDEN_TYPES[name].FromString(message.SerializeToString())
    assert again == message


def our_messages() -> Iterator[pb_descriptor.Descriptor]:
    pending = [msg for module in MODULES for msg in module.DESCRIPTOR.message_types_by_name.values()]
    while pending:
        msg = pending.pop()
        yield msg
        pending.extend(msg.nested_types)


def our_enums() -> Iterator[pb_descriptor.EnumDescriptor]:
    for module in MODULES:
        yield from module.DESCRIPTOR.enum_types_by_name.values()
    for msg in our_messages():
        yield from msg.enum_types


def test_the_real_descriptors_cover_the_messages_we_declare() -> None:
    messages = list(our_messages())
    assert len(messages) >= 40
    assert [msg.full_name for msg in messages if msg.full_name not in REAL["messages"]] == []


@pytest.mark.parametrize("message", list(our_messages()), ids=lambda m: m.full_name)
def test_every_field_has_envoys_number_type_and_label(message: pb_descriptor.Descriptor) -> None:
    real = REAL["messages"].get(message.full_name)
    if real is None:
        pytest.fail(f"{message.full_name} is not a message of the real API")
    for field in message.fields:
        assert field.name in real, f"{message.full_name}.{field.name} is not a field of the real message"
        expected = real[field.name]
        type_name = ""
        if field.message_type is not None:
            type_name = field.message_type.full_name
        elif field.enum_type is not None:
            type_name = field.enum_type.full_name
        oneof = field.containing_oneof.name if field.containing_oneof is not None else ""
        assert {
            "number": field.number,
            "type": _TYPE_NAMES[field.type],
            "repeated": field.is_repeated,
            "type_name": type_name,
            "oneof": oneof,
        } == expected, f"{message.full_name}.{field.name}"


def test_every_enum_value_has_envoys_number() -> None:
    checked = 0
    for enum in our_enums():
        real = REAL["enums"].get(enum.full_name)
        assert real is not None, f"{enum.full_name} is not an enum of the real API"
        for value in enum.values:
            assert real.get(value.name) == value.number, f"{enum.full_name}.{value.name}"
            checked += 1
    assert checked > 100


def test_services_have_envoys_method_paths() -> None:
    ours = {
        service.full_name: {
            method.name: {
                "input": method.input_type.full_name,
                "output": method.output_type.full_name,
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for method in service.methods
        }
        for module in (external_auth_pb2, rls_pb2, als_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert ours == REAL["services"]
    assert envoy_authz.CHECK_METHOD == "/envoy.service.auth.v3.Authorization/Check"
    assert envoy_ratelimit.SHOULD_RATE_LIMIT_METHOD == (
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    )
    assert envoy_accesslog.STREAM_ACCESS_LOGS_METHOD == (
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
    )


def test_golden_copies_match_the_shared_originals() -> None:
    # The copies here are the reference the other tests read; the messages themselves must stay
    # byte for byte what the real stubs wrote (the READMEs differ: ours says how to remake them).
    originals = shared_path("wire", "golden-envoy")
    names = sorted(p.name for p in originals.iterdir() if p.suffix in {".bin", ".json"})
    assert names, f"no golden messages in {originals}"
    for name in names:
        assert (GOLDEN / name).read_bytes() == (originals / name).read_bytes(), name
