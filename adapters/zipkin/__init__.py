"""The ``zipkin`` adapter: tracespan instances POSTed to a Zipkin server as v2 JSON spans.

Spans are read by :func:`mixer.spans.span_from_instance`, as the otlp adapter reads them (same
ids, kinds, times and error rule), and go through the shared delivery helper. See README.md in
this folder for the params and the span mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.zipkin._config import DEFAULT_URL, ZipkinConfig, ZipkinTls
from mixer import AdapterInfo, Stability, lazy_factory
from mixer.lazy import lazy_getattr

__all__ = [
    "ADAPTER",
    "DEFAULT_URL",
    "ZipkinConfig",
    "ZipkinHandler",
    "ZipkinSender",
    "ZipkinStats",
    "ZipkinTls",
    "encode_instance",
    "span_json",
    "spans_body",
    "tag_text",
]

if TYPE_CHECKING:
    from adapters.zipkin._encode import encode_instance, span_json, spans_body, tag_text
    from adapters.zipkin._handler import ZipkinHandler, ZipkinSender, ZipkinStats

# Registration needs only the params model; aiohttp loads with the first handler.
__getattr__ = lazy_getattr(
    __name__,
    {
        "adapters.zipkin._encode": ("encode_instance", "span_json", "spans_body", "tag_text"),
        "adapters.zipkin._handler": ("ZipkinHandler", "ZipkinSender", "ZipkinStats"),
    },
)


ADAPTER = AdapterInfo(
    name="zipkin",
    description="Sends tracespan instances to a Zipkin server as v2 JSON spans.",
    templates=frozenset({"tracespan"}),
    config_model=ZipkinConfig,
    factory=lazy_factory("adapters.zipkin._handler:ZipkinHandler"),
    stability=Stability.BETA,
)
