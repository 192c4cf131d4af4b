"""``list``: whitelist or blacklist checks of a listentry's value (Mixer's ``listchecker``).

Entries are strings, case-insensitive strings, IP addresses and CIDR ranges, or regular
expressions, from ``overrides`` and an optional provider URL refreshed in the background.
See README.md for the params.
"""

from __future__ import annotations

from adapters.list._config import ListConfig
from adapters.list._lists import EntryType
from mixer import AdapterInfo, Handler, HandlerEnv, Stability

__all__ = ["ADAPTER", "EntryType", "ListConfig", "build_handler"]


def build_handler(config: ListConfig, env: HandlerEnv) -> Handler:
    # aiohttp is imported with the handler, only when config names this adapter.
    from adapters.list._handler import ListHandler

    return ListHandler(config, env.logger, answers_changed=env.answers_changed)


ADAPTER = AdapterInfo(
    name="list",
    description="Checks whether a value is on a whitelist or blacklist of strings, IPs or patterns",
    templates=frozenset({"listentry"}),
    config_model=ListConfig,
    factory=build_handler,
    stability=Stability.STABLE,
    legacy_kinds=("listchecker",),
)
