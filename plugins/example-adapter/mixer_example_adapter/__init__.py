"""An example Mesh Mixer adapter plugin: ``counting`` counts report instances per template.

Everything a plugin needs comes from :mod:`mixer`; the entry point in ``pyproject.toml``
(group ``mixer.adapters``) is how Mesh Mixer finds this module, and ``ADAPTER`` is what it reads.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from mixer import AdapterInfo, Handler, HandlerEnv, ReportBatch, ReportHandler, Stability

__version__ = "0.1.0"

__all__ = ["ADAPTER", "CountingConfig", "CountingHandler"]


class CountingConfig(BaseModel):
    """Params of a ``counting`` handler: defaults for everything, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid")

    by_instance: bool = Field(
        default=False,
        description="Also count per instance name (bounded by the number of instances config declares).",
    )


class CountingHandler(ReportHandler):
    """Counts the instances it is given; never waits, never fails."""

    def __init__(self, config: CountingConfig) -> None:
        self._by_instance = config.by_instance
        #: Instances seen per template name.
        self.by_template: Counter[str] = Counter()
        #: Instances seen per instance name, when ``by_instance`` is set.
        self.by_name: Counter[str] = Counter()
        self.closed = False

    def handle_report(self, batch: ReportBatch) -> None:
        for instance in batch.instances:
            self.by_template[instance.template] += 1
            if self._by_instance:
                self.by_name[instance.name] += 1

    async def shutdown(self, timeout: float) -> None:
        self.closed = True


def _build(config: CountingConfig, env: HandlerEnv) -> Handler:
    # Mesh Mixer calls the factory with params already validated as ``config_model``.
    return CountingHandler(config)


ADAPTER = AdapterInfo(
    name="counting",
    description="Counts report instances per template (an example plugin)",
    templates=frozenset({"metric", "logentry", "tracespan", "reportnothing"}),
    config_model=CountingConfig,
    factory=_build,
    stability=Stability.ALPHA,
    version=__version__,
)
