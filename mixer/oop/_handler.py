"""The handler of an out-of-process adapter: Mixer's istio.mixer.adapter.model.v1beta1 calls over gRPC.

Check and quota instances are sent at once, one call each, within the connection's timeout.
Report instances go through :class:`~mixer.delivery.Delivery` like every report adapter's: queued,
batched into one ``Handle<Template>`` call per template, retried while the adapter is down or
slow, spooled when it stays down. Callers never see an adapter's own error text.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, field_serializer

from mixer.adapter import (
    CheckHandler,
    CheckResult,
    HandlerEnv,
    QuotaArgs,
    QuotaHandler,
    QuotaResult,
    ReportBatch,
    ReportHandler,
)
from mixer.attributes import AttributeValue, ValueType
from mixer.delivery import Delivery, DeliveryOptions, PermanentError, Record, RetryableError
from mixer.oop._connection import Connection, call_metadata, open_channel
from mixer.oop._descriptors import TemplateModel
from mixer.oop._encode import encode_instance
from mixer.proto.istio.mixer.adapter.model.v1beta1 import infrastructure_backend_pb2 as backend_pb2
from mixer.status import Code, Status
from mixer.templates import Instance, QuotaInstance, Variety

__all__ = ["OopHandler", "OopHandlerParams", "build_oop_handler"]

_NOT_CACHEABLE = timedelta(0)
#: gRPC codes after which the same report batch may succeed later.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
_BACKEND = "/istio.mixer.adapter.model.v1beta1.InfrastructureBackend/"
#: Calls one handler has in flight at most; more wait (within the timeout). A burst of thousands of
#: concurrent streams on one connection makes gRPC servers cancel some of them.
MAX_IN_FLIGHT = 100


class OopHandlerParams(BaseModel):
    """A handler of an out-of-process adapter, as the config loader resolved it."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    adapter: str
    connection: Connection
    #: The handler's params as a serialized google.protobuf.Any of the adapter's Params message.
    adapter_config: bytes = b""
    session_based: bool = False
    templates: dict[str, TemplateModel] = {}
    #: Static types of Value fields per instance name (see :data:`mixer.oop.ValueTypes`).
    value_types: dict[str, dict[str, ValueType]] = {}
    #: The name Mixer gave each instance on the wire (``name.instance.namespace``), by our name.
    wire_names: dict[str, str] = {}
    delivery: DeliveryOptions = DeliveryOptions()

    @field_serializer("adapter_config")
    def _config_size(self, value: bytes) -> str:
        # Encoded params may hold secrets that no key name reveals: shown by size only.
        return f"<{len(value)} bytes>"

    @field_serializer("templates")
    def _template_methods(self, value: dict[str, TemplateModel]) -> dict[str, str]:
        return {name: model.method for name, model in value.items()}


class AdapterUnavailable(Exception):
    """The adapter cannot be called (not started, no session yet)."""


class AdapterTimeout(Exception):
    """The call could not even start within the connection's timeout."""


class OopHandler(CheckHandler, QuotaHandler, ReportHandler):
    def __init__(self, params: OopHandlerParams, env: HandlerEnv) -> None:
        self._params = params
        self._logger = env.logger
        self._name = env.handler_name
        self._timeout = params.connection.timeout.total_seconds()
        self._config = any_pb2.Any()
        self._config.ParseFromString(params.adapter_config)
        self._channel: grpc.aio.Channel | None = None
        self._session_id = ""
        self._session_task: asyncio.Task[None] | None = None
        self._delivery: Delivery | None = None
        if any(t.variety is Variety.REPORT for t in params.templates.values()):
            self._delivery = Delivery(
                env.handler_name, _Sender(self), params.delivery, data_dir=env.data_dir, logger=env.logger
            )
        self._closed = False
        # Mixer numbered the calls that had no deduplication id of their own from a random start.
        self._dedup = itertools.count(random.getrandbits(63))
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._stubs: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Any]] = {}

    def _next_dedup_id(self) -> str:
        return str(next(self._dedup))

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._channel = open_channel(self._params.connection)
        if self._params.session_based:
            self._session_task = asyncio.create_task(self._open_session())
        if self._delivery is not None:
            await self._delivery.start()

    async def shutdown(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._delivery is not None:
                await self._delivery.shutdown(timeout)
        finally:
            if self._session_task is not None:
                self._session_task.cancel()
            if self._session_id and self._channel is not None:
                try:
                    await self._unary(
                        "CloseSession",
                        backend_pb2.CloseSessionRequest(session_id=self._session_id),
                        backend_pb2.CloseSessionResponse,
                        min(timeout, self._timeout),
                    )
                except Exception as exc:
                    self._logger.info("closing the session with %s failed: %r", self._name, exc)
            if self._channel is not None:
                await self._channel.close()

    async def _open_session(self) -> None:
        """Validate, then CreateSession, retrying while the adapter is unreachable."""
        delay = 0.2
        while True:
            try:
                validated = await self._unary(
                    "Validate",
                    backend_pb2.ValidateRequest(adapter_config=self._config),
                    backend_pb2.ValidateResponse,
                    self._timeout,
                )
                if validated.status.code != 0:
                    self._logger.error(
                        "adapter %s refused the config of %s: %s",
                        self._params.adapter,
                        self._name,
                        validated.status.message,
                    )
                    return
                created = await self._unary(
                    "CreateSession",
                    backend_pb2.CreateSessionRequest(adapter_config=self._config),
                    backend_pb2.CreateSessionResponse,
                    self._timeout,
                )
                if created.status.code != 0:
                    self._logger.error(
                        "adapter %s refused a session: %s", self._params.adapter, created.status
                    )
                    return
                self._session_id = created.session_id
                return
            except grpc.aio.AioRpcError as exc:
                self._logger.info("session with %s not open yet: %s", self._name, exc.code().name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _unary(self, method: str, request: Message, response: type[Message], timeout: float) -> Any:
        assert self._channel is not None
        call = self._channel.unary_unary(
            _BACKEND + method,
            request_serializer=_serialize,
            response_deserializer=response.FromString,
        )
        return await call(request, timeout=timeout)

    def _adapter_config(self) -> any_pb2.Any:
        if not self._params.session_based:
            return self._config
        if not self._session_id:
            raise AdapterUnavailable("no session with the adapter yet")
        # Session-based adapters find their config by session id (see the handler service protos).
        return any_pb2.Any(type_url="google.protobuf.Any.type_url", value=self._session_id.encode())

    # -- calls ----------------------------------------------------------------------------------

    def _template(self, instance: Instance) -> TemplateModel:
        model = self._params.templates.get(type(instance).template)
        if model is None:
            raise ValueError(
                f"adapter {self._params.adapter} does not take template {type(instance).template!r}"
            )
        return model

    def encode(self, model: TemplateModel, instance: Instance) -> Message:
        message = model.instance_class()
        encode_instance(instance, message, self._params.value_types.get(instance.name, {}))
        named: Any = message
        named.name = self._params.wire_names.get(instance.name, instance.name)
        return message

    async def call(self, model: TemplateModel, request: Message) -> Any:
        if self._channel is None:
            raise AdapterUnavailable("handler not started")
        stub = self._stubs.get(model.method)
        if stub is None:
            stub = self._stubs[model.method] = self._channel.unary_unary(
                model.method,
                request_serializer=_serialize,
                response_deserializer=model.response_class.FromString,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            await asyncio.wait_for(self._in_flight.acquire(), self._timeout)
        except TimeoutError:
            raise AdapterTimeout("too many calls in flight") from None
        try:
            remaining = max(deadline - loop.time(), 0.001)
            return await stub(request, timeout=remaining, metadata=call_metadata(self._params.connection))
        finally:
            self._in_flight.release()

    async def handle_check(self, instance: Instance) -> CheckResult:
        model = self._template(instance)
        request: Any = model.request_class()
        request.instance.CopyFrom(self.encode(model, instance))
        request.dedup_id = self._next_dedup_id()
        try:
            request.adapter_config.ParseFromString(self._adapter_config().SerializeToString())
            response = await self.call(model, request)
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc.code(), exc.details())
        except AdapterUnavailable as exc:
            return self._failed(grpc.StatusCode.UNAVAILABLE, str(exc))
        except AdapterTimeout as exc:
            return self._failed(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        if model.outputs:
            result, output = response.result, response.output
            outputs: dict[str, AttributeValue] = {
                spec.name: getattr(output, spec.name) for spec in model.outputs if hasattr(output, spec.name)
            }
        else:
            result, outputs = response, {}
        code = _code(result.status.code)
        status = Status(code, result.status.message) if code is not Code.OK else Status()
        duration = (
            result.valid_duration.ToTimedelta() if result.HasField("valid_duration") else _NOT_CACHEABLE
        )
        return CheckResult(
            status=status,
            valid_duration=duration,
            valid_use_count=result.valid_use_count,
            outputs=outputs if code is Code.OK else {},
        )

    def _failed(self, code: grpc.StatusCode, details: str | None) -> CheckResult:
        self._logger.warning(
            "out-of-process adapter %s (%s): %s %s",
            self._name,
            self._params.connection.address,
            code.name,
            details,
        )
        return CheckResult(_generic(code), _NOT_CACHEABLE, 0)

    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        model = self._template(instance)
        request: Any = model.request_class()
        request.instance.CopyFrom(self.encode(model, instance))
        request.dedup_id = args.deduplication_id
        wire_name = self._params.wire_names.get(instance.name, instance.name)
        params = request.quota_request.quotas[wire_name]
        params.amount = args.amount
        params.best_effort = args.best_effort
        try:
            request.adapter_config.ParseFromString(self._adapter_config().SerializeToString())
            response = await self.call(model, request)
        except grpc.aio.AioRpcError as exc:
            failed = self._failed(exc.code(), exc.details())
            return QuotaResult(0, _NOT_CACHEABLE, failed.status)
        except (AdapterUnavailable, AdapterTimeout) as exc:
            code = grpc.StatusCode.UNAVAILABLE
            if isinstance(exc, AdapterTimeout):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            failed = self._failed(code, str(exc))
            return QuotaResult(0, _NOT_CACHEABLE, failed.status)
        result = response.quotas.get(wire_name)
        if result is None:
            # Mixer failed the quota when the adapter did not answer for the instance it asked about.
            failed = self._failed(grpc.StatusCode.INTERNAL, f"no result for quota {wire_name!r}")
            return QuotaResult(0, _NOT_CACHEABLE, failed.status)
        duration = (
            result.valid_duration.ToTimedelta() if result.HasField("valid_duration") else _NOT_CACHEABLE
        )
        return QuotaResult(result.granted_amount, duration)

    def handle_report(self, batch: ReportBatch) -> None:
        assert self._delivery is not None, "report rules are checked against the templates"
        records: list[Record] = []
        for instance in batch.instances:
            model = self._template(instance)
            records.append(Record(self.encode(model, instance).SerializeToString(), route=model.name))
        if records:
            self._delivery.offer(records)

    @property
    def delivery(self) -> Delivery | None:
        return self._delivery


class _Sender:
    """One ``Handle<Template>`` call per template in a batch; the dedup id is a digest of the
    batch, so a retried batch carries the id it was first sent with."""

    def __init__(self, handler: OopHandler) -> None:
        self._handler = handler

    async def send(self, batch: Sequence[Record]) -> None:
        handler = self._handler
        by_route: dict[str, list[Record]] = {}
        for record in batch:
            by_route.setdefault(record.route, []).append(record)
        for route, records in by_route.items():
            model = handler._params.templates[route]
            request: Any = model.request_class()
            digest = hashlib.sha256()
            for record in records:
                request.instances.add().ParseFromString(record.payload)
                digest.update(record.payload)
            request.dedup_id = digest.hexdigest()[:32]
            try:
                request.adapter_config.ParseFromString(handler._adapter_config().SerializeToString())
                await handler.call(model, request)
            except (AdapterUnavailable, AdapterTimeout) as exc:
                raise RetryableError(str(exc)) from None
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _RETRYABLE:
                    raise RetryableError(f"{model.method}: {exc.code().name}") from None
                raise PermanentError(f"{model.method}: {exc.code().name}: {exc.details()}") from None

    async def close(self) -> None:
        return None


def build_oop_handler(params: BaseModel, env: HandlerEnv) -> OopHandler:
    assert isinstance(params, OopHandlerParams)
    return OopHandler(params, env)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _code(number: int) -> Code:
    try:
        return Code(number)
    except ValueError:
        return Code.UNKNOWN


def _generic(code: grpc.StatusCode) -> Status:
    """What a caller learns when the adapter failed: the kind of failure, never its text."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Status(Code.DEADLINE_EXCEEDED, "adapter did not answer in time")
    if code is grpc.StatusCode.UNAVAILABLE:
        return Status(Code.UNAVAILABLE, "adapter unavailable")
    return Status(Code.INTERNAL, "adapter failed")
