"""``elasticsearch``: access logs, metrics and spans indexed into Elasticsearch with the ``_bulk`` API.

Documents are the stdio adapter's JSON lines plus ``@timestamp``, written to a daily index (a
strftime pattern) or a data stream; delivery (queueing, batching, retry, spool, dead letter) is
the shared :mod:`mixer.delivery` helper. See README.md for the params and the error handling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.elasticsearch._config import (
    DEFAULT_HOSTS,
    DEFAULT_INDEX,
    DEFAULT_TEMPLATE_BODY,
    DEFAULT_TEMPLATE_PRIORITY,
    ElasticsearchConfig,
    IndexTemplateOptions,
    TlsOptions,
)
from mixer import AdapterInfo, Stability, lazy_factory
from mixer.lazy import lazy_getattr

__all__ = [
    "ADAPTER",
    "DEFAULT_HOSTS",
    "DEFAULT_INDEX",
    "DEFAULT_TEMPLATE_BODY",
    "DEFAULT_TEMPLATE_PRIORITY",
    "BulkSender",
    "DocumentEncoder",
    "ElasticsearchConfig",
    "ElasticsearchHandler",
    "IndexTemplateOptions",
    "TemplateState",
    "TlsOptions",
]

if TYPE_CHECKING:
    from adapters.elasticsearch._encoding import DocumentEncoder
    from adapters.elasticsearch._handler import ElasticsearchHandler
    from adapters.elasticsearch._sender import BulkSender, TemplateState

# Registration needs only the params model; the elasticsearch client loads with the first handler.
__getattr__ = lazy_getattr(
    __name__,
    {
        "adapters.elasticsearch._encoding": ("DocumentEncoder",),
        "adapters.elasticsearch._handler": ("ElasticsearchHandler",),
        "adapters.elasticsearch._sender": ("BulkSender", "TemplateState"),
    },
)


ADAPTER = AdapterInfo(
    name="elasticsearch",
    description="Indexes access logs, metrics and spans into Elasticsearch (daily indices or a data stream).",
    templates=frozenset({"logentry", "metric", "tracespan"}),
    config_model=ElasticsearchConfig,
    factory=lazy_factory("adapters.elasticsearch._handler:ElasticsearchHandler"),
    stability=Stability.BETA,
)
