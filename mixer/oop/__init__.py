"""Out-of-process adapters: Mixer's ``kind: adapter`` / ``kind: template`` documents, handlers with
a ``connection``, and the istio.mixer.adapter.model.v1beta1 calls made to them (``docs/oop-adapters.md``).

The config loader uses the descriptor and connection models; the handler (and
:class:`OopHandlerParams`) is imported on first use, so that loading config never pulls in the
delivery machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixer.lazy import lazy_getattr
from mixer.oop._connection import Authentication, Connection, MutualTls, Tls
from mixer.oop._descriptors import (
    AdapterDescriptor,
    DescriptorError,
    TemplateModel,
    adapter_descriptor,
    builtin_template_model,
    decode_descriptor_set,
    encode_params,
    template_model_from_set,
)
from mixer.oop._encode import ValueTypes, encode_instance, encode_value

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mixer.adapter import Handler, HandlerEnv
    from mixer.oop._handler import OopHandlerParams

__all__ = [
    "AdapterDescriptor",
    "Authentication",
    "Connection",
    "DescriptorError",
    "MutualTls",
    "OopHandlerParams",
    "TemplateModel",
    "Tls",
    "ValueTypes",
    "adapter_descriptor",
    "build_handler",
    "builtin_template_model",
    "decode_descriptor_set",
    "encode_instance",
    "encode_params",
    "encode_value",
    "template_model_from_set",
]


def build_handler(params: BaseModel, env: HandlerEnv) -> Handler:
    """The factory of every out-of-process adapter's handlers."""
    from mixer.oop._handler import build_oop_handler

    return build_oop_handler(params, env)


__getattr__ = lazy_getattr(__name__, {"mixer.oop._handler": ("OopHandlerParams",)})
