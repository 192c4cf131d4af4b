"""A fake out-of-process Mixer adapter: a gRPC server speaking istio.mixer.adapter.model.v1beta1.

It serves every template's Handle call (from our own wire-compatible protos) and the
InfrastructureBackend session calls, records what it received, answers keyval lookups from the
table in its adapter config (as Istio's sample keyval adapter did: NOT_FOUND for a missing key)
and can be made slow or failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2
from google.protobuf.message import Message

from mixer.proto.istio.mixer.adapter.model.v1beta1 import (
    check_pb2,
    infrastructure_backend_pb2,
    quota_pb2,
    report_pb2,
)
from mixer.proto.istio.mixer.template.apikey import template_handler_service_pb2 as apikey_pb2
from mixer.proto.istio.mixer.template.authorization import template_handler_service_pb2 as authz_pb2
from mixer.proto.istio.mixer.template.checknothing import template_handler_service_pb2 as nothing_pb2
from mixer.proto.istio.mixer.template.keyval import template_handler_service_pb2 as keyval_pb2
from mixer.proto.istio.mixer.template.listentry import template_handler_service_pb2 as listentry_pb2
from mixer.proto.istio.mixer.template.logentry import template_handler_service_pb2 as logentry_pb2
from mixer.proto.istio.mixer.template.metric import template_handler_service_pb2 as metric_pb2
from mixer.proto.istio.mixer.template.quota import template_handler_service_pb2 as quota_pb2_t

#: NOT_FOUND, as google.rpc.Code numbers it.
NOT_FOUND = 5


def keyval_params_descriptor() -> descriptor_pb2.FileDescriptorSet:
    """The adapter config of Istio's keyval sample (``Params { map<string, string> table = 1; }``)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="fake/keyval/config.proto", package="keyval", syntax="proto3"
    )
    params = file.message_type.add(name="Params")
    entry = params.nested_type.add(name="TableEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=9, label=1)
    params.field.add(name="table", number=1, type=11, label=3, type_name=".keyval.Params.TableEntry")
    return descriptor_pb2.FileDescriptorSet(file=[file])


def prometheus_params_descriptor() -> descriptor_pb2.FileDescriptorSet:
    """The subset of Istio's prometheus adapter Params the OOP rule sets (metrics[].name, ...)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="fake/prometheus/config.proto", package="adapter.prometheus.config", syntax="proto3"
    )
    params = file.message_type.add(name="Params")
    info = params.nested_type.add(name="MetricInfo")
    kind = info.enum_type.add(name="Kind")
    for number, name in enumerate(("UNSPECIFIED", "GAUGE", "COUNTER", "DISTRIBUTION")):
        kind.value.add(name=name, number=number)
    info.field.add(name="name", number=1, type=9, label=1)
    info.field.add(name="instance_name", number=2, type=9, label=1)
    info.field.add(name="description", number=3, type=9, label=1)
    info.field.add(
        name="kind", number=4, type=14, label=1, type_name=".adapter.prometheus.config.Params.MetricInfo.Kind"
    )
    info.field.add(name="label_names", number=7, type=9, label=3)
    params.field.add(
        name="metrics", number=1, type=11, label=3, type_name=".adapter.prometheus.config.Params.MetricInfo"
    )
    return descriptor_pb2.FileDescriptorSet(file=[file])


@dataclass
class FakeAdapter:
    """Knobs and records. ``delay``: seconds before answering; ``fail``: answer with this gRPC code."""

    delay: float = 0.0
    fail: grpc.StatusCode | None = None
    check_status: int = 0
    granted: int | None = None
    received: dict[str, list[Message]] = field(default_factory=dict)
    metadata: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0

    def _record(self, method: str, request: Message, context: grpc.aio.ServicerContext) -> None:
        self.received.setdefault(method, []).append(request)
        self.metadata.append(
            tuple((k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str))
        )
        self.arrived.set()

    async def _pre(self, context: grpc.aio.ServicerContext) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            await context.abort(self.fail, "fake adapter failure: secret-internal-detail")

    def _check_result(self) -> check_pb2.CheckResult:
        result = check_pb2.CheckResult(valid_use_count=7)
        result.status.code = self.check_status
        result.valid_duration.FromSeconds(5)
        return result

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        def unary(method: str, request_class: type[Message], answer: Callable[[Any], Message]) -> Any:
            async def call(request: Message, context: grpc.aio.ServicerContext) -> Message:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    await self._pre(context)
                finally:
                    self.in_flight -= 1
                self._record(method, request, context)
                return answer(request)

            return grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=request_class.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )

        def keyval(request: Any) -> Message:
            config = any_pb2.Any()
            config.CopyFrom(request.adapter_config)
            table = _keyval_table(config)
            response = keyval_pb2.HandleKeyvalResponse()
            if request.instance.key in table:
                response.result.CopyFrom(self._check_result())
                response.output.value = table[request.instance.key]
            else:
                response.result.status.code = NOT_FOUND
                response.result.status.message = f"key {request.instance.key!r} not found"
            return response

        def quota(request: Any) -> Message:
            result = quota_pb2.QuotaResult()
            for name, params in request.quota_request.quotas.items():
                entry = result.quotas[name]
                entry.granted_amount = params.amount if self.granted is None else self.granted
                entry.valid_duration.FromSeconds(3)
            return result

        def session(request: Any) -> Message:
            self.sessions.append("s-1")
            return infrastructure_backend_pb2.CreateSessionResponse(session_id="s-1")

        report = lambda _: report_pb2.ReportResult()  # noqa: E731
        check = lambda _: self._check_result()  # noqa: E731
        services = {
            "metric.HandleMetricService": {
                "HandleMetric": unary("HandleMetric", metric_pb2.HandleMetricRequest, report)
            },
            "logentry.HandleLogEntryService": {
                "HandleLogEntry": unary("HandleLogEntry", logentry_pb2.HandleLogEntryRequest, report)
            },
            "listentry.HandleListEntryService": {
                "HandleListEntry": unary("HandleListEntry", listentry_pb2.HandleListEntryRequest, check)
            },
            "authorization.HandleAuthorizationService": {
                "HandleAuthorization": unary(
                    "HandleAuthorization", authz_pb2.HandleAuthorizationRequest, check
                )
            },
            "apikey.HandleApiKeyService": {
                "HandleApiKey": unary("HandleApiKey", apikey_pb2.HandleApiKeyRequest, check)
            },
            "checknothing.HandleCheckNothingService": {
                "HandleCheckNothing": unary(
                    "HandleCheckNothing", nothing_pb2.HandleCheckNothingRequest, check
                )
            },
            "quota.HandleQuotaService": {
                "HandleQuota": unary("HandleQuota", quota_pb2_t.HandleQuotaRequest, quota)
            },
            "keyval.HandleKeyvalService": {
                "HandleKeyval": unary("HandleKeyval", keyval_pb2.HandleKeyvalRequest, keyval)
            },
            "istio.mixer.adapter.model.v1beta1.InfrastructureBackend": {
                "Validate": unary(
                    "Validate",
                    infrastructure_backend_pb2.ValidateRequest,
                    lambda _: infrastructure_backend_pb2.ValidateResponse(),
                ),
                "CreateSession": unary(
                    "CreateSession", infrastructure_backend_pb2.CreateSessionRequest, session
                ),
                "CloseSession": unary(
                    "CloseSession",
                    infrastructure_backend_pb2.CloseSessionRequest,
                    lambda _: infrastructure_backend_pb2.CloseSessionResponse(),
                ),
            },
        }
        return tuple(
            grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()
        )


def _keyval_table(config: any_pb2.Any) -> dict[str, str]:
    """Decode ``keyval.Params`` by hand: the fake knows the adapter's wire format, not its classes."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(keyval_params_descriptor().file[0])
    params = message_factory.GetMessageClass(pool.FindMessageTypeByName("keyval.Params"))()
    config.Unpack(params)
    return dict(params.table)  # type: ignore[attr-defined]


async def start_fake(
    adapter: FakeAdapter, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve ``adapter`` on a free port of 127.0.0.1; the caller stops the server."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(adapter.handlers())
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port
