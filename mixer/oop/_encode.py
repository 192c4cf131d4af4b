"""Instances to InstanceMsg: each field typed as the template's handler service declares it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mixer.attributes import ValueType

__all__ = ["ValueTypes", "encode_instance", "encode_value"]

#: The static type of each Value-typed field of an instance, keyed ``field`` or ``field/key``
#: (map entries) or ``struct.field``: DNS names, e-mail addresses and URIs are ``str`` at run
#: time, so the expression's type decides which member of the oneof they go to.
ValueTypes = Mapping[str, ValueType]

_INSTANCE_NAME_FIELD = 72295727
_STRING_MEMBERS = {
    ValueType.DNS_NAME: "dns_name_value",
    ValueType.EMAIL_ADDRESS: "email_address_value",
    ValueType.URI: "uri_value",
}


def encode_instance(instance: Any, message: Message, types: ValueTypes) -> Message:
    """Fill ``message`` (an InstanceMsg) from ``instance``; absent fields stay unset."""
    _fill(instance, message, types, "")
    return message


def _fill(source: Any, message: Message, types: ValueTypes, prefix: str) -> None:
    for f in message.DESCRIPTOR.fields:
        value = getattr(source, f.name, None)
        if value is None:
            continue
        path = prefix + f.name
        message_type = f.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            target = getattr(message, f.name)
            value_field = message_type.fields_by_name["value"]
            for key, item in value.items():
                if item is None:
                    continue
                if value_field.message_type is None:
                    target[str(key)] = _scalar(value_field, item)
                else:
                    _typed(target[str(key)], item, types.get(f"{path}/{key}"))
        elif message_type is not None:
            if message_type.full_name.endswith(".Value") or message_type.full_name in _WRAPPERS:
                _typed(getattr(message, f.name), value, types.get(path))
            else:
                _fill(value, getattr(message, f.name), types, path + ".")
        elif f.number == _INSTANCE_NAME_FIELD:
            setattr(message, f.name, str(value))
        else:
            setattr(message, f.name, _scalar(f, value))


_WRAPPERS = frozenset(
    {
        "istio.policy.v1beta1.TimeStamp",
        "istio.policy.v1beta1.Duration",
        "istio.policy.v1beta1.IPAddress",
        "istio.policy.v1beta1.DNSName",
        "istio.policy.v1beta1.EmailAddress",
        "istio.policy.v1beta1.Uri",
    }
)


def _scalar(f: Any, value: Any) -> Any:
    if f.type == FieldDescriptor.TYPE_STRING:
        return value if isinstance(value, str) else _text(value)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(value)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return value if isinstance(value, bytes) else str(value).encode()
    return int(value)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _typed(message: Message, value: Any, static: ValueType | None) -> None:
    """A wrapper message (TimeStamp, IPAddress, ...) or a Value with the member for ``value``'s type."""
    name = message.DESCRIPTOR.full_name
    if name.endswith(".Value"):
        encode_value(message, value, static)
        return
    inner = message.value  # type: ignore[attr-defined]
    if name.endswith(".TimeStamp") and isinstance(value, datetime):
        inner.FromDatetime(value)
    elif name.endswith(".Duration") and isinstance(value, timedelta):
        inner.FromTimedelta(value)
    elif name.endswith(".IPAddress"):
        message.value = _ip_bytes(value)  # type: ignore[attr-defined]
    else:
        message.value = str(value)  # type: ignore[attr-defined]


def encode_value(message: Message, value: Any, static: ValueType | None = None) -> None:
    """Set the oneof member of an istio.policy.v1beta1.Value for ``value``."""
    v: Any = message
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int64_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        member = _STRING_MEMBERS.get(static) if static is not None else None
        if member is None:
            v.string_value = value
        else:
            getattr(v, member).value = value
    elif isinstance(value, datetime):
        v.timestamp_value.value.FromDatetime(value)
    elif isinstance(value, timedelta):
        v.duration_value.value.FromTimedelta(value)
    elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        v.ip_address_value.value = value.packed
    elif isinstance(value, bytes):
        # Mixer had no bytes member: an address given as bytes is what the proxies send.
        v.ip_address_value.value = value
    elif isinstance(value, Mapping):
        # A string map has no Value member either; Mixer rejected it at config time.
        v.string_value = ",".join(f"{k}={value[k]}" for k in sorted(value))
    else:
        v.string_value = str(value)


def _ip_bytes(value: Any) -> bytes:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value.packed
    if isinstance(value, bytes):
        return value
    return ipaddress.ip_address(str(value)).packed
