"""The ``zipkin`` adapter: tracespan instances POSTed to a Zipkin server as v2 JSON spans.

Spans are read by :func:`mixer.spans.span_from_instance`, as the otlp adapter reads them (same
ids, kinds, times and error rule), and go through the shared delivery helper. See README.md in
this folder for the params and the span mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

import mixer
from adapters.zipkin._config import DEFAULT_URL, ZipkinConfig, ZipkinTls
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, hookimpl
from mixer._lazy import lazy_getattr

if TYPE_CHECKING:
    from adapters.zipkin._encode import encode_instance, span_json, spans_body, tag_text
    from adapters.zipkin._handler import ZipkinHandler, ZipkinSender, ZipkinStats

# Registration needs only the params model; aiohttp loads with the first handler.
_LAZY = {
    "encode_instance": "adapters.zipkin._encode",
    "span_json": "adapters.zipkin._encode",
    "spans_body": "adapters.zipkin._encode",
    "tag_text": "adapters.zipkin._encode",
    "ZipkinHandler": "adapters.zipkin._handler",
    "ZipkinSender": "adapters.zipkin._handler",
    "ZipkinStats": "adapters.zipkin._handler",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    """The adapter's factory: a handler from validated params; nothing connects until ``start()``.

    :raises TypeError: ``config`` is not a :class:`ZipkinConfig`.
    """
    from adapters.zipkin._handler import ZipkinHandler

    if not isinstance(config, ZipkinConfig):
        raise TypeError(f"zipkin handler needs ZipkinConfig params, got {type(config).__name__}")
    return ZipkinHandler(config, env)


ADAPTER_INFO = AdapterInfo(
    name="zipkin",
    description="Sends tracespan instances to a Zipkin server as v2 JSON spans.",
    templates=frozenset({"tracespan"}),
    config_model=ZipkinConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=mixer.__version__,
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER_INFO]


__all__ = [
    "ADAPTER_INFO",
    "DEFAULT_URL",
    "ZipkinConfig",
    "ZipkinHandler",
    "ZipkinSender",
    "ZipkinStats",
    "ZipkinTls",
    "build_handler",
    "encode_instance",
    "mixer_register_adapters",
    "span_json",
    "spans_body",
    "tag_text",
]
