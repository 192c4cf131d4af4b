"""``fluentd``: logentry instances to a fluentd (or Fluent Bit) forward input, as Mixer's adapter.

Events go out over the Forward protocol (msgpack over TCP) tagged with the instance name, in
batches acknowledged per chunk; delivery (queueing, batching, retry, spool) is the shared
:mod:`mixer.delivery` helper. See README.md.
"""

from __future__ import annotations

from adapters.fluentd._config import DEFAULT_ADDRESS, FluentdConfig
from mixer import AdapterInfo, Stability, lazy_factory

__all__ = ["ADAPTER", "DEFAULT_ADDRESS", "FluentdConfig", "build_handler"]


ADAPTER = AdapterInfo(
    name="fluentd",
    description="Sends log entries to fluentd over the Forward protocol (msgpack, chunk acks).",
    templates=frozenset({"logentry"}),
    config_model=FluentdConfig,
    factory=lazy_factory("adapters.fluentd._handler:FluentdHandler"),
    stability=Stability.BETA,
)
