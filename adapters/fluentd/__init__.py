"""``fluentd``: logentry instances to a fluentd (or Fluent Bit) forward input, as Mixer's adapter.

Events go out over the Forward protocol (msgpack over TCP) tagged with the instance name, in
batches acknowledged per chunk; delivery (queueing, batching, retry, spool) is the shared
:mod:`mixer.delivery` helper. See README.md.
"""

from __future__ import annotations

from pydantic import BaseModel

import mixer
from adapters.fluentd._config import DEFAULT_ADDRESS, FluentdConfig
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, hookimpl

__all__ = ["ADAPTER_INFO", "DEFAULT_ADDRESS", "FluentdConfig", "build_handler", "mixer_register_adapters"]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    """A handler from validated params; nothing connects before the first send."""
    from adapters.fluentd._handler import FluentdHandler

    if not isinstance(config, FluentdConfig):
        raise TypeError(f"fluentd handler needs FluentdConfig params, got {type(config).__name__}")
    return FluentdHandler(config, env)


ADAPTER_INFO = AdapterInfo(
    name="fluentd",
    description="Sends log entries to fluentd over the Forward protocol (msgpack, chunk acks).",
    templates=frozenset({"logentry"}),
    config_model=FluentdConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=mixer.__version__,
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER_INFO]
