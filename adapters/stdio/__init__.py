"""``stdio``: writes logentry and metric instances as JSON lines to stdout, stderr or a file.

Mixer's ``stdio`` adapter, with its params (``outputAsJson``, ``outputLevel``, ``outputPath``,
``severity_levels``, rotation settings). See README.md for the params and the output format.
"""

from __future__ import annotations

from pydantic import BaseModel

from adapters.stdio._config import Level, LogStream, StdioConfig
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, __version__, hookimpl

__all__ = ["ADAPTER", "Level", "LogStream", "StdioConfig", "build_handler", "mixer_register_adapters"]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    from adapters.stdio._handler import StdioHandler

    if not isinstance(config, StdioConfig):
        raise TypeError(f"stdio needs a StdioConfig, got {type(config).__name__}")
    return StdioHandler(config, env.logger, name=env.handler_name)


ADAPTER = AdapterInfo(
    name="stdio",
    description="Writes logs and metrics as JSON lines to stdout, stderr or a rotated file",
    templates=frozenset({"logentry", "metric"}),
    config_model=StdioConfig,
    factory=build_handler,
    stability=Stability.STABLE,
    version=__version__,
    legacy_kinds=("stdio",),
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER]
