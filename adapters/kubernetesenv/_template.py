"""The ``kubernetes`` template: pod identities in, pod, workload and owner attributes out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mixer.attributes import IPAddress, ValueType
from mixer.templates import FieldKind, FieldSpec, Instance, TemplateSpec, Variety

__all__ = ["KUBERNETES_TEMPLATE", "KubernetesInstance"]


@dataclass(slots=True)
class KubernetesInstance(Instance):
    """Who the two ends of a request are: a ``kubernetes://<pod>.<namespace>`` uid, else an IP."""

    template: ClassVar[str] = "kubernetes"
    source_uid: str | None = None
    source_ip: IPAddress | None = None
    destination_uid: str | None = None
    destination_ip: IPAddress | None = None
    destination_port: int | None = None


_S, _I, _IP, _M = ValueType.STRING, ValueType.INT64, ValueType.IP_ADDRESS, ValueType.STRING_MAP


def _f(name: str, value_type: ValueType) -> FieldSpec:
    return FieldSpec(name, FieldKind.VALUE, value_type)


def _side(side: str) -> tuple[FieldSpec, ...]:
    return (
        _f(f"{side}_pod_uid", _S),
        _f(f"{side}_pod_ip", _IP),
        _f(f"{side}_pod_name", _S),
        _f(f"{side}_labels", _M),
        _f(f"{side}_namespace", _S),
        _f(f"{side}_service_account_name", _S),
        _f(f"{side}_host_ip", _IP),
        _f(f"{side}_workload_uid", _S),
        _f(f"{side}_workload_name", _S),
        _f(f"{side}_workload_namespace", _S),
        _f(f"{side}_owner", _S),
    )


KUBERNETES_TEMPLATE = TemplateSpec(
    "kubernetes",
    Variety.ATTRIBUTE_GENERATOR,
    (
        _f("source_uid", _S),
        _f("source_ip", _IP),
        _f("destination_uid", _S),
        _f("destination_ip", _IP),
        _f("destination_port", _I),
    ),
    KubernetesInstance,
    "Pod, workload and owner attributes of a request's source and destination, from the pod inventory.",
    outputs=(*_side("source"), *_side("destination"), _f("destination_container_name", _S)),
)
