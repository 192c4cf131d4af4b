"""``elasticsearch``: access logs, metrics and spans indexed into Elasticsearch with the ``_bulk`` API.

Documents are the stdio adapter's JSON lines plus ``@timestamp``, written to a daily index (a
strftime pattern) or a data stream; delivery (queueing, batching, retry, spool, dead letter) is
the shared :mod:`mixer.delivery` helper. See README.md for the params and the error handling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

import mixer
from adapters.elasticsearch._config import (
    DEFAULT_HOSTS,
    DEFAULT_INDEX,
    DEFAULT_TEMPLATE_BODY,
    DEFAULT_TEMPLATE_PRIORITY,
    ElasticsearchConfig,
    IndexTemplateOptions,
    TlsOptions,
)
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, hookimpl
from mixer.lazy import lazy_getattr

if TYPE_CHECKING:
    from adapters.elasticsearch._encoding import DocumentEncoder
    from adapters.elasticsearch._handler import ElasticsearchHandler
    from adapters.elasticsearch._sender import BulkSender, TemplateState

# Registration needs only the params model; the elasticsearch client loads with the first handler.
_LAZY = {
    "DocumentEncoder": "adapters.elasticsearch._encoding",
    "ElasticsearchHandler": "adapters.elasticsearch._handler",
    "BulkSender": "adapters.elasticsearch._sender",
    "TemplateState": "adapters.elasticsearch._sender",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    """The adapter's factory: a handler from validated params; nothing connects until it sends.

    :raises TypeError: ``config`` is not an :class:`ElasticsearchConfig`.
    """
    from adapters.elasticsearch._handler import ElasticsearchHandler

    if not isinstance(config, ElasticsearchConfig):
        raise TypeError(
            f"elasticsearch handler needs ElasticsearchConfig params, got {type(config).__name__}"
        )
    return ElasticsearchHandler(config, env)


ADAPTER_INFO = AdapterInfo(
    name="elasticsearch",
    description="Indexes access logs, metrics and spans into Elasticsearch (daily indices or a data stream).",
    templates=frozenset({"logentry", "metric", "tracespan"}),
    config_model=ElasticsearchConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=mixer.__version__,
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER_INFO]


__all__ = [
    "ADAPTER_INFO",
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
    "build_handler",
    "mixer_register_adapters",
]
