"""``denier``: answers every Check with one configured status and grants no quota.

Mixer's ``denier`` adapter (legacy kind ``denier``), for the checknothing, listentry and quota
templates. See README.md for the params.
"""

from __future__ import annotations

from pydantic import BaseModel

from adapters.denier._config import DenierConfig, StatusParams
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, __version__, hookimpl

__all__ = ["ADAPTER", "DenierConfig", "StatusParams", "build_handler", "mixer_register_adapters"]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    from adapters.denier._handler import DenierHandler

    if not isinstance(config, DenierConfig):
        raise TypeError(f"denier needs a DenierConfig, got {type(config).__name__}")
    return DenierHandler(config)


ADAPTER = AdapterInfo(
    name="denier",
    description="Rejects every check and quota request with a configurable status",
    templates=frozenset({"checknothing", "listentry", "quota"}),
    config_model=DenierConfig,
    factory=build_handler,
    stability=Stability.STABLE,
    version=__version__,
    legacy_kinds=("denier",),
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER]
