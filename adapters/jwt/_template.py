"""The ``requestauth`` template: the token a request carries, for an authenticating check handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mixer.attributes import ValueType
from mixer.templates import FieldKind, FieldSpec, Instance, TemplateSpec, Variety


@dataclass(slots=True)
class RequestAuthInstance(Instance):
    """``token``: a bare token, or an ``Authorization`` header value (``Bearer <token>``)."""

    template: ClassVar[str] = "requestauth"
    token: str | None = None


REQUESTAUTH_TEMPLATE = TemplateSpec(
    "requestauth",
    Variety.CHECK,
    (FieldSpec("token", FieldKind.VALUE, ValueType.STRING),),
    RequestAuthInstance,
    "The credential a request carries (a bearer token), to verify and turn into request.auth.* attributes.",
)
