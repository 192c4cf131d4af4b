"""The ``zipkin`` adapter: tracespan instances POSTed to a Zipkin server as v2 JSON spans.

Spans are read by :func:`mixer.spans.span_from_instance`, as the otlp adapter reads them (same
ids, kinds, times and error rule), and go through the shared delivery helper. See README.md in
this folder for the params and the span mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mixer
from adapters.zipkin._config import DEFAULT_URL, ZipkinConfig, ZipkinTls
from mixer import AdapterInfo, Handler, HandlerEnv, Stability
from mixer.lazy import lazy_getattr

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


def build_handler(config: ZipkinConfig, env: HandlerEnv) -> Handler:
    from adapters.zipkin._handler import ZipkinHandler

    return ZipkinHandler(config, env)


ADAPTER = AdapterInfo(
    name="zipkin",
    description="Sends tracespan instances to a Zipkin server as v2 JSON spans.",
    templates=frozenset({"tracespan"}),
    config_model=ZipkinConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=mixer.__version__,
)


__all__ = [
    "ADAPTER",
    "DEFAULT_URL",
    "ZipkinConfig",
    "ZipkinHandler",
    "ZipkinSender",
    "ZipkinStats",
    "ZipkinTls",
    "build_handler",
    "encode_instance",
    "span_json",
    "spans_body",
    "tag_text",
]
