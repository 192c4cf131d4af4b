"""Descriptors of out-of-process adapters and templates: Mixer's ``kind: adapter`` and ``kind: template``.

An adapter document carries the FileDescriptorSet of its params (``config``, base64); a template
document the FileDescriptorSet of its generated handler service (``descriptor``, base64). Both are
loaded into a descriptor pool of their own, so a document can never clash with the messages this
process compiled in. The built-in templates (metric, logentry, ...) use the handler services
compiled from ``mixer/proto/istio/mixer/template``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message

from mixer.attributes import ValueType
from mixer.templates import FieldKind, FieldSpec, Instance, TemplateSpec, Variety

__all__ = [
    "AdapterDescriptor",
    "DescriptorError",
    "TemplateModel",
    "builtin_template_model",
    "decode_descriptor_set",
    "encode_params",
    "template_model_from_set",
]

#: FileOptions extensions of istio.mixer.adapter.model.v1beta1 (extensions.proto).
_VARIETY_OPTION = 72295727
_NAME_OPTION = 72295888
#: The field number Mixer gave ``name`` in every InstanceMsg.
INSTANCE_NAME_FIELD = 72295727
_VARIETIES = {0: Variety.CHECK, 1: Variety.REPORT, 2: Variety.QUOTA, 4: Variety.CHECK}
_CHECK_WITH_OUTPUT = 4
#: A descriptor document larger than this is refused (Istio's own are a few hundred KiB at most).
MAX_DESCRIPTOR_BYTES = 4 * 1024 * 1024

_BUILTIN_MODULES = {
    "metric": "metric",
    "logentry": "logentry",
    "listentry": "listentry",
    "quota": "quota",
    "authorization": "authorization",
    "apikey": "apikey",
    "checknothing": "checknothing",
}

_TYPED_MESSAGES = {
    "istio.policy.v1beta1.TimeStamp": ValueType.TIMESTAMP,
    "istio.policy.v1beta1.Duration": ValueType.DURATION,
    "istio.policy.v1beta1.IPAddress": ValueType.IP_ADDRESS,
    "istio.policy.v1beta1.DNSName": ValueType.DNS_NAME,
    "istio.policy.v1beta1.EmailAddress": ValueType.EMAIL_ADDRESS,
    "istio.policy.v1beta1.Uri": ValueType.URI,
}
_VALUE_MESSAGES = frozenset({"istio.policy.v1beta1.Value", "istio.mixer.adapter.model.v1beta1.Value"})
_SCALARS = {
    FieldDescriptor.TYPE_STRING: ValueType.STRING,
    FieldDescriptor.TYPE_INT64: ValueType.INT64,
    FieldDescriptor.TYPE_INT32: ValueType.INT64,
    FieldDescriptor.TYPE_DOUBLE: ValueType.DOUBLE,
    FieldDescriptor.TYPE_FLOAT: ValueType.DOUBLE,
    FieldDescriptor.TYPE_BOOL: ValueType.BOOL,
    FieldDescriptor.TYPE_BYTES: ValueType.BYTES,
}


class DescriptorError(ValueError):
    """A descriptor document cannot be used; the message says why."""


@dataclass(frozen=True, eq=False)
class TemplateModel:
    """What Mixer needs to send instances of one template to an adapter.

    ``method`` is the gRPC path of the template's Handle call; ``plural``: the request carries
    ``repeated InstanceMsg instances`` (report templates) rather than one ``instance``;
    ``outputs`` are the OutputMsg fields of a check-with-output template (keyval's ``value``).
    Two models are equal when their descriptors are, so a reload keeps an unchanged handler.
    """

    name: str
    variety: Variety
    spec: TemplateSpec
    method: str
    plural: bool
    request_class: type[Message]
    response_class: type[Message]
    instance_class: type[Message]
    outputs: tuple[FieldSpec, ...] = ()
    fingerprint: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TemplateModel) and (self.name, self.fingerprint) == (
            other.name,
            other.fingerprint,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.fingerprint))


@dataclass(frozen=True, eq=False)
class AdapterDescriptor:
    """A ``kind: adapter`` document: its templates and the message its handlers' params encode to."""

    name: str
    templates: tuple[str, ...]
    session_based: bool
    params_class: type[Message] | None
    description: str = ""
    fingerprint: str = field(default="")


def decode_descriptor_set(text: str) -> descriptor_pb2.FileDescriptorSet:
    """:raises DescriptorError: not base64, too large, or not a FileDescriptorSet."""
    if len(text) > MAX_DESCRIPTOR_BYTES * 4 // 3 + 4:
        raise DescriptorError(f"descriptor is larger than {MAX_DESCRIPTOR_BYTES} bytes")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DescriptorError(f"descriptor is not valid base64: {exc}") from None
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    try:
        descriptor_set.ParseFromString(raw)
    except Exception as exc:
        raise DescriptorError(f"descriptor is not a FileDescriptorSet: {exc}") from None
    if not descriptor_set.file:
        raise DescriptorError("descriptor holds no files")
    return descriptor_set


def _pool(descriptor_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A fresh pool with every file of the set, dependencies first; well-known types a set leaves
    out come from the compiled-in copies."""
    pool = descriptor_pool.DescriptorPool()
    files = {f.name: f for f in descriptor_set.file}
    added: set[str] = set()

    def add(name: str, trail: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in trail:
            raise DescriptorError(f"import cycle through {name}")
        proto = files.get(name)
        if proto is None:
            try:
                known = descriptor_pool.Default().FindFileByName(name)
            except KeyError:
                raise DescriptorError(f"descriptor imports {name}, which it does not contain") from None
            proto = descriptor_pb2.FileDescriptorProto()
            known.CopyToProto(proto)
        for dependency in proto.dependency:
            add(dependency, (*trail, name))
        try:
            pool.Add(proto)
        except Exception as exc:
            raise DescriptorError(f"{name}: {exc}") from None
        added.add(name)

    for name in files:
        add(name, ())
    return pool


def _options_field(options: bytes, number: int) -> int | bytes | None:
    """The last value of field ``number`` in serialized FileOptions: extensions defined in another
    pool arrive as unknown fields, so they are read off the wire."""
    position = 0
    found: int | bytes | None = None
    while position < len(options):
        key, position = _read_varint(options, position)
        wire_type = key & 7
        value: int | bytes | None = None
        if wire_type == 0:
            value, position = _read_varint(options, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 2:
            length, position = _read_varint(options, position)
            value = options[position : position + length]
            position += length
        elif wire_type == 5:
            position += 4
        else:
            raise DescriptorError("malformed file options")
        if key >> 3 == number and value is not None:
            found = value
    return found


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while position < len(data):
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    raise DescriptorError("malformed file options")


def template_model_from_set(name: str, descriptor_set: descriptor_pb2.FileDescriptorSet) -> TemplateModel:
    """The template a ``kind: template`` document describes.

    :raises DescriptorError: no handler service, an unsupported variety or field type.
    """
    pool = _pool(descriptor_set)
    candidates = [f for f in descriptor_set.file if any(s.name.startswith("Handle") for s in f.service)]
    if not candidates:
        raise DescriptorError("descriptor has no Handle<Template>Service")
    file_proto = candidates[-1]
    return _model(name, pool.FindFileByName(file_proto.name), file_proto.options.SerializeToString())


def builtin_template_model(name: str) -> TemplateModel | None:
    """The compiled-in handler service of Mixer's template ``name`` (metric, listentry, ...)."""
    module_name = _BUILTIN_MODULES.get(name)
    if module_name is None:
        return None
    import importlib

    module = importlib.import_module(
        f"mixer.proto.istio.mixer.template.{module_name}.template_handler_service_pb2"
    )
    file_descriptor: FileDescriptor = module.DESCRIPTOR
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    return _model(name, file_descriptor, proto.options.SerializeToString())


def _model(name: str, file_descriptor: FileDescriptor, options: bytes) -> TemplateModel:
    raw_variety = _options_field(options, _VARIETY_OPTION)
    variety_number = raw_variety if isinstance(raw_variety, int) else 0
    variety = _VARIETIES.get(variety_number)
    if variety is None:
        raise DescriptorError(
            f"template variety {variety_number} is not supported (check, report, quota, check with output)"
        )
    raw_name = _options_field(options, _NAME_OPTION)
    declared = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else ""
    if declared and declared != name:
        raise DescriptorError(f'descriptor is for template "{declared}", not "{name}"')
    services = [s for s in file_descriptor.services_by_name.values() if s.name.startswith("Handle")]
    if len(services) != 1 or len(services[0].methods) != 1:
        raise DescriptorError("expected one Handle<Template>Service with one method")
    service = services[0]
    method = service.methods[0]
    request = method.input_type
    instance_field = request.fields_by_name.get("instances") or request.fields_by_name.get("instance")
    if instance_field is None or instance_field.message_type is None:
        raise DescriptorError(f"{request.full_name} has no instance field")
    plural = instance_field.name == "instances"
    instance_descriptor = instance_field.message_type
    outputs: tuple[FieldSpec, ...] = ()
    if variety_number == _CHECK_WITH_OUTPUT:
        output_field = method.output_type.fields_by_name.get("output")
        if output_field is None or output_field.message_type is None:
            raise DescriptorError(f"{method.output_type.full_name} has no output field")
        outputs = tuple(
            _field_spec(f, output_field.message_type.full_name) for f in output_field.message_type.fields
        )
    fields = tuple(
        _field_spec(f, instance_descriptor.full_name)
        for f in instance_descriptor.fields
        if f.number != INSTANCE_NAME_FIELD
    )
    builtin = _builtin_spec(name)
    spec = builtin if builtin is not None else _dynamic_spec(name, variety, fields, outputs)
    digest = hashlib.sha256()
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    digest.update(proto.SerializeToString(deterministic=True))
    return TemplateModel(
        name=name,
        variety=variety,
        spec=spec,
        method=f"/{service.full_name}/{method.name}",
        plural=plural,
        request_class=message_factory.GetMessageClass(request),
        response_class=message_factory.GetMessageClass(method.output_type),
        instance_class=message_factory.GetMessageClass(instance_descriptor),
        outputs=outputs,
        fingerprint=digest.hexdigest(),
    )


def _builtin_spec(name: str) -> TemplateSpec | None:
    from mixer.templates import BUILTIN_TEMPLATES

    return next((t for t in BUILTIN_TEMPLATES if t.name == name), None)


def _field_spec(f: FieldDescriptor, owner: str) -> FieldSpec:
    message = f.message_type
    if message is not None and message.GetOptions().map_entry:
        value = message.fields_by_name["value"]
        return FieldSpec(f.name, FieldKind.MAP, _value_type(value, owner))
    if f.is_repeated:
        raise DescriptorError(f"{owner}.{f.name}: repeated fields are not supported in templates")
    if (
        message is not None
        and message.full_name not in _TYPED_MESSAGES
        and message.full_name not in _VALUE_MESSAGES
    ):
        nested = tuple(_field_spec(n, message.full_name) for n in message.fields)
        return FieldSpec(f.name, FieldKind.STRUCT, fields=nested)
    return FieldSpec(f.name, FieldKind.VALUE, _value_type(f, owner))


def _value_type(f: FieldDescriptor, owner: str) -> ValueType | None:
    message: Descriptor | None = f.message_type
    if message is not None:
        if message.full_name in _VALUE_MESSAGES:
            return None
        typed = _TYPED_MESSAGES.get(message.full_name)
        if typed is None:
            raise DescriptorError(f"{owner}.{f.name}: message type {message.full_name} is not supported here")
        return typed
    scalar = _SCALARS.get(f.type)
    if scalar is None:
        raise DescriptorError(f"{owner}.{f.name}: field type {f.type} is not supported")
    return scalar


def _dynamic_spec(
    name: str, variety: Variety, fields: tuple[FieldSpec, ...], outputs: tuple[FieldSpec, ...]
) -> TemplateSpec:
    instance_type = _instance_type(name, fields, True)
    return TemplateSpec(name, variety, fields, instance_type, "An out-of-process template.", outputs=outputs)


def _instance_type(name: str, fields: Iterable[FieldSpec], top: bool) -> type[Any]:
    members: list[tuple[str, Any, Any]] = []
    for spec in fields:
        if spec.kind is FieldKind.MAP:
            members.append((spec.name, dict[str, Any], dataclasses.field(default_factory=dict)))
        elif spec.kind is FieldKind.STRUCT:
            nested = _instance_type(f"{name}_{spec.name}", spec.fields, False)
            members.append((spec.name, nested | None, dataclasses.field(default=None)))
        else:
            members.append((spec.name, Any, dataclasses.field(default=None)))
    class_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_")) + "Instance"
    if top:
        return dataclasses.make_dataclass(
            class_name, members, bases=(Instance,), slots=True, namespace={"template": name}
        )
    return dataclasses.make_dataclass(class_name, members, slots=True)


def adapter_descriptor(name: str, spec: Mapping[str, Any]) -> AdapterDescriptor:
    """The adapter a ``kind: adapter`` document's spec declares.

    :raises DescriptorError: an unknown field, a bad descriptor or no ``Params`` message.
    """
    known = {"description", "session_based", "sessionBased", "templates", "config"}
    unknown = sorted(str(k) for k in spec if k not in known)
    if unknown:
        raise DescriptorError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
    templates = spec.get("templates") or []
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise DescriptorError("templates must be a list of template names")
    session_based = spec.get("session_based", spec.get("sessionBased", False))
    if not isinstance(session_based, bool):
        raise DescriptorError("session_based must be true or false")
    config = spec.get("config")
    params_class: type[Message] | None = None
    digest = hashlib.sha256(repr((sorted(templates), session_based)).encode())
    if config:
        if not isinstance(config, str):
            raise DescriptorError("config must be a base64 FileDescriptorSet")
        descriptor_set = decode_descriptor_set(config)
        pool = _pool(descriptor_set)
        params_class = _params_class(descriptor_set, pool)
        digest.update(descriptor_set.SerializeToString(deterministic=True))
    description = spec.get("description") or ""
    return AdapterDescriptor(
        name=name,
        templates=tuple(templates),
        session_based=session_based,
        params_class=params_class,
        description=str(description),
        fingerprint=digest.hexdigest(),
    )


def _params_class(
    descriptor_set: descriptor_pb2.FileDescriptorSet, pool: descriptor_pool.DescriptorPool
) -> type[Message]:
    # Mixer encoded a handler's params as the adapter's top-level ``Params`` message.
    for file_proto in reversed(descriptor_set.file):
        for message in file_proto.message_type:
            if message.name == "Params":
                full = f"{file_proto.package}.Params" if file_proto.package else "Params"
                return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    raise DescriptorError("adapter descriptor has no Params message")


def encode_params(params_class: type[Message] | None, params: Mapping[str, Any] | None) -> bytes:
    """The handler's params as a serialized google.protobuf.Any of the adapter's Params.

    :raises DescriptorError: the params do not fit the adapter's Params message.
    """
    packed = any_pb2.Any()
    if params_class is None:
        if params:
            raise DescriptorError("the adapter declares no config descriptor, so its handlers take no params")
        return packed.SerializeToString()
    message = params_class()
    try:
        json_format.ParseDict(dict(params or {}), message)
    except json_format.ParseError as exc:
        raise DescriptorError(f"params do not match {message.DESCRIPTOR.full_name}: {exc}") from None
    packed.Pack(message)
    return packed.SerializeToString(deterministic=True)
