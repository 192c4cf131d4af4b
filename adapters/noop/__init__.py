"""``noop``: accepts every instance of every built-in template; for tests and benchmarks.

Checks answer OK, quotas grant the full amount asked for, reports are discarded. See README.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mixer import AdapterInfo, Handler, HandlerEnv, Stability
from mixer.templates import BUILTIN_TEMPLATES

__all__ = ["ADAPTER", "NoopConfig", "build_handler"]


class NoopConfig(BaseModel):
    """The noop adapter takes no params."""

    model_config = ConfigDict(extra="forbid")


def build_handler(config: NoopConfig, env: HandlerEnv) -> Handler:
    from adapters.noop._handler import NoopHandler

    return NoopHandler()


ADAPTER = AdapterInfo(
    name="noop",
    description="Accepts everything: checks pass, quotas are granted, reports are discarded",
    templates=frozenset(spec.name for spec in BUILTIN_TEMPLATES),
    config_model=NoopConfig,
    factory=build_handler,
    stability=Stability.DEVELOPMENT,
)
