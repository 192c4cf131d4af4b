"""Attribute manifests: which attribute names exist and what type each has."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from mixer.values._types import ValueType


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    name: str
    value_type: ValueType
    description: str = ""


class AttributeManifest(Mapping[str, ValueType]):
    """An immutable mapping of attribute name to :class:`ValueType`.

    Several manifests (Istio's standard vocabulary, an operator's attributemanifest documents)
    combine with :meth:`merged`; a name declared twice with different types is an error.
    """

    __slots__ = ("_infos",)

    def __init__(self, attributes: Iterable[AttributeInfo] = ()) -> None:
        infos: dict[str, AttributeInfo] = {}
        for info in attributes:
            previous = infos.get(info.name)
            if previous is not None and previous.value_type is not info.value_type:
                raise ValueError(
                    f"attribute {info.name!r} declared as {previous.value_type.name} "
                    f"and as {info.value_type.name}"
                )
            infos[info.name] = info
        self._infos = infos

    @classmethod
    def from_types(cls, types: Mapping[str, ValueType]) -> AttributeManifest:
        return cls(AttributeInfo(name, vt) for name, vt in types.items())

    def __getitem__(self, name: str) -> ValueType:
        return self._infos[name].value_type

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> AttributeInfo:
        return self._infos[name]

    def merged(self, *others: AttributeManifest) -> AttributeManifest:
        infos = list(self._infos.values())
        for other in others:
            infos.extend(other._infos.values())
        return AttributeManifest(infos)

    def __repr__(self) -> str:
        return f"AttributeManifest({len(self)} attributes)"


def _vocabulary() -> Iterator[AttributeInfo]:
    s, i, ip, m = ValueType.STRING, ValueType.INT64, ValueType.IP_ADDRESS, ValueType.STRING_MAP
    t, d, b = ValueType.TIMESTAMP, ValueType.DURATION, ValueType.BOOL
    for side in ("source", "destination"):
        for suffix in (
            "uid", "name", "namespace", "principal", "owner", "user",
            "workload.uid", "workload.name", "workload.namespace",
            "container.name", "container.image",
        ):  # fmt: skip
            yield AttributeInfo(f"{side}.{suffix}", s)
        yield AttributeInfo(f"{side}.ip", ip)
        yield AttributeInfo(f"{side}.port", i)
        yield AttributeInfo(f"{side}.labels", m)
        yield AttributeInfo(f"{side}.metadata", m)
    for suffix in ("host", "uid", "name", "namespace"):
        yield AttributeInfo(f"destination.service.{suffix}", s)
    for name in ("headers", "query_params", "auth.claims"):
        yield AttributeInfo(f"request.{name}", m)
    for name in (
        "id", "host", "method", "path", "url_path", "reason", "referer", "scheme", "useragent",
        "api_key", "auth.principal", "auth.audiences", "auth.presenter", "auth.raw_claims",
    ):  # fmt: skip
        yield AttributeInfo(f"request.{name}", s)
    yield AttributeInfo("request.size", i)
    yield AttributeInfo("request.total_size", i)
    yield AttributeInfo("request.time", t)
    yield AttributeInfo("response.headers", m)
    for name in ("size", "total_size", "code"):
        yield AttributeInfo(f"response.{name}", i)
    yield AttributeInfo("response.time", t)
    yield AttributeInfo("response.duration", d)
    yield AttributeInfo("response.grpc_status", s)
    yield AttributeInfo("response.grpc_message", s)
    for name in ("id", "event", "requested_server_name"):
        yield AttributeInfo(f"connection.{name}", s)
    for name in ("received.bytes", "received.bytes_total", "sent.bytes", "sent.bytes_total"):
        yield AttributeInfo(f"connection.{name}", i)
    yield AttributeInfo("connection.duration", d)
    yield AttributeInfo("connection.mtls", b)
    for name in ("protocol", "reporter.kind", "reporter.uid", "proxy_error_code", "proxy_version"):
        yield AttributeInfo(f"context.{name}", s)
    yield AttributeInfo("context.time", t)
    yield AttributeInfo("context.timestamp", t)
    for name in ("service", "version", "operation", "protocol"):
        yield AttributeInfo(f"api.{name}", s)
    yield AttributeInfo("check.error_code", i)
    yield AttributeInfo("check.error_message", s)
    yield AttributeInfo("check.cache_hit", b)
    yield AttributeInfo("quota.cache_hit", b)


#: The attribute vocabulary Istio's proxies send (mixer-v1 "Attribute vocabulary").
ISTIO_MANIFEST = AttributeManifest(_vocabulary())
