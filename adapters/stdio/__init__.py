"""``stdio``: writes logentry and metric instances as JSON lines to stdout, stderr or a file.

Mixer's ``stdio`` adapter, with its params (``outputAsJson``, ``outputLevel``, ``outputPath``,
``severity_levels``, rotation settings). See README.md for the params and the output format.
"""

from __future__ import annotations

from adapters.stdio._config import Level, LogStream, StdioConfig
from mixer import AdapterInfo, Handler, HandlerEnv, Stability

__all__ = ["ADAPTER", "Level", "LogStream", "StdioConfig", "build_handler"]


def build_handler(config: StdioConfig, env: HandlerEnv) -> Handler:
    from adapters.stdio._handler import StdioHandler

    return StdioHandler(config, env.logger, name=env.handler_name)


ADAPTER = AdapterInfo(
    name="stdio",
    description="Writes logs and metrics as JSON lines to stdout, stderr or a rotated file",
    templates=frozenset({"logentry", "metric"}),
    config_model=StdioConfig,
    factory=build_handler,
    stability=Stability.STABLE,
)
