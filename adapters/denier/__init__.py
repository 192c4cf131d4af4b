"""``denier``: answers every Check with one configured status and grants no quota.

Mixer's ``denier`` adapter (legacy kind ``denier``), for the checknothing, listentry and quota
templates. See README.md for the params.
"""

from __future__ import annotations

from adapters.denier._config import DenierConfig, StatusParams
from mixer import AdapterInfo, Handler, HandlerEnv, Stability

__all__ = ["ADAPTER", "DenierConfig", "StatusParams", "build_handler"]


def build_handler(config: DenierConfig, env: HandlerEnv) -> Handler:
    from adapters.denier._handler import DenierHandler

    return DenierHandler(config)


ADAPTER = AdapterInfo(
    name="denier",
    description="Rejects every check and quota request with a configurable status",
    templates=frozenset({"checknothing", "listentry", "quota"}),
    config_model=DenierConfig,
    factory=build_handler,
    stability=Stability.STABLE,
)
